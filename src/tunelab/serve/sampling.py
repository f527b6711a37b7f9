"""Per-row sampling: the settings of one request, the choice of the next token, and what text is safe to show."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


def sample_next(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0; otherwise temperature and nucleus (top-p) sampling. A temperature so small that
    logits / temperature overflows (e.g. 1e-300) is greedy too: the limit of sampling as the temperature goes to 0."""
    if sampling.temperature == 0:
        return int(torch.argmax(logits))
    scaled = logits.float() / sampling.temperature
    if not bool(torch.isfinite(scaled).all()):
        return int(torch.argmax(logits))
    probs = torch.softmax(scaled, dim=-1)
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(ordered, dim=-1) - ordered > sampling.top_p  # keeps at least the most likely token
        ordered[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))


def visible_text(text: str, stops: list[str], final: bool) -> tuple[str, bool]:
    """(text up to any stop sequence, whether one was found); while not final, hold back a possible stop prefix."""
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    if cut >= 0:
        return text[:cut], True
    if final:
        return text, False
    hold = max((len(s) - 1 for s in stops), default=0)
    text = text.rstrip("\ufffd")  # an incomplete multi-byte character decodes as U+FFFD until its last byte
    for size in range(min(hold, len(text)), 0, -1):
        if any(s.startswith(text[-size:]) for s in stops):
            return text[:-size], False
    return text, False

"""Linear probing, then fine-tuning (LP-FT, Kumar et al. 2022) for a reward model: before training, the new scalar
head is fitted — the backbone frozen — to the training pairs' features, so that fine-tuning starts from a head that
already ranks most pairs and its gradients go to the pairs the features cannot yet tell apart, rather than from a
random head whose first updates distort the pretrained features.

The features are what the head reads: the backbone's last hidden state at the position the sequence classifier scores
(the last token that is not padding). The head is fitted by the Bradley–Terry loss on chosen − rejected feature
differences with a small L2 penalty (L-BFGS on one tensor: no library fits this loss on difference vectors).
"""

from __future__ import annotations

import time
from typing import Any

PROBE_BATCH = 16
L2 = 1e-4


def _scored_positions(input_ids, pad_token_id: int | None):
    """The index the sequence classifier reads in each row: its last token that is not padding."""
    import torch

    if pad_token_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1)
    positions = torch.arange(input_ids.shape[1])
    return ((input_ids != pad_token_id).long() * positions).argmax(-1)


def _features(backbone, sequences: list[list[int]], pad_token_id: int, bf16: bool):
    import torch

    rows = []
    for start in range(0, len(sequences), PROBE_BATCH):
        batch = sequences[start : start + PROBE_BATCH]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([ids + [pad_token_id] * (width - len(ids)) for ids in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch])
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
        rows.append(hidden[torch.arange(len(batch)), _scored_positions(input_ids, pad_token_id)].float())
    return torch.cat(rows)


def fit_bradley_terry(differences, l2: float = L2, steps: int = 200):
    """w minimising mean log(1 + exp(-d·w)) + l2·|w|² over the rows d of `differences` (chosen − rejected)."""
    import torch

    weight = torch.zeros(differences.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-(differences @ weight)).mean() + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach()


def _heads(base) -> list:
    """The scalar head's copies: PEFT wraps a module it saves, keeping the copy that trains and the original."""
    head = base.score
    if hasattr(head, "modules_to_save"):
        return [*head.modules_to_save.values(), head.original_module]
    return [head]


def fit_score_head(trainer, bf16: bool) -> dict[str, Any]:
    """Fit the head of `trainer.model` to its training pairs; what was done, for training.json."""
    import torch

    started = time.perf_counter()
    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix)
    data = trainer.train_dataset
    chosen, rejected = list(data["chosen_ids"]), list(data["rejected_ids"])
    pad = base.config.pad_token_id
    was_training = model.training
    model.eval()
    try:
        differences = _features(backbone, chosen, pad, bf16) - _features(backbone, rejected, pad, bf16)
    finally:
        model.train(was_training)
    weight = fit_bradley_terry(differences)
    heads = _heads(base)
    with torch.no_grad():
        for head in heads:
            head.weight.copy_(weight.to(head.weight.dtype).unsqueeze(0))
            if head.bias is not None:
                head.bias.zero_()
    accuracy = float(((differences @ weight) > 0).float().mean())
    return {"init": "probe", "pairs": len(chosen), "train_pair_accuracy": round(accuracy, 4),
            "heads_set": len(heads), "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip

"""Multiple-choice scoring by log-likelihood, in the two ways lm-evaluation-harness scores its tasks.

- `letters` (its MMLU, CMMLU and C-Eval layout): a one-line description, k solved examples, then the question with
  lettered choices and `Answer:`; the prediction is the letter whose continuation (" A", " B", ...) is most likely.
- `text` (its ARC layout, "cloze"): `Question: ...\\nAnswer:` and each choice's own text as the continuation; the
  prediction is the most likely text (`accuracy`), or the most likely per byte (`accuracy_norm`). Small models that
  cannot yet answer with a letter still show what they know this way, which is why the forgetting probe uses it.

Token boundaries follow the harness: a continuation's tokens are those of `context + continuation` after the
context's own tokens. Speed: the prompts of a subject share their few-shot prefix, so its key/value cache is
computed once and each question runs only its own tokens; single-token continuations share one forward pass.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tunelab.data.benchmarks import LETTERS, BenchmarkItem
from tunelab.eval.tasks import LoadedTask
from tunelab.eval.text_metrics import has_cjk

TOKENS_PER_BATCH = 4096
SCORINGS = ("letters", "text")
TEMPLATES = {
    "en": {"description": "The following are multiple choice questions (with answers) about {subject}.\n\n",
           "answer": "Answer:", "question": "Question: "},
    "zh": {"description": "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n", "answer": "答案：",
           "question": "问题："},
}  # fmt: skip


@dataclass
class Prompt:
    item: BenchmarkItem
    prefix: str  # description and solved examples: shared by the questions of a subject
    question: str  # this question, ending in the answer cue
    continuations: list[str]  # one per choice, each starting with the space that separates it from the cue
    gold: int  # index of the right choice


def _letters(item: BenchmarkItem) -> list[str]:
    return list(LETTERS[: len(item.choices)])  # choices are re-lettered A, B, C... whatever labels the file used


def format_question(item: BenchmarkItem, language: str, scoring: str) -> str:
    cue = TEMPLATES[language]["answer"]
    if scoring == "text":
        return f"{TEMPLATES[language]['question']}{item.question.strip()}\n{cue}"
    lettered = zip(_letters(item), item.choices, strict=True)
    lines = [item.question.strip(), *(f"{letter}. {choice}" for letter, choice in lettered)]
    return "\n".join(lines) + "\n" + cue


def continuations(item: BenchmarkItem, scoring: str) -> list[str]:
    return [" " + text for text in (_letters(item) if scoring == "letters" else item.choices)]


def _language(task: LoadedTask, item: BenchmarkItem) -> str:
    if task.language != "auto":
        return task.language
    return "zh" if has_cjk(item.question) else "en"


def build_prompts(task: LoadedTask, shots: int, scoring: str = "letters") -> list[Prompt]:
    """One prompt per item; shots come from the subject's dev pool, or else from the subject's other items."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    by_subject: dict[str, list[BenchmarkItem]] = {}
    for item in task.items:
        by_subject.setdefault(item.subject, []).append(item)
    prompts = []
    for item in task.items:
        language = _language(task, item)
        pool = task.fewshot.get(item.subject) or [i for i in by_subject[item.subject] if i is not item]
        solved = []
        for example in pool[:shots]:
            gold = example.labels.index(example.answer)
            solved.append(format_question(example, language, scoring) + continuations(example, scoring)[gold] + "\n\n")
        description = TEMPLATES[language]["description"].format(subject=task.display_name(item.subject))
        prefix = (description if scoring == "letters" else "") + "".join(solved)
        gold = item.labels.index(item.answer)
        prompts.append(
            Prompt(item, prefix, format_question(item, language, scoring), continuations(item, scoring), gold)
        )
    return prompts


@dataclass
class _Request:
    prompt: int  # index into the prompts
    tokens: list[int]  # after the shared prefix: the question's own tokens, then (text scoring) the continuation
    positions: list[int]  # indices into `tokens` whose next-token distribution is read
    targets: list[list[int]]  # the tokens read at the positions: per choice one token, or one choice's tokens
    choice: int | None = None  # the choice a multi-token request scores; None: all choices at the last position


def _continuation_ids(tokenizer, context: str, context_ids: list[int], continuation: str) -> list[int]:
    """The harness's rule: tokens of context + continuation after the context's own tokens."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
        return whole[len(context_ids) :]
    return tokenizer(continuation, add_special_tokens=False)["input_ids"]  # merged across the boundary


def _requests(tokenizer, prompt: Prompt, index: int, context_ids: list[int], shared: int) -> list[_Request]:
    context = prompt.prefix + prompt.question
    own = context_ids[shared:]
    choices = [_continuation_ids(tokenizer, context, context_ids, c) for c in prompt.continuations]
    if all(len(c) == 1 for c in choices):  # one forward pass reads every choice at the last position
        return [_Request(index, own, [len(own) - 1], [[c[0]] for c in choices])]
    return [
        _Request(index, own + c[:-1], list(range(len(own) - 1, len(own) + len(c) - 1)), [c], choice)
        for choice, c in enumerate(choices)  # one pass per choice, read at every continuation position
    ]


@torch.inference_mode()
def _prefix_cache(model, prefix_ids: list[int]):
    if not prefix_ids:
        return None
    output = model(input_ids=torch.tensor([prefix_ids], device=model.device), use_cache=True, logits_to_keep=1)
    return output.past_key_values


@torch.inference_mode()
def _read_logprobs(model, cache, shared: int, batch: list[_Request]) -> list[torch.Tensor]:
    """Per request: log-probabilities (len(positions), vocab) of the next token at its positions."""
    width = max(len(r.tokens) for r in batch)
    ids = torch.tensor([r.tokens + [0] * (width - len(r.tokens)) for r in batch])  # right padding, masked
    mask = torch.tensor([[1] * (shared + len(r.tokens)) + [0] * (width - len(r.tokens)) for r in batch])
    positions = torch.arange(shared, shared + width).expand(len(batch), width)
    keep = max(len(r.positions) for r in batch)
    read = torch.tensor([r.positions + [r.positions[-1]] * (keep - len(r.positions)) for r in batch])
    past = None
    if cache is not None:
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(batch))
    output = model(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        position_ids=positions.to(model.device),
        past_key_values=past,
        use_cache=past is not None,
        logits_to_keep=read.to(model.device),
    )
    logprobs = torch.log_softmax(output.logits.float(), dim=-1).cpu()
    return [logprobs[row, : len(r.positions)] for row, r in enumerate(batch)]


def _batches(requests: list[_Request]) -> list[list[_Request]]:
    """Requests sorted by length, grouped up to a token budget."""
    batches: list[list[_Request]] = []
    for request in sorted(requests, key=lambda r: len(r.tokens)):
        if batches and (len(batches[-1]) + 1) * len(request.tokens) <= TOKENS_PER_BATCH:
            batches[-1].append(request)
        else:
            batches.append([request])
    return batches


def score_prompts(model, tokenizer, prompts: list[Prompt], on_progress: Callable[[int], None] | None = None):
    """Per prompt: the log-likelihood of each continuation, in choice order."""
    scores: list[list[float]] = [[0.0] * len(p.continuations) for p in prompts]
    groups: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt.prefix, []).append(index)
    for indices in groups.values():
        context_ids = {i: tokenizer(prompts[i].prefix + prompts[i].question, add_special_tokens=False)["input_ids"]
                       for i in indices}  # fmt: skip
        shared = _shared_length(list(context_ids.values())) if len(indices) > 1 else 0
        cache = _prefix_cache(model, context_ids[indices[0]][:shared])
        requests = [r for i in indices for r in _requests(tokenizer, prompts[i], i, context_ids[i], shared)]
        for batch in _batches(requests):
            for request, logprobs in zip(batch, _read_logprobs(model, cache, shared, batch), strict=True):
                _accumulate(scores[request.prompt], request, logprobs)
            if on_progress:
                on_progress(len({r.prompt for r in batch}))
    return scores


def _shared_length(sequences: list[list[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one token of its own."""
    shortest = min(len(s) for s in sequences)
    for position in range(shortest):
        if any(s[position] != sequences[0][position] for s in sequences):
            return position
    return shortest - 1


def _accumulate(choice_scores: list[float], request: _Request, logprobs: torch.Tensor) -> None:
    if request.choice is None:  # single-token choices, read from one distribution
        for choice, (token,) in enumerate(request.targets):
            choice_scores[choice] = float(logprobs[-1, token])
        return
    (tokens,) = request.targets
    choice_scores[request.choice] = float(sum(logprobs[j, t] for j, t in enumerate(tokens)))


def accuracy_with_stderr(correct: list[bool]) -> dict[str, Any]:
    """Accuracy and its standard error (sample standard deviation / sqrt(n), as lm-evaluation-harness reports)."""
    n = len(correct)
    accuracy = sum(correct) / n if n else 0.0
    stderr = math.sqrt(accuracy * (1 - accuracy) / (n - 1)) if n > 1 else 0.0
    return {"accuracy": accuracy, "stderr": stderr, "count": n}

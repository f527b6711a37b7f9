"""The RL stages' rewards: the recipe's `reward:` list made into functions with TRL's reward-function signature.

Each reward is called as TRL's GRPOTrainer and RLOOTrainer call one — `fn(prompts=, completions=, completion_ids=,
**columns)`, where the columns are the dataset's (tunelab's prompt records carry `reference`, the record's answer, and
`id`) — and returns one float per completion. tunelab's PPO calls them the same way. A reward that raises, returns the
wrong number of values, or returns something that is not a finite number is a RewardError naming the reward and the
record, not a traceback from inside the trainer.

Built-in rewards, each in [0, 1] unless said otherwise:
- json_valid      1 when the completion parses as a JSON object (eval.metrics' rule: no prose around it)
- json_schema     1 when it parses and validates against the schema file
- field_accuracy  the share of the reference's fields the completion gets right (0 when it is not JSON)
- exact_match     1 when the completion equals the reference (as JSON when both parse, else as text)
- regex           1 when the pattern matches (anywhere, or the whole completion with `full: true`)
- max_words       0 up to max_words words, falling linearly to -1 at twice as many: a length penalty
- python          `file.py:function`, any function with TRL's signature
- reward_model    a tunelab reward-model run (stage: rm): its scalar score of prompt + completion
- judge           an LLM over an OpenAI-compatible endpoint rates the completion 1-10 against the criteria → 0..1
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

RewardFn = Callable[..., list[float]]


class RewardError(TunelabError):
    """A reward failed on a record, or returned something that is not a reward."""


@dataclass(frozen=True)
class Reward:
    name: str  # shown in logs and metrics: rewards/<name>
    weight: float
    fn: RewardFn  # TRL's signature, checked: one finite float per completion


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes plain strings, or [{"role": "assistant", "content": ...}] for chat data."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    return str(completion)


# ---------------------------------------------------------------- the built-in rewards (pure functions of text)


def json_valid_reward(completions: Sequence[Any], **_: Any) -> list[float]:
    from tunelab.eval.metrics import json_valid

    return [float(json_valid(completion_text(c))) for c in completions]


def json_schema_reward(schema_path: str) -> RewardFn:
    from tunelab.eval.metrics import load_json_schema, schema_valid

    validator = load_json_schema(schema_path)

    def json_schema(completions: Sequence[Any], **_: Any) -> list[float]:
        return [float(schema_valid(completion_text(c), validator)) for c in completions]

    return json_schema


def field_accuracy_reward(completions: Sequence[Any], reference: Sequence[str] | None = None, **_: Any) -> list[float]:
    from tunelab.eval.metrics import field_accuracy, parse_json_answer

    references = _references(reference, len(completions), "field_accuracy")
    scores = []
    for completion, ref in zip(completions, references, strict=True):
        ref_obj = parse_json_answer(ref)
        if not isinstance(ref_obj, dict) or not ref_obj:
            raise RewardError(f"field_accuracy needs a JSON object as the reference answer, got {ref[:80]!r}")
        right, total = field_accuracy(parse_json_answer(completion_text(completion)), ref_obj)
        scores.append(right / total)
    return scores


def exact_match_reward(completions: Sequence[Any], reference: Sequence[str] | None = None, **_: Any) -> list[float]:
    from tunelab.eval.metrics import exact_match

    references = _references(reference, len(completions), "exact_match")
    return [float(exact_match(completion_text(c), ref)) for c, ref in zip(completions, references, strict=True)]


def regex_reward(pattern: str, full: bool) -> RewardFn:
    compiled = re.compile(pattern, re.DOTALL)
    find = compiled.fullmatch if full else compiled.search

    def regex(completions: Sequence[Any], **_: Any) -> list[float]:
        return [
            float(find(completion_text(c).strip() if full else completion_text(c)) is not None) for c in completions
        ]

    return regex


def max_words_reward(max_words: int) -> RewardFn:
    def max_words_penalty(completions: Sequence[Any], **_: Any) -> list[float]:
        counts = [len(completion_text(c).split()) for c in completions]
        return [-min(1.0, max(0, n - max_words) / max_words) for n in counts]

    return max_words_penalty


def _references(reference: Sequence[str] | None, count: int, name: str) -> Sequence[str]:
    if reference is None:
        raise RewardError(f"{name} compares with each record's reference answer, and these records have none; train on "
                          "records with an assistant answer (messages, or prompt + completion)")  # fmt: skip
    if len(reference) != count:
        raise RewardError(f"{name}: {len(reference)} references for {count} completions")
    return reference


# ---------------------------------------------------------------- rewards from elsewhere


def python_reward(spec: str) -> RewardFn:
    """`path/to/file.py:function`, imported once; its name is the function's."""
    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise RewardError(f"python reward {spec!r}: write it as path/to/file.py:function")
    file = Path(path)
    module_name = f"tunelab_reward_{abs(hash(str(file.resolve())))}"
    spec_obj = importlib.util.spec_from_file_location(module_name, file)
    if spec_obj is None or spec_obj.loader is None:
        raise RewardError(f"python reward {spec!r}: {file} is not a Python file")
    module = importlib.util.module_from_spec(spec_obj)
    sys.modules[module_name] = module
    try:
        spec_obj.loader.exec_module(module)
    except Exception as error:  # the user's module: any import-time failure is theirs to fix, named here
        raise RewardError(f"python reward {spec!r}: importing {file} failed: {type(error).__name__}: {error}") from None
    function = getattr(module, name, None)
    if not callable(function):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise RewardError(f"python reward {spec!r}: {file} has no function {name!r}; it defines {', '.join(found)}")
    return function


def reward_model_reward(run: str, batch_size: int) -> RewardFn:
    """A reward-model run's scalar score of the conversation prompt + completion, batched."""
    import torch

    from tunelab.model.reward import load_reward_model

    model, tokenizer = load_reward_model(run)

    @torch.inference_mode()
    def reward_model(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        texts = [_conversation_ids(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
        scores: list[float] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            width = max(len(ids) for ids in chunk)
            pad = tokenizer.pad_token_id or 0
            ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in chunk])
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in chunk])
            scores += model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
        return scores

    return reward_model


def _conversation_ids(tokenizer, prompt: Any, completion: Any) -> list[int]:
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    answer = [{"role": "assistant", "content": completion_text(completion)}]
    return list(tokenizer.apply_chat_template(messages + answer, tokenize=True, return_dict=False))


JUDGE_PROMPT = """Rate the assistant's answer to the request below from 1 (worst) to 10 (best) for being {criteria}.
Reply with the rating alone, as [[N]].

[Request]
{request}

[Answer]
{answer}"""


def judge_reward(base_url: str, model: str, api_key_env: str | None, criteria: str, timeout_s: float) -> RewardFn:
    """An LLM judge's 1-10 rating, mapped to 0..1; an answer it rates unreadably gets no reward (None → NaN in TRL,
    which leaves it out of the mean)."""
    from tunelab.eval.judge import EndpointJudge

    judge = EndpointJudge(base_url, model, api_key_env, max_tokens=16, timeout=timeout_s)

    def judge_rating(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float | None]:
        texts = [
            JUDGE_PROMPT.format(criteria=criteria, request=last_user_text(p), answer=completion_text(c))
            for p, c in zip(prompts, completions, strict=True)
        ]
        return [_rating(reply) for reply in judge.complete(texts)]

    return judge_rating


def last_user_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(prompt)


def _rating(reply: str) -> float | None:
    match = re.search(r"\[\[\s*(10|[1-9])\s*\]\]", reply) or re.fullmatch(r"\s*(10|[1-9])\s*", reply)
    return (int(match.group(1)) - 1) / 9 if match else None


# ---------------------------------------------------------------- the recipe's list → checked rewards


def build_rewards(specs: Sequence[Any]) -> list[Reward]:
    """One checked Reward per `reward:` entry, in order; names are made unique (regex, regex_2)."""
    rewards, seen = [], {}
    for spec in specs:
        fn, name = _make(spec)
        seen[name] = seen.get(name, 0) + 1
        unique = name if seen[name] == 1 else f"{name}_{seen[name]}"
        rewards.append(Reward(unique, spec.weight, checked(unique, fn)))
    return rewards


def _make(spec: Any) -> tuple[RewardFn, str]:
    kind = spec.type
    if kind == "json_valid":
        return json_valid_reward, kind
    if kind == "json_schema":
        return json_schema_reward(spec.json_schema), kind
    if kind == "field_accuracy":
        return field_accuracy_reward, kind
    if kind == "exact_match":
        return exact_match_reward, kind
    if kind == "regex":
        return regex_reward(spec.pattern, spec.full), kind
    if kind == "max_words":
        return max_words_reward(spec.max_words), kind
    if kind == "python":
        function = python_reward(spec.function)
        return function, getattr(function, "__name__", "python")
    if kind == "reward_model":
        return reward_model_reward(spec.run, spec.batch_size), "reward_model"
    if kind == "judge":
        return judge_reward(spec.base_url, spec.model, spec.api_key_env, spec.criteria, spec.timeout_s), "judge"
    raise RewardError(f"unknown reward type {kind!r}")


def checked(name: str, fn: RewardFn) -> RewardFn:
    """fn with its failures named: the reward, the record (its id, or its position in the batch), and what was wrong."""

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        try:
            values = fn(prompts=prompts, completions=completions, **kwargs)
        except RewardError as error:
            raise RewardError(f"reward {name}: {error}") from None
        except Exception as error:  # the reward's own code (a user's function, a judge): name it and the batch
            where = _record_names(kwargs.get("id"), range(len(completions)))
            raise RewardError(
                f"reward {name} failed on the batch with {where}: {type(error).__name__}: {error}"
            ) from None
        return _checked_values(name, values, len(completions), kwargs.get("id"))

    reward.__name__ = name
    return reward


def _checked_values(name: str, values: Any, count: int, ids: Sequence[Any] | None) -> list[float | None]:
    if not isinstance(values, list | tuple):
        raise RewardError(
            f"reward {name} returned {type(values).__name__}; return a list with one float per completion"
        )
    if len(values) != count:
        raise RewardError(f"reward {name} returned {len(values)} values for {count} completions; return one each")
    checked_values: list[float | None] = []
    for index, value in enumerate(values):
        if value is None:  # TRL's "no reward for this one" (e.g. a judge that could not rate it)
            checked_values.append(None)
            continue
        number = _as_number(value)
        if number is None or not math.isfinite(number):
            where = _record_names(ids, [index])
            raise RewardError(f"reward {name} returned {value!r} for {where}; a reward is a finite number (or None)")
        checked_values.append(number)
    return checked_values


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _record_names(ids: Sequence[Any] | None, positions: Sequence[int]) -> str:
    positions = list(positions)
    if ids is not None and len(positions) == 1 and positions[0] < len(ids):
        return f"record {ids[positions[0]]!r}"
    if ids is not None:
        shown = ", ".join(repr(ids[p]) for p in positions[:4] if p < len(ids))
        return f"records {shown}{' …' if len(positions) > 4 else ''}"
    return f"completion {positions[0]} of the batch" if len(positions) == 1 else f"{len(positions)} completions"


def weighted_total(rewards: Sequence[Reward], values: Sequence[Sequence[float | None]]) -> list[float]:
    """Σ weight · value per completion (a missing value counts 0), as TRL sums reward_weights."""
    totals = [0.0] * (len(values[0]) if values else 0)
    for reward, column in zip(rewards, values, strict=True):
        for index, value in enumerate(column):
            totals[index] += reward.weight * (value if value is not None else 0.0)
    return totals

"""Preference pairs from a model's own mistakes ("on-policy" negatives): the model answers the quickstart's training
orders greedily (and, with `--samples K`, K more times sampled), and every distinct answer that differs from the
reference becomes a pair, the reference chosen and the model's own answer rejected (category `own_mistake`).

The synthetic pairs of generate.py teach the kinds of mistakes small models make; these teach the mistakes this
model makes, where its probability mass actually is, which is what DPO moves. Only training orders are answered, so
the held-out pairs (test.jsonl, from held-out orders) stay unseen.

    tunelab run examples/quickstart/recipe.yaml                      # the SFT run (runs/quickstart)
    python examples/preference/mine.py --model runs/quickstart --out examples/preference/mined.jsonl

then add `- path: mined.jsonl` to the data sources of dpo.yaml (README: "Recipes and what they measured" has the runs).

A model's mistakes lean one way (this one misses urgency: 60 of its 63 wrong `express` answers say false where the
order says true), so DPO on them alone learns the direction, not the reading: "always true". `--mirror` adds, for each
field a mistake got wrong, a mirror pair from another training order whose reference holds the value the model wrongly
gave, rejecting that order's answer with the mistake's correct value: both directions are then preferred equally
often, and only the order's text can tell them apart. `--from-pairs mined.jsonl --mirror` mirrors an existing file
without answering again.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICKSTART_TRAIN = HERE.parent / "quickstart" / "train.jsonl"


def canonical(text: str) -> str:
    """The answer's JSON re-serialised when it parses (so layout is no mistake; and 1 stays unequal to true, which
    Python's == would not keep apart), else the stripped text."""
    try:
        return json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False)
    except ValueError:
        return text.strip()


def own_mistakes(records: list[dict], answers: list[str | list[str]]) -> list[dict]:
    """One pair per distinct wrong answer of each record (an answer, or the list of a record's answers: the greedy one
    and samples), the reference chosen; ids `<record id>-own_mistake`, then `-own_mistake-2`, … for further ones."""
    pairs = []
    for record, record_answers in zip(records, answers, strict=True):
        *prompt, reference = record["messages"]
        seen = {canonical(reference["content"])}
        for answer in [record_answers] if isinstance(record_answers, str) else record_answers:
            if canonical(answer) in seen:
                continue
            seen.add(canonical(answer))
            suffix = "" if len(seen) == 2 else f"-{len(seen) - 1}"
            rejected = [{"role": "assistant", "content": answer}]
            pairs.append({"id": f"{record['id']}-own_mistake{suffix}", "prompt": prompt, "chosen": [reference],
                          "rejected": rejected, "category": "own_mistake"})  # fmt: skip
    return pairs


def _answer_fields(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _same(a, b) -> bool:
    """Equal as JSON (1 is not true, which Python's == would say it is)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def mirror_pairs(pairs: list[dict], records: list[dict], seed: int = 0) -> list[dict]:
    """For each field on which a pair's rejected answer differs from its chosen one (chosen value c, rejected r): a
    pair from another training order whose reference has r in that field, chosen that reference and rejected it with
    c put in — so "r" is preferred as often as "c" and only the order's text decides. Orders with a mistake of their
    own are not used; each order mirrors a field once; a value no other order holds (a misread name) is skipped."""
    rng = random.Random(seed)
    mistaken = {pair["id"].split("-own_mistake")[0] for pair in pairs}
    candidates = [(record, _answer_fields(record["messages"][-1]["content"])) for record in records
                  if record["id"] not in mistaken]  # fmt: skip
    candidates = [(record, fields) for record, fields in candidates if fields is not None]
    used: set[tuple[str, str]] = set()
    mirrors = []
    for pair in pairs:
        chosen = _answer_fields(pair["chosen"][-1]["content"])
        rejected = _answer_fields(pair["rejected"][-1]["content"])
        if chosen is None or rejected is None or set(chosen) != set(rejected):
            continue
        for field in [key for key in chosen if not _same(chosen[key], rejected[key])]:
            matches = [(record, fields) for record, fields in candidates
                       if (record["id"], field) not in used and _same(fields.get(field), rejected[field])]  # fmt: skip
            if not matches:
                continue
            record, fields = rng.choice(matches)
            used.add((record["id"], field))
            *prompt, reference = record["messages"]
            wrong = {"role": "assistant", "content": json.dumps({**fields, field: chosen[field]}, ensure_ascii=False)}
            mirrors.append({"id": f"{record['id']}-mirror_{field}", "prompt": prompt, "chosen": [reference],
                            "rejected": [wrong], "category": f"mirror_{field}"})  # fmt: skip
    return mirrors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="the model to mine: a finished run, a model folder or alias")
    parser.add_argument("--from-pairs", help="mirror this pairs file (from an earlier mining) instead of answering")
    parser.add_argument("--mirror", action="store_true", help="add a mirror pair for each field of each mistake")
    parser.add_argument("--out", required=True, help="the pairs file to write (JSON lines)")
    parser.add_argument("--samples", type=int, default=0, help="sampled answers per order besides the greedy one")
    parser.add_argument("--temperature", type=float, default=1.0, help="the sampling temperature (with --samples)")
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed (with --samples)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    records = [json.loads(line) for line in QUICKSTART_TRAIN.read_text(encoding="utf-8").splitlines() if line]
    if args.from_pairs:
        mirror_file(parser, args, records)
        return
    if not args.model:
        parser.error("give --model (the model to mine) or --from-pairs with --mirror")

    import torch

    from tunelab.data.tokenize import prompt_ids_for_generation
    from tunelab.model.generate import generate_batch
    from tunelab.model.targets import load_target

    model, tokenizer, _ = load_target(args.model)
    prompts = [prompt_ids_for_generation(tokenizer, record["messages"][:-1]) for record in records]
    passes = [("greedy", 0.0)] + [(f"sample {n + 1}/{args.samples}", args.temperature) for n in range(args.samples)]
    answers: list[list[str]] = [[] for _ in records]
    torch.manual_seed(args.seed)
    for name, temperature in passes:
        done = []

        def progress(indices, _results, name=name, done=done):
            done.extend(indices)
            print(f"\r{name}: {len(done)}/{len(prompts)} orders answered", end="", flush=True)

        results = generate_batch(model, tokenizer, prompts, args.max_new_tokens, args.batch_size, progress,
                                 temperature=temperature)  # fmt: skip
        print()
        for record_answers, result in zip(answers, results, strict=True):
            record_answers.append(result["text"])
    pairs = own_mistakes(records, answers)
    write_pairs(args.out, pairs, mirror_pairs(pairs, records, args.seed) if args.mirror else [])
    wrong_greedy = len(own_mistakes(records, [a[0] for a in answers]))
    print(f"{wrong_greedy} of {len(records)} training orders answered wrongly (greedy); "
          f"{len(pairs)} distinct wrong answers with {args.samples} samples each → {args.out}")  # fmt: skip


def mirror_file(parser: argparse.ArgumentParser, args: argparse.Namespace, records: list[dict]) -> None:
    """--from-pairs: the mistakes of an earlier mining (its mirror pairs dropped) and fresh mirrors, into --out."""
    if not args.mirror:
        parser.error("--from-pairs only makes sense with --mirror")
    if not Path(args.from_pairs).is_file():
        parser.error(f"--from-pairs {args.from_pairs}: no such file (write one first: --model … --out FILE)")
    lines = Path(args.from_pairs).read_text(encoding="utf-8").splitlines()
    pairs = [pair for pair in map(json.loads, filter(None, lines)) if "-mirror_" not in pair["id"]]
    write_pairs(args.out, pairs, mirror_pairs(pairs, records, args.seed))


def write_pairs(path: str, pairs: list[dict], mirrors: list[dict]) -> None:
    Path(path).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs + mirrors), encoding="utf-8")
    if mirrors:
        print(f"{len(pairs)} mistakes and {len(mirrors)} mirror pairs → {path}")


if __name__ == "__main__":
    main()

"""Preference pairs from a model's own mistakes ("on-policy" negatives): the model answers the quickstart's training
orders greedily (and, with `--samples K`, K more times sampled), and every distinct answer that differs from the
reference becomes a pair, the reference chosen and the model's own answer rejected (category `own_mistake`).

The synthetic pairs of generate.py teach the kinds of mistakes small models make; these teach the mistakes this
model makes, where its probability mass actually is, which is what DPO moves. Only training orders are answered, so
the held-out pairs (test.jsonl, from held-out orders) stay unseen.

    tunelab run examples/quickstart/recipe.yaml                      # the SFT run (runs/quickstart)
    python examples/preference/mine.py --model runs/quickstart --out examples/preference/mined.jsonl

then add `- path: mined.jsonl` to the data sources of dpo.yaml (see the comment there).
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="the model to mine: a finished run, a model folder or alias")
    parser.add_argument("--out", required=True, help="the pairs file to write (JSON lines)")
    parser.add_argument("--samples", type=int, default=0, help="sampled answers per order besides the greedy one")
    parser.add_argument("--temperature", type=float, default=1.0, help="the sampling temperature (with --samples)")
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed (with --samples)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch

    from tunelab.data.tokenize import prompt_ids_for_generation
    from tunelab.model.generate import generate_batch
    from tunelab.model.targets import load_target

    records = [json.loads(line) for line in QUICKSTART_TRAIN.read_text(encoding="utf-8").splitlines() if line]
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
    Path(args.out).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    wrong_greedy = len(own_mistakes(records, [a[0] for a in answers]))
    print(f"{wrong_greedy} of {len(records)} training orders answered wrongly (greedy); "
          f"{len(pairs)} distinct wrong answers with {args.samples} samples each → {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()

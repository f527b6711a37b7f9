"""Preference pairs from a model's own mistakes ("on-policy" negatives): the model answers the quickstart's training
orders greedily, and every answer that differs from the reference becomes a pair, the reference chosen and the
model's own answer rejected (category `own_mistake`).

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


def own_mistakes(records: list[dict], answers: list[str]) -> list[dict]:
    pairs = []
    for record, answer in zip(records, answers, strict=True):
        *prompt, reference = record["messages"]
        if canonical(answer) != canonical(reference["content"]):
            rejected = [{"role": "assistant", "content": answer}]
            pairs.append({"id": f"{record['id']}-own_mistake", "prompt": prompt, "chosen": [reference],
                          "rejected": rejected, "category": "own_mistake"})  # fmt: skip
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="the model to mine: a finished run, a model folder or alias")
    parser.add_argument("--out", required=True, help="the pairs file to write (JSON lines)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from tunelab.data.tokenize import prompt_ids_for_generation
    from tunelab.model.generate import generate_batch
    from tunelab.model.targets import load_target

    records = [json.loads(line) for line in QUICKSTART_TRAIN.read_text(encoding="utf-8").splitlines() if line]
    model, tokenizer, _ = load_target(args.model)
    prompts = [prompt_ids_for_generation(tokenizer, record["messages"][:-1]) for record in records]
    results = generate_batch(model, tokenizer, prompts, args.max_new_tokens, args.batch_size)
    pairs = own_mistakes(records, [result["text"] for result in results])
    Path(args.out).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    print(f"{len(pairs)} of {len(records)} training orders answered wrongly → {args.out}")


if __name__ == "__main__":
    main()

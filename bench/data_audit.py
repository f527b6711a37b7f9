"""Benchmark: duplicate detection (and the full data audit, when present) on synthetic alpaca-sized records.

    .venv/bin/python bench/data_audit.py                       # 10k and 100k records
    .venv/bin/python bench/data_audit.py --sizes 1000,10000 --out bench.json

"audit s" is the full audit of the same records (`audit_sets` with the last tenth as an eval set, token lengths with
the built-in model's tokenizer at max_length 1024), which includes the dedup.

Records are seeded and realistic in size: instruction 60-200 characters, input empty or up to 200, output 100-800;
about a tenth are Chinese, and 5% are planted near-duplicates (exact copies with case or punctuation changes, or a
few words replaced). Each size runs in its own process, so its peak RSS is its own.

The bar: the audit of 100k records in <= 90 s on 2 cores, 100k/10k time ratio <= 12; `find_duplicates` well under
half of that.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from tunelab.data.dedup import find_duplicates, record_text

SYLLABLES = "ba be bi bo bu da de di do ka ke ki ko la le li lo lu ma me mi mo na ne ni no ra re ri ro sa se si so "
SYLLABLES += "ta te ti to tu va ve vi an en in on er ar or st tr pl gr ch sh th qu ex un re pre con ter ment tion"
FUNCTION_WORDS = "the of and to in is that for it as with was on be by this are or from at which an not have".split()
VERBS = "Explain Describe Summarize List Compare Write Classify Suggest Outline Rewrite Translate Evaluate".split()
HANZI = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面"
HANZI += "而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性"


def make_records(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` canonical records; every twentieth one re-uses an earlier record with a small edit."""
    rng = random.Random(seed)
    vocabulary = [_pseudo_word(rng) for _ in range(4000)] + FUNCTION_WORDS * 20
    weights = [1.0 / (rank + 10) for rank in range(len(vocabulary))]
    rng.shuffle(weights)
    words = _Words(rng, vocabulary, weights)
    records: list[dict[str, Any]] = []
    for index in range(count):
        if index >= 20 and rng.random() < 0.05:
            fields = _near_copy(rng, records[rng.randrange(len(records))]["fields"], words)
        elif rng.random() < 0.1:
            fields = _chinese_fields(rng)
        else:
            fields = _english_fields(rng, words)
        records.append({"fields": fields})
    return [_canonical(index, record["fields"]) for index, record in enumerate(records)]


class _Words:
    def __init__(self, rng: random.Random, vocabulary: list[str], weights: list[float]):
        self.rng, self.vocabulary = rng, vocabulary
        self.cumulative = list(itertools.accumulate(weights))

    def text(self, min_chars: int, max_chars: int) -> str:
        target = self.rng.randint(min_chars, max_chars)
        sentences, size = [], 0
        while size < target:
            sentence = self.rng.choices(self.vocabulary, cum_weights=self.cumulative, k=self.rng.randint(6, 18))
            sentences.append(" ".join(sentence).capitalize() + self.rng.choice(".....?!"))
            size += len(sentences[-1]) + 1
        return " ".join(sentences)[:max_chars]


def _pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES.split()) for _ in range(rng.randint(1, 4)))


def _english_fields(rng: random.Random, words: _Words) -> dict[str, str]:
    instruction = f"{rng.choice(VERBS)} {words.text(50, 190)}"
    query = words.text(20, 200) if rng.random() < 0.6 else ""
    return {"instruction": instruction, "input": query, "output": words.text(100, 800)}


def _chinese_fields(rng: random.Random) -> dict[str, str]:
    def text(low: int, high: int) -> str:
        chars = rng.choices(HANZI, k=rng.randint(low, high))
        return "".join(c + ("，" if rng.random() < 0.06 else "") for c in chars) + "。"

    return {"instruction": text(20, 60), "input": text(10, 60) if rng.random() < 0.4 else "", "output": text(50, 300)}


def _near_copy(rng: random.Random, fields: dict[str, str], words: _Words) -> dict[str, str]:
    if rng.random() < 0.35:
        return {key: value.upper().replace(".", " ;") for key, value in fields.items()}
    tokens = fields["output"].split(" ")
    for _ in range(rng.randint(1, 3)):
        tokens[rng.randrange(len(tokens))] = words.rng.choice(words.vocabulary)
    return fields | {"output": " ".join(tokens)}


def _canonical(index: int, fields: dict[str, str]) -> dict[str, Any]:
    prompt = fields["instruction"] + (f"\n\n{fields['input']}" if fields["input"] else "")
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": fields["output"]}]
    return {"id": f"bench-{index}", "messages": messages, "source": f"bench.jsonl:{index + 1}"}


def measure(count: int, seed: int, model: str = "smollm2-135m-instruct") -> dict[str, Any]:
    """Generate `count` records, then time the dedup and the full audit on them."""
    records = make_records(count, seed)
    result: dict[str, Any] = {"records": count, "chars": sum(len(record_text(r)) for r in records)}
    result["rss_after_generation_mb"] = psutil.Process().memory_info().rss / 2**20
    start = time.perf_counter()
    report = find_duplicates([record_text(r) for r in records])
    result["dedup_s"] = time.perf_counter() - start
    result["clusters"] = len(report.clusters)
    result["near_pairs"] = len(report.near_pairs)
    audit = _audit_function(model)
    start = time.perf_counter()
    report = audit(records).report
    result["audit_s"] = time.perf_counter() - start
    result["leaked_records"] = report["summary"]["leaked_records"]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _audit_function(model: str | None) -> Any:
    """The full audit as `tunelab data audit --max-length 1024` runs it: a 90/10 train/test split (so leakage is
    checked too) and, unless the model is "none", token lengths with that model's tokenizer."""
    from tunelab.audit import _tokenizer
    from tunelab.data.audit import audit_sets

    tokenizer = _tokenizer(model) if model and model != "none" else None

    def run(records: list[dict[str, Any]]) -> Any:
        cut = len(records) * 9 // 10
        sets = {"train": records[:cut], "test": records[cut:]}
        return audit_sets(sets, {"train": "train", "test": "eval"}, tokenizer=tokenizer, max_length=1024)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated record counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="tokenizer for lengths, or none")
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)  # one size, in this process (internal)
    args = parser.parse_args(argv)
    if args.single is not None:
        print(json.dumps(measure(args.single, args.seed, args.model)))
        return
    results = [_run_in_child(int(size), args.seed, args.model) for size in args.sizes.split(",")]
    _print_table(results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump({"results": results, "ratios": _ratios(results)}, handle, indent=2)


def _run_in_child(count: int, seed: int, model: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--single", str(count), "--seed", str(seed), "--model", model]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    if len(results) < 2:
        return {}
    small, large = results[0], results[-1]
    key = f"{large['records']}/{small['records']}"
    ratios = {f"dedup {key}": large["dedup_s"] / small["dedup_s"]}
    if "audit_s" in small and "audit_s" in large:
        ratios[f"audit {key}"] = large["audit_s"] / small["audit_s"]
    return ratios


def _print_table(results: list[dict[str, Any]]) -> None:
    has_audit = all("audit_s" in r for r in results)
    print(f"{'records':>9} {'chars':>12} {'dedup s':>9} {'audit s':>9} {'peak RSS MB':>12} {'clusters':>9}")
    for r in results:
        audit = f"{r['audit_s']:9.2f}" if has_audit else f"{'-':>9}"
        row = f"{r['records']:>9} {r['chars']:>12} {r['dedup_s']:9.2f} {audit}"
        print(f"{row} {r['peak_rss_mb']:12.0f} {r['clusters']:>9}")
    for name, ratio in _ratios(results).items():
        print(f"time ratio {name}: {ratio:.1f}x")
    if not has_audit:
        print("no audit function in tunelab.data.audit: timed find_duplicates only")


if __name__ == "__main__":
    main()

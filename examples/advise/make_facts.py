"""Make the fact-lookup dataset `tunelab advise` is shown on: questions whose answers are facts of a product table.

Each of 100 products has a price, a warehouse and a launch year; each fact is asked in three phrasings, so a question
held out from the data is still answered by another record about the same product — what retrieval can exploit and
what a prompt alone cannot (the answer is nowhere in the question). Deterministic.

Usage: python examples/advise/make_facts.py [--out examples/advise/facts.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

KINDS = ("trail shoe", "rain jacket", "tent", "sleeping bag", "headlamp", "water filter", "trekking pole", "stove",
         "backpack", "camp chair")  # fmt: skip
WAREHOUSES = ("Rotterdam", "Leipzig", "Lyon", "Gdańsk", "Bilbao", "Turin")
QUESTIONS = {
    "price": ("What does {sku} ({kind}) cost?", "How much is the {kind} {sku}?", "Price of {sku}, please."),
    "warehouse": ("Which warehouse ships {sku}?", "Where is the {kind} {sku} stocked?", "{sku}: shipping warehouse?"),
    "year": ("When was {sku} launched?", "What year did the {kind} {sku} come out?", "Launch year of {sku}?"),
}
SYSTEM = "You answer questions about Northwind Outdoor's product catalogue. Reply with the value only."


def products(rng: random.Random, count: int = 100) -> list[dict]:
    skus = rng.sample(range(1000, 9999), count)
    return [{"sku": f"NW-{sku}", "kind": rng.choice(KINDS), "price": f"€{rng.randrange(900, 39900) / 100:.2f}",
             "warehouse": rng.choice(WAREHOUSES), "year": str(rng.randrange(2015, 2027))} for sku in skus]  # fmt: skip


def records(rng: random.Random) -> list[dict]:
    rows = []
    for product in products(rng):
        for fact, phrasings in QUESTIONS.items():
            for number, phrasing in enumerate(phrasings, start=1):
                question = phrasing.format(**product)
                rows.append({"id": f"{product['sku']}-{fact}-{number}", "category": fact, "messages": [
                    {"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                    {"role": "assistant", "content": product[fact]}]})  # fmt: skip
    rng.shuffle(rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "facts.jsonl")
    args = parser.parse_args(argv)
    rows = records(random.Random(7))
    with args.out.open("w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"wrote {len(rows)} records to {args.out}")


if __name__ == "__main__":
    main()

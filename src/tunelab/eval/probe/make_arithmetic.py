"""Generate arithmetic.jsonl, the arithmetic part of tunelab's built-in general-ability probe.

Run `python make_arithmetic.py`; it writes arithmetic.jsonl next to itself. The output depends only on SEED, so two
runs give byte-identical files. Every answer is computed here, and the distractors are near-misses of it (off by one
or ten, the result of the wrong operation), never a second correct value.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 20240611
LETTERS = "ABCD"
OUT = Path(__file__).with_name("arithmetic.jsonl")

Problem = tuple[str, int, list[int]]  # question, answer, near-miss candidates (best first)
# Each maker takes the generator and the item's number within its kind (which picks the variant, so all appear).


def _addition(rng: random.Random, k: int) -> Problem:
    a, b = rng.randint(2, 49), rng.randint(2, 49)
    return f"What is {a} + {b}?", a + b, [a + b + 1, a + b - 1, a + b + 10, abs(a - b), a + b - 10]


def _subtraction(rng: random.Random, k: int) -> Problem:
    a = rng.randint(10, 60)
    b = rng.randint(2, a - 3)
    return f"What is {a} - {b}?", a - b, [a - b + 1, a - b - 1, a + b, a - b + 10, a - b - 10]


def _multiplication(rng: random.Random, k: int) -> Problem:
    a, b = rng.randint(2, 10), rng.randint(2, 10)
    return f"What is {a} × {b}?", a * b, [a * b + a, a * b - b, a + b, a * b + 1, a * b - 1]


def _division(rng: random.Random, k: int) -> Problem:
    b, q = rng.randint(2, 9), rng.randint(2, 10)
    a = b * q
    return f"What is {a} ÷ {b}?", q, [q + 1, q - 1, a - b, q + 2, q * 2]


def _two_step(rng: random.Random, k: int) -> Problem:
    kind = k % 3
    if kind == 0:
        a, b = rng.randint(5, 30), rng.randint(2, 20)
        c = rng.randint(1, a + b - 1)
        n = a + b - c
        return f"What is {a} + {b} - {c}?", n, [n + 1, n - 1, a + b + c, a - b + c, n + 10]
    if kind == 1:
        a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
        n = a * b + c
        return f"What is {a} × {b} + {c}?", n, [n + 1, n - 1, a * (b + c), a + b + c, a * b - c]
    a, b, c = rng.randint(1, 6), rng.randint(1, 6), rng.randint(2, 5)
    n = (a + b) * c
    return f"What is ({a} + {b}) × {c}?", n, [a + b * c, n + 1, n - 1, a + b + c, n + c]


NAMES = ["Tom", "Sara", "Ben", "Mia", "Leo", "Ana", "Sam", "Lily", "Omar", "Emma", "Ravi", "Nora"]
THINGS = ["apples", "stickers", "marbles", "books", "pencils", "cards", "shells", "stamps"]


def _word_problem(rng: random.Random, k: int) -> Problem:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    kind = k % 6
    if kind == 0:
        a, b = rng.randint(3, 20), rng.randint(2, 15)
        q = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
        return q, a + b, [a + b + 1, a + b - 1, abs(a - b), a + b + 10]
    if kind == 1:
        a = rng.randint(8, 30)
        b = rng.randint(2, a - 2)
        q = f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?"
        return q, a - b, [a - b + 1, a - b - 1, a + b, a - b + 10]
    if kind == 2:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        q = f"There are {a} boxes with {b} {thing} in each box. How many {thing} are there in all?"
        return q, a * b, [a + b, a * b + 1, a * b - 1, a * b + b]
    if kind == 3:
        b, each = rng.randint(2, 6), rng.randint(2, 8)
        a = b * each
        q = f"{name} shares {a} {thing} equally among {b} friends. How many {thing} does each friend get?"
        return q, each, [each + 1, each - 1, a - b, each * 2]
    if kind == 4:
        a, b = rng.randint(5, 20), rng.randint(2, 10)
        c = rng.randint(1, a + b - 1)
        n = a + b - c
        q = f"{name} has {a} {thing}, gets {b} more, then loses {c}. How many {thing} does {name} have now?"
        return q, n, [n + 1, n - 1, a + b + c, a + b]
    price, count = rng.randint(2, 5), rng.randint(2, 4)
    paid = 20 if price * count < 20 else 50
    n = paid - price * count
    q = f"A pen costs {price} dollars. {name} buys {count} pens and pays with {paid} dollars."
    q += f" How many dollars does {name} get back?"
    return q, n, [n + 1, n - 1, paid - price, price * count]


def _comparison(rng: random.Random, k: int) -> Problem:
    """Four distinct numbers; the answer is the largest or the smallest, the candidates are the other three."""
    numbers = rng.sample(range(3, 100), 4)
    if k % 2 == 0:
        n = max(numbers)
        return "Which number is the largest?", n, [x for x in numbers if x != n]
    n = min(numbers)
    return "Which number is the smallest?", n, [x for x in numbers if x != n]


PLAN: list[tuple[Callable[[random.Random, int], Problem], int]] = [
    (_addition, 12),
    (_subtraction, 12),
    (_multiplication, 12),
    (_division, 10),
    (_two_step, 12),
    (_word_problem, 12),
    (_comparison, 10),
]


def _distractors(answer: int, candidates: list[int], rng: random.Random) -> list[int]:
    """Three distinct wrong, positive near-misses: the first five usable candidates, three of them at random."""
    usable: list[int] = []
    for c in candidates + [answer + 2, answer + 3, answer + 5]:
        if c > 0 and c != answer and c not in usable:
            usable.append(c)
    return rng.sample(usable[:5], 3)


def build() -> list[dict]:
    rng = random.Random(SEED)
    total = sum(count for _, count in PLAN)
    letters = [LETTERS[i % 4] for i in range(total)]
    rng.shuffle(letters)
    items: list[dict] = []
    seen: set[str] = set()
    for make, count in PLAN:
        made = 0
        while made < count:
            question, answer, candidates = make(rng, made)
            if make is _comparison:
                wrong = candidates
                question = f"{question} {', '.join(str(x) for x in rng.sample(wrong + [answer], 4))}"
            else:
                wrong = _distractors(answer, candidates, rng)
            if question in seen:
                continue
            seen.add(question)
            letter = letters[len(items)]
            rng.shuffle(wrong)
            choices = [str(x) for x in wrong]
            choices.insert(LETTERS.index(letter), str(answer))
            items.append(
                {
                    "id": f"arithmetic-{len(items) + 1:03d}",
                    "subject": "arithmetic",
                    "question": question,
                    "choices": choices,
                    "answer": letter,
                }
            )
            made += 1
    return items


def main() -> None:
    lines = [json.dumps(item, ensure_ascii=False) for item in build()]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


if __name__ == "__main__":
    main()

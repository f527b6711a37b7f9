"""Generate the continual-training scenario: orders v1 (English, old catalogue) → v2 (new catalogue, mostly Chinese).

Both generations use the quickstart's order generator (examples/quickstart/generate.py: same styles, names, cities,
distractors and answer format); what changes between them is what changes in a real shop:

- v1: 400 training and 120 test orders, all English, for 10 products of the old catalogue.
- v2: 400 training and 120 test orders, 70% Chinese, for a new catalogue of 8 products that v1 never saw.

schema.json allows the products of both catalogues. Deterministic: the committed files can be regenerated exactly.

Usage: python examples/continual/generate.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("quickstart_generate", HERE.parent / "quickstart" / "generate.py")
qs = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = qs  # dataclasses look their module up while the class is built
_spec.loader.exec_module(qs)
Product = qs.Product

RETIRED = ("phone case", "keychain", "water bottle", "polo shirt", "scarf")
OLD_CATALOG = tuple(p for p in qs.CATALOG if p.key not in RETIRED)
NEW_CATALOG = (
    Product("dress", (("dress", "dresses"),), ("连衣裙", "裙子"), "条", True),
    Product("pajamas", (("pajama set", "pajama sets"), ("pajamas", "pajamas")), ("睡衣", "家居服"), "套", True),
    Product("socks", (("pair of socks", "pairs of socks"),), ("袜子", "棉袜"), "双", True),
    Product("desk lamp", (("desk lamp", "desk lamps"), ("lamp", "lamps")), ("台灯", "护眼台灯"), "盏", False),
    Product("yoga mat", (("yoga mat", "yoga mats"),), ("瑜伽垫",), "张", False),
    Product("sunglasses", (("pair of sunglasses", "pairs of sunglasses"),), ("太阳镜", "墨镜"), "副", False),
    Product("headphones", (("headphones", "headphones"), ("headset", "headsets")), ("耳机", "头戴式耳机"), "副", False),
    Product("wallet", (("wallet", "wallets"),), ("钱包", "皮夹"), "个", False),
)
GENERATIONS = {  # name: (catalogue, share of Chinese orders, seed)
    "v1": (OLD_CATALOG, 0.0, 2024),
    "v2": (NEW_CATALOG, 0.7, 2025),
}
N_TRAIN, N_TEST = 400, 120


def use_catalog(catalog: tuple) -> None:
    """Point the quickstart generator at one catalogue (it reads these module-level tables)."""
    qs.CATALOG = catalog
    qs.SIZED = tuple(p for p in catalog if p.sized)
    qs.UNSIZED = tuple(p for p in catalog if not p.sized)


def build_split(rng: random.Random, n: int, prefix: str, zh_share: float, pick_name, seen: set[str]) -> list[dict]:
    """As the quickstart's build_split, with a chosen share of Chinese orders instead of half."""
    chinese = round(n * zh_share)
    langs = ["zh"] * chinese + ["en"] * (n - chinese)
    rng.shuffle(langs)
    records = []
    for index, lang in enumerate(langs, start=1):
        style = rng.choices(qs.STYLES[lang], weights=qs.STYLE_WEIGHTS)[0]
        for _attempt in range(1000):
            order = qs.sample_order(rng, lang, pick_name)
            text = qs.render(rng, order, style)
            if text not in seen and qs.length_ok(lang, text):
                break
        else:
            raise RuntimeError(f"could not draw a fresh {lang} text for {prefix}-{index}")
        seen.add(text)
        records.append(qs.make_record(f"{prefix}-{index:04d}", lang, text, order))
    return records


def generate(out_dir: Path) -> dict[str, int]:
    seen: set[str] = set()  # no order text repeats within or across generations
    counts = {}
    for name, (catalog, zh_share, seed) in GENERATIONS.items():
        use_catalog(catalog)
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        train = build_split(random.Random(seed), N_TRAIN, f"{name}-train", zh_share, qs.train_name_picker(), seen)
        test = build_split(random.Random(seed + 1), N_TEST, f"{name}-test", zh_share, qs.test_name_picker(), seen)
        qs.write_jsonl(folder / "train.jsonl", train)
        qs.write_jsonl(folder / "test.jsonl", test)
        counts |= {f"{name} train": len(train), f"{name} test": len(test)}
    use_catalog(OLD_CATALOG + NEW_CATALOG)
    with (out_dir / "schema.json").open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(json.dumps(qs.schema(), ensure_ascii=False, indent=2) + "\n")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args(argv)
    print(", ".join(f"{k}: {v}" for k, v in generate(args.out_dir).items()), f"→ {args.out_dir}")


if __name__ == "__main__":
    main()

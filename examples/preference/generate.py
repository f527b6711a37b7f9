"""Generate preference pairs for the quickstart task: the correct JSON answer (chosen) against a mistaken one.

Every pair is built on one quickstart order: the prompt (system + user message) and the chosen answer are the
quickstart record's, byte for byte, so a model fine-tuned on the quickstart sees the same prompts. The rejected answer
is that reference with one named mistake of the kinds a small model really makes (see MISTAKES); the kinds are dealt
out evenly and deterministically, and the kind is the pair's `category`. Training pairs come from the quickstart's
training orders only, held-out pairs from its held-out (test) orders only.

The length of an answer is no cue: some mistakes make the rejected answer longer (prose around the JSON, an invented
field, a romanised name), others shorter (a dropped field), and where a mistake has several realistic forms the one
picked keeps the counts of "chosen longer" and "rejected longer" level, so that a "longer answer wins" rule is near
chance. Lengths are counted in characters, as tunelab's pair evaluation counts them.

Usage: python examples/preference/generate.py [--out-dir DIR] [--seed N] [--unpaired]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
QUICKSTART_GENERATOR = HERE.parent / "quickstart" / "generate.py"


def load_quickstart() -> ModuleType:
    """The quickstart generator as a module (it is a script, not a package), loaded once."""
    name = "tunelab_examples_quickstart_generate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, QUICKSTART_GENERATOR)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules[name]


qs = load_quickstart()

SEED = 4321  # for the mistakes; the orders are the quickstart's own (its seed)
PAIRS_PER_ORDER = 2  # each order gets this many pairs, each with a different mistake kind

# Romanisation (Hanyu Pinyin without tones) of every Chinese name part and city the quickstart uses.
PINYIN_SURNAMES = {
    "王": "Wang", "李": "Li", "张": "Zhang", "刘": "Liu", "陈": "Chen", "杨": "Yang", "黄": "Huang", "赵": "Zhao",
    "周": "Zhou", "吴": "Wu", "徐": "Xu", "孙": "Sun", "马": "Ma", "朱": "Zhu", "胡": "Hu", "郭": "Guo", "何": "He",
    "林": "Lin", "高": "Gao", "罗": "Luo", "欧阳": "Ouyang", "诸葛": "Zhuge", "邓": "Deng", "韩": "Han",
}  # fmt: skip
PINYIN_GIVEN = {
    "芳": "Fang", "伟": "Wei", "娜": "Na", "敏": "Min", "静": "Jing", "磊": "Lei", "洋": "Yang", "勇": "Yong",
    "艳": "Yan", "杰": "Jie", "涛": "Tao", "明": "Ming", "超": "Chao", "秀英": "Xiuying", "丽": "Li", "强": "Qiang",
    "军": "Jun", "婷": "Ting", "雪": "Xue", "晨": "Chen", "浩": "Hao", "宇": "Yu", "欣怡": "Xinyi", "子涵": "Zihan",
    "梓萱": "Zixuan", "建国": "Jianguo", "嘉怡": "Jiayi", "一鸣": "Yiming", "思远": "Siyuan", "晓东": "Xiaodong",
    "若曦": "Ruoxi", "志豪": "Zhihao", "雨桐": "Yutong", "俊杰": "Junjie", "佳琪": "Jiaqi",
}  # fmt: skip
PINYIN_CITIES = {
    "北京": "Beijing", "上海": "Shanghai", "广州": "Guangzhou", "深圳": "Shenzhen", "杭州": "Hangzhou",
    "成都": "Chengdu", "武汉": "Wuhan", "南京": "Nanjing", "西安": "Xi'an", "重庆": "Chongqing", "天津": "Tianjin",
    "苏州": "Suzhou", "长沙": "Changsha", "郑州": "Zhengzhou", "青岛": "Qingdao", "厦门": "Xiamen", "大连": "Dalian",
    "沈阳": "Shenyang", "昆明": "Kunming", "合肥": "Hefei", "福州": "Fuzhou", "济南": "Jinan", "哈尔滨": "Harbin",
    "宁波": "Ningbo", "无锡": "Wuxi",
}  # fmt: skip

UNKNOWN_COLORS = ("navy", "beige", "purple", "orange", "silver")  # colours outside the schema's enum
BRITISH_SPELLINGS = {"gray": "grey"}
COUNTRIES = {
    "Toronto": "Canada",
    "Vancouver": "Canada",
    "London": "UK",
    "Manchester": "UK",
    "Dublin": "Ireland",
    "Sydney": "Australia",
    "Melbourne": "Australia",
}  # fmt: skip  (other English cities: USA)
MENTION_WEIGHT = 4  # a value the text mentions counts this many times among a mistake's forms
PROSE_EN = (
    "Sure! Here is the JSON:\n{json}",
    "Here's the extracted order:\n```json\n{json}\n```",
    "{json}\n\nLet me know if you need anything else!",
    "The order details are: {json}",
    "Sure, here you go: {json} Hope this helps!",
)
PROSE_ZH = ("好的，以下是提取的订单信息：\n{json}", "{json}\n希望对您有帮助！", "订单JSON如下：{json}")


def dump(answer: dict) -> str:
    """An answer as the quickstart writes it: compact JSON, keys in order, non-ASCII kept."""
    return json.dumps(answer, ensure_ascii=False)


def with_value(answer: dict, key: str, value: object) -> str:
    return dump({**answer, key: value})


def romanise_name(name: str) -> str:
    """'何思远' -> 'He Siyuan': surname first (two-character surnames are tried first), as names are romanised."""
    for surname in sorted(PINYIN_SURNAMES, key=len, reverse=True):
        if name.startswith(surname):
            return f"{PINYIN_SURNAMES[surname]} {PINYIN_GIVEN[name[len(surname) :]]}"
    raise KeyError(f"no romanisation for {name!r}")


def mentioned(text: str, words: dict[str, tuple[str, ...]]) -> list[str]:
    """The keys of words with a surface form in the text (a whole word or number, for Latin script and digits)."""
    lowered = text.lower()
    found = []
    for key, forms in words.items():
        patterns = [rf"(?<![a-z0-9]){re.escape(form.lower())}(?![a-z0-9])" for form in forms]
        if any(re.search(pattern, lowered) for pattern in patterns):
            found.append(key)
    return found


def country_of(city: str) -> str:
    if city in PINYIN_CITIES:
        return "China"
    return COUNTRIES.get(city, "USA")


# ---------------------------------------------------------------- the mistakes
# Each takes the rng, the reference answer, the order text and its language, and returns the realistic forms of the
# mistake (each a complete rejected answer; repeats weigh a form up); the length balance picks one of them. A value the
# text mentions as a distractor (a colour refused, a product ordered last time) is the likeliest wrong value.


def wrong_quantity(rng: random.Random, answer: dict, text: str, lang: str) -> list[str]:
    """A nearby count, 1 (the default a model falls back to), or another number in the text (last time's count)."""
    q = answer["quantity"]
    numbers = {str(n): (str(n), qs.NUMBERS_EN[n]) for n in range(1, 11) if n != q}
    values = [v for v in (q - 2, q - 1, q + 1, q + 2, 1) if 1 <= v <= 10 and v != q]
    values = sorted(set(values)) + [int(n) for n in mentioned(text, numbers)] * MENTION_WEIGHT
    return [with_value(answer, "quantity", v) for v in values]


def missing_field(rng: random.Random, answer: dict, text: str, lang: str) -> list[str]:
    """One key left out; null-valued keys and the trailing express flag are dropped most often."""
    keys = [k for k in answer for _ in range(3 if answer[k] is None or k == "express" else 1)]
    return [dump({k: v for k, v in answer.items() if k != key}) for key in keys]


def extra_field(rng: random.Random, answer: dict, text: str, lang: str) -> list[str]:
    """A key the schema does not have, inserted at the end or after a related key."""
    extras = [
        ("shipping", "express" if answer["express"] else "standard", "express"),
        ("country", country_of(answer["city"]), "city"),
        ("address", answer["city"], "city"),
        ("currency", "USD" if lang == "en" else "CNY", "quantity"),
        ("price", rng.choice((9.99, 19.99, 25, 39.9)), "quantity"),
        ("order_id", None, "express"),
        ("phone", None, "customer"),
    ]
    candidates = []
    for key, value, after in extras:
        items = list(answer.items())
        at = len(items) if rng.random() < 0.6 else list(answer).index(after) + 1
        candidates.append(dump(dict([*items[:at], (key, value), *items[at:]])))
    return candidates


def missed_value(rng: random.Random, answer: dict, text: str, lang: str) -> list[str]:
    """null for a value the text gives (the name, city, size or colour was not found)."""
    return [with_value(answer, key, None) for key in ("customer", "size", "color", "city") if answer[key] is not None]


def wrong_color(rng: random.Random, answer: dict, text: str, lang: str) -> list[str]:
    """Another colour (likeliest one the text refuses or mentions), one outside the enum (or the British spelling),
    the untranslated Chinese word; or a colour invented where none was given."""
    color = answer["color"]
    if color is None:
        values = list(qs.COLORS)
    else:
        values = [c for c in qs.COLORS if c != color] + list(UNKNOWN_COLORS)
        values += [BRITISH_SPELLINGS[color]] if color in BRITISH_SPELLINGS else []
        values += [qs.COLORS_ZH[color]] if lang == "zh" else []
    words = {c: (c, qs.COLORS_ZH[c]) for c in qs.COLORS if c != color}
    values += mentioned(text, words) * MENTION_WEIGHT
    return [with_value(answer, "color", v) for v in values]


def catalog_product(key: str) -> qs.Product:
    """The quickstart catalog's product with this key."""
    return next(p for p in qs.CATALOG if p.key == key)


def wrong_product(rng: random.Random, answer: dict, text: str, lang: str) -> list[str]:
    """Another catalog item (likeliest one the text mentions, e.g. last time's), the surface form copied from the text
    instead of the catalog key, or (Chinese orders) the untranslated Chinese name."""
    product = catalog_product(answer["product"])
    values = [p.key for p in qs.CATALOG if p is not product]
    values += [form for pair in product.en for form in pair if form != product.key]
    values += list(product.zh) if lang == "zh" else []
    words = {p.key: (*(form for pair in p.en for form in pair), *p.zh) for p in qs.CATALOG if p is not product}
    values = list(dict.fromkeys(values)) + mentioned(text, words) * MENTION_WEIGHT
    return [with_value(answer, "product", v) for v in values]


def wrong_express(rng: random.Random, answer: dict, text: str, lang: str) -> list[str]:
    """The boolean flipped: an urgent order read as standard, or 'no rush' read as express."""
    return [with_value(answer, "express", not answer["express"])]


def romanised_name(rng: random.Random, answer: dict, text: str, lang: str) -> list[str]:
    """Pinyin instead of 汉字 for the customer, the city or both (Chinese orders only)."""
    customer, city = romanise_name(answer["customer"]), PINYIN_CITIES[answer["city"]]
    return [dump({**answer, "customer": customer}), dump({**answer, "city": city}),
            dump({**answer, "customer": customer, "city": city})]  # fmt: skip


def prose_around(rng: random.Random, answer: dict, text: str, lang: str) -> list[str]:
    """The right JSON wrapped in chat: a lead-in, a code fence or a closing remark."""
    templates = PROSE_EN + (PROSE_ZH if lang == "zh" else ())
    return [template.replace("{json}", dump(answer)) for template in templates]


Mistake = Callable[[random.Random, dict, str, str], list[str]]
MISTAKES: dict[str, Mistake] = {
    "wrong_quantity": wrong_quantity,
    "missing_field": missing_field,
    "extra_field": extra_field,
    "missed_value": missed_value,
    "wrong_color": wrong_color,
    "wrong_product": wrong_product,
    "wrong_express": wrong_express,
    "romanised_name": romanised_name,
    "prose_around": prose_around,
}
KINDS = tuple(MISTAKES)
VALUE_FIELDS = {"wrong_product": "product", "wrong_color": "color"}  # kinds that swap one field's value for another
SCHEMA_VALUES = {"product": {p.key for p in qs.CATALOG}, "color": set(qs.COLORS)}
CHINESE_ONLY = ("romanised_name",)


# ---------------------------------------------------------------- assembly


def assign_kinds(rng: random.Random, records: list[dict], balance_express: bool = False) -> list[list[str]]:
    """PAIRS_PER_ORDER different kinds per order, each time one of the kinds used least so far (ties drawn by rng).

    With balance_express, `wrong_express` goes to urgent and to standard orders equally often, so that "express: false
    wins" (the flag's majority value) is no shortcut a reward model can learn instead of reading the order.
    """
    counts = dict.fromkeys(KINDS, 0)
    express_side = 0  # wrong_express pairs so far whose chosen answer says true, minus those that say false
    assigned = []
    for record in records:
        lang, express = record["category"], json.loads(record["messages"][-1]["content"])["express"]
        picked: list[str] = []
        for _ in range(PAIRS_PER_ORDER):
            options = [k for k in KINDS if k not in picked and (lang == "zh" or k not in CHINESE_ONLY)]
            if balance_express:
                options = express_balanced(options, counts, express_side, 1 if express else -1)
            fewest = min(counts[k] for k in options)
            kind = rng.choice([k for k in options if counts[k] == fewest])
            counts[kind] += 1
            picked.append(kind)
            express_side += (1 if express else -1) if kind == "wrong_express" else 0
        assigned.append(picked)
    return assigned


def express_balanced(options: list[str], counts: dict[str, int], side: int, step: int) -> list[str]:
    """Options without wrong_express when this order would tip the express balance further; only wrong_express when
    it would even the balance out and the kind is at most one ahead of the others' fewest."""
    if "wrong_express" not in options or side == 0:
        return options
    if side * step > 0:
        return [k for k in options if k != "wrong_express"] or options
    others = [counts[k] for k in options if k != "wrong_express"]
    return ["wrong_express"] if not others or counts["wrong_express"] <= min(others) + 1 else options


def length_side(chosen: str, rejected: str) -> int:
    """+1 when the chosen answer is longer, -1 when the rejected one is, 0 for a tie."""
    return (len(chosen) > len(rejected)) - (len(chosen) < len(rejected))


def pick_balanced(rng: random.Random, chosen: str, candidates: list[str], balance: int) -> str:
    """A candidate that moves balance (chosen-longer minus rejected-longer so far) towards 0; else a tie; else any."""
    candidates = [c for c in candidates if c != chosen]
    wanted = -1 if balance > 0 else 1
    for side in (wanted, 0) if balance else ():
        preferred = [c for c in candidates if length_side(chosen, c) == side]
        if preferred:
            return rng.choice(preferred)
    return rng.choice(candidates)


def value_balanced(kind: str, chosen: str, candidates: list[str], surplus: Counter) -> list[str]:
    """For kinds that swap one field's value: among candidates holding a value the schema allows (a catalog product, a
    colour), those whose value has been rejected least often so far net of the times it was chosen (within one), so
    that no value ("cap", "black") is a cue by itself. Forms no answer is right with (a surface form, an untranslated
    name) stay candidates as they were."""
    field = VALUE_FIELDS.get(kind)
    if field is None:
        return candidates
    valued = [(c, json.loads(c)[field]) for c in candidates if c != chosen]  # repeats kept: they weigh a form up
    allowed = SCHEMA_VALUES[field]
    surpluses = [surplus[field, value] for _, value in valued if value in allowed]
    if not surpluses:
        return [c for c, _ in valued]
    least = min(surpluses)
    return [c for c, value in valued if value not in allowed or surplus[field, value] <= least + 1]


def build_pairs(rng: random.Random, records: list[dict], balance_values: bool = False) -> list[dict]:
    """Pairs for one quickstart split, in its record order; balance_values evens out which values are chosen and which
    rejected (the express flag, products, colours) — for training pairs, so that a reward model must read the order."""
    kinds = assign_kinds(rng, records, balance_express=balance_values)
    pairs, balance, surplus = [], 0, Counter()
    for record, order_kinds in zip(records, kinds, strict=True):
        prompt, answer_message = record["messages"][:-1], record["messages"][-1]
        chosen = answer_message["content"]
        for kind in order_kinds:
            text, lang = prompt[-1]["content"], record["category"]
            candidates = MISTAKES[kind](rng, json.loads(chosen), text, lang)
            if balance_values:
                candidates = value_balanced(kind, chosen, candidates, surplus)
            rejected = pick_balanced(rng, chosen, candidates, balance)
            balance += length_side(chosen, rejected)
            if kind in VALUE_FIELDS:
                field = VALUE_FIELDS[kind]
                surplus[field, json.loads(rejected)[field]] += 1
                surplus[field, json.loads(chosen)[field]] -= 1
            pairs.append({
                "id": f"{record['id']}-{kind}",
                "prompt": prompt,
                "chosen": [answer_message],
                "rejected": [{"role": "assistant", "content": rejected}],
                "category": kind,
            })  # fmt: skip
    return pairs


def express_twins(seed: int, records: list[dict], pairs: list[dict], taken: set[str]) -> list[dict]:
    """For each training order with a wrong_express pair, the same order written twice more — once urgent, once not
    (rendered from one rng state, so the texts differ little besides the urgency) — each preferring its own flag over
    the other. A reward model can only fit both by reading the urgency in the text, not by scoring the flag's value.
    New texts stay out of taken (every quickstart text) and out of each other."""
    wanted = {p["id"].removesuffix("-wrong_express") for p in pairs if p["category"] == "wrong_express"}
    chosen_orders = [r for r in records if r["id"] in wanted]
    return field_twins("express", chosen_orders, lambda index: random.Random(seed * 100_003 + index), taken)


# A field's twins: the order's two values (said, unsaid) and their id labels. A value the order leaves out is drawn.
TWIN_VALUES: dict[str, Callable[[random.Random, dict], tuple[object, object]]] = {
    "express": lambda rng, answer: (True, False),
    "size": lambda rng, answer: (answer["size"] or rng.choice(qs.SIZES), None),
    "color": lambda rng, answer: (answer["color"] or rng.choice(qs.COLORS), None),
}
TWIN_LABELS = {"express": ("urgent", "standard"), "size": ("sized", "unsized"), "color": ("coloured", "uncoloured")}
TWIN_ORDERS = 71  # orders per field for the size and colour twins: half as many as the express twins


def field_order_twins(field: str, seed: int, records: list[dict], taken: set[str]) -> list[dict]:
    """The same for a field the DPO run on the express twins still got wrong often (`size`: said but left null;
    `color`: invented or dropped): TWIN_ORDERS training orders (of sized products for `size`), written with the value
    said and unsaid, each preferring its own value. Each field draws from its own rngs, after the express twins, so
    those stay as they were."""
    rng = random.Random(f"{field}-twins-{seed}")
    eligible = [r for r in records if field != "size" or catalog_product(answer_of(r)["product"]).sized]
    chosen_orders = sorted(rng.sample(eligible, TWIN_ORDERS), key=records.index)
    return field_twins(field, chosen_orders, lambda index: random.Random(f"{field}-{seed}-{index}"), taken)


def answer_of(record: dict) -> dict:
    return json.loads(record["messages"][-1]["content"])


def field_twins(
    field: str, records: list[dict], rng_for: Callable[[int], random.Random], taken: set[str]
) -> list[dict]:
    """Each record's order written twice from one rng state, with the field's two TWIN_VALUES, each text preferring
    its own value over its twin's."""
    twins = []
    for index, record in enumerate(records):
        rng = rng_for(index)
        lang, answer = record["category"], answer_of(record)
        values = TWIN_VALUES[field](rng, answer)
        texts = twin_texts(rng, lang, [{**answer, field: value} for value in values], taken)
        for label, value, other, text in zip(TWIN_LABELS[field], values, values[::-1], texts, strict=True):
            chosen = {**answer, field: value}
            twins.append({
                "id": f"{record['id']}-{label}-{field}_twin",
                "prompt": [record["messages"][0], {"role": "user", "content": text}],
                "chosen": [{"role": "assistant", "content": dump(chosen)}],
                "rejected": [{"role": "assistant", "content": with_value(chosen, field, other)}],
                "category": f"{field}_twin",
            })  # fmt: skip
    return twins


def twin_texts(rng: random.Random, lang: str, answers: list[dict], taken: set[str]) -> tuple[str, ...]:
    """A text for each answer (one order, two values of a field) from the same rng state, all new and of a usual
    length."""
    orders = [
        qs.Order(
            a["customer"], catalog_product(a["product"]), a["quantity"], a["size"], a["color"], a["city"], a["express"]
        )
        for a in answers
    ]
    for _attempt in range(1000):
        style, state = rng.choices(qs.STYLES[lang], weights=qs.STYLE_WEIGHTS)[0], rng.random()
        texts = tuple(qs.render(random.Random(state), order, style) for order in orders)
        if len(set(texts)) == len(texts) and not taken & set(texts) and all(qs.length_ok(lang, t) for t in texts):
            taken.update(texts)
            return texts
    raise RuntimeError(f"could not write twins for {answers[0]}")


def unpaired(pairs: list[dict]) -> list[dict]:
    """KTO's unpaired format: each pair as its chosen answer (label true) and its rejected one (label false)."""
    return [
        {"id": f"{pair['id']}-{side}", "prompt": pair["prompt"], "completion": pair[side], "label": side == "chosen",
         "category": pair["category"]}
        for pair in pairs
        for side in ("chosen", "rejected")
    ]  # fmt: skip


def quickstart_records(seed: int = qs.SEED) -> dict[str, list[dict]]:
    """The quickstart's train and test records, made by its own generator (identical to its checked-in files)."""
    with tempfile.TemporaryDirectory() as tmp:
        qs.generate(Path(tmp), seed)
        return {split: qs_read(Path(tmp) / f"{split}.jsonl") for split in ("train", "test")}


def qs_read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def length_summary(pairs: list[dict]) -> dict[str, float]:
    """Shares of pairs where the chosen answer is longer, shorter, or as long (in characters)."""
    sides = Counter(length_side(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs)
    total = len(pairs)
    return {"chosen_longer": sides[1] / total, "rejected_longer": sides[-1] / total, "tie": sides[0] / total}


def generate(out_dir: Path, seed: int = SEED, with_unpaired: bool = False) -> dict[str, list[dict]]:
    """Write train.jsonl, test.jsonl, express_twins.jsonl, size_twins.jsonl and color_twins.jsonl (and
    train_unpaired.jsonl); the two splits draw from separate rngs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = quickstart_records()
    # Only the training pairs balance values: the held-out pairs keep the natural mix (most orders are not urgent), the
    # harder test for a model that learnt a value instead of the reading, and the file every earlier run scored on.
    splits = {
        name: build_pairs(random.Random(seed + offset), records[name], balance_values=name == "train")
        for offset, name in enumerate(records)
    }
    for name, pairs in splits.items():
        qs.write_jsonl(out_dir / f"{name}.jsonl", pairs)
    taken = {r["messages"][1]["content"] for split in records.values() for r in split}
    qs.write_jsonl(out_dir / "express_twins.jsonl", express_twins(seed, records["train"], splits["train"], taken))
    for field in ("size", "color"):  # in this order: each twin text is kept distinct from those written before it
        qs.write_jsonl(out_dir / f"{field}_twins.jsonl", field_order_twins(field, seed, records["train"], taken))
    if with_unpaired:
        qs.write_jsonl(out_dir / "train_unpaired.jsonl", unpaired(splits["train"]))
    return splits


def report(splits: dict[str, list[dict]]) -> str:
    """Counts per kind and the length shares, as printed after generating."""
    lines = []
    for name, pairs in splits.items():
        shares = length_summary(pairs)
        kinds = Counter(p["category"] for p in pairs)
        lines.append(
            f"{name}: {len(pairs)} pairs; chosen longer {shares['chosen_longer']:.1%}, rejected longer "
            f"{shares['rejected_longer']:.1%}, same length {shares['tie']:.1%}"
        )
        for kind in KINDS:
            kind_shares = length_summary([p for p in pairs if p["category"] == kind])
            lines.append(f"  {kind:<15} {kinds[kind]:>4}  chosen longer {kind_shares['chosen_longer']:.0%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--unpaired", action="store_true", help="also write train_unpaired.jsonl (KTO format)")
    args = parser.parse_args(argv)
    splits = generate(args.out_dir, args.seed, args.unpaired)
    print(report(splits))
    counts = f"{len(splits['train'])} train and {len(splits['test'])} test pairs, and the twins"
    print(f"wrote {counts} to {args.out_dir}")


if __name__ == "__main__":
    main()

"""Checks on the committed preference pairs (examples/preference): reproducible, well-formed, built on the quickstart's
own prompts and answers, each rejected answer wrong in the way its category says, a clean held-out split, and no
length cue."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFERENCE = ROOT / "examples" / "preference"
QUICKSTART = ROOT / "examples" / "quickstart"
SPLITS = ("train", "test")
PAIR_KEYS = {"id", "prompt", "chosen", "rejected", "category"}


def load_generator() -> ModuleType:
    name = "tunelab_examples_preference_generate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PREFERENCE / "generate.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_generator()


@pytest.fixture(scope="module")
def pairs() -> dict[str, list[dict]]:
    return {split: read_jsonl(PREFERENCE / f"{split}.jsonl") for split in SPLITS}


@pytest.fixture(scope="module")
def quickstart() -> dict[str, dict]:
    """The quickstart's checked-in records by id (train-0001, test-0001, ...)."""
    return {r["id"]: r for split in SPLITS for r in read_jsonl(QUICKSTART / f"{split}.jsonl")}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generation by the script itself, in a fresh process with a different hash seed (set order must not leak)."""
    out = tmp_path_factory.mktemp("fresh")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    command = [sys.executable, str(PREFERENCE / "generate.py"), "--out-dir", str(out), "--unpaired"]
    subprocess.run(command, check=True, capture_output=True, env=env)
    return out


def content(side: list[dict]) -> str:
    return side[0]["content"]


def generated_files(folder: Path) -> list[str]:
    """The files generate.py writes (mined.jsonl is mine.py's, from a trained model)."""
    return sorted(p.name for p in folder.glob("*.jsonl") if p.name != "mined.jsonl")


def test_generating_twice_gives_identical_files(gen: ModuleType, fresh: Path, tmp_path: Path) -> None:
    gen.generate(tmp_path, with_unpaired=True)
    written = [
        "color_twins.jsonl", "express_twins.jsonl", "size_twins.jsonl", "test.jsonl", "train.jsonl",
        "train_unpaired.jsonl",
    ]  # fmt: skip
    assert generated_files(tmp_path) == written
    for name in generated_files(tmp_path):
        assert (tmp_path / name).read_bytes() == (fresh / name).read_bytes(), name


def test_checked_in_files_equal_a_fresh_generation(fresh: Path) -> None:
    present = generated_files(PREFERENCE)
    expected = {"train.jsonl", "test.jsonl", "express_twins.jsonl", "size_twins.jsonl", "color_twins.jsonl"}
    assert expected <= set(present)
    for name in present:
        assert (PREFERENCE / name).read_bytes() == (fresh / name).read_bytes(), f"{name} is stale; rerun generate.py"


def test_counts(gen: ModuleType, pairs: dict[str, list[dict]], quickstart: dict[str, dict]) -> None:
    for split in SPLITS:
        orders = [key for key in quickstart if key.startswith(f"{split}-")]
        assert len(pairs[split]) == gen.PAIRS_PER_ORDER * len(orders), split
    assert 1000 <= len(pairs["train"]) <= 2000
    assert 150 <= len(pairs["test"]) <= 300


def test_records_are_well_formed(gen: ModuleType, pairs: dict[str, list[dict]]) -> None:
    for split, records in pairs.items():
        ids = [r["id"] for r in records]
        assert len(set(ids)) == len(ids), f"duplicate ids in {split}"
        for record in records:
            assert set(record) == PAIR_KEYS, record["id"]
            assert record["id"].startswith(f"{split}-") and record["id"].endswith(f"-{record['category']}")
            assert record["category"] in gen.KINDS
            assert [m["role"] for m in record["prompt"]] == ["system", "user"], record["id"]
            for side in ("chosen", "rejected"):
                assert [m["role"] for m in record[side]] == ["assistant"], record["id"]
            messages = record["prompt"] + record["chosen"] + record["rejected"]
            assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in messages)
            assert all(m["content"].strip() for m in messages), record["id"]
            assert content(record["chosen"]) != content(record["rejected"]), record["id"]


def test_prompt_and_chosen_are_the_quickstart_record(pairs: dict[str, list[dict]], quickstart: dict) -> None:
    """Same system prompt, same user text, the reference answer byte for byte: what an SFT run on the quickstart saw."""
    for records in pairs.values():
        for record in records:
            source = quickstart[record["id"].removesuffix(f"-{record['category']}")]
            assert record["prompt"] == source["messages"][:2], record["id"]
            assert record["chosen"] == source["messages"][2:], record["id"]
            json.loads(content(record["chosen"]))


def test_every_kind_is_present_and_evenly_mixed(gen: ModuleType, pairs: dict[str, list[dict]]) -> None:
    for split, records in pairs.items():
        counts = Counter(r["category"] for r in records)
        assert set(counts) == set(gen.KINDS), split
        assert max(counts.values()) - min(counts.values()) <= max(3, len(records) // 50), (split, counts)


def test_no_value_is_a_cue_in_the_training_pairs(gen: ModuleType, pairs: dict[str, list[dict]]) -> None:
    """In training pairs, `express: true` is the chosen side of wrong_express pairs as often as `false` (most orders
    are not urgent, so "false wins" would otherwise score well without reading the order), and no catalog product or
    colour is rejected much more often than it is chosen."""
    express = Counter(
        json.loads(content(r["chosen"]))["express"] for r in pairs["train"] if r["category"] == "wrong_express"
    )
    assert abs(express[True] - express[False]) <= 2, express
    for kind, field in gen.VALUE_FIELDS.items():
        net = Counter()
        for record in (r for r in pairs["train"] if r["category"] == kind):
            net[json.loads(content(record["rejected"]))[field]] += 1
            net[json.loads(content(record["chosen"]))[field]] -= 1
        in_schema = {value: n for value, n in net.items() if value in gen.SCHEMA_VALUES[field]}
        assert max(in_schema.values()) <= 2, (kind, in_schema)


def test_express_twins_differ_in_the_urgency_only(gen: ModuleType, pairs: dict, quickstart: dict) -> None:
    """Each training order with a wrong_express pair is written twice more, urgent and not: the same answer but for the
    flag, each twin preferring its own flag; the texts are new (no quickstart text, train or test) and distinct."""
    twins = read_jsonl(PREFERENCE / "express_twins.jsonl")
    orders = sorted(p["id"].removesuffix("-wrong_express") for p in pairs["train"] if p["category"] == "wrong_express")
    assert sorted({t["id"].rsplit("-", 2)[0] for t in twins}) == orders
    texts = [t["prompt"][1]["content"] for t in twins]
    assert len(set(texts)) == len(texts) and not set(texts) & {r["messages"][1]["content"] for r in quickstart.values()}
    for urgent, standard in zip(twins[::2], twins[1::2], strict=True):
        assert urgent["id"].endswith("-urgent-express_twin") and standard["id"].endswith("-standard-express_twin")
        reference = json.loads(quickstart[urgent["id"].rsplit("-", 2)[0]]["messages"][-1]["content"])
        for twin, flag in ((urgent, True), (standard, False)):
            chosen, rejected = json.loads(content(twin["chosen"])), json.loads(content(twin["rejected"]))
            assert chosen == {**reference, "express": flag} and rejected == {**reference, "express": not flag}
            assert twin["category"] == "express_twin" and twin["prompt"][0] == quickstart[orders[0]]["messages"][0]


def test_size_and_color_twins_differ_in_their_field_only(gen: ModuleType, quickstart: dict) -> None:
    """TWIN_ORDERS training orders per field (sized products for size) written with the value said and unsaid, each
    twin preferring its own value; the texts are new, distinct, and distinct from the express twins'."""
    by_file = {field: read_jsonl(PREFERENCE / f"{field}_twins.jsonl") for field in ("size", "color")}
    assert {field: {t["category"] for t in rows} for field, rows in by_file.items()} == {
        "size": {"size_twin"}, "color": {"color_twin"}
    }  # fmt: skip
    twins = by_file["size"] + by_file["color"]
    express_texts = {t["prompt"][1]["content"] for t in read_jsonl(PREFERENCE / "express_twins.jsonl")}
    texts = [t["prompt"][1]["content"] for t in twins]
    assert len(set(texts)) == len(texts)
    assert not set(texts) & ({r["messages"][1]["content"] for r in quickstart.values()} | express_texts)
    for field, labels in (("size", ("sized", "unsized")), ("color", ("coloured", "uncoloured"))):
        of_field = [t for t in twins if t["category"] == f"{field}_twin"]
        assert len(of_field) == 2 * gen.TWIN_ORDERS
        for said, unsaid in zip(of_field[::2], of_field[1::2], strict=True):
            order = said["id"].rsplit("-", 2)[0]
            assert order.startswith("train-") and said["id"] == f"{order}-{labels[0]}-{field}_twin"
            assert unsaid["id"] == f"{order}-{labels[1]}-{field}_twin"
            reference = json.loads(quickstart[order]["messages"][-1]["content"])
            value = json.loads(content(said["chosen"]))[field]
            assert value is not None and value == (reference[field] or value)
            for twin, mine, other in ((said, value, None), (unsaid, None, value)):
                chosen, rejected = json.loads(content(twin["chosen"])), json.loads(content(twin["rejected"]))
                assert chosen == {**reference, field: mine} and rejected == {**reference, field: other}
            if field == "size":
                assert gen.catalog_product(reference["product"]).sized


def changed_keys(chosen: dict, rejected: dict) -> set[str]:
    """Keys missing on one side or holding different values."""
    missing = object()
    return {k for k in chosen.keys() | rejected.keys() if chosen.get(k, missing) != rejected.get(k, missing)}


def only_changed(chosen: dict, rejected: dict, key: str) -> None:
    assert list(rejected) == list(chosen), "keys or their order changed"
    assert changed_keys(chosen, rejected) == {key}


def check_wrong_quantity(chosen: dict, rejected: dict, record: dict, gen: ModuleType) -> None:
    only_changed(chosen, rejected, "quantity")
    value = rejected["quantity"]
    assert isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10


def check_missing_field(chosen: dict, rejected: dict, record: dict, gen: ModuleType) -> None:
    missing = [k for k in chosen if k not in rejected]
    assert len(missing) == 1 and list(rejected) == [k for k in chosen if k not in missing]
    assert changed_keys(chosen, rejected) == set(missing)


def check_extra_field(chosen: dict, rejected: dict, record: dict, gen: ModuleType) -> None:
    extra = [k for k in rejected if k not in chosen]
    assert len(extra) == 1 and extra[0] not in gen.qs.KEYS
    assert [k for k in rejected if k not in extra] == list(chosen)
    assert changed_keys(chosen, rejected) == set(extra)


def check_missed_value(chosen: dict, rejected: dict, record: dict, gen: ModuleType) -> None:
    changed = changed_keys(chosen, rejected)
    assert len(changed) == 1 and list(rejected) == list(chosen)
    key = changed.pop()
    assert rejected[key] is None and chosen[key] is not None


def check_wrong_color(chosen: dict, rejected: dict, record: dict, gen: ModuleType) -> None:
    only_changed(chosen, rejected, "color")
    assert isinstance(rejected["color"], str) and rejected["color"]


def check_wrong_product(chosen: dict, rejected: dict, record: dict, gen: ModuleType) -> None:
    only_changed(chosen, rejected, "product")
    assert isinstance(rejected["product"], str) and rejected["product"]


def check_wrong_express(chosen: dict, rejected: dict, record: dict, gen: ModuleType) -> None:
    only_changed(chosen, rejected, "express")
    assert rejected["express"] is (not chosen["express"])


def check_romanised_name(chosen: dict, rejected: dict, record: dict, gen: ModuleType) -> None:
    changed = changed_keys(chosen, rejected)
    assert list(rejected) == list(chosen) and changed and changed <= {"customer", "city"}
    for key in changed:
        assert isinstance(rejected[key], str) and rejected[key].isascii() and not chosen[key].isascii(), key
    if "customer" in changed:
        assert rejected["customer"] == gen.romanise_name(chosen["customer"])
    if "city" in changed:
        assert rejected["city"] == gen.PINYIN_CITIES[chosen["city"]]


CHECKS = {
    "wrong_quantity": check_wrong_quantity,
    "missing_field": check_missing_field,
    "extra_field": check_extra_field,
    "missed_value": check_missed_value,
    "wrong_color": check_wrong_color,
    "wrong_product": check_wrong_product,
    "wrong_express": check_wrong_express,
    "romanised_name": check_romanised_name,
}


def check_prose_around(chosen_text: str, rejected_text: str) -> None:
    """The right JSON, verbatim, inside text that is no longer JSON as a whole."""
    assert chosen_text in rejected_text and rejected_text.strip() != chosen_text
    with pytest.raises(json.JSONDecodeError):
        json.loads(rejected_text)


def test_each_rejected_answer_is_wrong_as_its_category_says(gen: ModuleType, pairs: dict[str, list[dict]]) -> None:
    assert set(CHECKS) | {"prose_around"} == set(gen.KINDS)
    for records in pairs.values():
        for record in records:
            chosen_text, rejected_text = content(record["chosen"]), content(record["rejected"])
            if record["category"] == "prose_around":
                check_prose_around(chosen_text, rejected_text)
                continue
            try:
                CHECKS[record["category"]](json.loads(chosen_text), json.loads(rejected_text), record, gen)
            except AssertionError as error:
                raise AssertionError(f"{record['id']}: {rejected_text}") from error


def test_romanised_names_are_for_chinese_orders_only(pairs: dict[str, list[dict]]) -> None:
    for records in pairs.values():
        for record in records:
            if record["category"] == "romanised_name":
                assert not record["prompt"][1]["content"].isascii(), record["id"]


def test_the_romanisation_table_covers_every_quickstart_name(gen: ModuleType) -> None:
    qs = gen.qs
    assert set(gen.PINYIN_SURNAMES) == set(qs.SURNAMES_ZH + qs.SURNAMES_ZH_TEST)
    assert set(gen.PINYIN_GIVEN) == set(qs.GIVEN_ZH + qs.GIVEN_ZH_TEST)
    assert set(gen.PINYIN_CITIES) == set(qs.CITIES_ZH)
    names = qs.full_names("zh", test_only=False) + qs.full_names("zh", test_only=True)
    romanised = [gen.romanise_name(name) for name in names]
    assert all(r.isascii() and len(r.split()) == 2 for r in romanised)
    assert gen.romanise_name("欧阳若曦") == "Ouyang Ruoxi" and gen.romanise_name("何思远") == "He Siyuan"


def test_no_prompt_is_shared_between_train_and_test(pairs: dict[str, list[dict]]) -> None:
    train = {r["prompt"][1]["content"] for r in pairs["train"]}
    test = {r["prompt"][1]["content"] for r in pairs["test"]}
    assert not train & test


@pytest.mark.parametrize("split", SPLITS)
def test_the_longer_answer_is_not_a_cue(gen: ModuleType, pairs: dict[str, list[dict]], split: str) -> None:
    """A 'longer answer wins' rule (ties count against it, as tunelab's pair evaluation counts them) is near chance,
    and so it is among the pairs whose answers differ in length."""
    shares = gen.length_summary(pairs[split])
    assert 0.35 <= shares["chosen_longer"] <= 0.65, shares
    decided = shares["chosen_longer"] / (shares["chosen_longer"] + shares["rejected_longer"])
    assert 0.35 <= decided <= 0.65, shares


def test_unpaired_variant_holds_both_sides_of_every_pair(fresh: Path) -> None:
    pairs = read_jsonl(fresh / "train.jsonl")
    records = read_jsonl(fresh / "train_unpaired.jsonl")
    assert len(records) == 2 * len(pairs)
    for pair, good, bad in zip(pairs, records[::2], records[1::2], strict=True):
        assert set(good) == set(bad) == {"id", "prompt", "completion", "label", "category"}
        assert good["prompt"] == bad["prompt"] == pair["prompt"]
        assert (good["completion"], good["label"]) == (pair["chosen"], True)
        assert (bad["completion"], bad["label"]) == (pair["rejected"], False)


def test_mining_keeps_only_the_answers_that_differ_from_the_reference() -> None:
    mine = _load_mine()
    records = read_jsonl(PREFERENCE.parent / "quickstart" / "train.jsonl")[:3]
    references = [record["messages"][-1]["content"] for record in records]
    spaced = json.dumps(json.loads(references[0]), indent=1)  # the same JSON, laid out differently: no mistake
    wrong = json.dumps({**json.loads(references[1]), "express": 1}, ensure_ascii=False)  # 1 is not true
    pairs = mine.own_mistakes(records, [spaced, wrong, "Sure! " + references[2]])
    assert [pair["id"] for pair in pairs] == [f"{records[1]['id']}-own_mistake", f"{records[2]['id']}-own_mistake"]
    assert pairs[0]["chosen"][0]["content"] == references[1] and pairs[0]["rejected"][0]["content"] == wrong
    assert pairs[1]["prompt"] == records[2]["messages"][:-1] and pairs[1]["category"] == "own_mistake"
    # with samples: each distinct wrong answer once, the reference and layout-only variants never
    relaid = json.dumps(json.loads(references[1]), indent=2, ensure_ascii=False)
    sampled = mine.own_mistakes(records[1:2], [[wrong, references[0], wrong, relaid, references[1], "x"]])
    assert [pair["rejected"][0]["content"] for pair in sampled] == [wrong, references[0], "x"]
    assert [pair["id"] for pair in sampled] == [f"{records[1]['id']}-own_mistake{s}" for s in ("", "-2", "-3")]


def _load_mine():
    spec = importlib.util.spec_from_file_location("tunelab_examples_preference_mine", PREFERENCE / "mine.py")
    mine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mine)
    return mine


def test_mirror_pairs_prefer_each_mistaken_value_as_often_as_its_correction() -> None:
    mine = _load_mine()
    records = read_jsonl(PREFERENCE.parent / "quickstart" / "train.jsonl")
    first = json.loads(records[0]["messages"][-1]["content"])
    # a mistake on two fields of the first order: express flipped, and a name no other order has
    wrong = {**first, "express": not first["express"], "customer": "nobody at all"}
    pairs = mine.own_mistakes(records[:1], [json.dumps(wrong, ensure_ascii=False)])
    mirrors = mine.mirror_pairs(pairs, records, seed=0)
    assert [pair["category"] for pair in mirrors] == ["mirror_express"]  # the name has no mirror
    mirror = mirrors[0]
    source = next(record for record in records if mirror["id"] == f"{record['id']}-mirror_express")
    assert source["id"] != records[0]["id"] and mirror["prompt"] == source["messages"][:-1]
    chosen = json.loads(mirror["chosen"][0]["content"])
    rejected = json.loads(mirror["rejected"][0]["content"])
    # the mirror's order truly has the mistaken value, and its rejected answer carries the mistake's correction
    assert chosen["express"] is wrong["express"] and rejected["express"] is first["express"]
    rejected.pop("express"), chosen.pop("express")
    assert rejected == chosen  # nothing else changed
    assert mine.mirror_pairs(pairs, records, seed=0) == mirrors  # deterministic for a seed
    # an unparsable mistake has no fields to mirror
    assert mine.mirror_pairs(mine.own_mistakes(records[:1], ["Sure!"]), records) == []


@pytest.mark.parametrize("name", ["rm.yaml", "dpo.yaml"])
def test_the_example_recipes_validate(name: str, tiny_model_dir: Path) -> None:
    from tunelab.recipe import load_recipe

    recipe = load_recipe(PREFERENCE / name, [f"model.name={tiny_model_dir}"])  # dpo.yaml names runs/quickstart
    assert recipe.stage == name.removesuffix(".yaml") and recipe.data.test
    sources = [Path(source.path).name for source in recipe.data.sources]
    expected = {"dpo.yaml": ["express_twins.jsonl", "size_twins.jsonl"],
                "rm.yaml": ["train.jsonl", "express_twins.jsonl"]}  # fmt: skip
    assert sources == expected[name]

"""Duplicate and leakage detection (dedup.py) on a planted set with known truth, plus equivalence with datasketch."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from itertools import combinations

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.data import dedup
from tunelab.data.dedup import cross_pairs, find_duplicates, normalize, record_text

ENGLISH = """
account action answer apple area argument article balance basket battery bicycle border bridge budget button camera
candle canvas carbon carpet castle cattle cellar chapter cheese circuit climate cloud coffee column comet copper
cotton council court crystal customer dancer debate desert diamond diary dinner doctor dragon drawer engine estate
fabric factory falcon farmer feather ferry festival finger forest fortune fossil fountain galaxy garden garlic glacier
guitar hammer harbor harvest helmet highway history honey horizon hospital island jacket jungle kettle kingdom ladder
lantern lawyer lemon letter library lizard magnet marble market meadow medicine melody mirror monster morning
mountain museum needle network novel ocean office orange orbit oxygen palace paper parrot pencil pepper pilot planet
pocket poetry potato prison puzzle pyramid rabbit radio rainbow record ribbon river rocket saddle salmon satellite
scholar science season shadow signal silver soldier spider spring statue storm stream sugar summit sunset surface
teacher temple theory thunder ticket timber tomato tower tractor treasure tunnel turtle valley velvet village violin
volcano wagon wallet weather whistle window winter wizard wolf yellow zebra adopt balance borrow calculate capture
celebrate collect compare connect consider create deliver describe design develop discover divide establish explain
explore follow gather govern improve include inspect invent measure mention observe organize prepare protect provide
publish recover reduce remember repair replace require respond review select separate simplify solve support survive
translate travel understand visit wander ancient bitter brave bright careful certain clever curious distant eager
early elegant empty famous fierce fragile gentle golden hidden humble narrow nervous patient polite quiet rapid rare
rough silent simple smooth steady strange sudden tender tiny vivid warm wild wise young quickly slowly rarely often
""".split()
FUNCTION = "the a of and to in is that for it with as on by this from at which or an be".split()
CHINESE = """
我们 今天 天气 学习 工作 朋友 老师 学生 城市 乡村 河流 山峰 森林 海洋 历史 文化 经济 科学 技术 音乐
电影 书籍 图书馆 医院 医生 病人 厨房 米饭 面条 水果 苹果 香蕉 咖啡 茶叶 火车 飞机 汽车 自行车 道路 桥梁
公园 花园 春天 夏天 秋天 冬天 早上 晚上 周末 假期 旅行 计划 问题 答案 方法 原因 结果 发展 变化 环境
保护 能源 资源 数据 网络 电脑 手机 软件 系统 设计 研究 实验 理论 证据 观察 分析 总结 解释 描述 比较
选择 决定 支持 反对 讨论 合作 竞争 市场 价格 产品 服务 客户 公司 管理 团队 目标 成功 失败 努力 耐心
勇气 智慧 健康 运动 跑步 游泳 篮球 足球 比赛 冠军 记者 新闻 报纸 杂志 故事 诗歌 画家 作品 博物馆
""".split()
SYSTEM = "You are a helpful assistant. Answer clearly and completely."


def english_sentence(rng: random.Random) -> str:
    words = [rng.choice(ENGLISH if rng.random() < 0.7 else FUNCTION) for _ in range(rng.randint(8, 16))]
    return " ".join(words).capitalize() + rng.choice("...?!")


def chinese_sentence(rng: random.Random) -> str:
    words = rng.choices(CHINESE, k=rng.randint(8, 16))
    return "".join(w + ("，" if rng.random() < 0.15 else "") for w in words) + rng.choice("。。！？")


def base_record(rng: random.Random, chinese: bool) -> dict:
    sentence = chinese_sentence if chinese else english_sentence
    instruction = sentence(rng)
    output = [sentence(rng) for _ in range(rng.randint(5, 8) if chinese else rng.randint(4, 6))]
    return {"instruction": instruction, "output": output, "chinese": chinese}


def as_record(fields: dict) -> dict:
    join = "" if fields["chinese"] else " "
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": fields["instruction"]},
        {"role": "assistant", "content": join.join(fields["output"])},
    ]
    return {"id": str(id(fields)), "messages": messages}


def trivial_edit(rng: random.Random, fields: dict) -> dict:
    """Case, spacing and punctuation only: an exact duplicate after normalization."""
    out = [
        s.replace("，", ",").replace("。", "!") if fields["chinese"] else s.upper().replace(" ", "  ", 2) + "!!"
        for s in fields["output"]
    ]
    return fields | {"instruction": "  " + fields["instruction"].lower() + " ...", "output": out}


def word_edit(rng: random.Random, fields: dict) -> dict:
    """A few words replaced, inserted or deleted (about one per 30 words), or a few Chinese characters replaced."""
    out = list(fields["output"])
    if fields["chinese"]:
        text = list("".join(out))
        for _ in range(max(1, len(text) // 80)):
            text[rng.randrange(len(text))] = rng.choice("山水风云日月")
        return fields | {"output": ["".join(text)]}
    words = " ".join(out).split(" ")
    for _ in range(max(1, min(3, len(words) // 30))):
        spot = rng.randrange(len(words))
        action = rng.choice(("replace", "insert", "delete"))
        if action == "delete":
            del words[spot]
        else:
            words[spot : spot + (action == "replace")] = [rng.choice(ENGLISH)]
    return fields | {"output": [" ".join(words)]}


def reorder(rng: random.Random, fields: dict) -> dict:
    out = list(fields["output"])
    while out == fields["output"]:
        rng.shuffle(out)
    return fields | {"output": out}


@pytest.fixture(scope="module")
def planted() -> dict:
    """~300 distinct bases, ~40 distinct test-only records and planted copies; `family` says which base each is of."""
    rng = random.Random(7)
    bases = [base_record(rng, chinese=index % 4 == 0) for index in range(340)]
    items = [(fields, index, "train") for index, fields in enumerate(bases[:300])]
    items += [(fields, 300 + index, "test") for index, fields in enumerate(bases[300:])]
    for index in rng.sample(range(300), 150):
        fields = bases[index]
        edits = [trivial_edit, word_edit] + ([] if fields["chinese"] else [reorder])  # short CJK sentences: no reorder
        items.append((fields if rng.random() < 0.15 else rng.choice(edits)(rng, fields), index, "train"))
        if rng.random() < 0.4:
            leak = fields if rng.random() < 0.3 else rng.choice([trivial_edit, word_edit])(rng, fields)
            items.append((leak, index, "test"))
    rng.shuffle(items)
    return {
        "texts": [record_text(as_record(fields)) for fields, _, _ in items],
        "family": [family for _, family, _ in items],
        "split": [split for _, _, split in items],
        "base_texts": [record_text(as_record(fields)) for fields in bases],
    }


def reference_jaccard(a: str, b: str, k: int = 5) -> float:
    """Plain Python character-shingle Jaccard on normalized text: the definition the detector must match."""

    def shingles(text: str) -> set[str]:
        text = normalize(text)
        return {text[i : i + k] for i in range(max(len(text) - k + 1, 1))} if text else set()

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def precision_recall(found: set, truth: set) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(len(found), 1), hits / max(len(truth), 1)


# --- the planted set ------------------------------------------------------------------------------------------------


def test_planted_duplicates_are_found_with_high_precision_and_recall(planted):
    report = find_duplicates(planted["texts"])
    family = planted["family"]
    found = {pair for cluster in report.clusters for pair in combinations(cluster, 2)}
    truth = {(i, j) for i, j in combinations(range(len(family)), 2) if family[i] == family[j]}
    precision, recall = precision_recall(found, truth)
    normalized = [normalize(text) for text in planted["texts"]]
    near_truth = {(i, j) for i, j in truth if normalized[i] != normalized[j]}  # the pairs only MinHash/LSH can find
    near_recall = len(found & near_truth) / len(near_truth)
    print(f"duplicates: {len(truth)} planted pairs ({len(near_truth)} not exact after normalizing), ", end="")
    print(f"precision {precision:.3f}, recall {recall:.3f}, near-only recall {near_recall:.3f}")
    assert precision >= 0.95 and recall >= 0.95 and near_recall >= 0.95
    assert all(len({family[i] for i in cluster}) == 1 for cluster in report.clusters)  # no two bases ever merged


def test_planted_leaks_are_found_with_high_precision_and_recall(planted):
    family, split = planted["family"], planted["split"]
    report = find_duplicates(planted["texts"])
    leaks = cross_pairs(report, split, "test", "train")
    assert all(split[i] == "test" and split[j] == "train" and kind in ("exact", "near") for i, j, kind, _ in leaks)
    pair_precision = sum(family[i] == family[j] for i, j, _, _ in leaks) / len(leaks)
    planted_leaks = {i for i in range(len(family)) if split[i] == "test" and family[i] < 300}
    precision, recall = precision_recall({i for i, _, _, _ in leaks}, planted_leaks)
    print(
        f"leaks: {len(planted_leaks)} planted; pairs P {pair_precision:.3f}; records P {precision:.3f} R {recall:.3f}"
    )
    assert pair_precision >= 0.95 and precision >= 0.95 and recall >= 0.95


def test_distinct_bases_have_no_duplicates(planted):
    assert find_duplicates(planted["base_texts"]) == dedup.DuplicateReport()


def test_near_pair_similarity_is_the_exact_jaccard_and_respects_the_threshold(planted):
    texts = planted["texts"]
    report = find_duplicates(texts)
    assert report.near_pairs
    for i, j, similarity in report.near_pairs:
        assert i < j and normalize(texts[i]) != normalize(texts[j])
        assert similarity == pytest.approx(reference_jaccard(texts[i], texts[j]), abs=1e-12)
        assert similarity >= 0.8
    for group in report.exact_groups:
        assert len(group) >= 2 and len({normalize(texts[i]) for i in group}) == 1


def test_a_pair_at_half_similarity_is_reported_only_below_its_similarity(planted):
    first = planted["base_texts"][1]
    chinese = normalize("".join(planted["base_texts"][::4]))  # shares no shingle with the English text
    half = first + chinese[: len(normalize(first))]  # the first text plus as much new text
    similarity = reference_jaccard(first, half)
    assert 0.4 < similarity < 0.6
    assert find_duplicates([first, half], threshold=0.8) == dedup.DuplicateReport()
    loose = find_duplicates([first, half], threshold=similarity - 0.05)
    assert loose.near_pairs == [(0, 1, pytest.approx(similarity))] and loose.clusters == [[0, 1]]


# --- determinism ----------------------------------------------------------------------------------------------------


def test_same_result_twice_and_in_another_process(planted, tmp_path):
    texts = planted["texts"]
    first = dataclasses.asdict(find_duplicates(texts))
    assert dataclasses.asdict(find_duplicates(texts)) == first
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = (
        "import dataclasses, json, sys\nfrom tunelab.data.dedup import find_duplicates\n"
        "print(json.dumps(dataclasses.asdict(find_duplicates(json.load(open(sys.argv[1]))))))"
    )
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "texts.json")], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(json.dumps(first))


# --- equivalence with datasketch ------------------------------------------------------------------------------------


def test_signatures_equal_datasketch_minhash_across_block_and_slice_boundaries(planted, monkeypatch):
    texts = [normalize(t) for t in planted["base_texts"][:40]] + ["ab", "abcde", "山水", "x" * 3000]
    monkeypatch.setattr(dedup, "_SLICE_SHINGLES", 37)  # texts straddle slices and blocks
    monkeypatch.setattr(dedup, "_BLOCK_CHARS", 500)
    signatures = dedup.minhash_signatures(texts, num_perm=64, seed=3)
    for text, signature in zip(texts, signatures, strict=True):
        reference = MinHash(num_perm=64, seed=3, scheme="affine32", hashfunc=lambda value: value)
        reference.update_batch([int(h) >> 32 for h in dedup.shingle_hashes([text])[0]])
        assert np.array_equal(reference.hashvalues, signature)


def test_lsh_candidates_equal_datasketch_minhashlsh(planted):
    texts = list(dict.fromkeys(normalize(t) for t in planted["texts"]))
    signatures = dedup.minhash_signatures(texts)
    index = MinHashLSH(threshold=0.8, num_perm=128, weights=dedup._LSH_WEIGHTS)
    sketches = [LeanMinHash(seed=1, hashvalues=row, scheme="affine32") for row in signatures]
    for key, sketch in enumerate(sketches):
        index.insert(key, sketch)
    expected = sorted((i, j) for i, sketch in enumerate(sketches) for j in index.query(sketch) if i < j)
    assert dedup.lsh_candidates(signatures, 0.8) == expected and expected


def test_shingle_counts_match_the_distinct_shingles():
    texts = ["hello world hello world", "abc", "山水风云日月山水", "abcde"]
    hashes, counts = dedup.shingle_hashes(texts)
    assert counts.tolist() == [19, 1, 4, 1]
    distinct = [len(np.unique(part)) for part in np.split(hashes, np.cumsum(counts)[:-1])]
    assert distinct == [len({t[i : i + 5] for i in range(max(len(t) - 4, 1))}) for t in texts]


# --- pieces and edge cases ------------------------------------------------------------------------------------------


def test_record_text_keeps_user_and_assistant_turns_only():
    record = {
        "messages": [
            {"role": "system", "content": "shared prompt"},
            {"role": "user", "content": "question"},
            {"role": "assistant", "content": "answer"},
            {"role": "tool", "content": "tool output"},
            {"role": "user", "content": "follow-up"},
        ]
    }
    assert record_text(record) == "question\nanswer\nfollow-up"


def test_normalize_removes_case_spacing_and_ascii_and_cjk_punctuation():
    assert normalize("  Hello,\tWORLD!!  (again)\n") == "hello world again"
    assert normalize("你好，世界。「测试」！") == "你好世界测试"
    assert normalize("Ｆｕｌｌｗｉｄｔｈ　ＴＥＸＴ") == "fullwidth text"
    assert normalize("...") == ""


@given(st.text(max_size=60))
@settings(max_examples=200, deadline=None)
def test_normalize_is_idempotent(text):
    assert normalize(normalize(text)) == normalize(text)


def test_edge_cases():
    assert find_duplicates([]) == dedup.DuplicateReport()
    assert find_duplicates(["only one"]) == dedup.DuplicateReport()
    assert find_duplicates(["", "  ", "?!", "a"]) == dedup.DuplicateReport()  # nothing to compare is not duplication
    short = find_duplicates(["ab", "AB!", "abc", "x", "a b", "ab"])
    assert short.exact_groups == [[0, 1, 5]] and short.near_pairs == [] and short.clusters == [[0, 1, 5]]
    reordered = ["one two three four five six", "four five six one two three", "7 8 9 10 11 12"]
    for num_perm, threshold in ((4, 0.95), (128, 1.0), (2, 0.5)):  # settings datasketch cannot band as asked
        report = find_duplicates(reordered, threshold=threshold, num_perm=num_perm, shingle_size=1)
        assert report.near_pairs == [(0, 1, 1.0)]  # the same set of characters
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates(["a"], threshold=0)


def test_cross_pairs_orders_each_pair_from_a_to_b():
    report = dedup.DuplicateReport(exact_groups=[[0, 2, 3]], near_pairs=[(1, 4, 0.9)], clusters=[[0, 2, 3], [1, 4]])
    groups = ["train", "test", "test", "train", "dev"]
    assert cross_pairs(report, groups, "test", "train") == [(2, 0, "exact", 1.0), (2, 3, "exact", 1.0)]
    assert cross_pairs(report, groups, "dev", "test") == [(4, 1, "near", 0.9)]
    assert cross_pairs(report, groups, "train", "train") == [(0, 3, "exact", 1.0)]


@given(st.lists(st.text(alphabet="ab c", max_size=12), max_size=12), st.floats(0.3, 1.0))
@settings(max_examples=100, deadline=None)
def test_reports_are_consistent_on_random_texts(texts, threshold):
    report = find_duplicates(texts, threshold=threshold, shingle_size=3)
    members = [i for cluster in report.clusters for i in cluster]
    assert len(members) == len(set(members)) and all(cluster == sorted(cluster) for cluster in report.clusters)
    where = {i: n for n, cluster in enumerate(report.clusters) for i in cluster}
    for i, j, similarity in report.near_pairs:
        assert i < j and where[i] == where[j] and similarity >= threshold
        assert similarity == pytest.approx(reference_jaccard(texts[i], texts[j], k=3))
    for group in report.exact_groups:
        assert len({where[i] for i in group}) == 1

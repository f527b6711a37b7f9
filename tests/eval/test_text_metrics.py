"""ROUGE-L and BLEU mean something for Chinese; corpus BLEU equals sacrebleu's; JSON Schema validity."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sacrebleu.metrics import BLEU

from tunelab.errors import TunelabError
from tunelab.eval.metrics import aggregate, load_json_schema, score_records
from tunelab.eval.text_metrics import bleu_statistics, corpus_bleu, corpus_bleu_many, rouge_l, tokenize


def test_tokenize_splits_cjk_characters_and_keeps_words():
    assert tokenize("Hello, World! 3 apples") == ["hello", "world", "3", "apples"]
    assert tokenize("北京欢迎你。Beijing 2008") == ["北", "京", "欢", "迎", "你", "beijing", "2008"]
    assert tokenize("東京とソウル 서울") == ["東", "京", "と", "ソ", "ウ", "ル", "서", "울"]


def test_rouge_l_scores_chinese_where_the_default_tokenizer_gives_zero():
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"]).score("今天天气很好", "今天天气不错")["rougeL"].fmeasure
    assert default == 0.0  # rouge-score drops non-ASCII text: this is what tunelab works around
    assert rouge_l("今天天气不错", "今天天气很好") == pytest.approx(4 / 6)
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("completely different", "the cat sat") == 0.0
    assert rouge_l("", "") == 1.0 and rouge_l("", "something") == 0.0


def test_bleu_uses_the_zh_tokenizer_for_chinese_and_13a_otherwise():
    chinese = bleu_statistics("今天天气不错", "今天天气很好")
    assert chinese["stats"][:2] == [6, 6]  # characters, not one "word"
    english = bleu_statistics("the cat sat on the mat", "the cat is on the mat")
    assert english["stats"][:2] == [6, 6]
    assert 0 < english["sentence"] < 1


def test_corpus_bleu_equals_sacrebleus_corpus_score():
    hypotheses = ["the cat sat on the mat", "a dog runs in the park", "hello world", "it rains today"]
    references = ["the cat is on the mat", "the dog runs in a park", "hello there world", "today it rains"]
    expected = BLEU(tokenize="13a").corpus_score(hypotheses, [references]).score / 100
    stats = [bleu_statistics(h, r)["stats"] for h, r in zip(hypotheses, references, strict=True)]
    assert corpus_bleu(stats) == pytest.approx(expected, abs=1e-9)
    chinese = BLEU(tokenize="zh").corpus_score(["今天天气不错", "我爱北京"], [["今天天气很好", "我爱北京天安门"]])
    stats = [
        bleu_statistics("今天天气不错", "今天天气很好")["stats"],
        bleu_statistics("我爱北京", "我爱北京天安门")["stats"],
    ]
    assert corpus_bleu(stats) == pytest.approx(chinese.score / 100, abs=1e-9)
    assert corpus_bleu([]) is None


def test_vectorised_corpus_bleu_equals_sacrebleu_on_every_row():
    """The bootstrap's BLEU: brevity penalty, exp smoothing, orders without n-grams, no match at all."""
    rng = np.random.default_rng(7)
    total = -np.sort(-rng.integers(0, 7, size=(3000, 4)), axis=1)
    total[rng.random(3000) < 0.2, 2:] = 0  # short hypotheses: no 3- or 4-grams
    correct = np.minimum(total, rng.integers(0, 4, size=(3000, 4))) * (rng.random((3000, 4)) < 0.7)
    lengths = rng.integers(0, 9, size=(3000, 2))
    rows = np.column_stack([lengths, correct, total])
    rows[:3] = [[5, 5, 0, 0, 0, 0, 5, 4, 3, 2], [0, 4, 0, 0, 0, 0, 0, 0, 0, 0], [9, 4, 4, 3, 2, 1, 9, 8, 7, 6]]
    expected = [corpus_bleu([[int(x) for x in row]]) for row in rows]
    assert corpus_bleu_many(rows) == pytest.approx(expected, abs=1e-12)


def test_aggregate_text_metrics():
    scores = score_records(["今天天气不错", "the cat"], ["今天天气很好", "the cat"], ["rouge_l", "bleu", "exact_match"])
    result = aggregate(scores)
    assert result["exact_match"] == 0.5
    assert result["rouge_l"] == pytest.approx((4 / 6 + 1.0) / 2)
    assert 0 < result["bleu"] < 1
    assert set(scores[0]["bleu"]) == {"stats", "sentence"}


def test_json_schema_metric(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}))
    validator = load_json_schema(schema)
    preds = ['{"n": 3}', '{"n": "3"}', "not json", '```json\n{"n": 1}\n```']
    scores = score_records(preds, ["{}"] * 4, ["json_schema", "json_validity"], schema_validator=validator)
    assert [s["json_schema"] for s in scores] == [1.0, 0.0, 0.0, 1.0]
    assert aggregate(scores)["json_schema"] == 0.5
    with pytest.raises(TunelabError, match="needs a schema"):
        score_records(["{}"], ["{}"], ["json_schema"])


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"), ('{"type": 12}', "not a valid JSON Schema")],
)
def test_bad_json_schema_files_name_the_file(tmp_path, content, message):
    schema = tmp_path / "schema.json"
    schema.write_text(content)
    with pytest.raises(TunelabError, match=message) as error:
        load_json_schema(schema)
    assert "schema.json" in str(error.value)
    with pytest.raises(TunelabError, match="cannot read"):
        load_json_schema(tmp_path / "missing.json")


def test_the_quickstart_schema_accepts_every_reference():
    from helpers import QUICKSTART, quickstart_records

    validator = load_json_schema(QUICKSTART / "schema.json")
    references = [r["messages"][-1]["content"] for r in quickstart_records("test", 120)]
    scores = score_records(references, references, ["json_schema"], schema_validator=validator)
    assert all(s["json_schema"] == 1.0 for s in scores)

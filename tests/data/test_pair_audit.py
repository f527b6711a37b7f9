"""The audit of preference data (pair_audit.py, audit.py, pipeline.py): same or empty sides, duplicate pairs, prompt
leakage with refuse / drop / allow, the length bias and the "longer answer wins" baseline, label balance, lengths
against max_length, and the report's "Preference pairs" section."""

from __future__ import annotations

import json

import pytest

from helpers import write_jsonl
from tiny_model import build_tokenizer
from tunelab.config.schema import DataSection
from tunelab.data.audit import audit_sets
from tunelab.data.audit_report import render_markdown, summary_lines, write_audit
from tunelab.data.pair_audit import length_rule_accuracy, token_lengths
from tunelab.data.pipeline import RecipeData, check_audit, drop_leaked, load_recipe_sets, split_validation
from tunelab.data.quality import token_lengths as conversation_lengths
from tunelab.errors import DataError

QUESTIONS = [
    "What is the boiling point of water at sea level?",
    "Name the largest planet in the solar system.",
    "Who wrote the novel Pride and Prejudice?",
    "How many continents are there on Earth?",
    "What gas do plants absorb from the air?",
    "Which ocean is the deepest one on the planet?",
    "What is the chemical symbol for gold?",
    "In which year did the first human land on the Moon?",
]


def pair(pid: str, question: str, chosen: str, rejected: str, source: str = "") -> dict:
    return {"id": pid, "prompt": [{"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "source": source or f"{pid}.jsonl:1"}  # fmt: skip


def hand_made() -> dict[str, list[dict]]:
    """Train: chosen longer in 3 of 5 pairs (one tie, one shorter), one pair whose sides differ only in case and
    spacing. Test: chosen longer in 2 of 4 pairs (one tie, one shorter); its last prompt is a training prompt (leak)."""
    train = [
        pair("t0", QUESTIONS[0], "100 degrees Celsius.", "Hot."),
        pair("t1", QUESTIONS[1], "Jupiter is the largest.", "Mars."),
        pair("t2", QUESTIONS[2], "Austen.", "Charles Dickens."),  # shorter
        pair("t3", QUESTIONS[3], "Seven", "Eight"),  # tie in characters
        pair("t4", QUESTIONS[4], "Carbon  dioxide.", "carbon dioxide."),  # the same after normalisation, longer
    ]
    test = [
        pair("e0", QUESTIONS[5], "The Pacific Ocean.", "Atlantic."),
        pair("e1", QUESTIONS[6], "Au, from Latin aurum.", "Ag."),
        pair("e2", QUESTIONS[7], "1969", "1970"),  # tie
        pair("e3", QUESTIONS[1], "Jupiter.", "Saturn, the ringed giant."),  # shorter; the prompt of t1: leak
    ]
    return {"train": train, "test": test}


ROLES = {"train": "train", "test": "eval"}


def test_length_rule_accuracy_counts_ties_as_wrong():
    sets = hand_made()
    assert length_rule_accuracy(sets["train"]) == (3, 5)
    assert length_rule_accuracy(sets["test"]) == (2, 4)
    assert length_rule_accuracy([]) == (0, 0)


def test_pair_checks_and_the_length_baseline_on_the_held_out_pairs():
    result = audit_sets(hand_made(), ROLES)
    section = result.report["pairs"]
    train, test = section["per_set"]["train"], section["per_set"]["test"]
    assert train["identical"] == 1 and train["identical_listed"][0]["id"] == "t4" and test["identical"] == 0
    assert train["chars"]["chosen_longer"] == 3
    assert (train["chars"]["ties"], train["chars"]["chosen_shorter"], train["chars"]["chosen_longer_share"]) == (
        1,
        1,
        0.6,
    )
    assert (test["chars"]["chosen_longer"], test["chars"]["ties"], test["chars"]["chosen_shorter"]) == (2, 1, 1)
    assert section["held_out"] == {"sets": ["test"], "measured_in": "chars", "correct": 2, "total": 4,
                                   "length_rule_accuracy": 0.5}  # fmt: skip
    summary = result.report["summary"]
    assert (summary["identical_pairs"], summary["empty_sides"], summary["length_rule_accuracy"]) == (1, 0, 0.5)
    assert result.report["kind"] == "preference"


def test_without_test_set_the_validation_set_is_held_out_and_else_none():
    sets = hand_made()
    result = audit_sets({"train": sets["train"], "validation": sets["test"]}, {"train": "train", "validation": "eval"})
    assert result.report["pairs"]["held_out"]["sets"] == ["validation"]
    result = audit_sets({"train": sets["train"]}, {"train": "train"})
    assert result.report["pairs"]["held_out"] is None and result.report["summary"]["length_rule_accuracy"] is None
    assert "No held-out pairs" in render_markdown(result.report, {})


def test_empty_sides_are_counted():
    records = [pair("x", QUESTIONS[0], "Boiling.", " "), pair("y", QUESTIONS[1], "Jupiter.", "Mars.")]
    stats = audit_sets({"train": records}, {"train": "train"}).report["pairs"]["per_set"]["train"]
    assert stats["empty_side"] == 1 and stats["empty_listed"][0]["id"] == "x"


def test_duplicate_pairs_exact_and_near_but_not_other_answers_to_one_prompt():
    base = pair("a", QUESTIONS[0], "Water boils at 100 degrees Celsius at sea level.", "At 50 degrees.")
    records = [
        base,
        {**base, "id": "a-copy"},
        pair("a-near", QUESTIONS[0], "Water boils at 100 degrees Celsius at the sea level.", "At 50 degrees."),
        pair("a-other", QUESTIONS[0], "It is 212 degrees Fahrenheit, which is 100 Celsius.", "Cold."),
    ]
    duplicates = audit_sets({"train": records}, {"train": "train"}).report["duplicates"]
    assert duplicates["exact_extra_copies"] == 1
    assert {(p["a"]["id"], p["b"]["id"]) for p in duplicates["near"]} <= {("a", "a-near"), ("a-copy", "a-near")}
    assert duplicates["near_pairs"] == 2


def test_prompt_leakage_refuse_drop_allow():
    sets = hand_made()
    data = RecipeData(sets, ROLES, [], kind="preference")
    result = audit_sets(data.sets, data.roles)
    assert [item["id"] for item in result.leaked_records()] == ["e3"]
    assert result.leaked_records()[0]["train_id"] == "t1"
    with pytest.raises(DataError, match="1 evaluation records share the prompt of a training record"):
        check_audit(result, DataSection(), len(data.train))
    check_audit(result, DataSection(leakage="allow"), len(data.train))
    drop_leaked(data, result, DataSection(leakage="drop"), log=lambda _: None)
    assert [r["id"] for r in data.sets["test"]] == ["e0", "e1", "e2"] and len(data.train) == 5
    assert data.dropped_leaked[0]["id"] == "e3"


def test_validation_split_keeps_pairs_of_one_prompt_on_one_side():
    records = [pair(f"p{i}-{j}", QUESTIONS[i], f"Answer {j} to question {i}, in full.", f"No {j}.")
               for i in range(8) for j in range(3)]  # fmt: skip
    result = audit_sets({"train": records}, {"train": "train"})
    assert len(result.clusters) == 8  # three answers to one question are one prompt: one cluster
    train, validation = split_validation(records, DataSection(validation=0.25), result.clusters, seed=3)
    prompts = {r["prompt"][0]["content"] for r in train}
    assert validation and not prompts & {r["prompt"][0]["content"] for r in validation}


def test_unpaired_label_balance_and_prompt_leakage():
    def unpaired(uid, question, label):
        return {"id": uid, "prompt": [{"role": "user", "content": question}],
                "completion": [{"role": "assistant", "content": f"Answer to {uid}."}], "label": label,
                "source": f"{uid}.jsonl:1"}  # fmt: skip

    train = [unpaired(f"u{i}", QUESTIONS[i], i == 0) for i in range(6)]
    test = [unpaired("v0", QUESTIONS[6], True), unpaired("v1", QUESTIONS[2], False)]
    result = audit_sets({"train": train, "test": test}, ROLES)
    labels = result.report["pairs"]["per_set"]
    assert labels["train"] == {"records": 6, "desirable": 1, "undesirable": 5, "desirable_share": 0.1667,
                               "imbalanced": True}  # fmt: skip
    assert not labels["test"]["imbalanced"] and result.report["summary"]["imbalanced_label_sets"] == 1
    assert [item["id"] for item in result.leaked_records()] == ["v1"]
    markdown = render_markdown(result.report, {})
    assert "## Preference labels (unpaired)" in markdown and "**imbalanced**" in markdown


def test_token_lengths_measure_the_prompt_with_the_longer_answer():
    tokenizer = build_tokenizer()
    sets = hand_made()
    result = audit_sets(sets, ROLES, tokenizer=tokenizer, max_length=12)
    tokens = token_lengths(sets["test"], tokenizer)
    longer = [max(c["total"], r["total"]) for c, r in tokens]
    assert result.report["lengths"]["histogram"]["test"] == longer
    expected = conversation_lengths([{"messages": [*p["prompt"], *p["rejected"]]} for p in sets["test"][3:]], tokenizer)
    assert longer[3] == expected[0]["total"]  # e3's rejected answer is the longer one
    assert result.report["lengths"]["per_set"]["test"]["truncated"] == sum(1 for n in longer if n > 12)
    held_out = result.report["pairs"]["held_out"]
    assert held_out["measured_in"] == "tokens"
    assert (held_out["correct"], held_out["total"]) == length_rule_accuracy(sets["test"], tokenizer)
    assert "tokens" in result.report["pairs"]["per_set"]["train"]


def test_report_renders_the_preference_section(tmp_path):
    result = audit_sets(hand_made(), ROLES)
    written = write_audit(result.report, tmp_path)
    markdown = written["md"].read_text(encoding="utf-8")
    assert "## Preference pairs" in markdown and "| train | 5 | 1 | 0 | 60.0% |" in markdown
    assert "picks the chosen answer in 2 of 4 held-out pairs (test, by chars): 50.0%" in markdown
    assert "`t4` (train, t4.jsonl:1)" in markdown
    assert json.loads(written["json"].read_text(encoding="utf-8"))["pairs"]["held_out"]["correct"] == 2
    assert any('held-out accuracy of "the longer answer wins": 50.0%' in line for line in summary_lines(result.report))


def test_conversations_get_no_preference_section():
    chats = [{"id": "c", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]
    report = audit_sets({"train": chats}, {"train": "train"}).report
    assert "pairs" not in report and "identical_pairs" not in report["summary"] and report["kind"] == "messages"
    assert "Preference" not in render_markdown(report, {})


# --- the recipe's data ----------------------------------------------------------------------------------------------


def test_recipe_sets_of_pairs_with_a_system_prompt(tmp_path):
    sets = hand_made()
    train = write_jsonl(
        tmp_path / "train.jsonl", [{k: v for k, v in r.items() if k != "source"} for r in sets["train"]]
    )
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": QUESTIONS[6], "chosen": "Au.", "rejected": "Ag."}])
    data = DataSection(sources=[{"path": str(train), "format": "preference"}], test=str(test), system="Be brief.")
    loaded = load_recipe_sets(data)
    assert loaded.kind == "preference" and len(loaded.train) == 5 and len(loaded.sets["test"]) == 1
    assert all(r["prompt"][0] == {"role": "system", "content": "Be brief."} for r in loaded.train)
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    chats = write_jsonl(tmp_path / "chats.jsonl", [chat])
    with pytest.raises(DataError, match=r"record 'chats-0' \(chats\.jsonl:1\): is a conversation"):
        load_recipe_sets(DataSection(sources=[{"path": str(train)}], test=str(chats)))


def test_an_rl_stage_mixes_pairs_and_conversations_as_prompts_with_a_reference(tmp_path):
    """GRPO on preference pairs, scored on an SFT test set: both give a prompt and a reference answer."""
    sets = hand_made()
    train = write_jsonl(
        tmp_path / "train.jsonl", [{k: v for k, v in r.items() if k != "source"} for r in sets["train"]]
    )
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    chats = write_jsonl(tmp_path / "chats.jsonl", [chat])
    data = DataSection(sources=[{"path": str(train)}], test=str(chats), system="Be brief.")
    loaded = load_recipe_sets(data, stage="grpo")
    assert loaded.kind == "messages" and len(loaded.train) == 5
    first = loaded.train[0]
    assert first["messages"] == [{"role": "system", "content": "Be brief."}, *sets["train"][0]["prompt"],
                                 *sets["train"][0]["chosen"]]  # fmt: skip
    assert first["id"] == sets["train"][0]["id"] and first["source"].startswith("train.jsonl:")
    assert audit_sets(loaded.sets, loaded.roles).report["kind"] == "messages"  # audited as `tunelab run` audits it
    held_out = write_jsonl(tmp_path / "pairs_test.jsonl", [{"prompt": QUESTIONS[6], "chosen": "Au.", "rejected": r}
                                                           for r in ("Ag.", "Fe.")])  # fmt: skip
    loaded = load_recipe_sets(DataSection(sources=[{"path": str(train)}], test=str(held_out)), stage="rloo")
    assert [r["messages"][-1]["content"] for r in loaded.sets["test"]] == ["Au."]  # held out: once per prompt
    assert loaded.sets["test"][0]["source"] == "pairs_test.jsonl:1" and len(loaded.train) == 5
    unpaired = write_jsonl(tmp_path / "kto.jsonl", [{"prompt": "Hi", "completion": "Hello", "label": True}])
    with pytest.raises(DataError, match=r"is an unpaired preference"):  # KTO's data is not a prompt with a reference
        load_recipe_sets(DataSection(sources=[{"path": str(unpaired)}], test=str(chats)), stage="ppo")

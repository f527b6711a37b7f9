"""The data workbench through the real CLI: `run` refuses leaking or invalid data, and the `data` verbs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import tunelab.data.sources as sources
from helpers import cli, quickstart_records, tiny_recipe, write_jsonl


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leaking_recipe(tmp_path, model_dir, **data):
    train = quickstart_records("train", 48)
    leaked = [dict(train[3], id="leak-1"), dict(train[7], id="leak-2")]
    test = write_jsonl(tmp_path / "leaky_test.jsonl", quickstart_records("test", 4) + leaked)
    return tiny_recipe(tmp_path, model_dir, data={"test": str(test), **data}, export={"merge": False})


def test_run_refuses_leakage_and_keeps_the_audit(tmp_path, tiny_model_dir, capsys):
    result = cli(["run", leaking_recipe(tmp_path, tiny_model_dir)], capsys)
    assert result.exit_code == 1
    assert "2 evaluation records duplicate training records" in result.err
    assert "data.leakage=drop" in result.err and "data.leakage=allow" in result.err and "leak-1" in result.err
    run = tmp_path / "runs" / "tiny"
    report = (run / "data" / "audit" / "report.md").read_text()
    assert "leak-1" in report and "leak-2" in report
    assert json.loads((run / "status.json").read_text())["state"] == "refused"
    assert not (run / "checkpoints").exists()


def test_allow_leakage_trains_anyway(tmp_path, tiny_model_dir, capsys):
    recipe = leaking_recipe(tmp_path, tiny_model_dir)
    result = cli(["run", recipe, "data.allow_leakage=true", "train.max_steps=1", "eval.base=false"], capsys)
    assert result.exit_code == 0, result.err
    audit = json.loads((tmp_path / "runs" / "tiny" / "data" / "audit" / "report.json").read_text())
    assert audit["summary"]["leaked_records"] == 2


def test_leakage_drop_trains_without_the_leaked_records(tmp_path, tiny_model_dir, capsys):
    recipe = leaking_recipe(tmp_path, tiny_model_dir)
    result = cli(["run", recipe, "data.leakage=drop", "train.max_steps=1", "eval.base=false"], capsys)
    assert result.exit_code == 0, result.err
    assert "left out 2 leaked evaluation records (test 2)" in result.out
    run = tmp_path / "runs" / "tiny"
    summary = json.loads((run / "data" / "summary.json").read_text())
    dropped = {(d["set"], d["id"], d["train_id"], d["kind"]) for d in summary["dropped_leaked"]}
    assert dropped == {("test", "leak-1", "train-0004", "exact"), ("test", "leak-2", "train-0008", "exact")}
    assert summary["test"]["total"] == 4
    splits = json.loads((run / "data" / "splits.json").read_text())
    assert len(splits["test"]) == 4 and not {"leak-1", "leak-2"} & set(splits["test"])
    predictions = (run / "eval" / "predictions_tuned.jsonl").read_text()
    assert "leak-1" not in predictions and len(predictions.splitlines()) == 4
    audit = json.loads((run / "data" / "audit" / "report.json").read_text())
    assert audit["summary"]["leaked_records_dropped"] == 2
    assert "left out of evaluation" in (run / "data" / "audit" / "report.md").read_text()


def test_audit_of_a_drop_recipe_shows_what_a_run_leaves_out(tmp_path, tiny_model_dir, capsys):
    recipe = leaking_recipe(tmp_path, tiny_model_dir, leakage="drop")
    result = cli(["data", "audit", recipe, "--out", tmp_path / "report"], capsys)
    assert result.exit_code == 0, result.err
    assert "leaked evaluation records: 2 (2 left out of evaluation)" in result.out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {d["id"] for d in report["leakage"]["dropped"]} == {"leak-1", "leak-2"}


def test_contradicting_leakage_settings_are_refused(tmp_path, tiny_model_dir, capsys):
    recipe = leaking_recipe(tmp_path, tiny_model_dir)
    result = cli(["validate", recipe, "data.leakage=drop", "data.allow_leakage=true"], capsys)
    assert result.exit_code == 2 and "data.allow_leakage" in result.err and "data.leakage=drop" in result.err


def test_refused_run_does_not_touch_an_existing_run(tmp_path, tiny_model_dir, capsys):
    recipe = leaking_recipe(tmp_path, tiny_model_dir)
    assert (
        cli(["run", recipe, "data.allow_leakage=true", "train.max_steps=1", "eval.base=false"], capsys).exit_code == 0
    )
    run = tmp_path / "runs" / "tiny"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = cli(["run", recipe, "--overwrite"], capsys)
    assert result.exit_code == 1 and "tiny.refused-audit" in result.err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_invalid_records_refused_then_skipped_within_the_threshold(tmp_path, tiny_model_dir, capsys):
    records = quickstart_records("train", 47)
    lines = [json.dumps(r) for r in records]
    lines.insert(5, json.dumps({"messages": [{"role": "user", "content": "no answer"}]}))
    data = tmp_path / "some_bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"base": False}, export={"merge": False})
    source = f"data.sources=[{{path: {data}}}]"
    refused = cli(["run", recipe, source], capsys)
    assert refused.exit_code == 1 and "some_bad.jsonl line 6" in refused.err
    assert "data.max_invalid_fraction=" in refused.err
    accepted = cli(["run", recipe, source, "data.max_invalid_fraction=0.05", "train.max_steps=1"], capsys)
    assert accepted.exit_code == 0, accepted.err
    audit = json.loads((tmp_path / "runs" / "tiny" / "data" / "audit" / "report.json").read_text())
    assert audit["summary"]["invalid_records"] == 1 and "line 6" in audit["invalid"][0]["where"]


def test_validation_split_keeps_near_duplicates_together(tmp_path, tiny_model_dir, capsys):
    records = quickstart_records("train", 40)
    copies = [dict(r, id=f"{r['id']}-copy") for r in records[:10]]
    data = write_jsonl(tmp_path / "dupes.jsonl", records + copies)
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"base": False}, export={"merge": False})
    args = ["run", recipe, f"data.sources=[{{path: {data}}}]", "data.validation=0.3", "train.max_steps=1"]
    assert cli(args, capsys).exit_code == 0
    splits = json.loads((tmp_path / "runs" / "tiny" / "data" / "splits.json").read_text())
    train, validation = set(splits["train"]), set(splits["validation"])
    for record in records[:10]:
        assert (record["id"] in train) == (f"{record['id']}-copy" in train)
        assert (record["id"] in validation) == (f"{record['id']}-copy" in validation)


def test_audit_cli_writes_reports_and_strict_exit(tmp_path, capsys):
    train = quickstart_records("train", 60)
    a = write_jsonl(tmp_path / "a.jsonl", train[:40] + [dict(train[0], id="dup")])
    b = write_jsonl(tmp_path / "b.jsonl", train[40:] + [dict(train[1], id="cross")])
    test = write_jsonl(tmp_path / "test.jsonl", [dict(train[2], id="leak")] + quickstart_records("test", 5))
    hashes = {p: digest(p) for p in (a, b, test)}
    out = tmp_path / "report"
    result = cli(["data", "audit", a, b, "--eval", test, "--no-lengths", "--out", out, "--strict"], capsys)
    assert result.exit_code == 3  # leakage found
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["exact_duplicate_copies"] >= 2 and report["summary"]["leaked_records"] == 1
    assert report["duplicates"]["cross_set_links"] >= 1
    assert (out / "report.md").is_file() and (out / "turns.png").is_file()
    assert {p: digest(p) for p in hashes} == hashes  # inputs untouched


def test_audit_cli_write_clean(tmp_path, capsys):
    train = quickstart_records("train", 40)
    data = write_jsonl(tmp_path / "train.jsonl", train + [dict(train[0], id="dup")])
    test = write_jsonl(tmp_path / "test.jsonl", [dict(train[2], id="leak")] + quickstart_records("test", 5))
    hashes = {p: digest(p) for p in (data, test)}
    out = tmp_path / "clean"
    args = ["data", "audit", data, "--eval", test, "--no-lengths", "--out", tmp_path / "report", "--write-clean", out]
    result = cli(args, capsys)
    assert result.exit_code == 0, result.err
    assert "train.jsonl: 40 of 41 records kept; removed 1 exact duplicate" in result.out
    assert "test.jsonl: 5 of 6 records kept; removed 1 leaked from training" in result.out
    assert "clean_summary.json" in result.out
    assert len((out / "test.jsonl").read_text().splitlines()) == 5
    assert {p: digest(p) for p in hashes} == hashes
    again = cli(args, capsys)  # the folder is no longer empty
    assert again.exit_code == 1 and "not empty" in again.err and "--overwrite" in again.err
    assert cli([*args, "--overwrite"], capsys).exit_code == 0


def test_audit_cli_write_clean_for_a_recipe(tmp_path, tiny_model_dir, capsys):
    recipe = leaking_recipe(tmp_path, tiny_model_dir)
    out = tmp_path / "clean"
    result = cli(["data", "audit", recipe, "--out", tmp_path / "report", "--write-clean", out], capsys)
    assert result.exit_code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["clean_summary.json", "test.jsonl", "train.jsonl"]
    test_ids = [json.loads(line)["id"] for line in (out / "test.jsonl").read_text().splitlines()]
    assert test_ids == [r["id"] for r in quickstart_records("test", 4)]
    assert len((out / "train.jsonl").read_text().splitlines()) == 48
    clean_test = f"data.test={out / 'test.jsonl'}"
    trained = cli(["run", recipe, clean_test, "train.max_steps=1", "eval.base=false"], capsys)
    assert trained.exit_code == 0, trained.err  # the cleaned test set passes the audit


def test_audit_cli_lengths_and_contamination(tmp_path, tiny_model_dir, capsys):
    from helpers import shared_data

    mmlu = shared_data("mmlu", "data", "dev")
    item = (mmlu / "astronomy_dev.csv").read_text().splitlines()[0]
    contaminated = {
        "id": "bench",
        "messages": [{"role": "user", "content": item}, {"role": "assistant", "content": "A"}],
    }
    data = write_jsonl(tmp_path / "train.jsonl", quickstart_records("train", 30) + [contaminated])
    out = tmp_path / "report"
    args = ["data", "audit", data, "--model", tiny_model_dir, "--max-length", 64, "--against", mmlu, "--out", out]
    result = cli(args, capsys)
    assert result.exit_code == 0, result.err
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["contaminated_records"] == 1
    assert report["lengths"]["per_set"]["train.jsonl"]["truncated"] > 0
    assert (out / "token_lengths.png").is_file()


def test_split_cli_is_deterministic_and_leakage_free(tmp_path, capsys):
    records = quickstart_records("train", 200)
    records += [dict(r, id=f"{r['id']}-again") for r in records[:30]]
    data = write_jsonl(tmp_path / "all.jsonl", records)
    before = digest(data)
    for out in ("one", "two"):
        assert cli(["data", "split", data, "--out", tmp_path / out, "--stratify", "category"], capsys).exit_code == 0
    first = json.loads((tmp_path / "one" / "split_ids.json").read_text())
    assert first == json.loads((tmp_path / "two" / "split_ids.json").read_text())
    where = {record_id: name for name, ids in first.items() for record_id in ids}
    assert all(where[r["id"]] == where[f"{r['id']}-again"] for r in records[:30])
    assert digest(data) == before


def test_mix_cli_and_recipe_ratios(tmp_path, tiny_model_dir, capsys):
    domain = write_jsonl(tmp_path / "domain.jsonl", quickstart_records("train", 400))
    general = write_jsonl(tmp_path / "general.jsonl", quickstart_records("test", 100))
    out = tmp_path / "mixed.jsonl"
    result = cli(["data", "mix", f"{domain}=0.8", f"{general}=0.2", "--out", out, "--total", 500], capsys)
    assert result.exit_code == 0, result.err
    mixed = [json.loads(line) for line in out.read_text().splitlines()]
    share = sum(1 for r in mixed if r["id"].startswith("test")) / len(mixed)
    assert len(mixed) == 500 and abs(share - 0.2) <= 0.01
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"base": False}, export={"merge": False})
    sources_override = f"data.sources=[{{path: {domain}, ratio: 0.75}}, {{path: {general}, ratio: 0.25}}]"
    assert cli(["run", recipe, sources_override, "train.max_steps=1", "data.test=null"], capsys).exit_code == 0
    summary = json.loads((tmp_path / "runs" / "tiny" / "data" / "summary.json").read_text())
    assert [round(s["achieved_ratio"], 2) for s in summary["mix"]["sources"]] == [0.75, 0.25]


def test_recipe_ratios_must_sum_to_one(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    result = cli(["validate", recipe, "data.sources.0.ratio=0.5"], capsys)
    assert result.exit_code == 2 and "ratios must sum to 1" in result.err


def test_convert_cli_and_input_protection(tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", quickstart_records("train", 5))
    before = digest(source)
    out = tmp_path / "alpaca.json"
    assert cli(["data", "convert", source, "--to", "alpaca", "--out", out], capsys).exit_code == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 5 and {"instruction", "output"} <= set(rows[0])
    refused = cli(["data", "convert", source, "--to", "openai", "--out", source], capsys)
    assert refused.exit_code == 1 and digest(source) == before


@pytest.mark.parametrize(
    "content, expected",
    [
        (
            b'{"instruction": "a", "output": "b"}\n{"messages": [{"role": "user", "content": "x"}, '
            b'{"role": "assistant", "content": "y"}]}\n',
            "mixed formats",
        ),
        ("订单".encode("gbk"), "UTF-8"),
        (b"", "no records"),
    ],
)
def test_data_commands_report_bad_files(tmp_path, capsys, content, expected):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    result = cli(["data", "audit", bad, "--no-lengths", "--out", tmp_path / "r"], capsys)
    assert result.exit_code == 1 and expected in result.err and "bad.jsonl" in result.err
    assert bad.read_bytes() == content


def test_huge_line_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1024 * 1024)  # the real limit is 64 MB; the rule is the same
    bad = tmp_path / "huge.jsonl"
    bad.write_text('{"instruction": "' + "x" * (2 * 1024 * 1024) + '", "output": "y"}\n')
    result = cli(["data", "audit", bad, "--no-lengths", "--out", tmp_path / "r"], capsys)
    assert result.exit_code == 1 and "huge.jsonl line 1" in result.err and "longer than" in result.err


def test_unreadable_path(tmp_path, capsys):
    result = cli(["data", "audit", tmp_path, "--no-lengths", "--out", tmp_path / "r"], capsys)
    assert result.exit_code == 1 and "folder" in result.err


def test_augment_cli_with_a_local_model(tmp_path, tiny_model_dir, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", quickstart_records("train", 3))
    before = digest(source)
    out = tmp_path / "augmented.jsonl"
    result = cli(["data", "augment", source, "--out", out, "--model", tiny_model_dir], capsys)
    assert result.exit_code == 0, result.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows[:3]] == [r["id"] for r in quickstart_records("train", 3)]  # originals kept
    assert all(r["generated"]["from"] for r in rows[3:])
    assert digest(source) == before
    assert cli(["data", "augment", source, "--out", out], capsys).exit_code == 1  # neither --model nor --base-url


def test_audit_finds_the_duplicates_in_the_llamafactory_demo_sets():
    from helpers import shared_data
    from tunelab.audit import audit_paths

    folder = shared_data("llamafactory")
    names = ["alpaca_en_demo.json", "alpaca_zh_demo.json", "identity.json", "glaive_toolcall_en_demo.json"]
    report = audit_paths([folder / name for name in names]).report
    assert report["summary"]["records"] == 2390 and report["summary"]["invalid_records"] == 0
    by_set: dict[str, int] = {}
    for group in report["duplicates"]["exact"]:
        by_set[group[0]["set"]] = by_set.get(group[0]["set"], 0) + len(group) - 1
    assert by_set == {"alpaca_en_demo.json": 14, "alpaca_zh_demo.json": 8, "glaive_toolcall_en_demo.json": 38}
    assert report["summary"]["near_duplicate_pairs"] == 36

"""Benchmark: tunelab's MMLU scorer against lm-evaluation-harness on the same items, model and shot count.

    make bench-setup                    # once: lm-eval 0.4.13 into .venv (the `bench` extra), torch kept at 2.13.0
    .venv/bin/python bench/mmlu_vs_lm_eval.py --out bench/results/mmlu_vs_lm_eval.json    # ~7 min on 2 cores
    .venv/bin/python bench/mmlu_vs_lm_eval.py --subjects anatomy,marketing --limit 50 --shots 0

Both score the first `--limit` test items of each subject with the built-in smollm2-135m-instruct (float32, CPU):
tunelab with `run_benchmark(..., scoring="letters")`, lm-eval with one task per subject whose YAML, written at run
time to a temporary folder, copies lm-eval's own `mmlu` default template (description, `doc_to_text`, choices A-D,
`first_n` shots from the dev split, metric acc) but reads the local CSV files. Nothing is downloaded: the hub and
datasets libraries run offline and lm-eval loads the model from tunelab's converted folder. lm-eval is told not to add
a BOS token, as tunelab does not (this tokenizer adds none by default either, so it changes nothing here).

Reported per subject: items, both accuracies, and item agreement (same predicted letter; items are matched by
their order in the subject's test file and checked by question text and answer). Overall: both micro-averaged
accuracies, their difference in points, the largest log-likelihood difference between the two tools, how many
prompts differ in text (tunelab strips each choice, lm-eval's template does not: a few MMLU choices end in a
space), and the scoring times. tunelab's time is `run_benchmark` (prompt building and scoring); lm-eval's is
`simple_evaluate` on an already loaded model and already built tasks (request building, scoring and metrics). Model
loading, reading the CSVs and building lm-eval's tasks are timed apart and excluded. Both run in this one process,
tunelab first; the machine's load average is printed beside the times, which are noisy on a shared machine.

The bar: the overall accuracies agree within 1 point; the exit status is 1 when they do not. `--out` also keeps
every item's gold, tunelab and lm-eval letters.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

MODEL = "smollm2-135m-instruct"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu"
DEFAULT_SUBJECTS = (
    "abstract_algebra,anatomy,astronomy,college_biology,computer_security,econometrics,"
    "high_school_geography,logical_fallacies,marketing,world_religions"
)
COLUMNS = ["question", "A", "B", "C", "D", "answer"]
LETTERS = ["A", "B", "C", "D"]
TASK_PREFIX = "tunelab_cmp_mmlu_"  # not lm-eval's own `mmlu_<subject>` names
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
BAR_POINTS = 1.0


# --- tunelab ----------------------------------------------------------------------------------------------------------


def score_with_tunelab(data: Path, subjects: list[str], limit: int, shots: int) -> dict[str, Any]:
    """tunelab's rows (in file order per subject) and prompts, with the time of each stage."""
    from tunelab.eval.bench import run_benchmark
    from tunelab.eval.multiple_choice import build_prompts
    from tunelab.eval.tasks import load_task
    from tunelab.model.targets import load_target

    started = time.perf_counter()
    task = load_task("mmlu", data=str(data), limit=limit)
    task.items = [item for item in task.items if item.subject in subjects]
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    model, tokenizer, _ = load_target(MODEL)
    load_s = time.perf_counter() - started
    load_before, started = os.getloadavg()[0], time.perf_counter()
    _, rows = run_benchmark(model, tokenizer, task, shots=shots, scoring="letters")
    score_s, load_after = time.perf_counter() - started, os.getloadavg()[0]
    prompts = {p.item.id: p.prefix + p.question for p in build_prompts(task, shots, "letters")}
    for row, item in zip(rows, task.items, strict=True):
        row["question"], row["prompt"] = item.question, prompts[item.id]
    return {"rows": rows, "read_s": read_s, "load_s": load_s, "score_s": score_s, "loadavg": [load_before, load_after]}


# --- lm-evaluation-harness --------------------------------------------------------------------------------------------


def task_config(subject: str, data: Path, shots: int, cache_dir: Path) -> dict[str, Any]:
    """lm-eval's `mmlu_<subject>` (its `_default_template_yaml` plus the subject's description) on the local CSVs."""
    name = subject.replace("_", " ")
    return {
        "task": TASK_PREFIX + subject,
        "task_alias": subject,
        "dataset_path": "csv",
        "dataset_kwargs": {
            "data_files": {
                "test": str(data / "data" / "test" / f"{subject}_test.csv"),
                "dev": str(data / "data" / "dev" / f"{subject}_dev.csv"),
            },
            "column_names": COLUMNS,  # the files have no header row
            "na_filter": False,  # keep choices such as "None" as text, not NaN
            "cache_dir": str(cache_dir),
        },
        "test_split": "test",
        "fewshot_split": "dev",
        "fewshot_config": {"sampler": "first_n"},
        "num_fewshot": shots,
        "output_type": "multiple_choice",
        "description": f"The following are multiple choice questions (with answers) about {name}.\n\n",
        "doc_to_text": "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:",
        "doc_to_choice": LETTERS,
        "doc_to_target": "answer",  # a letter here (cais/mmlu has its index); lm-eval looks letters up in the choices
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def write_task_configs(folder: Path, data: Path, subjects: list[str], shots: int) -> list[str]:
    """One YAML per subject in `folder`; returns the task names."""
    folder.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        config = task_config(subject, data, shots, folder / "datasets-cache")
        (folder / f"{TASK_PREFIX}{subject}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return [TASK_PREFIX + subject for subject in subjects]


def score_with_lm_eval(data: Path, subjects: list[str], limit: int, shots: int, batch_size: int, workdir: Path):
    """lm-eval's samples per subject (in doc order), its own per-subject accuracies and the time of each stage."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tunelab.model.load import model_folder

    started = time.perf_counter()
    names = write_task_configs(workdir / "tasks", data, subjects, shots)
    manager = TaskManager(include_path=str(workdir / "tasks"), include_defaults=False)
    tasks = manager.load(names)["tasks"]  # built here, so the CSVs are read before the timed part
    setup_s = time.perf_counter() - started
    started = time.perf_counter()
    folder = model_folder(MODEL)
    model = HFLM(pretrained=folder, dtype="float32", device="cpu", batch_size=batch_size, add_bos_token=False)
    load_s = time.perf_counter() - started
    load_before, started = os.getloadavg()[0], time.perf_counter()
    output = lm_eval.simple_evaluate(
        model=model, tasks=list(tasks.values()), limit=limit, log_samples=True, bootstrap_iters=0, task_manager=manager,
    )  # fmt: skip
    score_s, load_after = time.perf_counter() - started, os.getloadavg()[0]
    samples = {
        name.removeprefix(TASK_PREFIX): sorted(s, key=lambda s: s["doc_id"]) for name, s in output["samples"].items()
    }
    reported = {name.removeprefix(TASK_PREFIX): r["acc,none"] for name, r in output["results"].items() if name in names}
    return {"samples": samples, "reported": reported, "setup_s": setup_s, "load_s": load_s, "score_s": score_s,
            "loadavg": [load_before, load_after], "model_folder": str(folder)}  # fmt: skip


def sample_row(sample: dict[str, Any]) -> dict[str, Any]:
    """One logged lm-eval sample as a row shaped like tunelab's: letters, log-likelihoods, question and prompt."""
    loglikelihoods = [float(response[0]) for response in sample["filtered_resps"]]
    predicted = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
    gold = sample["target"] if isinstance(sample["target"], str) else LETTERS[sample["target"]]
    contexts = {arguments[0] for arguments in _arguments(sample)}
    return {
        "doc_id": sample["doc_id"], "question": sample["doc"]["question"].strip(), "gold": gold,
        "predicted": LETTERS[predicted], "correct": LETTERS[predicted] == gold, "acc": float(sample["acc"]),
        "loglikelihoods": loglikelihoods, "prompt": contexts.pop() if len(contexts) == 1 else None,
    }  # fmt: skip


def _arguments(sample: dict[str, Any]) -> list[tuple[str, str]]:
    """(context, continuation) of each request; lm-eval logs them as tuples or as {"arg_0": ..., "arg_1": ...}."""
    arguments = sample["arguments"]
    if isinstance(arguments, dict):
        arguments = list(arguments.values())
    return [tuple(a.values()) if isinstance(a, dict) else tuple(a) for a in arguments]


# --- comparison -------------------------------------------------------------------------------------------------------


def compare_subject(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracies and item agreement of one subject; items are matched by order and checked by question text."""
    if len(ours) != len(theirs):
        raise SystemExit(f"item counts differ: tunelab {len(ours)}, lm-eval {len(theirs)}")
    pairs = list(zip(ours, theirs, strict=True))
    for index, (a, b) in enumerate(pairs):
        if a["question"] != b["question"] or a["gold"] != b["gold"]:
            raise SystemExit(f"item {index} of {a['subject']} differs: {a['question'][:60]!r} / {b['question'][:60]!r}")
    gaps = [abs(x - y) for a, b in pairs for x, y in zip(a["loglikelihoods"], b["loglikelihoods"], strict=True)]
    return {
        "n": len(pairs),
        "tunelab_correct": sum(a["correct"] for a, _ in pairs),
        "lm_eval_correct": sum(b["correct"] for _, b in pairs),
        "agree": sum(a["predicted"] == b["predicted"] for a, b in pairs),
        "prompts_differ": sum(a["prompt"] != b["prompt"] for a, b in pairs),
        "max_loglikelihood_gap": max(gaps, default=0.0),
        "items": [
            {"item": a["id"], "gold": a["gold"], "tunelab": a["predicted"], "lm_eval": b["predicted"]} for a, b in pairs
        ],
    }


def compare(subjects: list[str], tunelab: dict[str, Any], lm_eval: dict[str, Any]) -> dict[str, Any]:
    by_subject = {}
    for subject in subjects:
        ours = [row for row in tunelab["rows"] if row["subject"] == subject]
        theirs = [sample_row(sample) for sample in lm_eval["samples"][subject]]
        by_subject[subject] = compare_subject(ours, theirs)
        by_subject[subject]["lm_eval_reported_acc"] = lm_eval["reported"][subject]
    total = sum(s["n"] for s in by_subject.values())
    tunelab_acc = sum(s["tunelab_correct"] for s in by_subject.values()) / total
    lm_eval_acc = sum(s["lm_eval_correct"] for s in by_subject.values()) / total
    difference = 100 * (tunelab_acc - lm_eval_acc)
    overall = {
        "n": total,
        "tunelab_acc": tunelab_acc,
        "lm_eval_acc": lm_eval_acc,
        "difference_points": difference,
        "within_bar": abs(difference) <= BAR_POINTS,
        "agreement": sum(s["agree"] for s in by_subject.values()) / total,
        "prompts_differ": sum(s["prompts_differ"] for s in by_subject.values()),
        "max_loglikelihood_gap": max(s["max_loglikelihood_gap"] for s in by_subject.values()),
    }
    return {"by_subject": by_subject, "overall": overall}


def timings(tunelab: dict[str, Any], lm_eval: dict[str, Any]) -> dict[str, float]:
    return {
        "tunelab_read_s": tunelab["read_s"],
        "tunelab_model_load_s": tunelab["load_s"],
        "tunelab_score_s": tunelab["score_s"],
        "lm_eval_task_setup_s": lm_eval["setup_s"],
        "lm_eval_model_load_s": lm_eval["load_s"],
        "lm_eval_score_s": lm_eval["score_s"],
        "ratio_lm_eval_over_tunelab": lm_eval["score_s"] / tunelab["score_s"],
        "tunelab_loadavg_start_end": tunelab["loadavg"],
        "lm_eval_loadavg_start_end": lm_eval["loadavg"],
    }


def print_report(comparison: dict[str, Any], times: dict[str, Any], shots: int) -> None:
    print(f"{'subject':<24} {'n':>4} {'tunelab':>8} {'lm-eval':>8} {'agree':>7}")
    for subject, s in comparison["by_subject"].items():
        print(
            _table_row(
                subject, s["n"], s["tunelab_correct"] / s["n"], s["lm_eval_correct"] / s["n"], s["agree"] / s["n"]
            )
        )
    o = comparison["overall"]
    print(_table_row("overall", o["n"], o["tunelab_acc"], o["lm_eval_acc"], o["agreement"]))
    verdict = "within" if o["within_bar"] else "NOT within"
    print(f"{shots}-shot accuracy: tunelab {o['tunelab_acc']:.2%}, lm-eval {o['lm_eval_acc']:.2%}; "
          f"difference {o['difference_points']:+.2f} points ({verdict} {BAR_POINTS:g} point)")  # fmt: skip
    print(f"prompts differing in text: {o['prompts_differ']} of {o['n']}; "
          f"largest log-likelihood difference: {o['max_loglikelihood_gap']:.2e}")  # fmt: skip
    t = times
    print(f"scoring s: tunelab {t['tunelab_score_s']:.1f} (run_benchmark: prompts + scoring), "
          f"lm-eval {t['lm_eval_score_s']:.1f} (simple_evaluate: requests + scoring + metrics); "
          f"ratio lm-eval/tunelab {t['ratio_lm_eval_over_tunelab']:.1f}x")  # fmt: skip
    print(f"excluded s: model load tunelab {t['tunelab_model_load_s']:.1f}, lm-eval {t['lm_eval_model_load_s']:.1f}; "
          f"reading the CSVs tunelab {t['tunelab_read_s']:.1f}, "
          f"lm-eval task setup {t['lm_eval_task_setup_s']:.1f}")  # fmt: skip
    ours, theirs = t["tunelab_loadavg_start_end"], t["lm_eval_loadavg_start_end"]
    print(f"machine load (1-minute average, start -> end of scoring; {os.cpu_count()} cores): "
          f"tunelab {ours[0]:.1f} -> {ours[1]:.1f}, lm-eval {theirs[0]:.1f} -> {theirs[1]:.1f}")  # fmt: skip


def _table_row(name: str, n: int, tunelab_acc: float, lm_eval_acc: float, agreement: float) -> str:
    return f"{name:<24} {n:>4} {tunelab_acc:8.1%} {lm_eval_acc:8.1%} {agreement:7.1%}"


def check_subjects(data: Path, subjects: list[str]) -> None:
    missing = [
        s for s in subjects for split in ("test", "dev") if not (data / "data" / split / f"{s}_{split}.csv").is_file()
    ]
    if missing:
        raise SystemExit(f"no test or dev CSV under {data}/data for: {', '.join(sorted(set(missing)))}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", default=DEFAULT_SUBJECTS, help="comma-separated MMLU subjects")
    parser.add_argument("--limit", type=int, default=20, help="test items per subject (the first ones in the file)")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MMLU folder (data/{dev,test}/*.csv)")
    parser.add_argument("--batch-size", type=int, default=8, help="lm-eval's batch size")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("lm_eval") is None:
        raise SystemExit("lm-eval is not installed in this environment: run `make bench-setup` first")
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()]
    data = args.data.resolve()
    check_subjects(data, subjects)
    os.environ.update(OFFLINE)  # before the hub, datasets and transformers libraries are imported
    tunelab = score_with_tunelab(data, subjects, args.limit, args.shots)
    with tempfile.TemporaryDirectory(prefix="mmlu-vs-lm-eval-") as workdir:
        lm_eval = score_with_lm_eval(data, subjects, args.limit, args.shots, args.batch_size, Path(workdir))
    comparison = compare(subjects, tunelab, lm_eval)
    times = timings(tunelab, lm_eval)
    print_report(comparison, times, args.shots)
    if args.out:
        settings = {"model": MODEL, "model_folder": lm_eval["model_folder"], "data": str(data), "subjects": subjects,
                    "limit": args.limit, "shots": args.shots, "lm_eval_batch_size": args.batch_size}  # fmt: skip
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump({"settings": settings, **comparison, "timings": times}, handle, indent=2)
    sys.exit(0 if comparison["overall"]["within_bar"] else 1)


if __name__ == "__main__":
    main()

"""The command line: a table of verbs, each a few lines that call the library.

Imports are lazy so that `tunelab --help` answers at once. A `TunelabError` is printed without a traceback and the
process exits non-zero (2 for recipe problems, 1 for the rest).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in tunelab (a TunelabError exits 1, or 2 for a recipe problem)


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="the recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=20")


def run_command(args: argparse.Namespace) -> int:
    from tunelab.config.load import load_recipe
    from tunelab.report import print_outcome
    from tunelab.workflow import run_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    outcome = run_recipe(recipe, resume=args.resume, overwrite=args.overwrite)
    print_outcome(outcome)
    return 0 if outcome.state == "completed" else 130


def validate_command(args: argparse.Namespace) -> int:
    from tunelab.config.load import load_recipe
    from tunelab.workflow import preflight_warnings

    recipe = load_recipe(args.recipe, args.overrides)
    print(f"{args.recipe}: valid (run {recipe.name!r}, method {recipe.method.type}, model {recipe.model.name})")
    for warning in preflight_warnings(recipe):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def status_command(args: argparse.Namespace) -> int:
    from tunelab.runs import RunDir, describe_status

    for path in args.runs:
        run = RunDir.open(path)
        print(f"{run.path}: {describe_status(run.status())}")
    return 0


def chat_command(args: argparse.Namespace) -> int:
    from tunelab.chat import chat_loop, load_chat_model, one_answer

    session = load_chat_model(args.target, system=args.system, max_new_tokens=args.max_new_tokens)
    if args.prompt is not None:
        print(one_answer(session, args.prompt))
        return 0
    chat_loop(session)
    return 0


def data_preview_command(args: argparse.Namespace) -> int:
    from tunelab.config.load import load_recipe
    from tunelab.preview import preview_recipe

    preview_recipe(load_recipe(args.recipe, args.overrides), index=args.index)
    return 0


def data_audit_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tunelab.data.audit_report import summary_lines, write_audit
    from tunelab.data.clean import check_clean_dir, clean_lines, write_clean
    from tunelab.data.workbench import audit_paths, audit_recipe

    if args.write_clean:
        check_clean_dir(args.write_clean, args.overwrite)  # before the audit, which can take minutes
    if len(args.inputs) == 1 and args.inputs[0].endswith((".yaml", ".yml")):
        result = audit_recipe(args.inputs[0], against=args.against, threshold=args.threshold)
    else:
        model = None if args.no_lengths else args.model
        result = audit_paths(args.inputs, args.eval, args.against, model, args.max_length, args.threshold)
    cleaned = write_clean(result, args.write_clean, args.overwrite) if args.write_clean else None
    written = write_audit(result.report, Path(args.out))
    console = Console(soft_wrap=True)  # paths are printed whole, to be copied
    for line in summary_lines(result.report):
        console.print(line)
    console.print(f"report: {written['md']}  (full lists: {written['json']})")
    for line in clean_lines(cleaned) if cleaned else []:
        console.print(line, markup=False)
    problems = result.leaks() + result.invalid()
    return 3 if args.strict and problems else 0


def data_split_command(args: argparse.Namespace) -> int:
    from tunelab.data.workbench import split_file

    summary = split_file(args.file, args.out, _fractions(args.fractions), args.seed, args.stratify, args.threshold)
    for name, info in summary["splits"].items():
        print(f"{name}: {info['count']} records ({info['fraction']:.1%}, target {info['target_fraction']:.1%})")
    for warning in summary.get("warnings", []):
        print(f"note: {warning}")
    print(f"{summary['clusters']} near-duplicate clusters kept whole; files and split_ids.json in {args.out}")
    return 0


def data_convert_command(args: argparse.Namespace) -> int:
    from tunelab.data.convert import convert_file

    count = convert_file(args.file, args.out, args.to, args.from_format, overwrite=args.overwrite)
    print(f"{count} records written to {args.out} ({args.to})")
    return 0


def _fractions(text: str) -> dict[str, float]:
    from tunelab.errors import DataError

    try:
        pairs = [item.split("=") for item in text.split(",")]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise DataError(
            "--fractions", f"cannot read {text!r}", "write e.g. train=0.8,validation=0.1,test=0.1"
        ) from None


def data_mix_command(args: argparse.Namespace) -> int:
    from tunelab.data.workbench import mix_files
    from tunelab.errors import DataError

    sources = []
    for item in args.sources:
        path, sep, ratio = item.rpartition("=")
        try:
            sources.append((path, float(ratio)))
        except ValueError:
            raise DataError(item, "expected FILE=RATIO", "e.g. domain.jsonl=0.8 general.jsonl=0.2") from None
        if not sep:
            raise DataError(item, "expected FILE=RATIO", "e.g. domain.jsonl=0.8 general.jsonl=0.2")
    report = mix_files(sources, args.out, args.seed, args.total)
    for row in report["sources"]:
        print(f"{row['name']}: {row['taken']} records, {row['achieved_ratio']:.1%} (target {row['target_ratio']:.1%})")
    print(f"{report['total']} records written to {args.out}")
    return 0


def data_augment_command(args: argparse.Namespace) -> int:
    from tunelab.data.augment import EndpointParaphraser, LocalParaphraser, augment_file
    from tunelab.errors import DataError

    if bool(args.model) == bool(args.base_url):
        raise DataError(
            "tunelab data augment", "give either --model or --base-url", "e.g. --model smollm2-135m-instruct"
        )
    if args.base_url:
        paraphraser = EndpointParaphraser(args.base_url, args.endpoint_model, api_key_env=args.api_key_env)
    else:
        paraphraser = LocalParaphraser(args.model)
    report = augment_file(
        args.file, args.out, paraphraser, overwrite=args.overwrite, prompt_file=args.prompt_file,
        per_record=args.per_record, seed=args.seed,
    )  # fmt: skip
    print(report.summary())
    print(f"originals and kept paraphrases written to {args.out}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from tunelab.eval.evaluate import EvalSettings, evaluate_target
    from tunelab.report import print_eval_report

    settings = EvalSettings(
        args.data, args.metrics, args.json_schema, args.max_new_tokens, args.batch_size, args.limit, args.out
    )
    report, folder = evaluate_target(args.target, settings)
    print_eval_report(report)
    print(f"predictions and report: {folder}")
    return 0


def judge_command(args: argparse.Namespace) -> int:
    from tunelab.eval.pairwise import JudgeSettings, judge_targets

    settings = JudgeSettings(
        judge=args.judge, judge_model=args.judge_model, api_key_env=args.judge_api_key_env, data=args.data,
        reference=args.reference, prompt_file=args.prompt_file, limit=args.limit, out=args.out,
        max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    _, folder = judge_targets(args.a, args.b, settings)
    print(f"every verdict with the judge's text: {folder / 'verdicts.jsonl'}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    from tunelab.export.export import export_run

    result = export_run(args.run, merged=args.merged, dtype=args.dtype, out=args.out, overwrite=args.overwrite)
    print(f"{result['kind']} export of {args.run}: {result['folder']}")
    check = result.get("verification")
    if check:
        verdict = "identical greedy outputs" if check["identical_outputs"] else f"{check['mismatches']} outputs DIFFER"
        print(f"merged vs adapter model ({check['dtype']}): {verdict}, max |Δlogit| {check['max_abs_logit_diff']:.1e}")
    return 0


def _adapters(items: list[str]) -> dict[str, str]:
    from tunelab.errors import TunelabError

    adapters = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise TunelabError(f"--adapter {item!r}: write NAME=PATH, e.g. --adapter orders=runs/orders")
        if name in adapters:
            raise TunelabError(f"--adapter {name!r} is given twice; each adapter needs its own name")
        adapters[name] = path
    return adapters


def _key_from_env(variable: str | None, flag: str) -> str | None:
    from tunelab.errors import TunelabError

    if variable is None:
        return None
    key = os.environ.get(variable, "")
    if not key:
        raise TunelabError(f"{flag} {variable}: that environment variable is empty; export a key in it first")
    return key


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from tunelab.serve.app import ServeSettings, create_app
    from tunelab.serve.engine import Engine, EngineSettings

    adapters = _adapters(args.adapter)
    settings = ServeSettings(
        api_key=_key_from_env(args.api_key_env, "--api-key-env"),
        admin_key=_key_from_env(args.admin_key_env, "--admin-key-env"),
        max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens,
        default_system=not args.no_default_system,
    )  # fmt: skip
    engine_settings = EngineSettings(
        max_batch_rows=args.max_batch, max_queued_rows=args.max_queue, request_timeout_s=args.timeout,
        mixed_batches=not args.one_at_a_time,
    )  # fmt: skip
    engine = Engine(args.model, adapters, engine_settings)
    print(f"serving {', '.join(engine.names)} on http://{args.host}:{args.port}/v1", flush=True)
    try:
        uvicorn.run(create_app(engine, settings), host=args.host, port=args.port, log_level=args.log_level)
    finally:
        engine.close()
    return 0


def ui_command(args: argparse.Namespace) -> int:
    from tunelab.ui.app import serve_ui

    serve_ui(args.workspace, host=args.host, port=args.port, auth_env=args.auth_env, language=args.language,
             max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))  # fmt: skip
    return 0


def report_command(args: argparse.Namespace) -> int:
    from tunelab.eval.run_report import write_report
    from tunelab.runs import RunDir

    paths = write_report(RunDir.open(args.run))
    print(f"report: {paths['html']}  (markdown: {paths['md']})")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tunelab.report import compare_table

    Console(width=None if sys.stdout.isatty() else 200).print(compare_table(args.runs))  # pipes get whole rows
    return 0


def bench_command(args: argparse.Namespace) -> int:
    from tunelab.eval.bench import bench_target, format_report

    report, folder = bench_target(
        args.target, args.task, args.data, args.split, args.shots, args.limit, args.out, args.scoring
    )
    print(format_report(report, subjects=not args.no_subjects))
    print(f"report: {folder / 'report.json'}  (every item: {folder / 'items.jsonl'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunelab", description="Fine-tune, evaluate and export language models.")
    parser.add_argument("--version", action="version", version=_version())
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    run = verbs.add_parser("run", help="data → baseline eval → fine-tune → eval → merged export")
    _recipe_arguments(run)
    run.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="delete an existing run of the same name first")
    run.set_defaults(func=run_command)

    status = verbs.add_parser("status", help="what a run is doing or how it ended (a killed run shows as interrupted)")
    status.add_argument("runs", nargs="+", help="run directories")
    status.set_defaults(func=status_command)

    validate = verbs.add_parser("validate", help="check a recipe without training")
    _recipe_arguments(validate)
    validate.set_defaults(func=validate_command)

    chat = verbs.add_parser("chat", help="talk to a run's model or any model")
    chat.add_argument("target", help="a run directory, a model folder, a .gguf file or a built-in alias")
    chat.add_argument("--prompt", help="answer this one prompt and exit")
    chat.add_argument("--system", help="a system prompt (default for a run: the one all its training records share)")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.set_defaults(func=chat_command)

    evaluate = verbs.add_parser("eval", help="held-out metrics for a run or a model (predictions.jsonl + report)")
    evaluate.add_argument("target", help="a run directory, an adapter folder, a model folder, a .gguf file or an alias")
    evaluate.add_argument("--data", help="a test file (default for a run: its recipe's data.test)")
    evaluate.add_argument("--metrics", nargs="+", help="json_validity json_schema field_accuracy exact_match rouge_l "
                          "bleu (default: the recipe's, or chosen from the references)")  # fmt: skip
    evaluate.add_argument("--json-schema", help="a JSON Schema file for the json_schema metric")
    evaluate.add_argument("--max-new-tokens", type=int)
    evaluate.add_argument("--batch-size", type=int)
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N records")
    evaluate.add_argument("--out", help="output folder (default: the run's eval/, or eval/<model>)")
    evaluate.set_defaults(func=eval_command)

    judge = verbs.add_parser("judge", help="pairwise A/B comparison of two models by a judge, in both orders")
    judge.add_argument("--a", required=True, help="model A: a run directory, adapter folder, model folder or alias")
    judge.add_argument("--b", required=True, help="model B, e.g. the base model")
    judge.add_argument("--judge", required=True, help="a judge model (alias, folder, run) or an OpenAI-compatible "
                       "base URL such as http://127.0.0.1:8000/v1")  # fmt: skip
    judge.add_argument("--judge-model", default="default", help="the model name to request from a judge endpoint")
    judge.add_argument("--judge-api-key-env", help="environment variable holding the judge endpoint's API key")
    judge.add_argument("--data", help="test prompts (default: the test set of run A or B)")
    judge.add_argument("--reference", action="store_true", help="show the judge the test reference answer")
    judge.add_argument("--prompt-file", help="your own judge prompt with {question}, {answer_a}, {answer_b} "
                       "(and {reference}) placeholders")  # fmt: skip
    judge.add_argument("--limit", type=int, help="judge only the first N prompts")
    judge.add_argument("--max-new-tokens", type=int, default=256, help="answer length for A and B")
    judge.add_argument("--out", help="output folder (default: <run A>/eval/judge/<B>, or judge/<A>-vs-<B>)")
    judge.set_defaults(func=judge_command)

    export = verbs.add_parser("export", help="a run's adapter (PEFT/vLLM layout) or merged model folder, verified")
    export.add_argument("run", help="a run directory")
    export.add_argument("--merged", action="store_true", help="merge the adapter into the base model")
    export.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="dtype of a merged export")
    export.add_argument("--out", help="output folder (default: <run>/export/adapter or <run>/export/merged)")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    export.set_defaults(func=export_command)

    serve = verbs.add_parser("serve", help="an OpenAI-compatible server: one base model, many adapters, batched")
    serve.add_argument("--model", default="smollm2-135m-instruct", help="the base model (alias, folder, .gguf)")
    serve.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an adapter to serve as model NAME: a run directory or an adapter folder (repeatable)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key-env", help="environment variable holding the API key that clients must send")
    serve.add_argument("--admin-key-env", help="environment variable holding the key for /admin/adapters")
    serve.add_argument("--max-batch", type=int, default=16, help="sequences generated together")
    serve.add_argument("--max-queue", type=int, default=64, help="sequences waiting before requests get 429")
    serve.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take")
    serve.add_argument("--max-tokens", type=int, default=2048, help="the most tokens a request may ask for")
    serve.add_argument("--max-prompt-tokens", type=int, default=4096)
    serve.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="no batching: one request at a time, switching adapters (for comparisons)",
    )
    serve.add_argument(
        "--no-default-system",
        action="store_true",
        help="do not give chat requests without a system message the system prompt the run's training data shared",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=serve_command)

    ui = verbs.add_parser("ui", help="the web UI: data, train, watch, evaluate, chat, export, serve")
    ui.add_argument("--workspace", default=".", help="folder for recipes, uploads, audits and runs (default: here)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    ui.add_argument("--port", type=int, default=7860)
    ui.add_argument("--auth-env", help="environment variable holding the password (required off loopback)")
    ui.add_argument("--language", choices=["en", "zh"], default="en", help="the page's language (switchable there)")
    ui.add_argument("--max-upload-mb", type=float, default=200, help="the largest file an upload may be")
    ui.set_defaults(func=ui_command)

    report = verbs.add_parser("report", help="write a run's eval/report.html and report.md again")
    report.add_argument("run", help="a run directory")
    report.set_defaults(func=report_command)

    compare = verbs.add_parser("compare", help="a table of runs: losses, metrics, forgetting")
    compare.add_argument("runs", nargs="+", help="run directories")
    compare.set_defaults(func=compare_command)

    bench = verbs.add_parser("bench", help="multiple-choice benchmark by the log-likelihood of the answer letters")
    bench.add_argument("target", help="a run directory, an adapter folder, a model folder, a .gguf file or an alias")
    bench.add_argument("--task", default="probe", help="probe (built in), mmlu, cmmlu, ceval, arc_easy, arc_challenge, "
                       "or a benchmark file/folder")  # fmt: skip
    bench.add_argument("--data", help="the benchmark folder (for mmlu, cmmlu, ceval, arc_*)")
    bench.add_argument("--split", help="the split to score (default: test; C-Eval val; ARC test, else dev)")
    bench.add_argument("--shots", type=int, default=5, help="solved examples before each question (default 5)")
    bench.add_argument("--limit", type=int, help="at most this many items per subject")
    scoring_help = "letters: the answer letter's likelihood (MMLU, CMMLU, C-Eval); text: each choice's (ARC, probe)"
    bench.add_argument("--scoring", choices=["letters", "text"], help=scoring_help)
    bench.add_argument("--out", help="folder for report.json and items.jsonl")
    bench.add_argument("--no-subjects", action="store_true", help="print categories only")
    bench.set_defaults(func=bench_command)

    data = verbs.add_parser("data", help="data tools")
    data_verbs = data.add_subparsers(dest="data_verb", metavar="DATA_VERB")
    data_verbs.required = True
    preview = data_verbs.add_parser("preview", help="print one tokenized example with the trained spans marked")
    _recipe_arguments(preview)
    preview.add_argument("--index", type=int, default=0, help="which training example to show")
    preview.set_defaults(func=data_preview_command)

    audit = data_verbs.add_parser("audit", help="invalid records, duplicates, leakage, contamination, lengths")
    audit.add_argument("inputs", nargs="+", help="data files (each audited as a set), or one recipe.yaml")
    audit.add_argument("--eval", nargs="*", default=[], help="test/validation files that must not overlap the others")
    audit.add_argument("--against", nargs="*", default=[], help="benchmark files or folders to check contamination")
    audit.add_argument("--model", default="smollm2-135m-instruct", help="tokenizer for token lengths")
    audit.add_argument("--no-lengths", action="store_true", help="skip token lengths (no tokenizer needed)")
    audit.add_argument("--max-length", type=int, default=None, help="report truncation at this many tokens")
    audit.add_argument("--threshold", type=float, default=0.8, help="near-duplicate Jaccard threshold")
    audit.add_argument("--out", default="audit", help="folder for report.md, report.json and plots")
    audit.add_argument("--strict", action="store_true", help="exit 3 when leakage or invalid records are found")
    clean_help = "also write cleaned copies of the inputs here: no invalid records, no extra exact copies, no leaks"
    audit.add_argument("--write-clean", metavar="DIR", help=clean_help)
    audit.add_argument("--overwrite", action="store_true", help="--write-clean into a non-empty folder (not inputs)")
    audit.set_defaults(func=data_audit_command)

    split = data_verbs.add_parser("split", help="deterministic split where near-duplicates never straddle splits")
    split.add_argument("file")
    split.add_argument("--out", required=True, help="folder for <split>.jsonl and split_ids.json")
    split.add_argument("--fractions", default="train=0.8,validation=0.1,test=0.1")
    split.add_argument("--seed", type=int, default=42)
    split.add_argument("--stratify", help="a record field (e.g. category) whose proportions each split keeps")
    split.add_argument("--threshold", type=float, default=0.8, help="near-duplicate Jaccard threshold")
    split.set_defaults(func=data_split_command)

    mix = data_verbs.add_parser("mix", help="mix sources at target ratios (e.g. domain 80%%, general 20%%)")
    mix.add_argument("sources", nargs="+", metavar="FILE=RATIO")
    mix.add_argument("--out", required=True, help="the mixed JSONL file to write")
    mix.add_argument("--seed", type=int, default=42)
    mix.add_argument("--total", type=int, default=None, help="records in the mix (default: no record copied)")
    mix.set_defaults(func=data_mix_command)

    convert = data_verbs.add_parser("convert", help="between alpaca, sharegpt, openai and preference formats")
    convert.add_argument("file")
    convert.add_argument("--to", required=True, choices=["alpaca", "sharegpt", "openai", "trl", "stack_exchange"])
    convert.add_argument("--from", dest="from_format", default="auto")
    convert.add_argument("--out", required=True, help="a new .jsonl or .json file")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output file (never an input)")
    convert.set_defaults(func=data_convert_command)

    augment = data_verbs.add_parser("augment", help="paraphrase instructions with a model; originals are kept")
    augment.add_argument("file")
    augment.add_argument("--out", required=True, help="a new JSONL file: originals + kept paraphrases")
    augment.add_argument("--model", help="a local model (alias, folder, .gguf) to paraphrase with")
    augment.add_argument("--base-url", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    augment.add_argument("--endpoint-model", default="default", help="the model name to ask the endpoint for")
    augment.add_argument("--api-key-env", help="environment variable holding the endpoint's API key")
    augment.add_argument("--per-record", type=int, default=1, help="paraphrases per record")
    augment.add_argument("--seed", type=int, default=0)
    augment.add_argument("--prompt-file", help="your own paraphrase prompt with an {instruction} placeholder")
    augment.add_argument("--overwrite", action="store_true", help="replace an existing output file (never the input)")
    augment.set_defaults(func=data_augment_command)
    return parser


def _version() -> str:
    from tunelab import __version__

    return f"tunelab {__version__}"


def _internal_error(error: Exception) -> int:
    """An exception that is not a TunelabError is a bug in tunelab, not a problem with the user's input: one line
    that says so, the traceback in a file to attach to a bug report (TUNELAB_DEBUG=1 raises it instead)."""
    import tempfile
    import traceback

    if os.environ.get("TUNELAB_DEBUG"):
        raise error
    text = "".join(traceback.format_exception(error))
    with tempfile.NamedTemporaryFile("w", prefix="tunelab-error-", suffix=".txt", delete=False) as handle:
        handle.write(text)
    print(f"error: internal error ({type(error).__name__}: {error}). This is a bug in tunelab, not in your input; "
          f"the traceback is in {handle.name} (run with TUNELAB_DEBUG=1 to see it here).", file=sys.stderr)  # fmt: skip
    return INTERNAL_ERROR


def _quiet_bars_when_piped() -> None:
    """Output to a file or a pipe gets plain lines: no `\r` progress-bar frames from the libraries underneath."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also transformers' bars
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # plain tqdm bars, e.g. transformers' GGUF conversion


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_bars_when_piped()
    # Deprecation notices from upstream libraries are for library authors, not for tunelab's users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = build_parser()
    # Overrides may come before or after flags (`run r.yaml --resume train.max_steps=8`): argparse stops collecting
    # a `nargs="*"` positional at the first flag, so the rest is gathered here.
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    func: Callable[[argparse.Namespace], int] = args.func
    from tunelab.errors import TunelabError

    try:
        return func(args)
    except TunelabError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, reported as one: see _internal_error
        return _internal_error(error)


if __name__ == "__main__":
    sys.exit(main())

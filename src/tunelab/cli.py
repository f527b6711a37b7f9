"""The command line: a table of verbs, each a few lines that call the library.

The table, `tunelab.cli_verbs.VERBS`, holds every verb (and sub-verb, such as `data audit`) with its help and its
arguments as data; `build_parser` makes argparse parsers of it, and the verb `data audit` is handled here by
`data_audit_command`. The library is imported inside the handlers, so that `tunelab --help` answers at once (the
table imports only what its choices come from: the recipe schema, data/convert and ui/i18n). A `TunelabError` is
printed without a traceback and the process exits non-zero (2 for recipe problems, 1 for the rest).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from tunelab.cli_plan import advise_command, estimate_command  # noqa: F401 (dispatched by name)
from tunelab.cli_support import (  # noqa: F401 (INTERNAL_ERROR)
    INTERNAL_ERROR,
    adapter_names,
    internal_error,
    key_from_env,
    quiet_bars_when_piped,
)
from tunelab.cli_verbs import GROUPS, VERBS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunelab", description="Fine-tune, evaluate and export language models.")
    parser.add_argument("--version", action="version", version=_version())
    verbs = {"": parser.add_subparsers(dest="verb", metavar="VERB", required=True)}
    for name, (text, args) in VERBS.items():
        group, _, verb = name.rpartition(" ")
        if group not in verbs:
            holder = verbs[""].add_parser(group, help=GROUPS[group])
            verbs[group] = holder.add_subparsers(dest=f"{group}_verb", metavar=f"{group.upper()}_VERB", required=True)
        sub = verbs[group].add_parser(verb, help=text)
        for names, options in args:
            sub.add_argument(*names, **copy.deepcopy(options))  # no two parses share a default list
        sub.set_defaults(
            func=globals()[f"{name.replace(' ', '_').replace('-', '_')}_command"]
        )  # found when built: tests patch them
    return parser


def run_command(args: argparse.Namespace) -> int:
    from tunelab.errors import TunelabError
    from tunelab.recipe import load_recipe
    from tunelab.report import print_outcome
    from tunelab.workflow import run_recipe

    overrides = [*args.overrides, *([f"continue_from={args.continue_from}"] if args.continue_from else [])]
    recipe = load_recipe(args.recipe, overrides)
    if args.nproc is not None and args.nproc < 1:
        raise TunelabError(f"--nproc {args.nproc}: give the number of processes to train in, 1 or more")
    if (args.nproc or 1) > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:  # the ranks see WORLD_SIZE=N
        from tunelab.distributed_run import launch, rank_command_line

        launch(args.nproc, rank_command_line(args), recipe)
        print(f"run finished in {args.nproc} processes: tunelab status {Path(recipe.output_dir) / recipe.name}")
        return 0
    outcome = run_recipe(recipe, resume=args.resume, overwrite=args.overwrite, base_from=args.base_from)
    if outcome.state == "worker":  # a rank other than 0 of a distributed run: rank 0 reports
        return 0
    print_outcome(outcome)
    return 0 if outcome.state == "completed" else 130


def compare_methods_command(args: argparse.Namespace) -> int:
    from tunelab import compare_methods as cm
    from tunelab.recipe import load_recipe

    methods = cm.parse_methods(args.methods or cm.DEFAULT_METHODS)
    rates, budget = cm.parse_learning_rates(args.lr, methods), cm.parse_budget(args.budget)
    recipe = load_recipe(args.recipe, args.overrides)
    cm.require_test_set(recipe)
    out = Path(args.out) if args.out else Path(recipe.output_dir) / f"{recipe.name}-methods"
    cm.check_out(out, args.overwrite)
    summary = cm.compare_methods(recipe, methods, out, rates, budget, args.merge)
    print(summary["recommendation"])
    return 0 if any(row["state"] == "completed" for row in summary["rows"]) else 1


def validate_command(args: argparse.Namespace) -> int:
    from tunelab.recipe import load_recipe
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
    from tunelab.preview import preview_recipe
    from tunelab.recipe import load_recipe

    preview_recipe(load_recipe(args.recipe, args.overrides), index=args.index)
    return 0


def data_audit_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tunelab.audit import audit_paths, audit_recipe
    from tunelab.data.audit_report import summary_lines, write_audit
    from tunelab.data.clean import check_clean_dir, clean_lines, write_clean

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
    from tunelab.data.augment import EndpointParaphraser, augment_file
    from tunelab.errors import DataError
    from tunelab.model.paraphrase import LocalParaphraser

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

    result = export_run(args.run, merged=args.merged, dtype=args.dtype, out=args.out, overwrite=args.overwrite,
                        gguf=args.gguf, quantize=args.quantize)  # fmt: skip
    print(f"{result['kind']} export of {args.run}: {result['folder']}")
    check = result.get("verification")
    if check and "summary" in check:
        print(f"read back with transformers: {check['summary']}")
        print("files: " + ", ".join(result["files"].values()))
    elif check:
        verdict = "identical greedy outputs" if check["identical_outputs"] else f"{check['mismatches']} outputs DIFFER"
        print(f"merged vs adapter model ({check['dtype']}): {verdict}, max |Δlogit| {check['max_abs_logit_diff']:.1e}")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from tunelab.serve.app import ServeSettings, create_app
    from tunelab.serve.engine import Engine, EngineSettings

    adapters = adapter_names(args.adapter)
    settings = ServeSettings(
        api_key=key_from_env(args.api_key_env, "--api-key-env"),
        admin_key=key_from_env(args.admin_key_env, "--admin-key-env"),
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


def score_command(args: argparse.Namespace) -> int:
    from tunelab.eval.preference import score_file

    out = Path(args.out) if args.out else Path(args.data).with_suffix(".scores.jsonl")
    summary = score_file(args.model, args.data, out)
    if summary["kind"] == "pairs":
        metrics = summary["metrics"]
        print(f"{summary['count']} pairs: the chosen answer scores higher in {metrics['pair_accuracy']:.1%} "
              f"(the longer answer is the chosen one in {metrics['length_rule']:.1%}); mean margin "
              f"{summary['mean_margin']:+.3f}")  # fmt: skip
    else:
        print(f"{summary['count']} conversations scored, mean {summary['mean_score']:+.3f}")
    print(f"every score: {out}")
    return 0


def bench_command(args: argparse.Namespace) -> int:
    from tunelab.eval.bench import bench_target, format_report

    report, folder = bench_target(
        args.target, args.task, args.data, args.split, args.shots, args.limit, args.out, args.scoring
    )
    print(format_report(report, subjects=not args.no_subjects))
    print(f"report: {folder / 'report.json'}  (every item: {folder / 'items.jsonl'})")
    return 0


def _version() -> str:
    from tunelab import __version__

    return f"tunelab {__version__}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tunelab.allocator import prepare_process

    prepare_process()  # before torch allocates anything, so that training also reuses what loading freed
    quiet_bars_when_piped()
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
    except Exception as error:  # a bug, reported as one: see cli_support.internal_error
        return internal_error(error)


if __name__ == "__main__":
    sys.exit(main())

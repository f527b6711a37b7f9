"""The table of the command line's verbs: each verb (or sub-verb, such as `data audit`) with its help and its
arguments, as data. `tunelab.cli.build_parser` makes argparse parsers of it, and `tunelab.cli` holds the handlers
(`data audit` is handled by `data_audit_command`).

Closed choices (metrics, dtypes, data formats, scoring) are read from the recipe schema, so a flag accepts the names a
recipe does, and a name added there appears here; the UI's languages come from ui/i18n.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, get_args, get_origin

from pydantic import BaseModel

from tunelab.compare_methods import DEFAULT_METHODS, PRESETS
from tunelab.config.schema import DataFormat, ExportSection, ForgettingSection, MetricName
from tunelab.data.convert import ALIASES, PREFERENCE_FORMATS
from tunelab.ui.i18n import LANGUAGES

Arg = tuple[tuple[str, ...], dict[str, Any]]  # one `add_argument` call: its names and its keywords


class Verb(NamedTuple):
    help: str
    args: tuple[Arg, ...]


def verb(help: str, *args: Arg) -> Verb:
    return Verb(help, args)


def arg(*names: str, **options: Any) -> Arg:
    return names, options


def flag(name: str, help: str) -> Arg:
    return arg(name, action="store_true", help=help)


def file_and_out(out_help: str) -> tuple[Arg, Arg]:
    """The input file and the required --out of a data tool that writes a new file or folder."""
    return arg("file"), arg("--out", required=True, help=out_help)


def literal_choices(section: type[BaseModel], field: str) -> tuple[str, ...]:
    """The names a recipe field's `Literal` allows (None aside)."""
    annotation = section.model_fields[field].annotation
    return next(get_args(part) for part in (annotation, *get_args(annotation)) if get_origin(part) is Literal)


def convert_formats() -> tuple[str, ...]:
    """alpaca, sharegpt, openai, preference, unpaired (the recipe's formats), trl (data/convert's alias of openai), then
    the layouts only preference data is written in (stack_exchange, trl_standard)."""
    sft = tuple(name for name in get_args(DataFormat) if name != "auto")
    return (*sft, *ALIASES, *(name for name in PREFERENCE_FORMATS if name not in sft))


TARGET = "a run directory, an adapter folder, a model folder, a .gguf file or an alias"
RECIPE = (
    arg("recipe", help="the recipe YAML file"),
    arg("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=20"),
)
RUN = arg("run", help="a run directory")
RUNS = arg("runs", nargs="+", help="run directories")
HOST = arg("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
SEED = arg("--seed", type=int, default=42)
THRESHOLD = arg("--threshold", type=float, default=0.8, help="near-duplicate Jaccard threshold")
METRICS_HELP = " ".join(get_args(MetricName)) + " (default: the recipe's, or chosen from the references)"

GROUPS = {"data": "data tools"}  # verbs with sub-verbs (`tunelab data audit`), listed where their first one is

VERBS: dict[str, Verb] = {
    "run": verb(
        "data → baseline eval → fine-tune → eval → merged export",
        *RECIPE,
        flag("--resume", "continue the run from its last checkpoint"),
        flag("--overwrite", "delete an existing run of the same name first"),
        arg("--nproc", type=int, help="train in N processes on this machine (DDP; gloo on CPUs, NCCL on GPUs)"),
        arg(
            "--base-from",
            metavar="RUN",
            help="take the base model's evaluation from this run when it is the same "
            "(model, test records, eval settings) instead of repeating it",
        ),
        arg(
            "--continue-from",
            metavar="RUN",
            help="continual training: start from this finished run's model; data.replay mixes in its data; "
            "forgetting is measured on its test set too (the recipe's continue_from)",
        ),
    ),
    "estimate": verb(
        "memory, time and cost of a recipe's training: calibrated on this machine, and on GPUs of a dated table",
        *RECIPE,
        arg("--gpu", action="append", metavar="NAME", help="a GPU of the table (repeatable; default: all of them)"),
        arg("--prices", metavar="FILE", help="a YAML file of GPU prices (and new GPUs) to use instead of the table's"),
        arg("--mfu", type=float, help="the GPU utilisation to assume instead of the method's default"),
        arg("--steps", type=int, default=8, help="training steps of the calibration run here (default 8)"),
        flag("--no-calibrate", "skip the calibration run: GPU figures only"),
    ),
    "advise": verb(
        "prompting, retrieval or fine-tuning? measured on your data: where answers come from, retrieval, the base "
        "model prompted zero- and k-shot, the cost of LoRA",
        arg("data", help="a data file (JSONL, JSON, CSV, Parquet; conversations with answers)"),
        arg("--model", default="smollm2-135m-instruct", help="the base model to measure prompting with"),
        arg("--goal", help="what you need, in words (kept with the advice)"),
        arg("--target", type=float, default=0.9, help="the score a prompt must reach to be enough (default 0.9)"),
        arg("--sample", type=int, default=40, help="questions held out to measure on (default 40)"),
        arg("--k", type=int, default=4, help="examples in the k-shot prompt and records retrieved (default 4)"),
        arg("--json", metavar="FILE", help="also write the figures and the advice here"),
    ),
    "compare-methods": verb(
        "train every method on the same recipe, data, seed and steps: quality, parameters, memory, time, forgetting",
        *RECIPE,
        arg(
            "--methods",
            default=None,
            help="comma-separated, from: " + ", ".join(PRESETS) + f" (default: {DEFAULT_METHODS})",
        ),
        arg(
            "--lr",
            action="append",
            metavar="METHOD=RATE",
            help="a method's learning rate instead of its preset "
            "multiple of the recipe's (repeatable), e.g. --lr full=2e-5",
        ),
        arg(
            "--budget",
            help="equal wall-clock training time per method instead of equal steps only, e.g. 20m "
            "(the recipe's steps stay the upper bound)",
        ),
        flag("--overwrite", "replace an earlier comparison in --out (its runs included)"),
        flag("--merge", "also merge (and verify) each mergeable method's adapter, as the recipe's export.merge says"),
        arg("--out", help="the comparison's folder (default: <output_dir>/<name>-methods)"),
    ),
    "status": verb("what a run is doing or how it ended (a killed run shows as interrupted)", RUNS),
    "validate": verb("check a recipe without training", *RECIPE),
    "chat": verb(
        "talk to a run's model or any model",
        arg("target", help="a run directory, a model folder, a .gguf file or a built-in alias"),
        arg("--prompt", help="answer this one prompt and exit"),
        arg("--system", help="a system prompt (default for a run: the one all its training records share)"),
        arg("--max-new-tokens", type=int, default=256),
    ),
    "eval": verb(
        "held-out metrics for a run or a model (predictions.jsonl + report)",
        arg("target", help=TARGET),
        arg("--data", help="a test file (default for a run: its recipe's data.test)"),
        arg("--metrics", nargs="+", help=METRICS_HELP),
        arg("--json-schema", help="a JSON Schema file for the json_schema metric"),
        arg("--max-new-tokens", type=int),
        arg("--batch-size", type=int),
        arg("--limit", type=int, help="evaluate only the first N records"),
        arg("--out", help="output folder (default: the run's eval/, or eval/<model>)"),
    ),
    "judge": verb(
        "pairwise A/B comparison of two models by a judge, in both orders",
        arg("--a", required=True, help="model A: a run directory, adapter folder, model folder or alias"),
        arg("--b", required=True, help="model B, e.g. the base model"),
        arg(
            "--judge",
            required=True,
            help="a judge model (alias, folder, run), a reward model (a stage: rm run or a folder with a scalar head: "
            "scores each answer) or an OpenAI-compatible base URL such as http://127.0.0.1:8000/v1",
        ),
        arg("--judge-model", default="default", help="the model name to request from a judge endpoint"),
        arg("--judge-api-key-env", help="environment variable holding the judge endpoint's API key"),
        arg("--data", help="test prompts (default: the test set of run A or B)"),
        flag("--reference", "show the judge the test reference answer"),
        arg(
            "--prompt-file",
            help="your own judge prompt with {question}, {answer_a}, {answer_b} (and {reference}) placeholders",
        ),
        arg("--limit", type=int, help="judge only the first N prompts"),
        arg("--max-new-tokens", type=int, default=256, help="answer length for A and B"),
        arg("--out", help="output folder (default: <run A>/eval/judge/<B>, or judge/<A>-vs-<B>)"),
    ),
    "export": verb(
        "a run's adapter (PEFT/vLLM layout), merged, quantised or GGUF model, verified",
        RUN,
        flag("--merged", "merge the adapter into the base model"),
        arg("--dtype", choices=literal_choices(ExportSection, "dtype"), help="dtype of a merged export"),
        arg("--gguf", choices=["f16", "q8_0", "q4_0"], help="the merged model as one GGUF file (llama.cpp, Ollama)"),
        arg("--quantize", choices=["int8", "int4"], help="the merged model weight-only quantised (transformers, vLLM)"),
        arg("--out", help="output folder (default: <run>/export/adapter|merged); with --gguf a .gguf path or folder"),
        flag("--overwrite", "replace a non-empty output folder (or existing GGUF files)"),
    ),
    "serve": verb(
        "an OpenAI-compatible server: one base model, many adapters, batched",
        arg("--model", default="smollm2-135m-instruct", help="the base model (alias, folder, .gguf)"),
        arg(
            "--adapter",
            action="append",
            default=[],
            metavar="NAME=PATH",
            help="an adapter to serve as model NAME: a run directory or an adapter folder (repeatable)",
        ),
        HOST,
        arg("--port", type=int, default=8000),
        arg("--api-key-env", help="environment variable holding the API key that clients must send"),
        arg("--admin-key-env", help="environment variable holding the key for /admin/adapters"),
        arg("--max-batch", type=int, default=16, help="sequences generated together"),
        arg("--max-queue", type=int, default=64, help="sequences waiting before requests get 429"),
        arg("--timeout", type=float, default=300.0, help="seconds a request may take"),
        arg("--max-tokens", type=int, default=2048, help="the most tokens a request may ask for"),
        arg("--max-prompt-tokens", type=int, default=4096),
        flag("--one-at-a-time", "no batching: one request at a time, switching adapters (for comparisons)"),
        flag(
            "--no-default-system",
            "do not give chat requests without a system message the system prompt the run's training data shared",
        ),
        arg("--log-level", default="info"),
    ),
    "ui": verb(
        "the web UI: data, train, watch, evaluate, chat, export, serve",
        arg("--workspace", default=".", help="folder for recipes, uploads, audits and runs (default: here)"),
        HOST,
        arg("--port", type=int, default=7860),
        arg("--auth-env", help="environment variable holding the password (required off loopback)"),
        arg("--language", choices=tuple(LANGUAGES), default="en", help="the page's language (switchable there)"),
        arg("--max-upload-mb", type=float, default=200, help="the largest file an upload may be"),
    ),
    "report": verb("write a run's eval/report.html and report.md again", RUN),
    "compare": verb("a table of runs: losses, metrics, forgetting", RUNS),
    "score": verb(
        "a reward model's scores for preference pairs (pair accuracy beside the longer-answer rule) or conversations",
        arg("--model", required=True, help="a reward-model run (stage: rm) or a model folder with a scalar head"),
        arg("--data", required=True, help="pairs (prompt, chosen, rejected) or conversations, in any readable format"),
        arg("--out", help="where to write one row per record (default: <data>.scores.jsonl beside it)"),
    ),
    "bench": verb(
        "multiple-choice benchmark by the log-likelihood of the answer letters",
        arg("target", help=TARGET),
        arg(
            "--task",
            default="probe",
            help="probe (built in), mmlu, cmmlu, ceval, arc_easy, arc_challenge, or a benchmark file/folder",
        ),
        arg("--data", help="the benchmark folder (for mmlu, cmmlu, ceval, arc_*)"),
        arg("--split", help="the split to score (default: test; C-Eval val; ARC test, else dev)"),
        arg("--shots", type=int, default=5, help="solved examples before each question (default 5)"),
        arg("--limit", type=int, help="at most this many items per subject"),
        arg(
            "--scoring",
            choices=literal_choices(ForgettingSection, "scoring"),
            help="letters: the answer letter's likelihood (MMLU, CMMLU, C-Eval); text: each choice's (ARC, probe)",
        ),
        arg("--out", help="folder for report.json and items.jsonl"),
        flag("--no-subjects", "print categories only"),
    ),
    "data preview": verb(
        "print one tokenized example with the trained spans marked",
        *RECIPE,
        arg("--index", type=int, default=0, help="which training example to show"),
    ),
    "data audit": verb(
        "invalid records, duplicates, leakage, contamination, lengths",
        arg("inputs", nargs="+", help="data files (each audited as a set), or one recipe.yaml"),
        arg("--eval", nargs="*", default=[], help="test/validation files that must not overlap the others"),
        arg("--against", nargs="*", default=[], help="benchmark files or folders to check contamination"),
        arg("--model", default="smollm2-135m-instruct", help="tokenizer for token lengths"),
        flag("--no-lengths", "skip token lengths (no tokenizer needed)"),
        arg("--max-length", type=int, default=None, help="report truncation at this many tokens"),
        THRESHOLD,
        arg("--out", default="audit", help="folder for report.md, report.json and plots"),
        flag("--strict", "exit 3 when leakage or invalid records are found"),
        arg(
            "--write-clean",
            metavar="DIR",
            help="also write cleaned copies of the inputs here: no invalid records, no extra exact copies, no leaks",
        ),
        flag("--overwrite", "--write-clean into a non-empty folder (not inputs)"),
    ),
    "data split": verb(
        "deterministic split where near-duplicates never straddle splits",
        *file_and_out("folder for <split>.jsonl and split_ids.json"),
        arg("--fractions", default="train=0.8,validation=0.1,test=0.1"),
        SEED,
        arg("--stratify", help="a record field (e.g. category) whose proportions each split keeps"),
        THRESHOLD,
    ),
    "data mix": verb(
        "mix sources at target ratios (e.g. domain 80%%, general 20%%)",
        arg("sources", nargs="+", metavar="FILE=RATIO"),
        arg("--out", required=True, help="the mixed JSONL file to write"),
        SEED,
        arg("--total", type=int, default=None, help="records in the mix (default: no record copied)"),
    ),
    "data convert": verb(
        "between alpaca, sharegpt, openai and preference formats",
        arg("file"),
        arg("--to", required=True, choices=convert_formats()),
        arg(
            "--from",
            dest="from_format",
            default="auto",
            help="the input layout (default: told from its fields); for preference data also hh, implicit",
        ),
        arg("--out", required=True, help="a new .jsonl or .json file"),
        flag("--overwrite", "replace an existing output file (never an input)"),
    ),
    "data augment": verb(
        "paraphrase instructions with a model; originals are kept",
        *file_and_out("a new JSONL file: originals + kept paraphrases"),
        arg("--model", help="a local model (alias, folder, .gguf) to paraphrase with"),
        arg("--base-url", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1"),
        arg("--endpoint-model", default="default", help="the model name to ask the endpoint for"),
        arg("--api-key-env", help="environment variable holding the endpoint's API key"),
        arg("--per-record", type=int, default=1, help="paraphrases per record"),
        arg("--seed", type=int, default=0),
        arg("--prompt-file", help="your own paraphrase prompt with an {instruction} placeholder"),
        flag("--overwrite", "replace an existing output file (never the input)"),
    ),
}

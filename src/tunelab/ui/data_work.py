"""What the Data tab does, without Gradio: the chosen files as a recipe's data section (every path checked to lie
inside the workspace), one record tokenized with its trained tokens marked, and the audit written to audits/<name>/.

The records are read the way `tunelab run` reads them (`load_recipe_sets`): invalid records are listed, not raised,
and said in the page with their file, line and fix.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from tunelab.config.schema import DataSection
from tunelab.errors import DataError
from tunelab.ui.workspace import SAFE_NAME, UIError, Workspace

TRAINED_STYLE = "background:#bbf7d0;color:#14532d;font-weight:600;border-radius:3px"
CONTEXT_STYLE = "color:#6b7280"
PLOTS = ("token_lengths", "turns")
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def model_choices(workspace: Workspace) -> list[str]:
    """Models in the workspace's models/ folder (Hugging Face folders and .gguf files), then the built-in alias."""
    from tunelab.model.load import DEFAULT_MODEL

    folder = workspace.root / "models"
    found = []
    if folder.is_dir():
        found = [p for p in sorted(folder.iterdir()) if (p / "config.json").is_file() or p.suffix == ".gguf"]
    return [workspace.relative(p) for p in found] + [DEFAULT_MODEL]


def model_argument(workspace: Workspace, text: str | None, what: str = "model", urls: bool = False) -> str:
    """A model as a command takes it: a built-in alias or hub id as typed, an endpoint URL where allowed, and any
    file or folder resolved inside the workspace."""
    from tunelab.model.load import BUILTIN_MODELS

    name = str(text or "").strip()
    if not name:
        raise UIError(f"the {what} is empty; choose one of the workspace's models or {', '.join(BUILTIN_MODELS)}")
    if name.startswith(("http://", "https://")):
        if urls:
            return name
        raise UIError(f"the {what} must be a model (a folder or .gguf file in the workspace, or a hub id), not a URL")
    if name in BUILTIN_MODELS:
        return name
    hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~")) and not (workspace.root / name).exists()
    return name if hub_id else str(workspace.resolve(name, what))


def model_note(workspace: Workspace, text: str | None) -> str:
    """What loading the model's tokenizer will cost, said before it happens (a GGUF is converted once, for minutes)."""
    from tunelab.model.load import local_folder, resolve_model

    name = model_argument(workspace, text)
    if local_folder(name) is not None:
        return ""
    if resolve_model(name).kind == "hub":
        return f"ℹ️ {name} is a Hugging Face hub id: its tokenizer is downloaded on first use (needs the network)."
    return (f"ℹ️ {name} is not converted yet: the first preview or audit converts it once (a few minutes; the page "
            "shows progress), later ones take seconds.")  # fmt: skip


def lines_of(text: str | None) -> list[str]:
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def data_section(workspace: Workspace, paths: str | None, evaluation: str | None, role: str,
                 registry: str | None, datasets: list[str] | None) -> DataSection:  # fmt: skip
    """The chosen data as a recipe's `data` section, with absolute paths that all lie inside the workspace."""
    sources = [{"path": str(workspace.resolve(line, "training file"))} for line in lines_of(paths)]
    chosen = [name for name in datasets or [] if name]
    registry_path = workspace.resolve(registry, "registry") if str(registry or "").strip() else None
    if chosen and registry_path is None:
        raise UIError("datasets are chosen but the registry path is empty; type the dataset_info.json path")
    if registry_path is not None and not chosen:
        raise UIError(f"choose one or more datasets of {registry_path.name} (read the registry to list them)")
    if not sources and not chosen:
        raise UIError("no training data chosen: upload files, type their paths (one per line), or pick registry "
                      "datasets")  # fmt: skip
    extra: dict[str, Any] = {"validation": None}
    if str(evaluation or "").strip():
        extra["validation" if role == "validation" else "test"] = str(workspace.resolve(evaluation, "evaluation file"))
    if registry_path is not None:
        _registry_inside(workspace, registry_path, chosen)
        extra |= {"registry": str(registry_path), "datasets": chosen}
    return DataSection(sources=sources, **extra)


def _registry_inside(workspace: Workspace, registry: Path, names: list[str]) -> None:
    """Every data file the chosen registry entries name must lie inside the workspace too."""
    from tunelab.data.registry import registry_entries

    for name, entry in zip(names, registry_entries(registry, names), strict=True):
        if not Path(entry["path"]).resolve().is_relative_to(workspace.root):
            raise UIError(f'{registry.name} entry "{name}" names {entry["path"]}, outside the workspace '
                          f"{workspace.root}; copy the file next to the registry inside it")  # fmt: skip


def registry_names(workspace: Workspace, registry: str | None) -> list[str]:
    from tunelab.data.registry import read_registry

    return list(read_registry(workspace.resolve(registry, "registry")))


def load_records(data: DataSection):
    """The records `tunelab run` would read (RecipeData: sets, roles, invalid)."""
    from tunelab.data.pipeline import load_recipe_sets

    return load_recipe_sets(data)


def invalid_note(invalid: list[DataError]) -> str:
    """The invalid records, named with file and line and the fix, as the page shows them."""
    if not invalid:
        return ""
    first = invalid[0]
    fix = f" — fix: {first.fix}" if first.fix else ""
    more = f" (and {len(invalid) - 1} more, listed in the audit report)" if len(invalid) > 1 else ""
    count = f"{len(invalid)} invalid record{'s' if len(invalid) != 1 else ''}"
    return f"⚠️ {count} left out: {first.where}: {first.problem}{fix}{more}"


def tokenizer_for(name: str):
    """(tokenizer with a chat template, True when tunelab's ChatML fallback was set because it had none)."""
    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.model.load import load_tokenizer

    tokenizer = load_tokenizer(name)
    return tokenizer, ensure_chat_template(tokenizer)


def preview_html(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """The example as the model sees it, trained spans highlighted (as `tunelab data preview` shows them)."""
    from tunelab.data.tokenize import preview_spans

    parts = []
    for text, trained in preview_spans(tokenizer, input_ids, labels):
        style, kind = (TRAINED_STYLE, "trained") if trained else (CONTEXT_STYLE, "context")
        parts.append(f'<span class="{kind}" style="{style}">{html.escape(text)}</span>')
    body = "".join(parts)
    return f'<pre class="token-preview" style="white-space:pre-wrap;font-size:0.9rem;line-height:1.5">{body}</pre>'


def where_from(record: dict[str, Any]) -> str:
    """A record's file and line (or record number, for JSON arrays and tables)."""
    name, _, number = str(record.get("source", "")).rpartition(":")
    if not name:
        return "an unknown file"
    return f"{name} {'line' if name.endswith('.jsonl') else 'record'} {number}"


def preview(records: list[dict], index: int, tokenizer, fallback: bool, max_length: int) -> tuple[str, str]:
    """(info markdown, HTML) for one training record tokenized with the model's chat template."""
    from tunelab.data.tokenize import tokenize_examples

    if not records:
        raise UIError("there are no usable training records to preview")
    if not 0 <= index < len(records):
        raise UIError(f"record {index} is out of range: there are {len(records)} training records (0 to "
                      f"{len(records) - 1})")  # fmt: skip
    record = records[index]
    rows, stats = tokenize_examples([record], tokenizer, max_length)
    head = f"**record {index}** of {len(records)} training records · id `{record.get('id')}` · {where_from(record)}"
    notes = ["(the model has no chat template; tunelab's ChatML fallback is used)"] if fallback else []
    if not rows:
        return "\n\n".join([head, *notes, f"⚠️ no trainable token within max_length={max_length}"]), ""
    row = rows[0]
    trained = sum(1 for label in row["labels"] if label != -100)
    counts = f"{len(row['input_ids'])} tokens, **{trained} trained** (highlighted)"
    if stats.get("truncated"):
        notes.append(f"truncated to max_length={max_length}")
    return "\n\n".join([f"{head} · {counts}", *notes]), preview_html(tokenizer, row["input_ids"], row["labels"])


def audit_folder(workspace: Workspace, name: str | None) -> Path:
    """A new folder audits/<name>/ (named by date and time when no name is given); an existing one is refused."""
    chosen = SAFE_NAME.sub("_", str(name or "").strip()).strip("._") or time.strftime("audit-%Y%m%d-%H%M%S")
    folder = workspace.resolve(f"audits/{chosen}", "audit folder", must_exist=False)
    if folder.exists():
        raise UIError(f"audits/{chosen} exists already; choose another audit name (the earlier audit is kept)")
    return folder


def run_audit(data: DataSection, recipe_data, tokenizer, out: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """Audit the sets as `tunelab data audit <recipe>` does and write report.md, report.json, plots, data.yaml."""
    import yaml

    from tunelab.data.audit import audit_sets
    from tunelab.data.audit_report import write_audit

    sets, roles, invalid = recipe_data.sets, recipe_data.roles, recipe_data.invalid
    max_length = data.max_length if tokenizer is not None else None
    result = audit_sets(sets, roles, invalid, tokenizer, max_length, data.contamination_against, data.near_threshold)
    written = write_audit(result.report, out)
    chosen = data.model_dump(mode="json", exclude_defaults=True)
    (out / "data.yaml").write_text(yaml.safe_dump({"data": chosen}, sort_keys=False, allow_unicode=True), "utf-8")
    return written, result.report


def report_markdown(path: Path) -> str:
    """report.md without its image links (the page shows the plots as images beside it)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("!["))


def train_fragment(workspace: Workspace, data: DataSection, model: str) -> tuple[str, dict[str, Any]]:
    """The chosen data as recipe YAML (paths relative to the workspace) and as the Train form's field values."""
    import yaml

    relative = lambda p: workspace.relative(Path(p)) if p else None  # noqa: E731
    sources = [relative(s.path) for s in data.sources]
    fields: dict[str, Any] = {"model.name": workspace.relative(Path(model)) if Path(model).is_absolute() else model,
                              "data.sources": "\n".join(sources)}  # fmt: skip
    section: dict[str, Any] = {"sources": [{"path": p} for p in sources]} if sources else {}
    for key in ("registry", "test", "validation"):
        value = getattr(data, key)
        if isinstance(value, str):
            fields[f"data.{key}"] = section[key] = relative(value)
    if data.datasets:
        fields["data.datasets"] = section["datasets"] = list(data.datasets)
    recipe = {"model": {"name": fields["model.name"]}, "data": section}
    return yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), fields

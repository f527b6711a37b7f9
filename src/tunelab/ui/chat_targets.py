"""What the Chat tab's (and the serve form's) model pickers offer and accept: a run of the workspace, a run's base
model (`base:<run>`), a model folder, an adapter folder or a .gguf file inside the workspace, or a built-in alias.

A picked value becomes a `tunelab.model.targets.Target`, the same kind `tunelab chat` loads. A run's base model named
by a relative path in its recipe is read relative to the workspace (runs started from the UI run there).
"""

from __future__ import annotations

import os
from pathlib import Path

from tunelab.errors import RunError
from tunelab.model.load import BUILTIN_MODELS, resolve_model
from tunelab.model.targets import Target, resolve_target
from tunelab.runs import ACTIVE_STATES, RunDir
from tunelab.ui.workspace import UIError, Workspace

BASE_PREFIX = "base:"
SKIPPED_FOLDERS = {"checkpoints", "data", "eval", "plots", "uploads", "audits", "recipes", "__pycache__"}
MAX_DEPTH = 4  # runs/<name>/export/merged
MAX_FOUND = 200


def absolute_base(workspace: Workspace, base: str) -> str:
    """A run's base model name as a loadable name: a relative folder is the workspace's; aliases stay as they are."""
    if base in BUILTIN_MODELS or Path(base).expanduser().is_absolute():
        return base
    inside = workspace.root / base
    return str(inside.resolve()) if inside.exists() else base


def shown(workspace: Workspace, name: str) -> str:
    """A model name as the page shows it: relative to the workspace when inside it."""
    path = Path(name)
    return workspace.relative(path) if path.is_absolute() and path.resolve().is_relative_to(workspace.root) else name


def run_base(workspace: Workspace, run_path: Path) -> str:
    """The base model a run was trained from (as a loadable name)."""
    name = RunDir.open(run_path).read_recipe()["model"].get("name")
    if not isinstance(name, str) or not name:
        raise UIError(f"{workspace.relative(run_path)}/recipe.yaml names no model (model.name)")
    return absolute_base(workspace, name)


def resolve_pick(workspace: Workspace, value: str | None) -> Target:
    """The Target a picker value names; paths outside the workspace, missing ones and unfinished runs are refused."""
    text = (value or "").strip()
    if not text:
        raise UIError("no model is picked; choose a run, a model folder or a built-in model")
    if text in BUILTIN_MODELS:
        return Target(text, text, None, None)
    if text.startswith(BASE_PREFIX):
        run_path = workspace.resolve(text.removeprefix(BASE_PREFIX), "run")
        return Target(text, run_base(workspace, run_path), None, None)
    path = workspace.resolve(text, "model")
    if RunDir.is_run(path):
        return _run_target(workspace, path)
    target = resolve_target(str(path))
    if target.adapter is None:
        resolve_model(str(path))  # a folder without config.json, a file that is no .gguf: refused now, in words
    return Target(workspace.relative(path), absolute_base(workspace, target.base), target.adapter, None)


def _run_target(workspace: Workspace, path: Path) -> Target:
    run = RunDir.open(path)
    try:
        base, adapter = run.model_for_inference()
    except RunError:
        status = run.status()
        if status.get("state") in ACTIVE_STATES:
            step = f" (step {status['step']} of {status.get('max_steps', '?')})" if status.get("step") else ""
            raise UIError(f"{workspace.relative(path)} is still training{step}; it has no adapter or model to chat "
                          "with until training ends — pick its base model meanwhile") from None  # fmt: skip
        raise
    return Target(workspace.relative(path), absolute_base(workspace, base), adapter, run)


def describe(workspace: Workspace, target: Target) -> str:
    """One line about a picked target, for the page."""
    base = f"`{shown(workspace, target.base)}`"
    if target.run is not None:
        kind = f"LoRA adapter on {base}" if target.adapter else f"trained model {base}"
        state = target.run.status().get("state", "unknown")
        return f"run **{target.name}** ({state}): {kind}"
    if target.name.startswith(BASE_PREFIX):
        return f"base model of {target.name.removeprefix(BASE_PREFIX)}: {base}"
    if target.adapter:
        return f"adapter folder **{target.name}** on {base}"
    if target.name in BUILTIN_MODELS:
        return f"built-in model **{target.name}**"
    return f"model **{target.name}**"


def system_prompt_of(target: Target) -> str | None:
    """The shared training system prompt of a picked run (None for anything else), as `tunelab chat` uses it."""
    return target.run.training_system_prompt() if target.run is not None else None


def target_choices(workspace: Workspace) -> list[tuple[str, str]]:
    """(label, value) for the pickers: runs, their base models, model and adapter folders, .gguf files, aliases."""
    choices: list[tuple[str, str]] = []
    for run_path in workspace.run_dirs():
        name = workspace.relative(run_path)
        if RunDir.is_run(run_path):
            choices += [(f"{name} (run)", name), (f"{name} — its base model", BASE_PREFIX + name)]
    for path in model_paths(workspace):
        choices.append((workspace.relative(path), workspace.relative(path)))
    choices += [(f"{alias} (built-in)", alias) for alias in BUILTIN_MODELS]
    return choices


def base_choices(workspace: Workspace) -> list[tuple[str, str]]:
    """Models a server can load as its base: runs' base models, model folders, .gguf files, aliases."""
    return [(label, value) for label, value in target_choices(workspace) if not _is_run_or_adapter(workspace, value)]


def _is_run_or_adapter(workspace: Workspace, value: str) -> bool:
    path = workspace.root / value
    return not value.startswith(BASE_PREFIX) and (RunDir.is_run(path) or (path / "adapter_config.json").is_file())


def model_paths(workspace: Workspace) -> list[Path]:
    """Model folders (config.json), adapter folders (adapter_config.json) and .gguf files in the workspace, skipping
    runs' own adapter and checkpoints (a run is picked as itself) and the UI's hidden state."""
    found: list[Path] = []

    def visit(folder: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            return
        for entry in entries:
            if len(found) >= MAX_FOUND or entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_file() and entry.name.endswith(".gguf"):
                found.append(path)
            elif entry.is_dir() and entry.name not in SKIPPED_FOLDERS and not _inside_run(path):
                if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
                    found.append(path)
                elif depth < MAX_DEPTH:
                    visit(path, depth + 1)

    visit(workspace.root, 1)
    return found


def _inside_run(path: Path) -> bool:
    """A run's own adapter/ or merged/ folder: offered as the run itself."""
    return path.name in ("adapter", "merged") and RunDir.is_run(path.parent)

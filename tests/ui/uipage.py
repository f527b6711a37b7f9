"""Helpers for the browser tests of `tunelab ui` (tests/ui): start the UI, find components by elem_id, wait for text.

Components are found by their `elem_id`, never by their words, so the tests pass in either language.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from helpers import quickstart_records, write_jsonl

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).with_name("screenshots")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_workspace(folder: Path, model_dir: Path) -> Path:
    """A workspace as a user would have one: a model folder and data files inside it."""
    shutil.copytree(model_dir, folder / "models" / "tiny")
    data = folder / "data"
    data.mkdir(parents=True)
    write_jsonl(data / "train.jsonl", quickstart_records("train", 48))
    write_jsonl(data / "test.jsonl", quickstart_records("test", 6))
    return folder


class UIServer:
    def __init__(self, workspace: Path, port: int, process: subprocess.Popen, log: Path):
        self.workspace, self.port, self.process, self.log = workspace, port, process, log
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_ui(workspace: Path, *extra: str) -> UIServer:
    port = free_port()
    log = workspace / ".ui-test.log"
    env = os.environ | {"PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "tunelab.cli", "ui", "--workspace", str(workspace), "--port", str(port), *extra]
    with log.open("wb") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return UIServer(workspace, port, process, log)
        time.sleep(0.25)
    process.kill()
    raise AssertionError(f"the UI did not start:\n{log.read_text()}")


def field(page, elem_id: str):
    """The input (or textarea) of a component, by its elem_id."""
    return page.locator(f"#{elem_id} input, #{elem_id} textarea").first


def fill(page, elem_id: str, text: str) -> None:
    box = field(page, elem_id)
    box.fill(str(text))
    box.press("Tab")  # Gradio reports the change when the field loses focus


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def wait_for_text(page, elem_id: str, *wanted: str, timeout: float = 60) -> str:
    """Wait until the component's text contains one of `wanted`; returns the text."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = text_of(page, elem_id)
        if any(w in text for w in wanted):
            return text
        time.sleep(0.2)
    raise AssertionError(f"#{elem_id} never showed {wanted!r}; it shows: {text!r}")


def open_tab(page, tab: str) -> None:
    """Click a tab by its id (`data`, `train`, `runs`, `evaluate`, `chat`, `export`), whatever the page's language."""
    page.locator(f"#tab-{tab}-button").click()


def open_section(page, section: str) -> None:
    """Open an accordion of the Train form (`train`, `eval`, `export`, ...) unless it is open."""
    accordion = page.locator(f"#section-{section}")
    if not accordion.locator("input, textarea").first.is_visible():
        accordion.locator(".label-wrap").first.click()
        accordion.locator("input, textarea").first.wait_for(state="visible")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


def run_status(workspace: Path, name: str) -> dict:
    path = workspace / "runs" / name / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def finish_tiny_run(workspace: Path, name: str = "tiny") -> Path:
    """A finished LoRA run of the tiny model in <workspace>/runs/<name>, made the way the UI makes runs: `tunelab run`
    working in the workspace, with the base model named `models/tiny` relative to it. No merged export."""
    recipe = {
        "name": name, "output_dir": str(workspace / "runs"), "model": {"name": "models/tiny"},
        "data": {"sources": [{"path": str(workspace / "data" / "train.jsonl")}], "validation": 0.125,
                 "test": str(workspace / "data" / "test.jsonl"), "max_length": 256},
        "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 4, "learning_rate": 5e-3, "logging_steps": 1, "eval_steps": 4, "save_steps": 4,
                  "per_device_train_batch_size": 4, "warmup_steps": 0, "lr_scheduler_type": "constant", "bf16": False},
        "eval": {"base": False, "metrics": ["exact_match"], "max_new_tokens": 8, "forgetting": False},
        "export": {"merge": False},
    }  # fmt: skip
    path = workspace / "recipes" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    env = os.environ | {"TUNELAB_HOME": str(workspace.parent / "tunelab_home")}
    done = subprocess.run([sys.executable, "-m", "tunelab.cli", "run", str(path)], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = workspace / "runs" / name
    assert (run / "adapter" / "adapter_config.json").is_file()
    return run


def unfinished_run(workspace: Path, finished: Path, name: str, state: str) -> Path:
    """A run directory with the recipe of `finished` and no adapter yet; 'running' is owned by this live process."""
    import psutil

    run = workspace / "runs" / name
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text((finished / "recipe.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    status = {"state": state, "step": 3, "max_steps": 8, "pid": os.getpid(), "host": socket.gethostname(),
              "process_started": psutil.Process().create_time(), "updated": time.time()}  # fmt: skip
    (run / "status.json").write_text(json.dumps(status), encoding="utf-8")
    return run


def tree_hash(folder: Path, skip: tuple[str, ...] = (".ui-test.log",)) -> str:
    """One hash over every file's path and bytes below `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in skip):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()

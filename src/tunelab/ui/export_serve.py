"""`tunelab serve` from the Export & serve tab: the form's checks (a base model, runs trained on it as adapters, a free
port), what the running server answers at `/v1/models`, and a copyable `openai` snippet for its endpoint and models.

The server itself is a background process (`jobs.start_serve` / `stop_serve`), remembered in `.tunelab-ui/serve.json`,
so a reloaded page (or a restarted UI) shows it again.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from tunelab.runs import read_json
from tunelab.ui import jobs
from tunelab.ui.chat_targets import resolve_pick, shown
from tunelab.ui.workspace import SAFE_NAME, UIError, Workspace

SNIPPET = """from openai import OpenAI

# started from tunelab's UI: on 127.0.0.1 only, no API key
client = OpenAI(base_url="{base_url}", api_key="not-needed")
print([model.id for model in client.models.list()])  # {names}

stream = client.chat.completions.create(
    model="{model}",
    messages=[{{"role": "user", "content": "Hello! Who are you?"}}],
    temperature=0,
    max_tokens=128,
    stream=True,
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def checked_port(value: Any) -> int:
    """The port typed in the form: a whole number from 1024 to 65535 that nothing listens on."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or not 1024 <= number <= 65535:
        raise UIError(f"the port {value!r} is not a whole number from 1024 to 65535; e.g. {free_port()} is free")
    port = int(number)
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise UIError(f"port {port} is in use; pick another (e.g. {free_port()}, which is free)") from None
    return port


def adapter_runs(workspace: Workspace) -> list[str]:
    """Runs of the workspace that have a LoRA adapter, newest first."""
    runs = workspace.run_dirs()
    return [workspace.relative(path) for path in runs if (path / "adapter" / "adapter_config.json").is_file()]


def served_base(workspace: Workspace, picked: str | None) -> tuple[str, str]:
    """(the --model value, the loadable base) for the picked base model; a LoRA run belongs under adapters."""
    target = resolve_pick(workspace, picked)
    if target.adapter:
        raise UIError(f"{target.name} is a LoRA adapter, not a model: add it under adapters and serve its base model "
                      f"{shown(workspace, target.base)}")  # fmt: skip
    return shown(workspace, target.base), target.base


def served_adapters(workspace: Workspace, runs: list[str] | None, base: str) -> dict[str, str]:
    """NAME → run for `--adapter NAME=run`; each run must have an adapter trained on `base`."""
    adapters: dict[str, str] = {}
    for run in runs or []:
        target = resolve_pick(workspace, run)
        if target.run is None or not target.adapter:
            raise UIError(f"{run} has no LoRA adapter to serve; a fully trained model is served as the model itself")
        if not _same_model(target.base, base):
            raise UIError(f"{run} was trained on {shown(workspace, target.base)}, not on {shown(workspace, base)}; "
                          "serve it with its own base model")  # fmt: skip
        name = SAFE_NAME.sub("-", Path(target.name).name).strip("-.") or "adapter"
        while name in adapters:
            name += "-2"
        adapters[name] = target.name
    return adapters


def _same_model(one: str, other: str) -> bool:
    if Path(one).exists() and Path(other).exists():
        return Path(one).resolve() == Path(other).resolve()
    return one == other


def start(workspace: Workspace, picked: str | None, runs: list[str] | None, port: Any) -> dict[str, Any]:
    if jobs.serve_state(workspace) is not None:
        raise UIError("a server started here is running already; stop it first (one server per workspace)")
    model, base = served_base(workspace, picked)
    adapters = served_adapters(workspace, runs, base)
    return jobs.start_serve(workspace, model, adapters, checked_port(port))


def served_models(base_url: str) -> list[dict[str, Any]] | None:
    """What the server lists at /v1/models; None while it is not answering yet (loading the model)."""
    import httpx

    try:
        answer = httpx.get(f"{base_url}/models", timeout=2.0)
        answer.raise_for_status()
        return list(answer.json()["data"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def serve_view(workspace: Workspace) -> tuple[str, str, str, str]:
    """(state with the endpoint, the served models, the openai snippet, the log's tail) of the server started here."""
    log = jobs.log_tail(workspace.state / "serve.log", 20)
    state = jobs.serve_state(workspace)
    if state is None:
        ended = read_json(workspace.state / jobs.SERVE_STATE)
        if isinstance(ended, dict):  # stop_serve removes the file: this one ended by itself
            return f"⚠️ the server on port {ended.get('port')} has exited: {_last_error(log)}", "", "", log
        return "No server started here is running.", "", "", log
    endpoint = f"`{state['base_url']}` (process {state['pid']})"
    models = served_models(state["base_url"])
    if models is None:
        names = [state["model"], *state.get("adapters", {})]
        return f"starting on {endpoint}: loading {state['model']}…", "", snippet(state["base_url"], names), log
    names = [str(model.get("id")) for model in models]
    return f"✓ serving on {endpoint}", models_table(models), snippet(state["base_url"], names), log


def _last_error(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or ["see .tunelab-ui/serve.log"])[-1]


def models_table(models: list[dict[str, Any]]) -> str:
    rows = []
    for model in models:
        system = model.get("default_system_prompt") or "—"
        system = system if len(system) <= 80 else system[:77] + "…"
        kind = f"adapter on `{model['parent']}`" if model.get("parent") else "base model"
        rows.append(f"| `{model.get('id')}` | {kind} | {system} |")
    head = "| model | what | default system prompt |\n|---|---|---|\n"
    return head + "\n".join(row.replace("\n", " ") for row in rows)


def snippet(base_url: str, names: list[str]) -> str:
    """Python that calls this server with the official `openai` client (an adapter when there is one)."""
    model = names[1] if len(names) > 1 else names[0]
    return SNIPPET.format(base_url=base_url, model=model, names=", ".join(names))

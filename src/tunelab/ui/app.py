"""`tunelab ui`: a Gradio app over the library and the run directory. It never trains in the web server's process:
runs, exports, judges and servers are `tunelab` subprocesses writing to files (ui/jobs.py), so the page can be closed,
reloaded or restarted at any time and re-attaches to what is running.

Safety: it binds to loopback unless told otherwise, and binding elsewhere requires a password (`--auth-env VAR`);
uploads are size-limited and stored in the workspace; every path typed in a form must lie inside the workspace.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from tunelab.ui.common import UIContext
from tunelab.ui.i18n import LANGUAGES, Labels
from tunelab.ui.workspace import MAX_UPLOAD_BYTES, UIError, Workspace

CSS = """
#progress { font-size: 1.05rem; } .message { min-height: 1.2rem; }
"""


TABS = ("data_tab", "train_tab", "runs_tab", "eval_tab", "chat_tab", "export_tab")


def tab_modules() -> list:
    """The tabs, in page order; each module of `tunelab.ui` has `TEXT` and `build(ctx)`."""
    import importlib

    return [importlib.import_module(f"tunelab.ui.{name}") for name in TABS if _exists(name)]


def _exists(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"tunelab.ui.{name}") is not None


def build_app(workspace: Workspace, language: str = "en"):
    """The Blocks app for a workspace."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    ctx = UIContext(workspace, Labels(language=language))
    with gr.Blocks(title="tunelab", analytics_enabled=False) as app:
        with gr.Row():
            title = gr.Markdown(f"## {ctx.t('title')}", elem_id="title")
            choices = [(label, code) for code, label in LANGUAGES.items()]
            chosen = gr.Radio(choices, value=language, label=ctx.t("language"), elem_id="language",
                              scale=0, min_width=280)  # fmt: skip
        where = gr.Markdown(f"{ctx.t('workspace')}: `{workspace.root}`", elem_id="workspace")
        ctx.labels.add({"workspace.line": (f"Workspace: `{workspace.root}`", f"工作区：`{workspace.root}`")})
        ctx.labels.follow(where, "workspace.line", "value")
        with gr.Tabs(elem_id="tabs"):
            for module in tab_modules():
                module.build(ctx)
        ctx.labels.follow(chosen, "language")
        chosen.change(lambda lang: [gr.update(value=f"## {ctx.labels.text('title', lang)}"),
                                    *ctx.labels.updates(lang)],
                      chosen, [title, *ctx.labels.components()])  # fmt: skip
        _on_page_load(app, ctx)
    return app


def _on_page_load(app, ctx: UIContext) -> None:
    """A page (re)opened re-attaches: the running run is watched again, the runs table is current."""
    for key in ("attach", "runs_listing", "recipe_check"):
        if key in ctx.shared:
            function, outputs, *inputs = ctx.shared[key]
            app.load(function, inputs[0] if inputs else None, outputs)


def check_binding(host: str, auth_env: str | None) -> str | None:
    """The password to require, or None on loopback; refuses to listen on other addresses without one."""
    password = None
    if auth_env:
        password = os.environ.get(auth_env, "")
        if not password:
            raise UIError(f"--auth-env {auth_env}: that environment variable is empty; export a password in it first")
    if not _loopback(host) and password is None:
        raise UIError(f"--host {host} makes the UI reachable from other machines, where anyone could train, read your "
                      "data and start servers; give a password with --auth-env VAR (or keep the default 127.0.0.1 and "
                      "use an SSH tunnel: ssh -L 7860:127.0.0.1:7860 <machine>)")  # fmt: skip
    return password


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def import_config_classes() -> None:
    """Import every stage's TRL config class once, before the handlers run. They check recipes against these classes
    on up to 4 threads; a first import of trl (which pulls in transformers' integrations, torchao among them) from two
    threads at once can meet Python's import-deadlock avoidance, which hands one thread a half-initialised module:
    "cannot import name 'SFTConfig' from 'trl'" (seen once in the train-tab browser test)."""
    from tunelab.train.stages import STAGES, get_stage

    for name in STAGES:
        get_stage(name).config_class()


def serve_ui(workspace: str | Path = ".", host: str = "127.0.0.1", port: int = 7860, auth_env: str | None = None,
             language: str = "en", max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:  # fmt: skip
    password = check_binding(host, auth_env)
    space = Workspace.open(workspace, max_upload_bytes)
    import_config_classes()
    app = build_app(space, language)
    auth = (lambda _user, given: hmac.compare_digest(given.encode(), password.encode())) if password else None
    where = f"http://{host}:{port}"
    print(f"tunelab UI on {where} (workspace {space.root}){' — password required' if auth else ''}", flush=True)
    app.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, auth=auth, auth_message="tunelab: the password is in $" + str(auth_env),
        max_file_size=space.max_upload_bytes, show_error=True, quiet=True, footer_links=[], css=CSS,
    )  # fmt: skip

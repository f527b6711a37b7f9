"""The Export & serve tab: export a run's adapter or merged model (a background `tunelab export`; a merged export
shows its verification when done) and start / stop a `tunelab serve` with chosen adapters, showing its endpoint, the
models it serves and a copyable `openai` snippet. What runs is read back from files, so a reload shows it again."""

from __future__ import annotations

from typing import Any

from tunelab.ui import jobs
from tunelab.ui.chat_targets import BASE_PREFIX, base_choices
from tunelab.ui.common import UIContext, guarded
from tunelab.ui.export_jobs import DTYPES, EXPORT_KINDS, default_out, export_progress, kind_of, start_export
from tunelab.ui.export_serve import adapter_runs, free_port, serve_view, start

TEXT = {
    "export.title": ("### Export a run", "### 导出运行"),
    "export.run": ("Run", "运行"),
    "export.kind": ("What to export", "导出内容"),
    "export.dtype": ("dtype of the merged model", "合并模型的数据类型"),
    "export.out": ("Folder (inside the workspace)", "输出目录（工作区内）"),
    "export.overwrite": ("Replace an earlier export in that folder", "覆盖该目录中以前的导出"),
    "export.start": ("Export", "导出"),
    "serve.title": ("### Serve (OpenAI-compatible API)", "### 部署（OpenAI 兼容 API）"),
    "serve.model": ("Base model", "基础模型"),
    "serve.adapters": (
        "Adapters to serve (runs trained on that base model)",
        "要部署的适配器（基于该基础模型训练的运行）",
    ),
    "serve.port": ("Port (on 127.0.0.1)", "端口（127.0.0.1）"),
    "serve.start": ("Start server", "启动服务"),
    "serve.stop": ("Stop server", "停止服务"),
    "serve.snippet": ("Call it from Python (openai client)", "在 Python 中调用（openai 客户端）"),
    "export.refresh": ("Refresh lists", "刷新列表"),
    "export.logs": ("Logs", "日志"),
    "export.log": ("Export log (last lines)", "导出日志（最后几行）"),
    "serve.log": ("Server log (last lines)", "服务日志（最后几行）"),
    "export.kinds": (
        "\n".join(f"- **{kind.key}**: {kind.english}" for kind in EXPORT_KINDS.values()),
        "\n".join(f"- **{kind.key}**：{kind.chinese}" for kind in EXPORT_KINDS.values()),
    ),
}
LABELS = {"run": "export.run", "kind": "export.kind", "dtype": "export.dtype", "out": "export.out",
          "overwrite": "export.overwrite", "model": "serve.model", "adapters": "serve.adapters",
          "port": "serve.port", "snippet": "serve.snippet", "logs": "export.logs", "export_log": "export.log",
          "serve_log": "serve.log"}  # fmt: skip
BUTTONS = {"start_export": "export.start", "start_serve": "serve.start", "stop_serve": "serve.stop",
           "refresh": "export.refresh"}  # fmt: skip


def build(ctx: UIContext) -> None:
    import gradio as gr

    ctx.labels.add(TEXT)
    c: dict[str, Any] = {}
    with gr.Tab(ctx.t("tab.export"), id="export", elem_id="tab-export") as c["tab"]:
        ctx.labels.follow(c["tab"], "tab.export")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                _export_form(ctx, c)
            with gr.Column(scale=1):
                _serve_form(ctx, c)
        with gr.Accordion(ctx.t("export.logs"), open=False, elem_id="export-logs") as c["logs"]:
            c["export_log"] = gr.Textbox(label=ctx.t("export.log"), lines=8, max_lines=8, interactive=False,
                                         elem_id="export-log", autoscroll=True)  # fmt: skip
            c["serve_log"] = gr.Textbox(label=ctx.t("serve.log"), lines=8, max_lines=8, interactive=False,
                                        elem_id="serve-log", autoscroll=True)  # fmt: skip
        c["timer"] = gr.Timer(2.0)
    for part, key in LABELS.items():
        ctx.labels.follow(c[part], key)
    for part, key in BUTTONS.items():
        ctx.labels.follow(c[part], key, "value")
    _wire_export(ctx, c)
    _wire_serve(ctx, c)
    _wire_views(ctx, c)


def _export_form(ctx: UIContext, c: dict[str, Any]) -> None:
    import gradio as gr

    ctx.labels.follow(gr.Markdown(ctx.t("export.title"), elem_id="export-title"), "export.title", "value")
    with gr.Row():
        c["run"] = gr.Dropdown(label=ctx.t("export.run"), elem_id="export-run", allow_custom_value=True, scale=4)
        c["refresh"] = gr.Button(ctx.t("export.refresh"), elem_id="export-refresh", scale=0, min_width=120, size="sm")
    c["kind"] = gr.Radio(list(EXPORT_KINDS), value="merged", label=ctx.t("export.kind"), elem_id="export-kind")
    ctx.labels.follow(gr.Markdown(ctx.t("export.kinds"), elem_id="export-kinds"), "export.kinds", "value")
    with gr.Row():
        c["dtype"] = gr.Dropdown(list(DTYPES), value=DTYPES[0], label=ctx.t("export.dtype"), elem_id="export-dtype")
        c["out"] = gr.Textbox(label=ctx.t("export.out"), elem_id="export-out", scale=2)
    c["overwrite"] = gr.Checkbox(False, label=ctx.t("export.overwrite"), elem_id="export-overwrite")
    c["start_export"] = gr.Button(ctx.t("export.start"), variant="primary", elem_id="export-start")
    c["export_message"] = gr.Markdown(elem_id="export-message", elem_classes=["message"])
    c["export_status"] = gr.Markdown(elem_id="export-status")
    c["verification"] = gr.Markdown(elem_id="export-verification")


def _serve_form(ctx: UIContext, c: dict[str, Any]) -> None:
    import gradio as gr

    ctx.labels.follow(gr.Markdown(ctx.t("serve.title"), elem_id="serve-title"), "serve.title", "value")
    c["model"] = gr.Dropdown(label=ctx.t("serve.model"), elem_id="serve-model", allow_custom_value=True)
    c["adapters"] = gr.Dropdown(label=ctx.t("serve.adapters"), elem_id="serve-adapters", multiselect=True)
    with gr.Row(equal_height=True):
        c["port"] = gr.Number(free_port, precision=0, label=ctx.t("serve.port"), elem_id="serve-port", scale=2)
        c["start_serve"] = gr.Button(ctx.t("serve.start"), variant="primary", elem_id="serve-start", scale=1)
        c["stop_serve"] = gr.Button(ctx.t("serve.stop"), variant="stop", elem_id="serve-stop", scale=1)
    c["serve_message"] = gr.Markdown(elem_id="serve-message", elem_classes=["message"])
    c["serve_status"] = gr.Markdown(elem_id="serve-status")
    c["models"] = gr.Markdown(elem_id="serve-models")
    c["snippet"] = gr.Code(language="python", label=ctx.t("serve.snippet"), elem_id="serve-snippet",
                           interactive=False, visible=False)  # fmt: skip


def _wire_export(ctx: UIContext, c: dict[str, Any]) -> None:
    import gradio as gr

    workspace = ctx.workspace

    def chosen(run, key):
        dtype_shown = key in EXPORT_KINDS and EXPORT_KINDS[key].dtype
        try:
            out = default_out(workspace, run, key)
        except Exception:  # a run typed outside the workspace: Export says so
            out = ""
        return gr.update(value=out), gr.update(visible=dtype_shown), ""

    for trigger in (c["run"].change, c["kind"].change):
        trigger(chosen, [c["run"], c["kind"]], [c["out"], c["dtype"], c["export_message"]], show_progress="hidden")

    @guarded(3)
    def export_clicked(run, key, dtype, out, overwrite):
        state = start_export(workspace, run, key, dtype, out, bool(overwrite))
        status, verification = export_progress(workspace)
        return f"started the {kind_of(key).key} export of {state['run']} (process {state['pid']})", status, verification

    inputs = [c["run"], c["kind"], c["dtype"], c["out"], c["overwrite"]]
    c["start_export"].click(export_clicked, inputs, [c["export_message"], c["export_status"], c["verification"]])


def _wire_serve(ctx: UIContext, c: dict[str, Any]) -> None:
    workspace = ctx.workspace

    @guarded(2)
    def start_clicked(model, adapters, port):
        state = start(workspace, model, adapters, port)
        return f"starting the server on port {state['port']} (process {state['pid']})", serve_view(workspace)[0]

    @guarded(2)
    def stop_clicked():
        return jobs.stop_serve(workspace), serve_view(workspace)[0]

    outputs = [c["serve_message"], c["serve_status"]]
    c["start_serve"].click(start_clicked, [c["model"], c["adapters"], c["port"]], outputs)
    c["stop_serve"].click(stop_clicked, None, outputs)


def _wire_views(ctx: UIContext, c: dict[str, Any]) -> None:
    """The timer (and opening the tab) shows the export's and the server's state, changed parts only."""
    import gradio as gr

    workspace = ctx.workspace
    shown = [c["export_status"], c["verification"], c["export_log"], c["serve_status"], c["models"], c["snippet"],
             c["serve_log"]]  # fmt: skip

    def views(*current):
        fresh = [*export_progress(workspace), jobs.log_tail(workspace.state / "export.log", 20), *serve_view(workspace)]
        changed = [gr.skip() if new == old else new for new, old in zip(fresh, current, strict=True)]
        changed[5] = changed[5] if fresh[5] == current[5] else gr.update(value=fresh[5], visible=bool(fresh[5]))
        return changed

    c["timer"].tick(views, shown, shown, show_progress="hidden")

    def lists(run, model, adapters):
        runs = [workspace.relative(path) for path in workspace.run_dirs()]
        bases = base_choices(workspace)
        run = run or (runs[0] if runs else None)
        model = model or (BASE_PREFIX + runs[0] if runs else None)
        served = adapter_runs(workspace)
        adapters = [name for name in adapters or [] if name in served]
        return (gr.update(choices=runs, value=run), gr.update(choices=bases, value=model),
                gr.update(choices=served, value=adapters))  # fmt: skip

    pickers = [c["run"], c["model"], c["adapters"]]
    for trigger in (c["tab"].select, c["refresh"].click):
        trigger(lists, pickers, pickers, show_progress="hidden").then(views, shown, shown, show_progress="hidden")

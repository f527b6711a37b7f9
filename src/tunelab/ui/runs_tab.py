"""The Runs tab: every run in the workspace with its state, method and key metrics; several selected runs compared
(table and overlaid loss curves); open one in the Train tab's live view, resume it, or delete it (after confirming)."""

from __future__ import annotations

import shutil
import time

from tunelab.runs import RunDir
from tunelab.ui import jobs, live
from tunelab.ui.common import UIContext, guarded
from tunelab.ui.workspace import UIError, Workspace

TEXT = {
    "runs.table": ("Runs in the workspace", "工作区中的运行"),
    "runs.pick": (
        "Select runs (compare several; open, resume or delete one)",
        "选择运行（可多选比较；打开、继续或删除一个）",
    ),
    "runs.refresh": ("Refresh", "刷新"),
    "runs.compare": ("Compare", "比较"),
    "runs.open": ("Watch in the Train tab", "在训练页查看"),
    "runs.resume": ("Resume", "继续"),
    "runs.delete": ("Delete…", "删除…"),
    "runs.confirm": ("Yes, delete it", "确认删除"),
    "runs.cancel": ("Cancel", "取消"),
    "runs.curves": ("Loss curves", "损失曲线"),
}


def build(ctx: UIContext) -> None:
    import gradio as gr

    ctx.labels.add(TEXT)
    with gr.Tab(ctx.t("tab.runs"), id="runs", elem_id="tab-runs") as tab:
        ctx.labels.follow(tab, "tab.runs")
        message = gr.Markdown(elem_id="runs-message")
        table = gr.Dataframe(label=ctx.t("runs.table"), elem_id="runs-table", interactive=False, wrap=True)
        with gr.Row():
            picked = gr.Dropdown(label=ctx.t("runs.pick"), multiselect=True, elem_id="runs-pick", scale=4)
            refresh = gr.Button(ctx.t("runs.refresh"), elem_id="runs-refresh", scale=0)
        with gr.Row():
            compare = gr.Button(ctx.t("runs.compare"), elem_id="runs-compare", variant="primary")
            open_run = gr.Button(ctx.t("runs.open"), elem_id="runs-open")
            resume = gr.Button(ctx.t("runs.resume"), elem_id="runs-resume")
            delete = gr.Button(ctx.t("runs.delete"), elem_id="runs-delete", variant="stop")
        with gr.Row(visible=False, elem_id="runs-confirm-row") as confirm_row:
            confirm = gr.Button(ctx.t("runs.confirm"), elem_id="runs-confirm", variant="stop")
            cancel = gr.Button(ctx.t("runs.cancel"), elem_id="runs-cancel")
        compared = gr.Dataframe(elem_id="runs-compared", interactive=False, wrap=True, visible=False)
        # no shown label: Gradio keeps the height and the label would push the series legend out of view
        curves = gr.LinePlot(x="step", y="loss", color="series", label=ctx.t("runs.curves"), elem_id="runs-curves",
                             height=420, show_label=False, visible=False)  # fmt: skip
    for component, key in ((table, "runs.table"), (picked, "runs.pick"), (curves, "runs.curves")):
        ctx.labels.follow(component, key)
    for component, key in ((refresh, "runs.refresh"), (compare, "runs.compare"), (open_run, "runs.open"),
                           (resume, "runs.resume"), (delete, "runs.delete"), (confirm, "runs.confirm"),
                           (cancel, "runs.cancel")):  # fmt: skip
        ctx.labels.follow(component, key, "value")
    parts = {"message": message, "table": table, "picked": picked, "refresh": refresh, "compare": compare,
             "open": open_run, "resume": resume, "delete": delete, "confirm_row": confirm_row, "confirm": confirm,
             "cancel": cancel, "compared": compared, "curves": curves}  # fmt: skip
    _wire(ctx, parts)


def _one(picked: list[str] | None) -> str:
    if not picked or len(picked) != 1:
        raise UIError("select exactly one run for this")
    return picked[0]


def _delete_run(workspace: Workspace, name: str) -> None:
    """Delete a run directory of the workspace, never anything else and never a run that is still running."""
    path = workspace.resolve(name, "run")
    if not (RunDir.is_run(path) or (path / "status.json").exists()) or path == workspace.runs:
        raise UIError(f"{name} is not a run directory; nothing was deleted")
    if RunDir(path).live_process() is not None:
        raise UIError(f"{name} is running; stop it before deleting it")
    shutil.rmtree(path)


def _wire(ctx: UIContext, c: dict) -> None:
    import gradio as gr

    workspace = ctx.workspace

    def listing(picked=None):
        runs = workspace.run_dirs()
        names = [workspace.relative(path) for path in runs]
        kept = [name for name in picked or [] if name in names]
        return live.runs_table(runs), gr.update(choices=names, value=kept)

    def refreshed(picked):
        table, choices = listing(picked)
        return table, choices, f"{len(table)} runs, listed at {time.strftime('%H:%M:%S')}"

    ctx.shared["runs_listing"] = (lambda: listing(), [c["table"], c["picked"]])
    c["refresh"].click(refreshed, c["picked"], [c["table"], c["picked"], c["message"]])

    @guarded(3)
    def compare_clicked(picked):
        if not picked:
            raise UIError("select one or more runs to compare")
        runs = [RunDir(workspace.resolve(name, "run")) for name in picked]
        frame = live.runs_table([run.path for run in runs])
        return "", gr.update(value=frame, visible=True), gr.update(value=live.loss_frame(runs), visible=True)

    c["compare"].click(compare_clicked, c["picked"], [c["message"], c["compared"], c["curves"]])

    @guarded(2)
    def open_clicked(picked):
        name = _one(picked)
        workspace.resolve(name, "run")
        return f"watching {name} in the Train tab", gr.update(value=name)

    c["open"].click(open_clicked, c["picked"], [c["message"], ctx.shared["watch"]])

    @guarded(1)
    def resume_clicked(picked):
        name = _one(picked)
        pid = jobs.resume_run(workspace, workspace.resolve(name, "run"))
        return f"resumed {name} (process {pid}); watch it in the Train tab"

    c["resume"].click(resume_clicked, c["picked"], c["message"])

    @guarded(2)
    def delete_clicked(picked):
        name = _one(picked)
        return f"Delete **{name}** and everything in it? This cannot be undone.", gr.update(visible=True)

    c["delete"].click(delete_clicked, c["picked"], [c["message"], c["confirm_row"]])
    c["cancel"].click(lambda: ("", gr.update(visible=False)), None, [c["message"], c["confirm_row"]])

    @guarded(4)
    def confirm_clicked(picked):
        name = _one(picked)
        _delete_run(workspace, name)
        table, choices = listing([])
        return f"deleted {name}", gr.update(visible=False), table, choices

    c["confirm"].click(confirm_clicked, c["picked"], [c["message"], c["confirm_row"], c["table"], c["picked"]])

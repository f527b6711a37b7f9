"""The Evaluate tab: pick a run; its base-vs-tuned table with intervals and verdicts (per category too), the
forgetting verdict, answers cut off at the token limit, and its HTML report inline (rebuilt on request); launch
`tunelab judge` against the base model or another run in the background and show its log and win/tie/loss."""

from __future__ import annotations

from typing import Any

from tunelab.runs import RunDir
from tunelab.ui import eval_view, jobs
from tunelab.ui.common import UIContext, guarded, message_tab
from tunelab.ui.data_work import model_choices
from tunelab.ui.workspace import UIError

TEXT = {
    "eval.run": ("Run", "运行"),
    "eval.refresh": ("Refresh", "刷新"),
    "eval.rebuild": ("Rebuild report", "重新生成报告"),
    "eval.metrics_head": ("### Base vs tuned (held-out test set)", "### 基础模型与微调模型对比（留出测试集）"),
    "eval.metrics": ("Metrics with 95% intervals and verdicts", "指标、95% 置信区间与结论"),
    "eval.categories": ("Per category", "按类别"),
    "eval.forgetting_head": ("### Forgetting check", "### 遗忘检查"),
    "eval.forgetting": ("Forgetting, overall and per category", "遗忘情况（总体与按类别）"),
    "eval.truncation": ("Answers cut off at the token limit", "因 token 上限被截断的回答"),
    "eval.judge_head": ("### Pairwise judge (A = this run)", "### 成对评判（A = 当前运行）"),
    "eval.judge_b": ("B: the base model or another run", "B：基础模型或另一个运行"),
    "eval.judge_model": ("Judge: a model or an OpenAI-compatible URL", "评判者：模型或 OpenAI 兼容的 URL"),
    "eval.judge_name": ("Model name at the URL", "URL 上的模型名称"),
    "eval.judge_limit": ("Prompts to judge (empty: all)", "评判的提示数（留空：全部）"),
    "eval.judge_data": ("Prompts file (default: the run's test set)", "提示文件（默认：运行的测试集）"),
    "eval.judge_start": ("Start judging", "开始评判"),
    "eval.judge_log": ("Judge log (last lines)", "评判日志（最后几行）"),
    "eval.judge_table": ("Win / tie / loss", "胜 / 平 / 负"),
    "eval.report": ("Report (eval/report.html)", "报告（eval/report.html）"),
}
VIEW_KEYS = ("note", "comparison", "metrics", "categories", "forgetting_text", "forgetting", "truncation_text",
             "truncation", "report")  # fmt: skip
TABLES = ("metrics", "categories", "forgetting", "truncation")


def build(ctx: UIContext) -> None:
    import gradio as gr

    t, runs = ctx.t, eval_view.run_choices(ctx.workspace)
    c: dict[str, Any] = {}
    with message_tab(ctx, c, TEXT, "evaluate", "eval"):
        with gr.Row():
            c["run"] = gr.Dropdown(runs, value=None, label=t("eval.run"), elem_id="eval-run", scale=4)
            c["refresh"] = gr.Button(t("eval.refresh"), elem_id="eval-refresh", scale=0, min_width=150)
            c["rebuild"] = gr.Button(t("eval.rebuild"), elem_id="eval-rebuild", scale=0, min_width=180)
        c["note"] = gr.Markdown(elem_id="eval-note")
        _results(ctx, c)
        _judge_form(ctx, c)
        with gr.Accordion(t("eval.report"), open=True, elem_id="eval-report-box") as c["report_box"]:
            c["report"] = gr.HTML(elem_id="eval-report")
        c["job"] = gr.State(None)
        c["timer"] = gr.Timer(2.0, active=False)
    ctx.labels.follow(c["run"], "eval.run")
    ctx.labels.follow(c["report_box"], "eval.report")
    for key in ("refresh", "rebuild"):
        ctx.labels.follow(c[key], f"eval.{key}", "value")
    _wire(ctx, c)
    _wire_judge(ctx, c)


def _results(ctx: UIContext, c: dict[str, Any]) -> None:
    import gradio as gr

    t = ctx.t
    c["metrics_head"] = gr.Markdown(t("eval.metrics_head"), elem_id="eval-metrics-head")
    c["comparison"] = gr.Markdown(elem_id="eval-comparison-note")
    table = {"interactive": False, "wrap": True, "visible": False}
    c["metrics"] = gr.Dataframe(label=t("eval.metrics"), elem_id="eval-metrics", **table)
    c["categories"] = gr.Dataframe(label=t("eval.categories"), elem_id="eval-categories", **table)
    c["forgetting_head"] = gr.Markdown(t("eval.forgetting_head"), elem_id="eval-forgetting-head")
    c["forgetting_text"] = gr.Markdown(elem_id="eval-forgetting-verdict")
    c["forgetting"] = gr.Dataframe(label=t("eval.forgetting"), elem_id="eval-forgetting", **table)
    c["truncation_text"] = gr.Markdown(elem_id="eval-truncation-note")
    c["truncation"] = gr.Dataframe(label=t("eval.truncation"), elem_id="eval-truncation", **table)
    for key in ("metrics", "categories", "forgetting", "truncation"):
        ctx.labels.follow(c[key], f"eval.{key}")
    for key in ("metrics_head", "forgetting_head"):
        ctx.labels.follow(c[key], f"eval.{key}", "value")


def _judge_form(ctx: UIContext, c: dict[str, Any]) -> None:
    import gradio as gr

    t, judges = ctx.t, model_choices(ctx.workspace)
    c["judge_head"] = gr.Markdown(t("eval.judge_head"), elem_id="judge-head")
    with gr.Row():
        with gr.Column(scale=2):
            c["judge_b"] = gr.Dropdown([], allow_custom_value=True, label=t("eval.judge_b"), elem_id="judge-b")
            c["judge_model"] = gr.Dropdown(judges, value=judges[0], allow_custom_value=True,
                                           label=t("eval.judge_model"), elem_id="judge-judge")  # fmt: skip
            with gr.Row():
                c["judge_name"] = gr.Textbox("default", label=t("eval.judge_name"), elem_id="judge-model-name")
                c["judge_limit"] = gr.Number(20, precision=0, label=t("eval.judge_limit"), elem_id="judge-limit")
            c["judge_data"] = gr.Textbox(label=t("eval.judge_data"), placeholder="data/prompts.jsonl",
                                         elem_id="judge-data")  # fmt: skip
            c["judge_start"] = gr.Button(t("eval.judge_start"), variant="primary", elem_id="judge-start")
        with gr.Column(scale=3):
            c["judge_log"] = gr.Textbox(label=t("eval.judge_log"), lines=8, max_lines=8, interactive=False,
                                        autoscroll=True, elem_id="judge-log")  # fmt: skip
            c["judge_summary"] = gr.Markdown(elem_id="judge-summary")
            c["judge_table"] = gr.Dataframe(label=t("eval.judge_table"), interactive=False, wrap=True,
                                            visible=False, elem_id="judge-table")  # fmt: skip
    for key in ("judge_b", "judge_model", "judge_name", "judge_limit", "judge_data", "judge_log", "judge_table"):
        ctx.labels.follow(c[key], f"eval.{key}")
    for key in ("judge_head", "judge_start"):
        ctx.labels.follow(c[key], f"eval.{key}", "value")


def _shown(view: dict[str, Any]) -> list[Any]:
    import gradio as gr

    return [gr.update(value=view[key], visible=view[key] is not None) if key in TABLES else view[key]
            for key in VIEW_KEYS]  # fmt: skip


def _wire(ctx: UIContext, c: dict[str, Any]) -> None:
    import gradio as gr

    workspace = ctx.workspace
    judged = [c["judge_b"], c["judge_log"], c["judge_summary"], c["judge_table"]]
    outputs = [c["message"], *[c[key] for key in VIEW_KEYS], *judged]

    @guarded(len(outputs))
    def picked(name):
        if not name:
            return "", *_shown(_empty()), gr.update(choices=[], value=None), "", "", gr.update(visible=False)
        run = eval_view.open_run(workspace, name)
        choices = eval_view.opponents(workspace, run)
        return "", *_shown(eval_view.view(run)), gr.update(choices=choices, value=choices[0][1]), *_judged(run)

    c["run"].change(picked, c["run"], outputs)

    def listing(name):
        names = eval_view.run_choices(workspace)
        return gr.update(choices=names, value=name if name in names else None)

    c["refresh"].click(listing, c["run"], c["run"]).then(picked, c["run"], outputs)
    # runs made since the page was opened; the value is left alone (a run picked meanwhile stays picked)
    c["tab"].select(lambda: gr.update(choices=eval_view.run_choices(workspace)), None, c["run"], show_progress="hidden")

    @guarded(len(VIEW_KEYS) + 1)
    def rebuild_clicked(name):
        run = eval_view.open_run(workspace, name)
        path = eval_view.rebuild_report(run)
        return f"rebuilt {workspace.relative(path)}", *_shown(eval_view.view(run))

    c["rebuild"].click(rebuild_clicked, c["run"], [c["message"], *[c[key] for key in VIEW_KEYS]])


def _empty() -> dict[str, Any]:
    return {key: None if key in TABLES else "" for key in VIEW_KEYS}


def _judged(run, since: float | None = None) -> list[Any]:
    """Judge log tail, summary lines and table of a run."""
    import gradio as gr

    text, table = eval_view.judge_results(run, since)
    return [jobs.log_tail(eval_view.judge_log(run), 30), text, gr.update(value=table, visible=table is not None)]


def _wire_judge(ctx: UIContext, c: dict[str, Any]) -> None:
    import gradio as gr

    workspace = ctx.workspace
    form = [c["run"], c["judge_b"], c["judge_model"], c["judge_name"], c["judge_limit"], c["judge_data"], c["job"]]

    @guarded(4)
    def start_clicked(name, other, judge, judge_name, limit, prompts, job):
        if job and jobs.job_running(job["pid"]):
            raise UIError(f"a judge job is running for {job['run']} (process {job['pid']}); wait for it")
        run = eval_view.open_run(workspace, name)
        command = eval_view.judge_command(workspace, run, other, judge, judge_name, limit, prompts)
        started = eval_view.started_now()
        pid = jobs.start_job(workspace, command, eval_view.judge_log(run))
        log = workspace.relative(eval_view.judge_log(run))
        job = {"pid": pid, "run": name, "started": started}
        words = f"judging {command[2]} against {command[4]} with {command[6]} (process {pid}); its output goes to {log}"
        return (
            words,
            job,
            gr.Timer(active=True),
            "",
        )

    c["judge_start"].click(start_clicked, form, [c["message"], c["job"], c["timer"], c["judge_summary"]])

    def tick(job):
        """While the judge runs: its log; when it has ended: the results, and the report it updated."""
        if not job:
            return gr.Timer(active=False), *[gr.skip()] * 5
        run = RunDir(workspace.resolve(job["run"], "run"))
        if jobs.job_running(job["pid"]):
            return gr.Timer(active=True), jobs.log_tail(eval_view.judge_log(run), 30), *[gr.skip()] * 4
        return gr.Timer(active=False), *_judged(run, job["started"]), None, eval_view.report_frame(run)

    outputs = [c["timer"], c["judge_log"], c["judge_summary"], c["judge_table"], c["job"], c["report"]]
    c["timer"].tick(tick, c["job"], outputs, show_progress="hidden")

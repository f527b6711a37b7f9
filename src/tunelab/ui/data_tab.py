"""The Data tab: choose training files (upload or paths inside the workspace), an evaluation file and/or datasets of a
LLaMA-Factory registry; preview one record with its trained tokens marked; audit the data into audits/<name>/ and
show the summary, the report and its plots; hand the choice to the Train tab."""

from __future__ import annotations

from typing import Any

from tunelab.ui import data_work
from tunelab.ui.common import UIContext, guarded, message_tab, problem_text
from tunelab.ui.workspace import UIError, size_text

TEXT = {
    "data.choose": ("### Choose data", "### 选择数据"),
    "data.upload": (
        "Upload training files (.jsonl, .json, .csv, .parquet)",
        "上传训练文件（.jsonl、.json、.csv、.parquet）",
    ),
    "data.paths": ("Training files (paths inside the workspace, one per line)", "训练文件（工作区内的路径，每行一个）"),
    "data.eval": ("Evaluation file (optional)", "评估文件（可选）"),
    "data.eval_upload": ("Upload an evaluation file", "上传评估文件"),
    "data.role": ("Use the evaluation file as", "评估文件用作"),
    "data.registry": (
        "LLaMA-Factory registry (dataset_info.json, optional)",
        "LLaMA-Factory 注册表（dataset_info.json，可选）",
    ),
    "data.read": ("Read registry", "读取注册表"),
    "data.datasets": ("Registry datasets", "注册表中的数据集"),
    "data.model": ("Tokenizer (model)", "分词器（模型）"),
    "data.max_length": ("max_length (tokens)", "最大长度（token）"),
    "data.preview_head": ("### Preview", "### 预览"),
    "data.index": ("Record (0 = the first)", "记录序号（0 为第一条）"),
    "data.preview": ("Preview", "预览"),
    "data.audit_head": ("### Audit", "### 审查"),
    "data.audit_name": ("Audit name (default: date and time)", "审查名称（默认：日期时间）"),
    "data.lengths": ("Measure token lengths (loads the tokenizer)", "统计 token 长度（需加载分词器）"),
    "data.audit": ("Run the audit", "运行审查"),
    "data.summary": ("Summary", "摘要"),
    "data.plot_lengths": ("Token lengths", "token 长度分布"),
    "data.plot_turns": ("Conversation turns", "对话轮数"),
    "data.report": ("Full report (report.md)", "完整报告（report.md）"),
    "data.use": ("Use in Train", "用于训练"),
    "data.for_train": ("For the Train tab (recipe YAML; copy it)", "用于训练页（配方 YAML，可复制）"),
}
ROLES = [("test", "test"), ("validation", "validation")]


def build(ctx: UIContext) -> None:
    import gradio as gr

    t, models = ctx.t, data_work.model_choices(ctx.workspace)
    c: dict[str, Any] = {}
    with message_tab(ctx, c, TEXT, "data", "data"):
        with gr.Row():
            with gr.Column(scale=2):
                _choose(ctx, c, models)
            with gr.Column(scale=3):
                c["preview_head"] = gr.Markdown(t("data.preview_head"), elem_id="data-preview-head")
                with gr.Row():
                    c["index"] = gr.Number(3, precision=0, label=t("data.index"), elem_id="data-index")
                    c["preview"] = gr.Button(t("data.preview"), variant="primary", elem_id="data-preview-button")
                c["info"] = gr.Markdown(elem_id="data-preview-info")
                c["tokens"] = gr.HTML(elem_id="data-preview")
        _audit_section(ctx, c)
    ctx.labels.follow(c["index"], "data.index")
    for key in ("preview_head", "preview"):
        ctx.labels.follow(c[key], f"data.{key}", "value")
    _wire(ctx, c)


def _choose(ctx: UIContext, c: dict[str, Any], models: list[str]) -> None:
    import gradio as gr

    t, limit = ctx.t, size_text(ctx.workspace.max_upload_bytes)
    c["choose"] = gr.Markdown(t("data.choose"), elem_id="data-choose-head")
    c["upload"] = gr.File(file_count="multiple", label=t("data.upload"), elem_id="data-upload", height=160)
    english = (
        f"Each upload ≤ {limit}, copied into `uploads/`; put larger files into the workspace and type their paths."
    )
    chinese = f"每个上传文件不超过 {limit}，保存到 `uploads/`；更大的文件请自行放入工作区并填写路径。"
    ctx.labels.add({"data.limit": (english, chinese)})
    c["limit"] = gr.Markdown(t("data.limit"), elem_id="data-upload-limit")
    c["paths"] = gr.Textbox(lines=3, max_lines=10, label=t("data.paths"), placeholder="data/train.jsonl",
                            elem_id="data-paths")  # fmt: skip
    with gr.Row(equal_height=True):
        c["eval"] = gr.Textbox(label=t("data.eval"), placeholder="data/test.jsonl", elem_id="data-eval", scale=3)
        c["role"] = gr.Radio(ROLES, value="test", label=t("data.role"), elem_id="data-eval-role", scale=2)
    c["eval_upload"] = gr.UploadButton(t("data.eval_upload"), elem_id="data-eval-upload", size="sm")
    with gr.Row():
        c["registry"] = gr.Textbox(label=t("data.registry"), placeholder="data/dataset_info.json",
                                   elem_id="data-registry", scale=3)  # fmt: skip
        c["read"] = gr.Button(t("data.read"), elem_id="data-registry-read", scale=1)
    c["datasets"] = gr.Dropdown([], multiselect=True, label=t("data.datasets"), elem_id="data-datasets")
    with gr.Row(equal_height=True):
        c["model"] = gr.Dropdown(models, value=models[0], allow_custom_value=True, label=t("data.model"),
                                 elem_id="data-model", scale=3)  # fmt: skip
        c["max_length"] = gr.Number(1024, precision=0, label=t("data.max_length"),
                                    elem_id="data-max-length", scale=1)  # fmt: skip
    c["model_note"] = gr.Markdown(_note(ctx, models[0]), elem_id="data-model-note")
    for key in ("upload", "paths", "eval", "role", "registry", "datasets", "model", "max_length"):
        ctx.labels.follow(c[key], f"data.{key}")
    for component, key in ((c["choose"], "data.choose"), (c["read"], "data.read"), (c["limit"], "data.limit")):
        ctx.labels.follow(component, key, "value")
    ctx.labels.follow(c["eval_upload"], "data.eval_upload", "label")


def _audit_section(ctx: UIContext, c: dict[str, Any]) -> None:
    import gradio as gr

    t = ctx.t
    c["audit_head"] = gr.Markdown(t("data.audit_head"), elem_id="data-audit-head")
    with gr.Row():
        c["audit_name"] = gr.Textbox(label=t("data.audit_name"), elem_id="audit-name", scale=2)
        c["lengths"] = gr.Checkbox(True, label=t("data.lengths"), elem_id="audit-lengths", scale=2)
        c["audit"] = gr.Button(t("data.audit"), variant="primary", elem_id="audit-run", scale=1)
    c["where"] = gr.Markdown(elem_id="audit-where")
    c["summary"] = gr.Textbox(label=t("data.summary"), lines=6, interactive=False, elem_id="audit-summary")
    with gr.Row():
        c["plot_lengths"] = gr.Image(label=t("data.plot_lengths"), format="png", interactive=False,
                                     elem_id="audit-token-lengths")  # fmt: skip
        c["plot_turns"] = gr.Image(label=t("data.plot_turns"), format="png", interactive=False, elem_id="audit-turns")
    with gr.Accordion(t("data.report"), open=False, elem_id="audit-report-box") as c["report_box"]:
        c["report"] = gr.Markdown(elem_id="audit-report")
    with gr.Row():
        c["use"] = gr.Button(t("data.use"), elem_id="data-use", scale=0, min_width=200)
    c["for_train"] = gr.Code(language="yaml", label=t("data.for_train"), interactive=False, elem_id="data-for-train")
    c["chosen"] = gr.State({})
    for key in ("audit_name", "lengths", "summary", "plot_lengths", "plot_turns", "report_box", "for_train"):
        ctx.labels.follow(c[key], f"data.{key.removesuffix('_box')}")
    for key in ("audit_head", "audit", "use"):
        ctx.labels.follow(c[key], f"data.{key}", "value")
    # For the Train tab: `chosen` holds {"model.name", "data.sources", "data.test", ...} after "Use in Train".
    ctx.shared["data_for_train"] = (c["use"], c["chosen"])


def _note(ctx: UIContext, model: str | None) -> str:
    try:
        return data_work.model_note(ctx.workspace, model)
    except Exception as error:  # an unknown model is said in the note, not raised while building the page
        return problem_text(error)


def _wire_uploads(ctx: UIContext, c: dict[str, Any]) -> None:
    workspace = ctx.workspace

    def stored(files, paths):
        """Uploads copied into uploads/ (size-limited) and added to the training paths."""
        added, problems = [], []
        for file in files if isinstance(files, list) else [files] if files else []:
            try:
                added.append(workspace.relative(workspace.store_upload(file)))
            except Exception as error:  # one file too large: said, the others are still stored
                problems.append(problem_text(error))
        text = "\n".join([*data_work.lines_of(paths), *added])
        words = [f"stored {', '.join(added)}"] if added else []
        return "\n\n".join(words + problems), text, None

    def stored_eval(file, old):
        message, text, _ = stored(file, "")
        return message, text or old, None

    c["upload"].upload(stored, [c["upload"], c["paths"]], [c["message"], c["paths"], c["upload"]])
    c["eval_upload"].upload(stored_eval, [c["eval_upload"], c["eval"]], [c["message"], c["eval"], c["eval_upload"]])


def _wire(ctx: UIContext, c: dict[str, Any]) -> None:
    import gradio as gr

    workspace = ctx.workspace
    tracked = gr.Progress()  # Gradio finds a handler's progress bar by this default value
    _wire_uploads(ctx, c)

    @guarded(2)
    def read_clicked(registry):
        names = data_work.registry_names(workspace, registry)
        return f"{len(names)} datasets in {registry}: choose those to use", gr.update(choices=names, value=[])

    c["read"].click(read_clicked, c["registry"], [c["message"], c["datasets"]])
    c["model"].change(lambda model: _note(ctx, model), c["model"], c["model_note"], show_progress="hidden")
    c["tab"].select(lambda: gr.update(choices=data_work.model_choices(workspace)), None, c["model"])

    @guarded(3)
    def preview_clicked(paths, evaluation, role, registry, datasets, model, max_length, index,
                        progress=tracked):  # fmt: skip
        data = data_work.data_section(workspace, paths, evaluation, role, registry, datasets)
        progress(0.2, desc="reading the records")
        loaded = data_work.load_records(data)
        tokenizer, fallback = _tokenizer(ctx, model, progress)
        info, tokens = data_work.preview(loaded.train, int(index or 0), tokenizer, fallback, _length(max_length))
        return data_work.invalid_note(loaded.invalid), info, tokens

    inputs = [c["paths"], c["eval"], c["role"], c["registry"], c["datasets"], c["model"], c["max_length"]]
    c["preview"].click(preview_clicked, [*inputs, c["index"]], [c["message"], c["info"], c["tokens"]])
    _wire_audit(ctx, c, inputs)


def _length(value: Any) -> int:
    if value is None or int(value) < 1:
        raise UIError("max_length must be a whole number of tokens, 1 or more")
    return int(value)


def _tokenizer(ctx: UIContext, model: str | None, progress) -> tuple[Any, bool]:
    """The tokenizer, saying so first when the model is converted on the way (minutes)."""
    name = data_work.model_argument(ctx.workspace, model)
    slow = " (converting the model once: a few minutes)" if data_work.model_note(ctx.workspace, name) else ""
    progress(0.4, desc=f"loading the tokenizer of {model}{slow}")
    return data_work.tokenizer_for(name)


def _wire_audit(ctx: UIContext, c: dict[str, Any], inputs: list) -> None:
    import gradio as gr

    from tunelab.data.audit_report import summary_lines

    workspace = ctx.workspace
    tracked = gr.Progress()

    @guarded(6)
    def audit_clicked(paths, evaluation, role, registry, datasets, model, max_length, name, lengths,
                      progress=tracked):  # fmt: skip
        data = data_work.data_section(workspace, paths, evaluation, role, registry, datasets)
        data = data.model_copy(update={"max_length": _length(max_length)})
        folder = data_work.audit_folder(workspace, name)
        progress(0.1, desc="reading the records")
        loaded = data_work.load_records(data)
        tokenizer = _tokenizer(ctx, model, progress)[0] if lengths else None
        progress(0.6, desc="auditing: duplicates, leakage, lengths, answers")
        written, report = data_work.run_audit(data, loaded, tokenizer, folder)
        where = f"written to `{workspace.relative(folder)}/`: report.md, report.json, plots, data.yaml"
        plots = [_image(written.get(key)) for key in data_work.PLOTS]
        summary = "\n".join(summary_lines(report))
        return data_work.invalid_note(loaded.invalid), where, summary, *plots, data_work.report_markdown(written["md"])

    outputs = [c["message"], c["where"], c["summary"], c["plot_lengths"], c["plot_turns"], c["report"]]
    c["audit"].click(audit_clicked, [*inputs, c["audit_name"], c["lengths"]], outputs)

    @guarded(3)
    def use_clicked(paths, evaluation, role, registry, datasets, model, _max_length):
        data = data_work.data_section(workspace, paths, evaluation, role, registry, datasets)
        text, fields = data_work.train_fragment(workspace, data, data_work.model_argument(workspace, model))
        return "copy the YAML below into the Train tab's form or your recipe", text, fields

    c["use"].click(use_clicked, inputs, [c["message"], c["for_train"], c["chosen"]])


def _image(path):
    """A plot as an image value (the page gets a copy; the file may lie outside Gradio's allowed folders)."""
    if path is None or not path.is_file():
        return None
    from PIL import Image

    with Image.open(path) as image:
        return image.copy()

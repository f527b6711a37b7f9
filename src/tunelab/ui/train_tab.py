"""The Train tab: the recipe form (built from the schema), its YAML and live validation, save/load, the memory and
time estimate, Start / Stop / Resume, and the live view of the watched run (progress, loss curves, log tail)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.runs import RunDir
from tunelab.ui import jobs, live
from tunelab.ui.common import UIContext, guarded, problem_text
from tunelab.ui.i18n import FIELD_ZH
from tunelab.ui.recipes import check, form_recipe, load_recipe_values, recipe_yaml, save_recipe, saved_recipes
from tunelab.ui.schema_form import NONE_CHOICE, FieldSpec, field_specs, sections, widget_default

TEXT = {
    "recipe.file": ("Saved recipes", "已保存的配方"),
    "recipe.load": ("Load", "载入"),
    "recipe.save": ("Save recipe", "保存配方"),
    "recipe.yaml": ("Recipe (YAML)", "配方（YAML）"),
    "recipe.validate": ("Validate", "校验"),
    "estimate": ("Estimate memory and time", "估算内存和时间"),
    "overwrite": ("Replace an existing run of this name", "覆盖同名的已有运行"),
    "start": ("Start training", "开始训练"),
    "stop": ("Stop (keeps a checkpoint)", "停止（保留检查点）"),
    "resume": ("Resume", "继续"),
    "watch": ("Run shown below", "下方显示的运行"),
    "refresh": ("Refresh", "刷新"),
    "log": ("Log (last lines)", "日志（最后几行）"),
    "loss": ("Loss", "损失"),
    "valid": ("✅ The recipe is valid.", "✅ 配方有效。"),
}
SECTION_TITLES = {"": "Run", "model": "Model", "data": "Data", "method": "Method", "train": "Training",
                  "eval": "Evaluation", "export": "Export"}  # fmt: skip


def elem(spec: FieldSpec) -> str:
    return "f-" + spec.key.replace(".", "-").replace("@", "-")


def _widget(spec: FieldSpec, ctx: UIContext):
    """One Gradio component for a field spec; its label is the YAML key, its info the schema's description."""

    label = "more train keys (YAML)" if spec.kind == "yaml" else spec.path.rsplit(".", 1)[-1]
    value, info = widget_default(spec), spec.description or None
    common = {"label": label, "info": info, "elem_id": elem(spec), "value": value}
    if info:
        ctx.labels.add({f"info:{spec.path}": (info, FIELD_ZH.get(spec.path, info))})
    component = _component(spec, common)
    if info:
        ctx.labels.follow(component, f"info:{spec.path}", "info")
    return component


def _component(spec: FieldSpec, common: dict[str, Any]):
    import gradio as gr

    if spec.kind == "bool":
        return gr.Checkbox(**common)
    if spec.kind in ("int", "float"):
        return gr.Number(precision=0 if spec.kind == "int" else None, **common)
    if spec.kind == "choice":
        choices = [("(default)" if c is None else str(c), NONE_CHOICE if c is None else c) for c in spec.choices]
        return gr.Dropdown(choices=choices, allow_custom_value=False, **common)
    if spec.kind == "multichoice":
        return gr.Dropdown(choices=spec.choices, multiselect=True, **common)
    lines = 3 if spec.kind in ("list", "yaml", "yaml_list") else 1
    return gr.Textbox(lines=lines, max_lines=12, **common)


def _form(ctx: UIContext, specs: list[FieldSpec]) -> tuple[list[tuple[FieldSpec, Any]], dict[str, Any]]:
    """The form's components in spec order, and the method-variant groups (shown for the chosen method only)."""
    import gradio as gr

    fields: list[tuple[FieldSpec, Any]] = []
    groups: dict[str, Any] = {}
    for section, members in sections(specs).items():
        title = SECTION_TITLES.get(section, section)
        ctx.labels.add({f"section.{section}": (title, FIELD_ZH.get(section, title))})
        with gr.Accordion(
            title, open=section in ("", "model", "data", "method"), elem_id=f"section-{section or 'run'}"
        ) as box:
            ctx.labels.follow(box, f"section.{section}")
            for variant in dict.fromkeys(s.variant for s in members):
                chosen = [s for s in members if s.variant == variant]
                if variant is None:
                    fields += _rows(ctx, chosen)
                    continue
                with gr.Group(visible=variant == widget_default(members[0]), elem_id=f"method-{variant}") as group:
                    fields += _rows(ctx, chosen)
                groups[variant] = group
    return fields, groups


def _rows(ctx: UIContext, specs: list[FieldSpec], per_row: int = 3) -> list[tuple[FieldSpec, Any]]:
    """Fields three to a row; a multi-line one (a list, YAML) takes a row of its own."""
    import gradio as gr

    made: list[tuple[FieldSpec, Any]] = []
    pending: list[FieldSpec] = []

    def flush() -> None:
        if pending:
            with gr.Row(equal_height=True):
                made.extend((s, _widget(s, ctx)) for s in pending)
            pending.clear()

    for spec in specs:
        if spec.kind in ("list", "yaml", "yaml_list"):
            flush()
            made.append((spec, _widget(spec, ctx)))
        else:
            pending.append(spec)
            if len(pending) == per_row:
                flush()
    flush()
    return made


def build(ctx: UIContext) -> None:
    import gradio as gr

    ctx.labels.add(TEXT)
    specs = field_specs()
    with gr.Tab(ctx.t("tab.train"), id="train", elem_id="tab-train") as tab:
        ctx.labels.follow(tab, "tab.train")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    recipe_file = gr.Dropdown(saved_recipes(ctx.workspace), label=ctx.t("recipe.file"),
                                              elem_id="recipe-file", allow_custom_value=True)  # fmt: skip
                    load = gr.Button(ctx.t("recipe.load"), elem_id="recipe-load", scale=0)
                    save = gr.Button(ctx.t("recipe.save"), elem_id="recipe-save", scale=0)
                fields, groups = _form(ctx, specs)
            with gr.Column(scale=2):
                message = gr.Markdown(elem_id="train-message")
                checked = gr.Markdown(elem_id="recipe-check")
                yaml_box = gr.Code(
                    language="yaml", label=ctx.t("recipe.yaml"), elem_id="recipe-yaml", interactive=False
                )
                estimate = gr.Button(ctx.t("estimate"), elem_id="estimate-button")
                estimated = gr.Markdown(elem_id="estimate")
                overwrite = gr.Checkbox(False, label=ctx.t("overwrite"), elem_id="overwrite")
                start = gr.Button(ctx.t("start"), variant="primary", elem_id="start")
                with gr.Row():
                    watch = gr.Dropdown(label=ctx.t("watch"), elem_id="watch-run", allow_custom_value=True, scale=3)
                    refresh = gr.Button(ctx.t("refresh"), elem_id="refresh-live", scale=0)
                with gr.Row():
                    stop = gr.Button(ctx.t("stop"), elem_id="stop")
                    resume = gr.Button(ctx.t("resume"), elem_id="resume")
                progress = gr.Markdown(elem_id="progress")
                # no shown label: Gradio keeps the height and the label would push the series legend out of view
                plot = gr.LinePlot(x="step", y="loss", color="series", label=ctx.t("loss"), elem_id="loss-plot",
                                   height=340, show_label=False)  # fmt: skip
                log = gr.Textbox(label=ctx.t("log"), lines=12, max_lines=12, elem_id="log-tail", interactive=False,
                                 autoscroll=True)  # fmt: skip
        timer = gr.Timer(2.0)
    for component, key in ((recipe_file, "recipe.file"), (yaml_box, "recipe.yaml"), (overwrite, "overwrite"),
                           (watch, "watch"), (log, "log"), (plot, "loss")):  # fmt: skip
        ctx.labels.follow(component, key)
    for component, key in ((load, "recipe.load"), (save, "recipe.save"), (estimate, "estimate"), (start, "start"),
                           (stop, "stop"), (resume, "resume"), (refresh, "refresh")):  # fmt: skip
        ctx.labels.follow(component, key, "value")
    ctx.shared["watch"] = watch
    parts = {"recipe_file": recipe_file, "load": load, "save": save, "message": message, "checked": checked,
             "yaml_box": yaml_box, "estimate": estimate, "estimated": estimated, "overwrite": overwrite,
             "start": start, "watch": watch, "stop": stop, "resume": resume, "refresh": refresh,
             "progress": progress, "plot": plot, "log": log, "timer": timer}  # fmt: skip
    _wire(ctx, specs, fields, groups, parts)


def _values(fields: list[tuple[FieldSpec, Any]], raw: tuple) -> dict[str, Any]:
    return {spec.key: value for (spec, _), value in zip(fields, raw, strict=True)}


def _wire(ctx: UIContext, specs, fields, groups, c: dict[str, Any]) -> None:
    """Connect the events: any field change re-checks the recipe; buttons call jobs; the timer refreshes the view."""
    import gradio as gr

    components = [component for _, component in fields]
    workspace = ctx.workspace

    def refresh_recipe(*raw):
        recipe, problems = form_recipe(specs, _values(fields, raw), workspace)
        try:
            check(recipe, problems, workspace)
            verdict = ctx.t("valid")
        except Exception as error:  # shown in the page, whatever it is
            verdict = problem_text(error)
        return recipe_yaml(recipe), verdict

    for component in components:
        component.change(refresh_recipe, components, [c["yaml_box"], c["checked"]], show_progress="hidden")
    ctx.shared["recipe_check"] = (refresh_recipe, [c["yaml_box"], c["checked"]], components)

    method_box = next(component for spec, component in fields if spec.path == "method.type")
    names = list(groups)
    method_box.change(lambda chosen: [gr.update(visible=name == chosen) for name in names], method_box,
                      [groups[name] for name in names], show_progress="hidden")  # fmt: skip

    @guarded(2)
    def save_clicked(*raw):
        recipe, problems = form_recipe(specs, _values(fields, raw), workspace)
        path = save_recipe(workspace, recipe)
        return f"saved {workspace.relative(path)}", gr.update(choices=saved_recipes(workspace), value=path.name)

    c["save"].click(save_clicked, components, [c["message"], c["recipe_file"]])

    @guarded(len(components) + 1)
    def load_clicked(name):
        values = load_recipe_values(specs, workspace, name)
        return (f"loaded {name}", *[values[spec.key] for spec, _ in fields])

    c["load"].click(load_clicked, c["recipe_file"], [c["message"], *components])

    @guarded(1)
    def estimate_clicked(*raw):
        return _estimate(ctx, specs, _values(fields, raw))

    c["estimate"].click(estimate_clicked, components, c["estimated"])

    @guarded(2)
    def start_clicked(overwrite, *raw):
        recipe, problems = form_recipe(specs, _values(fields, raw), workspace)
        validated = check(recipe, problems, workspace)
        path = save_recipe(workspace, recipe)
        run_dir = Path(validated.output_dir) / validated.name
        pid = jobs.start_run(workspace, path, run_dir, overwrite=bool(overwrite))
        shown = gr.update(choices=_run_choices(ctx), value=workspace.relative(run_dir))
        return (
            f"started {validated.name} (process {pid}); its output goes to {workspace.relative(run_dir / 'run.log')}",
            shown,
        )

    c["start"].click(start_clicked, [c["overwrite"], *components], [c["message"], c["watch"]])
    _wire_live(ctx, c)
    _wire_data_tab(ctx, fields)


DATA_KEYS = ("model.name", "data.sources", "data.test", "data.validation", "data.registry", "data.datasets")


def _wire_data_tab(ctx: UIContext, fields: list[tuple[FieldSpec, Any]]) -> None:
    """The Data tab's "Use in Train": its model and data choice replaces the form's (a part it leaves out is reset)."""
    if "data_for_train" not in ctx.shared:
        return
    _, chosen = ctx.shared["data_for_train"]
    targets = [(spec, component) for spec, component in fields if spec.path in DATA_KEYS]

    def take(values: dict[str, Any] | None):
        values = values or {}
        return [_as_widget(spec, values[spec.path]) if spec.path in values else widget_default(spec)
                for spec, _ in targets]  # fmt: skip

    chosen.change(take, chosen, [component for _, component in targets])


def _as_widget(spec: FieldSpec, value: Any) -> Any:
    from tunelab.ui.schema_form import to_widget

    if spec.kind == "list" and isinstance(value, str):
        return value  # already one path per line
    return to_widget(spec, value)


def _wire_live(ctx: UIContext, c: dict[str, Any]) -> None:
    import gradio as gr

    workspace = ctx.workspace

    def view(watched):
        if not watched:
            return "", None, ""
        run = RunDir(workspace.resolve(watched, "run", must_exist=False))
        if not run.path.exists():
            return f"⚠️ {watched} does not exist", None, ""
        return live.progress_text(run), live.loss_frame([run]), jobs.log_tail(run.path / "run.log")

    outputs = [c["progress"], c["plot"], c["log"]]
    c["timer"].tick(view, c["watch"], outputs, show_progress="hidden")
    c["refresh"].click(lambda w: (gr.update(choices=_run_choices(ctx)), *view(w)), c["watch"], [c["watch"], *outputs])
    c["watch"].change(view, c["watch"], outputs, show_progress="hidden")

    @guarded(1)
    def stop_clicked(watched):
        return jobs.stop_run(workspace.resolve(watched, "run"))

    @guarded(1)
    def resume_clicked(watched):
        pid = jobs.resume_run(workspace, workspace.resolve(watched, "run"))
        return f"resumed {watched} (process {pid})"

    c["stop"].click(stop_clicked, c["watch"], c["message"])
    c["resume"].click(resume_clicked, c["watch"], c["message"])
    ctx.shared["attach"] = (lambda: gr.update(choices=_run_choices(ctx), value=_attach(ctx)), c["watch"])


def _run_choices(ctx: UIContext) -> list[str]:
    return [ctx.workspace.relative(path) for path in ctx.workspace.run_dirs()]


def _attach(ctx: UIContext) -> str | None:
    """On page load: the run that is running now (the newest if several), else the newest run."""
    runs = ctx.workspace.run_dirs()
    running = [path for path in runs if RunDir(path).status().get("state") in ("preparing", "running")]
    chosen = (running or runs or [None])[0]
    return ctx.workspace.relative(chosen) if chosen else None


def _estimate(ctx: UIContext, specs, values: dict[str, Any]) -> str:
    from tunelab.model.load import local_folder
    from tunelab.ui.estimate import describe_estimate, memory_estimate, seconds_per_step

    recipe, problems = form_recipe(specs, values, ctx.workspace)
    validated = check(recipe, problems, ctx.workspace)
    folder = local_folder(validated.model.name)
    if folder is None:
        return f"{validated.model.name} is not on disk yet (the first run fetches or converts it); estimate after that"
    memory = memory_estimate(folder, validated.model_dump(mode="json"))
    per_step = seconds_per_step(Path(validated.output_dir), validated.model.name, validated.method.type)
    return describe_estimate(memory, per_step, _steps(validated))


def _steps(recipe) -> int | None:
    """Optimizer steps the run will take: max_steps, or epochs × batches of the training records."""
    import math

    from tunelab.data.pipeline import load_recipe_sets

    train = recipe.train
    if int(train.get("max_steps", -1) or -1) > 0:
        return int(train["max_steps"])
    records = len(load_recipe_sets(recipe.data, recipe.seed, recipe.stage).train)
    if isinstance(recipe.data.validation, float):
        records = int(records * (1 - recipe.data.validation))
    batch = int(train.get("per_device_train_batch_size", 8)) * int(train.get("gradient_accumulation_steps", 1))
    return math.ceil(float(train.get("num_train_epochs", 1)) * math.ceil(records / batch))

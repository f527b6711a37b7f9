"""The Chat tab: two panes side by side (e.g. a run's base model and the run, or two runs) answer the same prompt,
streamed token by token; a system prompt (by default the picked run's shared training system prompt, as
`tunelab chat` uses) and sampling settings. Models load in the UI's process on first use and stay loaded
(`chat_models.ModelCache`); each pane streams in its own queued event, so generation never blocks other page actions.
"""

from __future__ import annotations

from typing import Any

from tunelab.ui.chat_models import ModelCache, guarded_stream, plain_history, sampling_of, stream_reply
from tunelab.ui.chat_targets import BASE_PREFIX, describe, resolve_pick, system_prompt_of, target_choices
from tunelab.ui.common import UIContext, guarded
from tunelab.ui.workspace import UIError

SIDES = ("left", "right")
TEXT = {
    "chat.left": ("Left model", "左侧模型"),
    "chat.right": ("Right model", "右侧模型"),
    "chat.refresh": ("Refresh lists", "刷新列表"),
    "chat.answers": ("Answers", "回答"),
    "chat.prompt": ("Prompt (sent to both models; Shift+Enter sends)", "提示词（同时发给两个模型；Shift+Enter 发送）"),
    "chat.send": ("Send", "发送"),
    "chat.clear": ("Clear", "清空"),
    "chat.settings": ("System prompt and sampling", "系统提示词与采样"),
    "chat.system": (
        "System prompt (picking a run fills in the one its training data shared)",
        "系统提示词（选择运行时自动填入其训练数据共用的提示词）",
    ),
    "chat.temperature": ("Temperature (0 = greedy)", "温度（0 = 贪心解码）"),
    "chat.top_p": ("top_p", "top_p（核采样）"),
    "chat.max_tokens": ("Max new tokens", "最多生成 token 数"),
    "chat.seed": ("Seed (empty: a new one each time)", "随机种子（留空：每次随机）"),
    "chat.hint": (
        "Pick a run, a run's base model, a model folder of the workspace or a built-in model on each side. "
        "A model loads on its first prompt and stays loaded (the last three used).",
        "在两侧各选择一个运行、运行的基础模型、工作区中的模型目录或内置模型。模型在第一次提问时加载，之后保持加载（最近使用的三个）。",
    ),
}


def build(ctx: UIContext) -> None:
    import gradio as gr

    ctx.labels.add(TEXT)
    with gr.Tab(ctx.t("tab.chat"), id="chat", elem_id="tab-chat") as tab:
        ctx.labels.follow(tab, "tab.chat")
        with gr.Row(equal_height=True):
            hint = gr.Markdown(ctx.t("chat.hint"), elem_id="chat-hint")
            refresh = gr.Button(ctx.t("chat.refresh"), elem_id="chat-refresh", scale=0, min_width=120, size="sm")
        with gr.Row(equal_height=False):
            panes = {side: _pane(ctx, side) for side in SIDES}
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(label=ctx.t("chat.prompt"), lines=2, max_lines=8, elem_id="chat-prompt", scale=5)
            send = gr.Button(ctx.t("chat.send"), variant="primary", elem_id="chat-send", scale=0, min_width=100)
            clear = gr.Button(ctx.t("chat.clear"), elem_id="chat-clear", scale=0, min_width=100)
        with gr.Accordion(ctx.t("chat.settings"), open=True, elem_id="chat-settings") as settings:
            system = gr.Textbox(label=ctx.t("chat.system"), lines=2, max_lines=8, elem_id="chat-system")
            with gr.Row():
                temperature = gr.Slider(0, 2, value=0, step=0.05, label=ctx.t("chat.temperature"),
                                        elem_id="chat-temperature")  # fmt: skip
                top_p = gr.Slider(0.05, 1, value=1, step=0.05, label=ctx.t("chat.top_p"), elem_id="chat-top-p")
                max_tokens = gr.Slider(1, 1024, value=256, step=1, label=ctx.t("chat.max_tokens"),
                                       elem_id="chat-max-tokens")  # fmt: skip
                seed = gr.Textbox("", label=ctx.t("chat.seed"), placeholder="random", elem_id="chat-seed")
    for component, key in ((prompt, "chat.prompt"), (settings, "chat.settings"), (system, "chat.system"),
                           (temperature, "chat.temperature"), (top_p, "chat.top_p"), (max_tokens, "chat.max_tokens"),
                           (seed, "chat.seed")):  # fmt: skip
        ctx.labels.follow(component, key)
    for component, key in ((send, "chat.send"), (clear, "chat.clear"), (refresh, "chat.refresh"), (hint, "chat.hint")):
        ctx.labels.follow(component, key, "value")
    parts = {"tab": tab, "prompt": prompt, "send": send, "clear": clear, "refresh": refresh, "system": system,
             "sampling": [temperature, top_p, max_tokens, seed]}  # fmt: skip
    _wire(ctx, panes, parts)


def _pane(ctx: UIContext, side: str) -> dict[str, Any]:
    """One side: its model picker, a line about the model (what it is, loading, errors), and its conversation."""
    import gradio as gr

    with gr.Column(elem_id=f"chat-{side}-pane"):
        picker = gr.Dropdown(target_choices(ctx.workspace), value=None, label=ctx.t(f"chat.{side}"),
                             allow_custom_value=True, elem_id=f"chat-{side}-target")  # fmt: skip
        status = gr.Markdown(elem_id=f"chat-{side}-status", elem_classes=["message"])
        chatbot = gr.Chatbot(elem_id=f"chat-{side}", height=420, show_label=False, feedback_options=None,
                             buttons=["copy", "copy_all"], layout="bubble")  # fmt: skip
    ctx.labels.follow(picker, f"chat.{side}")
    return {"picker": picker, "status": status, "chatbot": chatbot}


def _wire(ctx: UIContext, panes: dict[str, dict[str, Any]], c: dict[str, Any]) -> None:
    import gradio as gr

    cache = ModelCache()
    pickers = [panes[side]["picker"] for side in SIDES]
    c["tab"].select(lambda *picked: _refreshed(ctx, *picked), pickers, pickers, show_progress="hidden")
    c["refresh"].click(lambda *picked: _refreshed(ctx, *picked), pickers, pickers)
    events = []
    for side in SIDES:
        pane = panes[side]
        pane["picker"].change(_picked(ctx, cache), [pane["picker"]], [pane["status"], c["system"]])
        inputs = [pane["picker"], pane["chatbot"], c["prompt"], c["system"], *c["sampling"]]
        events.append(gr.on([c["send"].click, c["prompt"].submit], _answer(ctx, cache), inputs,
                            [pane["chatbot"], pane["status"]], show_progress="minimal"))  # fmt: skip
    # Not queued: the prompt box empties at once, not after a queue slot frees on a busy machine.
    gr.on([c["send"].click, c["prompt"].submit], lambda: "", None, c["prompt"], show_progress="hidden", queue=False)
    outputs = [item for side in SIDES for item in (panes[side]["chatbot"], panes[side]["status"])]
    c["clear"].click(lambda: ([], "", [], ""), None, outputs, cancels=events)


def _refreshed(ctx: UIContext, left: str | None, right: str | None):
    """The pickers' lists, current; when both are empty, the newest finished run (right) and its base model (left)."""
    import gradio as gr

    choices = target_choices(ctx.workspace)
    if not left and not right:
        left, right = _default_pair(ctx)
    return gr.update(choices=choices, value=left), gr.update(choices=choices, value=right)


def _default_pair(ctx: UIContext) -> tuple[str | None, str | None]:
    for run_path in ctx.workspace.run_dirs():
        name = ctx.workspace.relative(run_path)
        try:
            resolve_pick(ctx.workspace, name)
        except Exception:  # a run still training or a damaged one is simply not the default
            continue
        return BASE_PREFIX + name, name
    return None, None


def _picked(ctx: UIContext, cache: ModelCache):
    import gradio as gr

    @guarded(2)
    def picked(value):
        if not value:
            return "", gr.skip()
        target = resolve_pick(ctx.workspace, value)
        line = describe(ctx.workspace, target)
        line += " · loaded" if cache.holds(target) else " · loads on the first prompt"
        system = system_prompt_of(target)
        if system:
            return f"{line} · its training system prompt is in the box below", system
        return line, gr.skip()

    return picked


def _answer(ctx: UIContext, cache: ModelCache):
    import gradio as gr

    @guarded_stream(2, 1)
    def answer(picked, history, prompt, system, temperature, top_p, max_tokens, seed):
        text = (prompt or "").strip()
        if not text:
            raise UIError("type a prompt first")
        sampling = sampling_of(temperature, top_p, max_tokens, seed)
        target = resolve_pick(ctx.workspace, picked)
        shown = [*plain_history(history), {"role": "user", "content": text}]
        if not cache.holds(target):
            yield shown, f"loading {target.name} (first use; it then stays loaded)…"
        loaded = cache.get(target)
        messages = [{"role": "system", "content": system.strip()}] if (system or "").strip() else []
        messages += shown
        shown = [*shown, {"role": "assistant", "content": ""}]
        yield shown, f"{target.name} is answering…"
        for reply in stream_reply(loaded, messages, sampling):
            shown[-1]["content"] = reply.text
            yield shown, gr.skip()
        yield shown, _finished(target.name, reply)

    return answer


def _finished(name: str, reply) -> str:
    speed = f", {reply.tokens / reply.seconds:.0f} tokens/s" if reply.seconds > 0 else ""
    ending = "ended its answer" if reply.finish == "stop" else "stopped at the max new tokens"
    empty = " (nothing to see: the answer is empty or only whitespace)" if not reply.text.strip() else ""
    return f"✓ {name}: {reply.tokens} tokens in {reply.seconds:.1f} s{speed}; {ending}{empty}"

"""The Chat tab's models and answers.

Models are loaded in the UI's process on first use (as `tunelab chat` loads them: base + adapter, the tokenizer and
chat template training used) and kept, the last `CACHE_SIZE` used. An answer is generated token by token with the
serving engine's sampling (`serve/sampling.py`: greedy at temperature 0, else temperature and top-p) and a random
generator of its own, so two panes stream at once, each reproducible from its seed, without sharing a random state.
Each step runs under `torch.inference_mode()` on its own: Gradio may resume a streaming generator on another thread.

Loading and every step run on one thread of their own (`_decoding_thread`), whichever Gradio thread asks: GNU
OpenMP gives each thread that runs multi-threaded torch work its own team and throttles them all once there are more
threads than CPUs (measured on the server, serve/batch_forward.py `outside_worker`: a decoding step 41 ms instead of
25). On a CPU a loaded model is packed once for decoding (model/decode.py `hold_packed_weights`: the fused decoder on
Llama-family models); an answer streamed here took 35 ms a token before, measured with the built-in model.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tunelab.model.targets import Target
from tunelab.serve.sampling import Sampling
from tunelab.ui.common import problem_text
from tunelab.ui.workspace import UIError

CACHE_SIZE = 3
MAX_NEW_TOKENS = 2048


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    stops: set[int]
    context: int | None  # the most positions the model reads, when its config says
    prefix: Any = None  # a virtual-token adapter's prefix (model/virtual_prefix.py); `model` is then the base model

    @property
    def virtual_tokens(self) -> int:
        return self.prefix.length if self.prefix is not None else 0


@dataclass
class Reply:
    text: str = ""
    tokens: int = 0
    finish: str = "length"  # "stop": the model ended its turn; "length": the token budget ran out
    seconds: float = 0.0


class ModelCache:
    """Loaded models by (base, adapter), least recently used dropped first; one load at a time."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._models: OrderedDict[tuple[str, str | None], Loaded] = OrderedDict()
        self._index = threading.Lock()
        self._loading = threading.Lock()

    def holds(self, target: Target) -> bool:
        with self._index:
            return (target.base, target.adapter) in self._models

    def get(self, target: Target) -> Loaded:
        """The loaded model; a model already loaded never waits for another one being loaded."""
        key = (target.base, target.adapter)
        found = self._lookup(key)
        if found is not None:
            return found
        with self._loading:
            found = self._lookup(key)  # loaded by another pane or page while this one waited
            if found is not None:
                return found
            loaded = load(target)
            with self._index:
                self._models[key] = loaded
                while len(self._models) > self.size:
                    self._models.popitem(last=False)
            return loaded

    def _lookup(self, key: tuple[str, str | None]) -> Loaded | None:
        with self._index:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        return None


@functools.cache
def _decoding_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-chat-decoding")


def load(target: Target) -> Loaded:
    return _decoding_thread().submit(_load, target).result()


def _load(target: Target) -> Loaded:
    from tunelab.model.decode import hold_packed_weights
    from tunelab.model.generate import stop_token_ids
    from tunelab.model.targets import load_target
    from tunelab.model.virtual_prefix import VirtualPrefix, virtual_tokens

    model, tokenizer, _ = load_target(target)
    prefix = None
    if virtual_tokens(model):  # PEFT's forward would add them at every step: a prefix cache, then the base model
        prefix, model = VirtualPrefix.of(model), model.get_base_model()
    hold_packed_weights(model)
    stops = set(stop_token_ids(model, tokenizer))
    if not stops:
        raise UIError(f"{target.name}: the tokenizer has no end-of-sequence token, so an answer could not end")
    context = getattr(model.config, "max_position_embeddings", None)
    return Loaded(model, tokenizer, stops, context, prefix)


def sampling_of(temperature: Any, top_p: Any, max_tokens: Any, seed: Any) -> Sampling:
    """The form's sampling settings, checked; a seed left empty draws a fresh one per answer."""
    try:
        temperature, top_p, max_tokens = float(temperature), float(top_p), int(max_tokens)
        seed = None if seed is None or not str(seed).strip() else int(str(seed).strip())
    except (TypeError, ValueError):
        raise UIError("temperature, top_p, max new tokens and seed must be numbers") from None
    if not 0 <= temperature <= 2:
        raise UIError(f"temperature {temperature} is out of range: 0 (greedy) to 2")
    if not 0 < top_p <= 1:
        raise UIError(f"top_p {top_p} is out of range: above 0, at most 1")
    if not 1 <= max_tokens <= MAX_NEW_TOKENS:
        raise UIError(f"max new tokens {max_tokens} is out of range: 1 to {MAX_NEW_TOKENS}")
    if seed is not None and not 0 <= seed < 2**63:
        raise UIError(f"seed {seed} is out of range: 0 to 2**63 - 1, or empty for a random one")
    return Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)


def plain_history(history: list | None) -> list[dict[str, str]]:
    """A Chatbot's messages as chat-template messages: role and text only."""
    messages = []
    for message in history or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if message.get("role") in ("user", "assistant") and isinstance(content, str):
            messages.append({"role": message["role"], "content": content})
    return messages


def stream_reply(loaded: Loaded, messages: list[dict[str, str]], sampling: Sampling) -> Iterator[Reply]:
    """The answer to `messages`, yielded after every new token (the text so far), then once more when finished."""
    from tunelab.data.tokenize import prompt_ids_for_generation

    ids = prompt_ids_for_generation(loaded.tokenizer, messages)
    budget = _budget(loaded, loaded.virtual_tokens + len(ids), sampling.max_tokens)
    reply, tokens, started = Reply(), [], time.monotonic()
    token, cache, generator = _first_token(loaded, ids, sampling)
    while True:
        if token in loaded.stops:
            reply.finish = "stop"
            break
        tokens.append(token)
        reply.text, reply.tokens = loaded.tokenizer.decode(tokens, skip_special_tokens=True), len(tokens)
        reply.text = reply.text.rstrip("\ufffd")  # half a multi-byte character waits for its other bytes
        yield reply
        if len(tokens) >= budget:
            break
        token, cache = _next_token(loaded.model, [token], cache, sampling, generator)
    reply.text = loaded.tokenizer.decode(tokens, skip_special_tokens=True)
    reply.seconds = time.monotonic() - started
    yield reply


def _budget(loaded: Loaded, prompt_tokens: int, wanted: int) -> int:
    if loaded.context is None:
        return wanted
    if prompt_tokens >= loaded.context:
        raise UIError(f"the conversation is {prompt_tokens} tokens, and this model reads at most {loaded.context}; "
                      "clear the chat (or shorten the system prompt) and ask again")  # fmt: skip
    return min(wanted, loaded.context - prompt_tokens)


def _first_token(loaded: Loaded, ids: list[int], sampling: Sampling):
    import torch

    device = next(loaded.model.parameters()).device
    generator = torch.Generator(device=device)
    if sampling.seed is None:
        generator.seed()  # a fresh, non-deterministic seed
    else:
        generator.manual_seed(sampling.seed)
    cache = loaded.prefix.seeded_cache(1) if loaded.prefix is not None else None
    token, cache = _next_token(loaded.model, ids, cache, sampling, generator)
    return token, cache, generator


def _next_token(model, ids: list[int], cache, sampling: Sampling, generator):
    return _decoding_thread().submit(_step, model, ids, cache, sampling, generator).result()


def _step(model, ids: list[int], cache, sampling: Sampling, generator):
    import torch
    from transformers import DynamicCache

    from tunelab.model.decode import row_logits
    from tunelab.serve.sampling import sample_next

    cache = cache if cache is not None else DynamicCache()
    with torch.inference_mode():
        return sample_next(row_logits(model, ids, cache)[-1], sampling, generator), cache


def guarded_stream(outputs: int, message: int = 0) -> Callable:
    """`common.guarded` for streaming handlers (generators): an error raised while streaming becomes the text of
    output `message`, the other outputs keep what was last shown."""

    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def wrapper(*args, **kwargs):
            import gradio as gr

            try:
                yield from handler(*args, **kwargs)
            except Exception as error:  # whatever it is, it is shown in the page (problem_text says when it's a bug)
                values = [gr.skip()] * outputs
                values[message] = problem_text(error)
                yield tuple(values)

        return wrapper

    return decorate

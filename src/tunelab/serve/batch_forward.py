"""One forward pass of the server's batch, each row under its own adapter: the path is chosen when adapters change.

- Llama-family models (model/fused_decoder.py `supports`): the fused decoder, on fused packed weights, with every
  plain-LoRA adapter stacked (multi_lora.py) and applied inside its fused products; the layers' own packed copies
  are dropped (the fused ones replace them, so the server holds one packed copy of the weights, as before).
- Other architectures with plain-LoRA adapters: transformers' modules on packed weights, PEFT's LoRA off and the
  stacked adapters added by hooks.
- Adapters neither can express (DoRA, other variants): one adapter per batch (`one_adapter_per_batch`; the engine
  groups requests by adapter), PEFT's own forward with that adapter active — PEFT's mixed batches (`adapter_names=`)
  refuse DoRA.
- Virtual-token adapters (prefix, prompt, P-tuning): one adapter per batch too, the base model's forward on a cache
  that starts with the adapter's prefix (model/virtual_prefix.py); PEFT's forward would add the tokens again.
- One request at a time (`mixed_batches=False`, the benchmark's baseline): the active adapter is switched, as a
  simple server does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@contextmanager
def outside_worker() -> Iterator[None]:
    """Torch work on the model from a thread other than the engine's worker (loading the model at start, adapters
    from the admin routes) runs single-threaded, so that only the worker's thread ever starts an OpenMP team.

    Why: GNU OpenMP gives each thread that runs a parallel region its own team of threads, and once a process holds
    more such threads than it has CPUs it stops letting them spin between regions. A decoding step is hundreds of
    short parallel regions, each then paying a sleeping thread's wake-up: measured on the 2-core machine, a product
    of 8 rows by a packed 4096×1024 weight took 150 µs on the loading thread and 212 µs on the worker once the
    loading thread had used two threads (162 µs with nothing before it), and a decoding step of the built-in model
    with 4 adapters 25 ms against 41 ms; `serve_load` went from 141 to 206 tokens/s with this."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class BatchForward:
    def __init__(self, mixed_batches: bool, prepack_weights: bool):
        self.mixed_batches, self.prepack_weights = mixed_batches, prepack_weights
        self.stacked = None  # multi_lora.StackedLora when the batched adapter path applies
        self.fused = None  # fused_decoder.FusedDecoder where the architecture allows
        self.path = "transformers"
        self.one_adapter_per_batch = False  # true where a batch's rows must share their adapter
        self.virtual: set[str] = set()  # adapters whose tokens are in the cache already (model/virtual_prefix.py)

    def prepack_base(self, model) -> None:
        """Pack the base model's layers where the fused decoder will not replace them (it applies to this
        architecture only in mixed batches)."""
        from tunelab.model import fast_linear, fused_decoder

        if self.prepack_weights and not (self.mixed_batches and fused_decoder.supports(model)):
            fast_linear.prepack_linears(model)

    def rebuild(self, model, adapters: list[str]) -> None:
        """Choose the path for `model` with these adapters loaded (the caller holds the model's lock)."""
        from peft import PeftModel

        from tunelab.model import fast_linear, fused_decoder
        from tunelab.model.virtual_prefix import virtual_adapters
        from tunelab.serve import multi_lora

        self.virtual = virtual_adapters(model)
        if self.stacked is not None:
            self.stacked.remove()
        self.stacked = self.fused = None
        peft = isinstance(model, PeftModel)
        stackable = peft and self.mixed_batches and multi_lora.supports(model, adapters)
        fusable = self.prepack_weights and self.mixed_batches and (stackable or not peft)
        if fusable and fused_decoder.supports(model):
            fast_linear.unpack_linears(model)  # the fused copies replace the layers' own
            self.stacked = multi_lora.StackedLora(model, adapters, hooks=False) if peft else None
            self.fused, self.path = fused_decoder.FusedDecoder(model, self.stacked), "fused"
        else:
            if self.prepack_weights and not fast_linear.packed_modules(model):
                fast_linear.prepack_linears(model)
            self.path = "transformers"
            if stackable:
                self.stacked = multi_lora.StackedLora(model, adapters)
        self.one_adapter_per_batch = peft and self.mixed_batches and self.stacked is None
        if peft:  # off where stacked adapters replace it, on where one adapter is active at a time
            multi_lora.set_peft_lora(model, self.stacked is None)

    @torch.inference_mode()
    def __call__(self, model, ids, mask, positions, cache, names: list[str]) -> torch.Tensor:
        """Float32 logits of each row's last position; `names`: each row's adapter (BASE_ADAPTER: none)."""
        from peft import PeftModel

        if self.stacked is not None:
            self.stacked.use_rows(names)
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "past_key_values": cache}
        if self.fused is not None:
            return self.fused.forward(ids, mask, positions, cache)[:, -1]
        if not isinstance(model, PeftModel):
            return model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1]
        if self.stacked is not None or names[0] in self.virtual:  # the stacked hooks add each row's LoRA; a
            # virtual-token adapter's tokens are in the cache already
            return model.get_base_model()(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1]
        if names[0] == BASE_ADAPTER:  # one adapter per batch: switch the active adapter, as a simple server would
            with model.disable_adapter():
                return model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1]
        if model.active_adapter != names[0]:
            model.set_adapter(names[0])
        return model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1]

"""tunelab: turn a pretrained language model plus your data into a measured, exported, served specialist."""

import logging as _logging

__version__ = "0.1.0"

# bitsandbytes (imported by peft whenever it is installed) tries, on CPUs with AVX512-BF16, to fetch a 4-bit kernel
# from the Hugging Face hub through the `kernels` package, and logs a warning at import when it cannot (offline, or
# `kernels` not installed); it then uses the kernels it ships, which is what tunelab wants. Silenced here, before any
# import of peft, so that no command prints it.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

# An int8 (LLM.int8) model computes its quantised layers in float16; bitsandbytes logs a warning at every call that it
# casts the activations. That is how the scheme works (tunelab's int8 export states its compute dtype), not something
# a user can act on.
_logging.getLogger("bitsandbytes.autograd._functions").setLevel(_logging.ERROR)

# torchao (the int8 export) tries at import to load its CUDA kernels, logging a warning per library on a CPU-only
# machine, and registers enums that torch's pytree now supports natively (a deprecation warning per enum). Neither
# concerns the CPU weight-only path tunelab uses.
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)

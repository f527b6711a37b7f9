"""NEFTune (`train.neftune_noise_alpha`, Jain et al. 2023) on padding-free batches.

NEFTune adds uniform noise of magnitude α/√(L·d) to the input embeddings while training, L being the sequence's
length. transformers' hook (`integrations/neftune.py`) takes L from the batch's shape: right for one padded sequence
per row, but a padding-free row holds several sequences end to end, so each would get noise √k times weaker than
alone (k sequences in the row). Here each token's noise uses the length of its own sequence, read from the batch's
position ids (they restart at 0 for every sequence) — what the same sequence gets in a padded batch of its own.
Installed in place of transformers' hook only for padding-free batches; padded batches keep transformers' own.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback


def lengths_per_token(position_ids: torch.Tensor) -> torch.Tensor:
    """For each token, the length of the sequence it belongs to (sequences start where the positions restart)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] <= position_ids[:, :-1]
    sequence = starts.flatten().cumsum(0) - 1  # index of each token's sequence across the whole batch
    counts = torch.bincount(sequence)
    return counts[sequence].view_as(position_ids)


class PackedNeftune(TrainerCallback):
    """Per-sequence NEFTune noise on the model's input embeddings for the length of training."""

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.positions: torch.Tensor | None = None
        self.hooks: list = []

    def install(self, trainer) -> None:
        """Take NEFTune over from the trainer (which would add transformers' hook when training starts)."""
        trainer.neftune_noise_alpha = None
        trainer.add_callback(self)
        self.model = trainer.model

    def on_train_begin(self, args, state, control, **kwargs):
        # the decoder stack: the whole model's forward is skipped where the loss computes the head itself (loss.py)
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model
        self.hooks = [decoder.register_forward_pre_hook(self._remember_positions, with_kwargs=True),
                      self.model.get_input_embeddings().register_forward_hook(self._add_noise)]  # fmt: skip

    def on_train_end(self, args, state, control, **kwargs):
        for hook in self.hooks:
            hook.remove()
        self.hooks, self.positions = [], None

    def _remember_positions(self, _module, _args, kwargs):
        self.positions = kwargs.get("position_ids")

    def _add_noise(self, module, _inputs, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        if self.positions is None or self.positions.shape != output.shape[:2]:
            lengths = torch.full(output.shape[:2], output.shape[1], device=output.device)  # transformers' rule
        else:
            lengths = lengths_per_token(self.positions.to(output.device))
        magnitude = self.alpha / torch.sqrt(lengths.to(output.dtype) * output.shape[2])
        return output + (torch.rand_like(output) * 2 - 1) * magnitude.unsqueeze(-1)

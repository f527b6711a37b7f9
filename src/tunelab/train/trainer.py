"""TRL's `SFTTrainer` with tunelab's fast loss: head and cross-entropy only at labelled positions.

Everything else (optimizer, schedule, checkpoints, resume, evaluation, early stopping, callbacks, accelerate) is
TRL's and transformers' own; only `compute_loss` changes, and only when `label_only_loss` is on.
"""

from __future__ import annotations

from trl import SFTTrainer

from tunelab.train.loss import label_only_loss


class TunelabSFTTrainer(SFTTrainer):
    def __init__(self, *args, label_only_loss: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_only_loss = label_only_loss
        if label_only_loss:
            # The loss below divides by the number of target tokens of the whole accumulation window, so the
            # trainer must neither divide it again by the accumulation steps nor withhold that count.
            self.model_accepts_loss_kwargs = True
            self.loss_is_scaled_for_ga = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.label_only_loss:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with self.accelerator.autocast():  # the decoder may run apart from the model's autocast-wrapped forward
            loss = label_only_loss(model, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss: DDP averages the gradients
        return (loss, None) if return_outputs else loss

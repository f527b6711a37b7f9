"""Training in several processes (PyTorch distributed, started by `torchrun` or `tunelab run --nproc N`): which
process this is, the process group, and what the processes must agree on.

Every process runs `tunelab run` on the same recipe. Rank 0 does what happens once — the audit, the split and the
tokenisation, the run directory, the base and tuned evaluations, the merge — and hands the tokenised datasets to the
others (`share_from_rank0`); every rank loads the model and trains its shard of each batch under the HF Trainer
(DDP; FSDP or DeepSpeed when the recipe's train section asks), and only rank 0 writes. The process group is opened
here, before the Trainer's accelerate state would open it, so that the other ranks can wait for rank 0's base
evaluation longer than accelerate's default 30 minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from transformers import TrainerCallback

# how long a rank waits for the others at a collective: rank 0 evaluates the base model while the others wait
WAIT = timedelta(hours=6)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place, from the variables torchrun (and accelerate, and `tunelab run --nproc`) set."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")),
                 int(os.environ.get("LOCAL_WORLD_SIZE", str(size))))  # fmt: skip


def start(seconds: float | None = None) -> World:
    """Open the process group (gloo on CPUs, NCCL on CUDA GPUs) when this is one of several processes."""
    import torch
    import torch.distributed as dist

    place = world()
    if place.distributed and not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(place.local_rank)
        wait = timedelta(seconds=seconds) if seconds else WAIT
        dist.init_process_group("nccl" if cuda else "gloo", timeout=wait)
    return place


def share_from_rank0(payload: Any = None) -> Any:
    """Rank 0's `payload` on every rank (pickled through the process group); rank 0 gets its own back."""
    import torch.distributed as dist

    if not world().distributed:
        return payload
    box = [payload if world().main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class StopTogether(TrainerCallback):
    """A stop asked on one rank (the STOP file, Ctrl-C, `train.max_seconds`, early stopping) stops every rank after
    the same step: otherwise the ranks still training would wait forever for the one that left. Must run after the
    callbacks that decide to stop."""

    def on_step_end(self, args, state, control, **kwargs):
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return control
        flag = torch.tensor([int(bool(control.should_training_stop))])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            control.should_training_stop = True
            control.should_save = True
        return control


def sharding_notes(train: dict[str, Any]) -> list[str]:
    """What the recipe asks for that this machine will not do: accelerate applies FSDP on GPUs only (on CPUs its
    processes are plain DDP ones, each holding the whole model); a single process shards nothing."""
    import torch

    notes = []
    if train.get("fsdp") and not torch.cuda.is_available():
        notes.append("train.fsdp is not applied on CPUs (accelerate shards with FSDP on GPUs only): the processes "
                     "train as DDP, each holding the whole model; train.deepspeed: zero3 shards on CPUs")  # fmt: skip
    if train.get("fsdp") and not world().distributed:
        notes.append("train.fsdp shards across processes: start several (--nproc N or torchrun)")
    return notes


def single_process_world() -> None:
    """DeepSpeed in one process (ZeRO-Offload on one GPU, say) still opens a process group, and without torchrun's
    variables it looks for MPI: give it a world of one, as `accelerate launch --num_processes 1` does."""
    import socket

    if "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip


def own_folder(run_path, place: World):
    """A folder of this rank's own inside the run (files two ranks must not share, e.g. parked frozen weights)."""
    from pathlib import Path

    folder = Path(run_path) / f".rank{place.rank}"
    folder.mkdir(exist_ok=True)
    return folder


def threads_per_process(cores: int) -> int:
    """The cores of this machine shared among the processes on it (at least one each)."""
    return max(1, cores // world().local_size)


class Handoff:
    """Rank 0's one message to the other ranks before training: {"state": "train", "splits": …} (the tokenised
    datasets), {"state": "done"} (a resumed run whose training had finished) or {"state": "failed", "message": …}
    (rank 0 stopped before training: bad data, a refused audit). Sent once; later calls do nothing."""

    def __init__(self) -> None:
        self.sent = not world().distributed

    def send(self, message: dict[str, Any]) -> None:
        if not self.sent:
            self.sent = True
            share_from_rank0(message)

    def fail(self, message: str) -> None:
        self.send({"state": "failed", "message": message})

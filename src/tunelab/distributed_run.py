"""`tunelab run --nproc N`: the recipe's run in N processes on this machine, started by PyTorch's elastic launcher
(as `torchrun --standalone` starts them). Each process runs `tunelab run` (workflow.py; train/distributed.py says
which rank does what); multi-node runs start the same entry point with torchrun on every node (README)."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

from tunelab.config.schema import Recipe
from tunelab.errors import TunelabError
from tunelab.runs import RunDir


def launch(nproc: int, argv: list[str], recipe: Recipe) -> None:
    """Run `python -m tunelab <argv>` in `nproc` processes on this machine; a failed rank ends the run with the
    rank, its exit code or signal, and how to resume."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from tunelab.hardware import physical_cores

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, physical_cores() // nproc)))  # cores shared by the ranks
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"tunelab-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.5,
                          start_method="spawn")  # fmt: skip
    try:
        elastic_launch(config, sys.executable)("-m", "tunelab", *argv)
    except ChildFailedError as error:
        rank, failure = root_failure(error.failures)
        how = (
            f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
        )
        message = (f"rank {rank} of {nproc} {how}; the other ranks were stopped. The run keeps its last checkpoint: "
                   f"tunelab run <recipe> --resume --nproc {nproc}")  # fmt: skip
        if rank != 0 or failure.exitcode < 0:  # rank 0's own error (bad data, a refused audit) is in status.json
            _mark_failed(Path(recipe.output_dir) / recipe.name, message)
        raise TunelabError(message) from None


def root_failure(failures: dict) -> tuple[int, object]:
    """The rank that ended the run: one killed by a signal (out of memory, a kill) before one that exited with an
    error (a rank whose peer vanished exits with one) before one the launcher stopped (SIGTERM, once a rank failed);
    among equals the lowest rank (rank 0 stops the others when it refuses the data)."""
    import signal

    def order(item) -> tuple[int, int]:
        code = item[1].exitcode
        return (2 if code == -signal.SIGTERM else 0 if code < 0 else 1, item[0])

    return min(failures.items(), key=order)


def _mark_failed(path: Path, message: str) -> None:
    """Record the rank that failed; what rank 0 recorded as a consequence (its peer gone) is kept beside it."""
    if not (path / "status.json").is_file():
        return
    run = RunDir(path)
    status = run.status()
    if status.get("state") in ("running", "preparing", "failed"):
        run.set_status("failed", error=message, **({"rank_0_error": status["error"]} if status.get("error") else {}))


def rank_command_line(args) -> list[str]:
    """The `tunelab run` command line every rank runs: the parent's, without `--nproc` (they are the N)."""
    line = ["run", args.recipe, *args.overrides]
    line += ["--resume"] if args.resume else []
    line += ["--overwrite"] if args.overwrite else []
    line += ["--continue-from", args.continue_from] if getattr(args, "continue_from", None) else []
    return line + (["--base-from", args.base_from] if args.base_from else [])

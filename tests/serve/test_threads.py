"""Only the engine's worker thread runs the model with several threads: loading (at start, and adapters from the
admin routes) runs single-threaded on its own thread, and the caller's setting is left as it was."""

from __future__ import annotations

import asyncio
import threading

import torch

from tunelab.serve.batch_forward import outside_worker


def test_work_outside_the_worker_is_single_threaded_and_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with outside_worker():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_worker_decodes_with_the_callers_threads(tiny_model_dir, monkeypatch):
    from tunelab.serve.engine import Engine

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: dict[str, int] = {}
    step = Engine._step

    def watched(self, row, logits):
        seen[threading.current_thread().name] = torch.get_num_threads()
        return step(self, row, logits)

    monkeypatch.setattr(Engine, "_step", watched)
    try:
        engine = Engine(str(tiny_model_dir))
        assert torch.get_num_threads() == 2 and engine.threads == 2  # the caller's setting is back
        from tunelab.serve.jobs import Job
        from tunelab.serve.sampling import Sampling

        loop = asyncio.new_event_loop()
        job = Job(str(tiny_model_dir), [[5, 6, 7]], Sampling(max_tokens=3, temperature=0.0), 1, loop, 60)
        engine.submit(job)
        for _ in range(200):
            if seen:
                break
            threading.Event().wait(0.05)
        engine.close()
        loop.close()
    finally:
        torch.set_num_threads(before)
    assert seen == {"tunelab-engine": 2}

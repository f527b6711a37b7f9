"""Batched generation for many LoRA adapters on one base model.

One worker thread owns the model. Requests wait in a bounded queue; the worker takes what is waiting (up to
`max_batch_rows` sequences), prefills them (together with left padding, or each from a cached prefix it shares,
`prefixes.py`), and decodes them step by step with one key/value cache, each row under its own adapter
(`batch_forward.py`: the fused decoder with stacked adapters where it applies, else transformers' modules with
stacked adapters, or one adapter per batch where adapters cannot be mixed), its own sampling settings, seed,
stop sequences and token budget. Rows leave the batch as they finish (their cache rows are
dropped), a cancelled or expired request leaves at the next step, and each new piece of text is handed to the
request's asyncio queue as soon as it is safe to show (not inside a possible stop sequence, not half a character).

transformers' `generate` cannot do this: it takes one generation config, one adapter and one stopping rule per
batch, so the loop is written here.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from tunelab.model.kv_cache import merge_caches, mergeable, trim_padding
from tunelab.model.virtual_prefix import VirtualPrefix, prefill_inputs, virtual_adapters
from tunelab.serve.adapters import adapter_tokenizer, resolve_adapter
from tunelab.serve.batch_forward import BASE_ADAPTER, BatchForward, outside_worker
from tunelab.serve.errors import (
    AdapterNotLoaded,
    AdapterUnusable,
    GenerationFailed,
    GenerationTimeout,
    ModelAlreadyServed,
    Overloaded,
)
from tunelab.serve.jobs import ErrorEvent, FinishEvent, Job, Row, TextEvent
from tunelab.serve.prefixes import PrefixStore
from tunelab.serve.sampling import sample_next, visible_text


@dataclass
class EngineSettings:
    max_batch_rows: int = 16
    max_queued_rows: int = 64
    batch_window_s: float = 0.01  # how long the worker waits for more requests before starting a batch
    request_timeout_s: float = 300.0
    mixed_batches: bool = True  # False: one request at a time, switching the active adapter (the baseline)
    prepack_weights: bool = True  # linear weights packed once for oneDNN (fast_linear.py), in either mode


class Engine:
    def __init__(self, base: str, adapters: dict[str, str] | None = None, settings: EngineSettings | None = None):
        from tunelab.data.tokenize import ensure_chat_template
        from tunelab.model.generate import stop_token_ids
        from tunelab.model.load import load_model

        self.settings = settings or EngineSettings()
        self.base_name = base
        self.threads = torch.get_num_threads()  # the worker's; other threads touch the model on one (outside_worker)
        with outside_worker():
            self.model, self.tokenizer, _ = load_model(base)
            self.model.eval()
            self.decoder = BatchForward(self.settings.mixed_batches, self.settings.prepack_weights)
            self.decoder.prepack_base(self.model)  # before adapters: their own small layers stay as PEFT made them
        self.prefixes = PrefixStore()  # cached prompt beginnings per served model, dropped when adapters change
        self.virtual: dict[str, VirtualPrefix] = {}  # virtual-token adapters' prefixes (model/virtual_prefix.py)
        ensure_chat_template(self.tokenizer)
        self.tokenizers: dict[str, Any] = {base: self.tokenizer}
        self.adapter_paths: dict[str, str] = {}
        self.system_prompts: dict[str, str | None] = {}  # per adapter: its run's shared training system prompt
        self.stop_ids = set(stop_token_ids(self.model, self.tokenizer))
        self.lock = threading.Lock()  # the model: the worker's batches and adapter loading take turns
        self.pending: queue.Queue[Job] = queue.Queue()
        self.queued_rows = 0
        self._count_lock = threading.Lock()
        self.stats = {"requests": 0, "batches": 0, "rows": 0, "max_batch_rows": 0, "cancelled_rows": 0,
                      "generated_tokens": 0, "joined_rows": 0, "reused_prompt_tokens": 0}  # fmt: skip
        self._stopping = threading.Event()
        self._held: Job | None = None  # taken from the queue but did not fit the running batch
        for name, path in (adapters or {}).items():
            self.load_adapter(name, path, rebuild=False)
        with outside_worker():
            self.decoder.rebuild(self.model, list(self.adapter_paths))  # once for all the adapters given
        self.worker = threading.Thread(target=self._work, name="tunelab-engine", daemon=True)
        self.worker.start()

    # --- adapters -----------------------------------------------------------------------------------------------

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def names(self) -> list[str]:
        return [self.base_name, *self.adapter_paths]

    def load_adapter(self, name: str, path: str, rebuild: bool = True) -> None:
        """Serve the adapter at `path` (a run directory or an adapter folder) as model `name`; a run's shared
        training system prompt is kept in `system_prompts` (None for a plain adapter folder). `rebuild=False` leaves
        the decoding path to be rebuilt by the caller (after several adapters)."""
        from peft import PeftModel

        from tunelab.model.peft_methods import load_adapter, register_own_methods

        register_own_methods()
        if name in self.names:
            taken = f"a model named {name!r} is already served; unload it first or choose another name"
            raise ModelAlreadyServed(taken)
        folder, system = resolve_adapter(path)
        tokenizer = adapter_tokenizer(folder, path, self.tokenizer)
        with self.lock, outside_worker():
            try:
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(folder, adapter_name=name)
                else:
                    self.model = load_adapter(self.model, folder, adapter_name=name)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:  # RuntimeError: another base
                problem = f"cannot load it as an adapter for {self.base_name} ({error})"
                raise AdapterUnusable(f"{path}: {problem}") from None
            self.model.eval()
            if name in virtual_adapters(self.model):
                self.virtual[name] = VirtualPrefix.of(self.model, name)
            self.tokenizers[name], self.system_prompts[name] = tokenizer, system  # before the name is served
            self.adapter_paths[name] = str(folder)
            self.prefixes.clear()
            if rebuild:
                self.decoder.rebuild(self.model, list(self.adapter_paths))

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapter_paths:
            raise AdapterNotLoaded(f"no adapter named {name!r} is loaded")
        with self.lock, outside_worker():
            if len(self.adapter_paths) == 1:  # back to the plain base model
                virtual = name in virtual_adapters(self.model)  # changes nothing in the base: there is no unload
                self.model = self.model.get_base_model() if virtual else self.model.unload()
            else:
                if self.model.active_adapter == name:
                    self.model.set_adapter(next(n for n in self.adapter_paths if n != name))
                self.model.delete_adapter(name)
            del self.adapter_paths[name]
            self.virtual.pop(name, None)
            self.prefixes.clear()
            self.decoder.rebuild(self.model, list(self.adapter_paths))
        del self.tokenizers[name], self.system_prompts[name]

    # --- requests -----------------------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._count_lock:
            if self.queued_rows + job.rows > self.settings.max_queued_rows:
                raise Overloaded(f"the server is busy ({self.queued_rows} sequences waiting); retry shortly")
            self.queued_rows += job.rows
            self.stats["requests"] += 1
        self.pending.put(job)

    def close(self) -> None:
        self._stopping.set()
        self.worker.join(timeout=5)

    def _take_batch(self) -> list[Job]:
        if self._held is not None:
            jobs, self._held = [self._held], None
        else:
            try:
                jobs = [self.pending.get(timeout=0.1)]
            except queue.Empty:
                return []
        limit = self.settings.max_batch_rows if self.settings.mixed_batches else 1
        rows = jobs[0].rows
        until = time.monotonic() + self.settings.batch_window_s
        while self.settings.mixed_batches and rows < limit:
            try:
                job = self.pending.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            jobs.append(job)
            rows += job.rows
        with self._count_lock:
            self.queued_rows -= rows
        return jobs

    def _work(self) -> None:
        torch.set_num_threads(self.threads)
        while not self._stopping.is_set():
            jobs = self._take_batch()
            live = [job for job in jobs if not job.cancelled.is_set()]
            self.stats["cancelled_rows"] += sum(job.rows for job in jobs if job.cancelled.is_set())
            if not live:
                continue
            try:
                with self.lock:
                    for group in self._groups(live):
                        self._generate(group)
            except Exception as error:  # a bug or an out-of-memory must fail these requests, not the server
                for job in live:
                    job.emit(ErrorEvent(GenerationFailed(f"generation failed: {type(error).__name__}: {error}")))

    def _groups(self, jobs: list[Job]) -> list[list[Job]]:
        """Mixed batches take every adapter at once (or one adapter per batch where PEFT cannot mix them, DoRA);
        the baseline runs one request at a time."""
        if self.settings.mixed_batches:
            size, groups, current = self.settings.max_batch_rows, [], []
            if self.decoder.one_adapter_per_batch:
                jobs = sorted(jobs, key=lambda job: job.model)
            for job in jobs:
                other_adapter = self.decoder.one_adapter_per_batch and current and current[0].model != job.model
                if current and (other_adapter or sum(j.rows for j in current) + job.rows > size):
                    groups.append(current)
                    current = []
                current.append(job)
            return [*groups, current]
        return [[job] for job in jobs]

    # --- the decoding loop ------------------------------------------------------------------------------------------

    def _rows(self, jobs: list[Job]) -> list[Row]:
        rows = []
        for job in jobs:
            for p, prompt in enumerate(job.prompts):
                for c in range(job.n):
                    generator = None
                    if job.sampling.temperature > 0:
                        generator = torch.Generator()
                        seed = job.sampling.seed if job.sampling.seed is not None else torch.seed()
                        generator.manual_seed((seed + c) % 2**63)
                    rows.append(Row(job, p * job.n + c, prompt, generator))
        return rows

    def _forward(self, ids, mask, positions, cache, rows: list[Row]) -> torch.Tensor:
        """Last-position logits of every row, each under its own adapter (serve/batch_forward.py)."""
        names = [row.job.model if row.job.model in self.adapter_paths else BASE_ADAPTER for row in rows]
        return self.decoder(self.model, ids, mask, positions, cache, names)

    def _generate(self, jobs: list[Job]) -> None:
        """Prefill the jobs' rows together, then decode; requests that arrive meanwhile join at step boundaries."""
        rows = self._rows(jobs)
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        active, cache, mask, positions = self._advance(rows, *self._prefill(rows))
        while active:
            active, cache, mask, positions = self._admit(active, cache, mask, positions)
            self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], len(active))
            ids = torch.tensor([[row.tokens[-1]] for row in active])
            mask = torch.cat([mask, torch.ones(len(active), 1, dtype=mask.dtype)], dim=1)
            positions = positions + 1
            logits = self._forward(ids, mask, positions, cache, active)
            active, cache, mask, positions = self._advance(active, logits, cache, mask, positions)

    def _prefill(self, rows: list[Row]):
        """(last-position logits, cache, attention mask, last positions) for the rows' prompts: each alone (from a
        cached prefix where one is shared, prefixes.py) where one alone or any shares a prefix, else together."""
        prefix = self.virtual.get(rows[0].job.model)  # the rows of a batch share a virtual-token adapter
        if prefix is not None:
            forward = functools.partial(self._forward, rows=rows)
            return prefix.prefill([row.prompt for row in rows], self.pad_id, forward)
        mixed = self.settings.mixed_batches  # the one-at-a-time baseline prefills as a simple server does
        shared = [self.prefixes.shared(row.job.model, row.prompt) for row in rows] if mixed else []
        if not shared or (len(rows) > 1 and not any(shared)):
            return self._prefill_together(rows)
        parts = [self._prefill_alone(row) for row in rows]  # each after the previous one's prompt was kept
        logits, cache, mask, positions = parts[0]
        for _, other_cache, other_mask, _ in parts[1:]:
            mask = merge_caches(cache, mask, other_cache, other_mask)
        self.stats["reused_prompt_tokens"] = self.prefixes.reused_tokens
        return torch.cat([part[0] for part in parts]), cache, mask, torch.cat([part[3] for part in parts])

    def _prefill_alone(self, row: Row):
        from transformers import DynamicCache

        model = row.job.model
        shared = self.prefixes.shared(model, row.prompt)  # now: a row before it in this batch may have replaced it
        cache = self.prefixes.seeded_cache(model, shared) if shared else DynamicCache()
        positions = torch.arange(shared, len(row.prompt)).unsqueeze(0)
        mask = torch.ones(1, len(row.prompt), dtype=torch.long)
        logits = self._forward(torch.tensor([row.prompt[shared:]]), mask, positions, cache, [row])
        self.prefixes.keep(model, row.prompt, cache)
        return logits, cache, mask, positions[:, -1:]

    def _prefill_together(self, rows: list[Row]):
        """Left-padded prompts in one forward pass."""
        from transformers import DynamicCache

        ids, mask, positions = prefill_inputs([row.prompt for row in rows], 0, self.pad_id)
        cache = DynamicCache()
        logits = self._forward(ids, mask, positions, cache, rows)
        return logits, cache, mask, positions[:, -1:]

    def _advance(self, active: list[Row], logits, cache, mask, positions):
        """Give each row its next token; drop the rows that finished (and their cache rows)."""
        for index, row in enumerate(active):
            self._step(row, logits[index])
        keep = [i for i, row in enumerate(active) if row.finish is None]
        if len(keep) < len(active):
            self._finish_jobs(active)
            if keep:
                selected = torch.tensor(keep)
                cache.batch_select_indices(selected)
                mask, positions = mask[selected], positions[selected]
                mask = trim_padding(cache, mask)
            active = [active[i] for i in keep]
        return active, cache, mask, positions

    def _admit(self, active: list[Row], cache, mask, positions):
        """Continuous batching: requests that are waiting and fit join the running batch before the next step."""
        room = self.settings.max_batch_rows - len(active)
        if not self.settings.mixed_batches or room <= 0 or not mergeable(cache):
            return active, cache, mask, positions
        jobs = self._take_waiting(room, active[0].job.model if self.decoder.one_adapter_per_batch else None)
        if not jobs:
            return active, cache, mask, positions
        rows = self._rows(jobs)
        self.stats["rows"] += len(rows)
        self.stats["joined_rows"] += len(rows)
        joined, new_cache, new_mask, new_positions = self._advance(rows, *self._prefill(rows))
        if not joined:
            return active, cache, mask, positions
        mask = merge_caches(cache, mask, new_cache, new_mask)
        return active + joined, cache, mask, torch.cat([positions, new_positions])

    def _take_waiting(self, room: int, model: str | None) -> list[Job]:
        """Waiting jobs with at most `room` rows in all (for `model` alone, if given), without blocking; one that does
        not fit waits its turn."""
        jobs, rows = [], 0
        while True:
            job = self._held or self._get_nowait()
            self._held = None
            if job is None:
                break
            if job.cancelled.is_set():
                self.stats["cancelled_rows"] += job.rows
                self._dequeued(job.rows)
                continue
            if rows + job.rows > room or (model is not None and job.model != model):
                self._held = job
                break
            jobs.append(job)
            rows += job.rows
            self._dequeued(job.rows)
        return jobs

    def _get_nowait(self) -> Job | None:
        try:
            return self.pending.get_nowait()
        except queue.Empty:
            return None

    def _dequeued(self, rows: int) -> None:
        with self._count_lock:
            self.queued_rows -= rows

    def _step(self, row: Row, logits: torch.Tensor) -> None:
        """Choose the row's next token, emit the text that became safe to show, and decide whether it is done."""
        job = row.job
        if job.cancelled.is_set():
            row.finish = "cancelled"
            self.stats["cancelled_rows"] += 1
            return
        if time.monotonic() > job.deadline:
            row.finish = "timeout"
            return
        token = sample_next(logits, job.sampling, row.generator)
        row.tokens.append(token)
        self.stats["generated_tokens"] += 1
        ended = token in self.stop_ids
        body = row.tokens[:-1] if ended else row.tokens
        tokenizer = self.tokenizers.get(job.model, self.tokenizer)
        text = tokenizer.decode(body, skip_special_tokens=True)
        final = ended or len(row.tokens) >= job.sampling.max_tokens
        shown, stopped = visible_text(text, job.sampling.stop, final)
        if len(shown) > row.sent:
            job.emit(TextEvent(row.choice, shown[row.sent :]))
            row.sent = len(shown)
        if ended or stopped:
            row.finish = "stop"
        elif final:
            row.finish = "length"

    def _finish_jobs(self, rows: list[Row]) -> None:
        """Report rows that just finished; a request whose rows are all finished gets its end event."""
        for row in rows:
            if row.finish is None or row.finish == "reported":
                continue
            job = row.job
            if row.finish == "timeout":
                message = "the generation took longer than the server's limit; ask for fewer tokens"
                job.emit(ErrorEvent(GenerationTimeout(message)))
            elif row.finish != "cancelled":
                job.emit(FinishEvent(row.choice, row.finish, len(row.tokens)))
            row.finish = "reported"

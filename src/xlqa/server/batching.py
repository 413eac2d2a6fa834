"""Dynamic batching for extractive answers: windows of concurrent requests share forward passes.

As in text-embeddings-inference, Triton and Ray Serve: a request's questions are tokenized into windows
exactly as in evaluation (:func:`xlqa.features.build_features`), the windows join one bounded queue, and a
single worker thread takes up to ``batch_size`` windows and ``batch_tokens`` padded tokens, waiting at most
``batch_wait_ms`` after the oldest queued window for more to arrive. After the forward pass (autocast in the
chosen precision, inference mode; torch releases the GIL, so the event loop keeps accepting requests) each
request whose windows are all done is handed back and decoded with :func:`xlqa.postprocess.decode` in a
thread of its own (character offsets into the original context) while the worker runs the next pass. A full queue refuses new work with :class:`~xlqa.server.errors.QueueFull` and a
``Retry-After`` estimated from the measured throughput. ``batch_size=1`` runs one window per forward pass.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from xlqa.batching import Collator
from xlqa.data import Example
from xlqa.features import FeatureParams, Features, build_features
from xlqa.postprocess import Decoded, decode, pad_ragged
from xlqa.precision import autocast
from xlqa.predict import model_inputs, padded_offsets
from xlqa.server.errors import QueueFull
from xlqa.server.metrics import Metrics

log = logging.getLogger(__name__)

N_BEST = 20  # candidates decoded per question (as in evaluation), so probabilities match predict_examples


@dataclass(frozen=True)
class DecodeOptions:
    """How a request's logits become answers."""

    top_k: int = 1
    max_answer_length: int = 30
    handle_impossible_answer: bool = False


@dataclass(frozen=True)
class BatchLimits:
    """The batcher's knobs (from :class:`xlqa.config.ServeConfig`)."""

    batch_size: int = 32
    batch_tokens: int = 16384
    batch_wait_ms: float = 5.0
    queue_size: int = 1024


@dataclass
class _Job:
    """One submitted group of questions: its windows, their logits as they arrive, and the caller's future."""

    examples: list[Example]
    features: Features
    options: DecodeOptions
    future: Future
    enqueued: float
    starts: list[np.ndarray | None] = field(default_factory=list)
    ends: list[np.ndarray | None] = field(default_factory=list)
    remaining: int = 0


class Batcher:
    """The queue and the worker thread of one loaded extractive model."""

    def __init__(self, model, tokenizer, *, params: FeatureParams, limits: BatchLimits, metrics: Metrics,
                 precision: str = "fp32", name: str = "model") -> None:  # fmt: skip
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.params = params
        self.limits = limits
        self.metrics = metrics
        self.precision = precision
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.collate = Collator(pad, pad_left=tokenizer.padding_side == "left")
        self._tokenizer_lock = threading.Lock()
        self._pending: deque[tuple[_Job, int]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._windows_per_s = 0.0  # moving average of the worker's throughput, for Retry-After
        self._thread = threading.Thread(target=self._run, name=f"xlqa-batcher-{name}", daemon=True)
        self._thread.start()

    # -- the caller's side ---------------------------------------------------------------------------------
    def featurize(self, examples: Sequence[Example]) -> Features:
        """The windows of ``examples`` (the caller runs this in a worker thread: tokenizing takes CPU).

        One call at a time: a fast tokenizer keeps its truncation settings in shared state, so a concurrent
        call that tokenizes without truncation (the question cut) can make another produce one over-long
        window.
        """
        with self._tokenizer_lock:
            return build_features(examples, self.tokenizer, self.params, training=False)

    def _submit(self, examples: Sequence[Example], features: Features, options: DecodeOptions) -> Future:
        """Queue the windows of ``examples``; the future resolves to their job once all logits are in.

        Raises:
            QueueFull: the queue holds ``queue_size`` windows already (a request is always admitted into an
                empty queue, so one long context never waits forever).
        """
        job = self._job(examples, features, options)
        if job.remaining and not self._enqueue(job):
            self._refuse(job)
        return job.future

    def _job(self, examples: Sequence[Example], features: Features, options: DecodeOptions) -> _Job:
        n = len(features)
        job = _Job(
            list(examples), features, options, Future(), time.perf_counter(), [None] * n, [None] * n, n
        )
        if n == 0:  # every context empty after tokenization: decode() answers "" for each
            job.future.set_result(job)
        return job

    def _refuse(self, job: _Job) -> None:
        self.metrics.rejected.inc()
        queued = len(self._pending)
        raise QueueFull(
            f"the answer queue is full ({queued} windows waiting, --queue-size {self.limits.queue_size}); "
            "retry later",
            retry_after=self.retry_after(queued + job.remaining),
        )

    def _enqueue(self, job: _Job) -> bool:
        n = job.remaining
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down", retry_after=5)
            queued = len(self._pending)
            if queued and queued + n > self.limits.queue_size:
                return False
            job.enqueued = time.perf_counter()
            self._pending.extend((job, w) for w in range(n))
            self.metrics.queue_windows.set(len(self._pending))
            self._cond.notify()
        return True

    async def answer_many(
        self, examples: Sequence[Example], options: DecodeOptions, chunk: int
    ) -> list[Decoded]:
        """Answers of many questions, queued ``chunk`` questions at a time (one result per chunk).

        A chunk that finds the queue full waits for this call's oldest unfinished chunk and tries again, so a
        client batch is never refused for its size alone; it is refused (429) only when the queue is full of
        other requests' windows.
        """
        futures: list[asyncio.Future] = []
        for i in range(0, len(examples), chunk):
            part = examples[i : i + chunk]
            features = await asyncio.to_thread(self.featurize, part)
            job = self._job(part, features, options)
            while job.remaining and not self._enqueue(job):
                waiting = [f for f in futures if not f.done()]
                if not waiting:
                    self._refuse(job)
                await asyncio.wait(waiting[:1])
            futures.append(asyncio.wrap_future(job.future))
        jobs = await asyncio.gather(*futures)
        return await asyncio.to_thread(lambda: [self._decode(j) for j in jobs])

    async def answer(self, examples: Sequence[Example], options: DecodeOptions) -> Decoded:
        """Tokenize (in a thread), queue, and wait for the answers of ``examples``."""
        features = await asyncio.to_thread(self.featurize, examples)
        job = await asyncio.wrap_future(self._submit(examples, features, options))
        return await asyncio.to_thread(self._decode, job)

    def retry_after(self, windows: int) -> float:
        """Seconds until ``windows`` queued windows are likely done, from the measured throughput."""
        rate = self._windows_per_s or 10.0
        return max(1.0, windows / rate)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in progress, fail what is still queued, and end the worker."""
        with self._cond:
            self._stopping = True
            left = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for job, _ in left:
            if not job.future.done():
                job.future.set_exception(QueueFull("the server is shutting down", retry_after=5))
        self._thread.join(timeout)

    # -- the worker ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._forward(batch)
            except Exception as err:  # a failed batch fails its requests, never the worker
                log.exception("forward pass failed")
                for job in {id(j): j for j, _ in batch}.values():
                    if not job.future.done():
                        job.future.set_exception(err)

    def _next_batch(self) -> list[tuple[_Job, int]] | None:
        """Wait for windows, then up to ``batch_wait_ms`` more for a fuller batch; take it off the queue."""
        lim = self.limits
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            deadline = self._pending[0][0].enqueued + lim.batch_wait_ms / 1000
            while lim.batch_size > 1 and not self._full() and not self._stopping:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = self._take()
            self.metrics.queue_windows.set(len(self._pending))
            return batch

    def _take(self) -> list[tuple[_Job, int]]:
        """Take a batch off the queue: the oldest window, then the queued windows closest to it in length.

        Padding to the longest window costs compute, so a batch is filled with windows of similar length
        (looking at most ``4 x batch_size`` windows deep); the oldest window always goes first, so none waits
        behind more than the queue ahead of it.
        """
        lim = self.limits
        pending = self._pending
        look = min(len(pending), 4 * lim.batch_size)
        lengths = [int(j.features.lengths[w]) for j, w in (pending[i] for i in range(look))]
        order = sorted(range(1, look), key=lambda i: (abs(lengths[i] - lengths[0]), i))
        chosen, width = [0], lengths[0]
        for i in order:
            if len(chosen) >= lim.batch_size:
                break
            wider = max(width, lengths[i])
            if wider * (len(chosen) + 1) > lim.batch_tokens:
                continue
            chosen.append(i)
            width = wider
        taken = set(chosen)
        batch = [pending[i] for i in sorted(chosen)]
        rest = [item for i, item in enumerate(pending) if i not in taken]
        pending.clear()
        pending.extend(rest)
        return batch

    def _full(self) -> bool:
        """Whether the queue already holds a full batch (by count or by padded tokens)."""
        if len(self._pending) >= self.limits.batch_size:
            return True
        width = max(int(j.features.lengths[w]) for j, w in self._pending)
        return width * (len(self._pending) + 1) > self.limits.batch_tokens

    def _forward(self, batch: list[tuple[_Job, int]]) -> None:
        t0 = time.perf_counter()
        items = []
        for r, (job, w) in enumerate(batch):
            item = {"index": r, **job.features.window(w)}
            item.pop("offsets")
            items.append(item)
        tensors = self.collate(items)
        with torch.inference_mode(), autocast(self.precision, self.device):
            out = self.model(**{k: v.to(self.device) for k, v in model_inputs(tensors, self.model).items()})
        s = out.start_logits.float().cpu().numpy()
        e = out.end_logits.float().cpu().numpy()
        done = []
        for r, (job, w) in enumerate(batch):
            sh, length = int(tensors["shift"][r]), int(job.features.lengths[w])
            job.starts[w], job.ends[w] = s[r, sh : sh + length], e[r, sh : sh + length]
            job.remaining -= 1
            if job.remaining == 0:
                done.append(job)
        seconds = time.perf_counter() - t0
        for job in done:  # decoded by the caller, so the next forward pass starts now
            job.future.set_result(job)
        self._observe(batch, seconds)

    def _observe(self, batch: list[tuple[_Job, int]], seconds: float) -> None:
        m = self.metrics
        m.batch_windows.observe(len(batch))
        m.batch_questions.observe(len({(id(j), int(j.features.example_index[w])) for j, w in batch}))
        m.batch_seconds.observe(seconds)
        rate = len(batch) / max(seconds, 1e-6)
        self._windows_per_s = rate if not self._windows_per_s else 0.8 * self._windows_per_s + 0.2 * rate

    def _decode(self, job: _Job) -> Decoded:
        """The answers of a job whose windows all have logits (offsets into the original contexts)."""
        f, opt = job.features, job.options
        if len(f):
            start, end = pad_ragged(job.starts, -np.inf), pad_ragged(job.ends, -np.inf)
            offsets = padded_offsets(f)
        else:
            start = end = np.zeros((0, 0), np.float32)
            offsets = np.zeros((0, 0, 2), np.int64)
        dec = decode(
            start,
            end,
            offsets,
            f.example_index,
            f.cls_index,
            [ex.id for ex in job.examples],
            [ex.context for ex in job.examples],
            n_best=max(N_BEST, opt.top_k),
            max_answer_length=opt.max_answer_length,
            null_threshold=0.0 if opt.handle_impossible_answer else None,
        )
        return dec

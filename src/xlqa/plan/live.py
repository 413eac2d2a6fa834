"""The live ETA of a training run: the planner's model, fitted on the run's own measured batches as it goes.

``xlqa estimate`` predicts a batch's time as a fixed part plus a part per token computed, from a few batches
timed before the run (:mod:`xlqa.plan.measure`). While the run trains, :class:`LiveEta` fits the same line on
the batches the run itself has just trained on (a recent window, after the first warm-up batches of the
session) and sums it over the exact batches still to come (:func:`remaining_work`: the loop's batch order and
step rule from the current position), plus the end-of-epoch evaluations, checkpoint writes and guard snapshots
still to come at the durations measured for the ones already done (before the first of a kind is done, at a
prior measured at the session's start: :mod:`xlqa.train.eta`). Remaining batches that are longer or shorter
than those so far therefore move the ETA, which a per-step average cannot do.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator

import numpy as np

from xlqa.plan.counts import RemainingWork, remaining_work
from xlqa.plan.measure import Range, Samples, fit

__all__ = ["PROBE_BATCHES", "LiveEta", "RemainingWork", "remaining_work"]  # the walk lives in counts

#: dev batches a session times at its start for the evaluation's prior (:mod:`xlqa.train.eta`), each twice after
#: one warm-up batch (``xlqa estimate`` times 6, and counts this probe in the training time)
PROBE_BATCHES = 4


class LiveEta:
    """Seconds left in a run, from its own measured batches, evaluations, checkpoint writes and guard snapshots.

    The loop calls :meth:`batch_done` after every batch and wraps evaluations and checkpoint writes in
    :meth:`timed` (guard snapshots report through :meth:`add_phase`); :meth:`estimate` is the ETA. The clock
    runs between consecutive :meth:`batch_done` calls, so a batch's time includes the loop's own work around it
    (logging, the guard), as the real run does.

    A phase not measured yet this session (the first epoch's evaluation, before it ends) counts at its
    ``prior`` (:func:`xlqa.train.eta.live_eta` measures one at the start: the dev evaluation from timed
    dev batches as ``xlqa estimate`` does, writes from the first guard snapshot), until it is measured.

    Args:
        work: the run's remaining batches and phases (:func:`remaining_work`) at the start of this session.
        warmup: the session's first batches, left out of the fit (allocator, kernels, optimizer state).
        window: the fit uses the most recent ``window`` measured batches, so it follows a change of pace.
        snapshots: the guard snapshots still to come.
        prior: seconds of one phase of each kind (``"eval"``, ``"checkpoint"``, ``"snapshot"``) until measured.
    """

    def __init__(self, work: RemainingWork, *, warmup: int = 3, window: int = 128, snapshots: int = 0,
                 prior: dict[str, float] | None = None):  # fmt: skip
        self.tokens = work.tokens
        self.warmup = warmup
        self.done = 0
        self.samples: deque[tuple[int, float]] = deque(maxlen=window)
        self.left = {"eval": work.epoch_ends, "checkpoint": work.epoch_ends + work.periodic_checkpoints,
                     "snapshot": snapshots}  # fmt: skip
        self.durations: dict[str, list[float]] = {k: [] for k in self.left}
        self.prior = dict(prior or {})
        self._last = time.perf_counter()
        self._skip = False

    def batch_done(self, seconds: float | None = None) -> None:
        """One batch trained: ``seconds`` it took (default: since the previous batch or timed phase ended)."""
        now = time.perf_counter()
        seconds = now - self._last if seconds is None else seconds
        self._last = now
        i, self.done = self.done, self.done + 1
        # the batch after an evaluation or checkpoint also pays for a new data loader: not a typical batch
        if i >= self.warmup and not self._skip and i < len(self.tokens):
            self.samples.append((int(self.tokens[i]), seconds))
        self._skip = False

    @contextlib.contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        """Time an ``"eval"`` (end of epoch) or a ``"checkpoint"``; its time stays out of the next batch."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add_phase(kind, time.perf_counter() - t0)

    def add_phase(self, kind: str, seconds: float, *, new_loader: bool = True) -> None:
        """One evaluation, checkpoint write or guard snapshot of ``seconds`` done (its time stays out of the next
        batch's); ``new_loader``: the next batch starts a new data loader (not a typical batch)."""
        self.durations[kind].append(seconds)
        self.left[kind] = max(0, self.left[kind] - 1)
        self._last = time.perf_counter()
        self._skip = self._skip or new_loader

    def estimate(self) -> Range | None:
        """Seconds left (expected, and a low-high range); None until two batches after warm-up are measured.

        Batches: the line fitted by :func:`xlqa.plan.measure.fit` on the recent measured batches, summed over
        the remaining ones; the range scales that sum by the 10th and 90th percentile of measured/fitted time.
        Evaluations, checkpoints and snapshots: how many are left times the mean of those measured, or their
        prior.
        """
        if len(self.samples) < 2:
            return None
        samples = Samples([t for t, _ in self.samples], [s for _, s in self.samples])
        a, b = fit(samples)
        left = self.tokens[self.done :].astype(np.float64)
        expected = float(np.sum(a + b * left))
        fitted = a + b * np.asarray(samples.tokens, dtype=np.float64)
        ratios = np.asarray(samples.seconds) / np.maximum(fitted, 1e-12)
        lo, hi = np.percentile(ratios, [10, 90])
        batches = Range(expected * float(min(lo, 1.0)), expected, expected * float(max(hi, 1.0)))
        phases = self.phases_left()
        return batches + Range(phases, phases, phases)

    def phases_left(self) -> float:
        """Seconds of the evaluations, checkpoints and snapshots still to come."""
        return sum(n * self.phase_seconds(k) for k, n in self.left.items())

    def phase_seconds(self, kind: str) -> float:
        """One phase of ``kind``: the mean of those measured this session, else its prior, else 0."""
        done = self.durations[kind]
        return float(np.mean(done)) if done else self.prior.get(kind, 0.0)

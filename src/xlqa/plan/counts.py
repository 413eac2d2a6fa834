"""Exact counts of a training run and of evaluations, made with the code that does the work.

Training windows come from the task's own ``train_data`` (the same feature building and cache as training);
the batches of each epoch from :func:`xlqa.batching.shuffled_batches` with the loop's seed; optimizer steps
are counted as :mod:`xlqa.train.loop` takes them: one per ``grad_accum`` batches and one at the end of an epoch
(Accelerate syncs gradients at the end of the data loader), until ``total_steps`` (:func:`step_budget`, which the
loop itself calls); the guard's snapshots by the guard's own rule (:func:`guard_snapshots`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xlqa.batching import shuffled_batches
from xlqa.config import TrainConfig
from xlqa.train.guard import NonFiniteGuard


@dataclass
class TrainCounts:
    """What a training run will do (one process). ``batches`` lists every batch it trains on, in order."""

    questions: int
    windows: int
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int  # epochs the loop enters (each ends with a dev evaluation and a checkpoint)
    checkpoints: int  # periodic (every save_every steps) and end-of-epoch checkpoints
    guard_snapshots: int = 0  # written by the guard: one before the first step, then every N good steps
    batches: list[list[int]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        """The counts without the batch lists."""
        return {
            "questions": self.questions,
            "windows": self.windows,
            "batches_per_epoch": self.batches_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "epochs": self.epochs,
            "checkpoints": self.checkpoints,
            "guard_snapshots": self.guard_snapshots,
        }


def step_budget(n_windows: int, cfg: TrainConfig, n_proc: int = 1) -> tuple[int, int, int]:
    """``(steps_per_epoch, total_steps, n_epochs)`` of a run: :mod:`xlqa.train.loop` sets itself up with it."""
    n_batches = math.ceil(n_windows / cfg.batch_size)
    steps_per_epoch = max(1, n_batches // (cfg.grad_accum * n_proc))
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    return steps_per_epoch, total_steps, math.ceil(total_steps / steps_per_epoch)


@dataclass
class RemainingWork:
    """What a run still has to do from its position: one token count per batch round, and the phase counts.

    A round is the batch each process trains on at the same time (one batch with a single process); its tokens
    are the largest of its batches', since the slowest process sets the pace.
    """

    tokens: np.ndarray
    epoch_ends: int  # each ends with the dev evaluation (and best-model save) and a checkpoint
    periodic_checkpoints: int
    step: int = 0  # the optimizer step the run reaches at the end
    batches: list[list[int]] = field(default_factory=list, repr=False)  # every batch trained, in order
    batches_per_epoch: int = 0  # of the last epoch entered


def remaining_work(
    lengths: np.ndarray, cfg: TrainConfig, *, epoch: int = 0, batch_in_epoch: int = 0, step: int = 0,
    total_steps: int, n_epochs: int, n_proc: int = 1, multiple: int = 1,
) -> RemainingWork:  # fmt: skip
    """Walk the loop's epochs from ``(epoch, batch_in_epoch, step)`` as :mod:`xlqa.train.loop` does.

    The one walk of the loop's step rule: the planner's counts are the remaining work from step 0 with one
    process (:func:`count_training`), the live ETA's from the run's position. Each epoch's batches come from
    :func:`~xlqa.batching.shuffled_batches` with the loop's seed; a process syncs its gradients (an
    optimizer step) every ``grad_accum`` of its batches and at the end of its loader.
    """
    tokens: list[np.ndarray] = []
    trained: list[list[int]] = []
    epoch_ends = periodic = n_batches = 0
    for e in range(epoch, n_epochs):
        if step >= total_steps:
            break
        batches = shuffled_batches(lengths, cfg.batch_size, seed=cfg.seed + e)
        n_batches = len(batches)
        batches = batches[batch_in_epoch * n_proc :] if e == epoch else batches
        epoch_ends += 1
        per_batch = batch_tokens(lengths, batches, multiple) if batches else np.zeros(0, dtype=np.int64)
        rounds = [per_batch[i : i + n_proc].max() for i in range(0, len(per_batch), n_proc)]
        for k, t in enumerate(rounds, 1):
            tokens.append(t)
            trained += batches[(k - 1) * n_proc : k * n_proc]
            if k % cfg.grad_accum == 0 or k == len(rounds):
                step += 1
                periodic += step % cfg.save_every == 0
                if step >= total_steps:
                    break
    return RemainingWork(np.asarray(tokens, dtype=np.int64), epoch_ends, periodic, step, trained, n_batches)


def count_training(lengths: np.ndarray, questions: int, cfg: TrainConfig) -> TrainCounts:
    """The whole run: its remaining work from step 0 with one process, as counts."""
    steps_per_epoch, total_steps, n_epochs = step_budget(len(lengths), cfg)
    work = remaining_work(lengths, cfg, total_steps=total_steps, n_epochs=n_epochs)
    return TrainCounts(
        questions, len(lengths), work.batches_per_epoch, steps_per_epoch, work.step, work.epoch_ends,
        work.epoch_ends + work.periodic_checkpoints, guard_snapshots(work.step, cfg), work.batches,
    )  # fmt: skip


class _CountedSnapshots:
    """A snapshot store that only counts its saves (the guard decides when to save)."""

    def __init__(self) -> None:
        self.saved = 0

    def save(self) -> None:
        self.saved += 1

    def restore(self) -> None:
        pass


def guard_snapshots(steps: int, cfg: TrainConfig) -> int:
    """The guard's snapshots in a run of ``steps`` good steps, decided by :class:`~xlqa.train.guard.NonFiniteGuard`.

    The loop takes one before its first step (before its clock starts) and the guard one after every
    ``guard_snapshot_every`` good steps; a step skipped as non-finite would delay the next one.
    """
    store = _CountedSnapshots()
    guard = NonFiniteGuard(None, None, None, snapshot_every=cfg.guard_snapshot_every, snapshots=store)
    guard.take_snapshot(0)
    for step in range(1, steps + 1):
        guard.good_step(step)
    return store.saved


def batch_tokens(lengths: np.ndarray, batches: list[list[int]], multiple: int = 1) -> np.ndarray:
    """Tokens each batch computes on: its windows times its padded width (rounded up to ``multiple``)."""
    lengths = np.asarray(lengths)
    widths = np.array([lengths[b].max() if len(b) else 0 for b in batches], dtype=np.int64)
    widths = -(-widths // multiple) * multiple
    return widths * np.array([len(b) for b in batches], dtype=np.int64)

"""Exact counts of a training run and of evaluations, made with the code that does the work.

Training windows come from the task's own ``train_data`` (the same feature building and cache as training);
the batches of each epoch from :func:`xlqa.batching.shuffled_batches` with the loop's seed; optimizer steps
are counted as :mod:`xlqa.train.loop` takes them: one per ``grad_accum`` batches and one at the end of an epoch
(Accelerate syncs gradients at the end of the data loader), until ``total_steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xlqa.batching import shuffled_batches
from xlqa.config import TrainConfig


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
        }


def step_budget(n_windows: int, cfg: TrainConfig, n_proc: int = 1) -> tuple[int, int, int]:
    """``(steps_per_epoch, total_steps, n_epochs)`` exactly as :mod:`xlqa.train.loop` sets them up."""
    n_batches = math.ceil(n_windows / cfg.batch_size)
    steps_per_epoch = max(1, n_batches // (cfg.grad_accum * n_proc))
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    return steps_per_epoch, total_steps, math.ceil(total_steps / steps_per_epoch)


def count_training(lengths: np.ndarray, questions: int, cfg: TrainConfig) -> TrainCounts:
    """Walk the loop's epochs over the exact batches and count steps, epochs and checkpoints."""
    steps_per_epoch, total_steps, n_epochs = step_budget(len(lengths), cfg)
    step, epochs, checkpoints = 0, 0, 0
    trained: list[list[int]] = []
    n_batches = 0
    for epoch in range(n_epochs):
        if step >= total_steps:
            break
        batches = shuffled_batches(lengths, cfg.batch_size, seed=cfg.seed + epoch)
        n_batches = len(batches)
        epochs += 1
        for k, batch in enumerate(batches, 1):
            trained.append(batch)
            if k % cfg.grad_accum == 0 or k == len(batches):
                step += 1
                checkpoints += step % cfg.save_every == 0
                if step >= total_steps:
                    break
        checkpoints += 1  # at the end of every epoch
    return TrainCounts(
        questions, len(lengths), n_batches, steps_per_epoch, step, epochs, checkpoints, trained
    )


def batch_tokens(lengths: np.ndarray, batches: list[list[int]], multiple: int = 1) -> np.ndarray:
    """Tokens each batch computes on: its windows times its padded width (rounded up to ``multiple``)."""
    lengths = np.asarray(lengths)
    widths = np.array([lengths[b].max() if len(b) else 0 for b in batches], dtype=np.int64)
    widths = -(-widths // multiple) * multiple
    return widths * np.array([len(b) for b in batches], dtype=np.int64)

"""Faults a test injects into a training run: non-finite steps, a slow and a failing checkpoint write.

The guard, the rollback and the kill-while-writing recovery can only be tested by making things go wrong on
purpose. The faults are an object the caller passes (``train(cfg, faults=Faults(...))``), not config fields a user
could set or environment variables a production process would read; ``None`` (the default) costs nothing.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

POISONS = ("loss", "grad")


@dataclass(frozen=True)
class Faults:
    """What to break, and when.

    Attributes:
        nonfinite_steps: optimizer steps (1-based, as in the event log) made non-finite.
        poison: what those steps poison: ``"loss"`` (NaN or inf times the loss, before the backward pass) or
            ``"grad"`` (a NaN in the first gradient, after it; the loss stays finite).
        checkpoint_delay: ``(step, seconds)``: the checkpoint of ``step`` sleeps that long half-written (its model
            files are on disk, its trainer state is not), long enough for a test to kill the process.
        checkpoint_error: ``(step, errno name)``: the checkpoint of ``step`` fails half-written with that
            ``OSError`` (``"ENOSPC"``: disk full, ``"EACCES"``: no permission), as a full or read-only disk
            would make it fail (a test running as root cannot make a folder read-only for itself).
    """

    nonfinite_steps: frozenset[int] = frozenset()
    poison: str = "loss"
    checkpoint_delay: tuple[int, float] | None = None
    checkpoint_error: tuple[int, str] | None = None

    def __post_init__(self) -> None:
        if self.poison not in POISONS:
            raise ValueError(f"faults: poison must be one of {', '.join(POISONS)}, not {self.poison!r}")
        object.__setattr__(self, "nonfinite_steps", frozenset(self.nonfinite_steps))

    def poison_loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The loss of optimizer step ``step``, made NaN (odd steps) or inf (even steps) when it is targeted."""
        if self.poison == "loss" and step in self.nonfinite_steps:
            return loss * (float("nan") if step % 2 else float("inf"))
        return loss

    def poison_grad(self, step: int, model: torch.nn.Module) -> None:
        """Fill the first parameter gradient with NaN when optimizer step ``step`` is targeted."""
        if self.poison == "grad" and step in self.nonfinite_steps:
            next(p for p in model.parameters() if p.grad is not None).grad.fill_(float("nan"))

    def delay_checkpoint(self, step: int) -> None:
        """Sleep inside the checkpoint write of the targeted step."""
        if self.checkpoint_delay is not None and self.checkpoint_delay[0] == step:
            seconds = self.checkpoint_delay[1]
            log.warning("faults: sleeping %s s inside the checkpoint of step %d", seconds, step)
            time.sleep(seconds)

    def fail_checkpoint(self, step: int) -> None:
        """Raise the targeted ``OSError`` inside the checkpoint write of the targeted step."""
        if self.checkpoint_error is not None and self.checkpoint_error[0] == step:
            code = getattr(errno, self.checkpoint_error[1])
            raise OSError(code, os.strerror(code))

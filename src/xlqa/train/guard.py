"""A guard against non-finite training steps: skip, roll back, diagnose.

One bad batch must not cost a run. The policy, per optimizer step:

1. **skip**: a non-finite loss or gradient norm skips the update: no weight, optimizer or schedule change
   (the batch is consumed, the data position moves on).
2. **roll back**: after ``max_consecutive`` such steps in a row, the last good state (model, optimizer,
   scheduler), saved every ``snapshot_every`` good steps, is restored and the learning rate is multiplied by
   ``lr_factor`` (cumulatively, and kept: it is part of the scheduler state in checkpoints). Where the state
   is saved is the snapshot store's business: the trainer's (:class:`xlqa.train.checkpoint.StateSnapshots`)
   saves it the way checkpoints are saved, each process its own shard; :class:`MemorySnapshots` (the default,
   for a plain model in one process) copies it to CPU memory.
3. **diverged**: when the steps keep failing after ``max_rollbacks`` rollbacks, training stops.
   :func:`find_overflow` re-runs the failing batch with hooks on every module and names the first module whose
   output (forward) or output gradient (backward) was non-finite; the trainer writes it with a checkpoint.

The skip decision is taken on the gradient norm after the all-reduce (identical in every process) or'ed with
every process's loss check, so all processes under ``accelerate launch`` always take the same branch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

log = logging.getLogger(__name__)


def is_finite(x) -> bool:
    """True for a finite number or a tensor whose elements are all finite (None counts as finite)."""
    if x is None:
        return True
    if isinstance(x, torch.Tensor):
        return bool(torch.isfinite(x.detach()).all())
    return math.isfinite(float(x))


def _cpu_copy(obj):
    """A deep copy of a (nested) state dict with every tensor cloned to CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def base_scheduler(scheduler):
    """The torch LR scheduler inside an Accelerate wrapper (or the scheduler itself)."""
    return getattr(scheduler, "scheduler", scheduler)


def scale_lr(optimizer, scheduler, ratio: float) -> None:
    """Multiply the current and the scheduled learning rates by ``ratio`` (the schedule's shape is kept)."""
    sched = base_scheduler(scheduler)
    if hasattr(sched, "base_lrs"):
        sched.base_lrs = [b * ratio for b in sched.base_lrs]
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr"):
            if group.get(key) is not None:
                group[key] = group[key] * ratio
    if hasattr(sched, "_last_lr"):
        sched._last_lr = [g["lr"] for g in optimizer.param_groups]


class SnapshotStore(Protocol):
    """Where the guard keeps the last good state: ``save`` it now, ``restore`` the last one saved."""

    def save(self) -> None: ...

    def restore(self) -> None: ...


class MemorySnapshots:
    """Model, optimizer and scheduler state copied to CPU memory: for one process and an unsharded model only."""

    def __init__(self, model, optimizer, scheduler):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.saved: dict | None = None

    def save(self) -> None:
        self.saved = {
            "model": _cpu_copy(self.model.state_dict()),
            "optimizer": _cpu_copy(self.optimizer.state_dict()),
            "scheduler": _cpu_copy(self.scheduler.state_dict()),
        }

    def restore(self) -> None:
        self.model.load_state_dict(self.saved["model"])
        self.optimizer.load_state_dict(self.saved["optimizer"])
        self.scheduler.load_state_dict(self.saved["scheduler"])


@dataclass
class GuardState:
    """What the guard carries across checkpoints (the snapshot itself is not part of them)."""

    consecutive: int = 0
    skipped: int = 0
    rollbacks: int = 0
    lr_scale: float = 1.0
    good_since_snapshot: int = 0
    events: list[dict] = field(default_factory=list)


class NonFiniteGuard:
    """Decides what a training step's outcome means and restores the last good state when needed.

    Args:
        model: the unwrapped model (what :class:`MemorySnapshots` copies when no ``snapshots`` are given).
        optimizer: the optimizer (Accelerate's wrapper is fine).
        scheduler: the learning-rate scheduler (Accelerate's wrapper is fine).
        max_consecutive: non-finite steps in a row before a rollback (K).
        snapshot_every: good steps between two snapshots of the training state (N).
        lr_factor: learning-rate multiplier applied at each rollback.
        max_rollbacks: rollbacks allowed before the run is declared diverged.
        snapshots: where the last good state is kept (default: :class:`MemorySnapshots` of the three above).
    """

    def __init__(
        self,
        model,
        optimizer,
        scheduler,
        *,
        max_consecutive: int = 3,
        snapshot_every: int = 50,
        lr_factor: float = 0.5,
        max_rollbacks: int = 2,
        snapshots: SnapshotStore | None = None,
    ):
        if max_consecutive < 1 or snapshot_every < 1 or max_rollbacks < 0 or not 0 < lr_factor <= 1:
            raise ValueError(
                "guard: max_consecutive and snapshot_every must be >= 1, max_rollbacks >= 0, 0 < lr_factor <= 1"
            )
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.max_consecutive = max_consecutive
        self.snapshot_every = snapshot_every
        self.lr_factor = lr_factor
        self.max_rollbacks = max_rollbacks
        self.state = GuardState()
        self.snapshots = snapshots if snapshots is not None else MemorySnapshots(model, optimizer, scheduler)
        self._snapshot: dict | None = None  # the step and learning-rate scale of the last saved state
        self._rollbacks_before = 0  # rollbacks of earlier sessions (a resumed run gets its own allowance)

    # -- snapshots ----------------------------------------------------------------------------------------
    def take_snapshot(self, step: int) -> None:
        """Save model, optimizer and scheduler state (the state rollbacks return to)."""
        self.snapshots.save()
        self._snapshot = {"step": step, "lr_scale": self.state.lr_scale}
        self.state.good_since_snapshot = 0

    @property
    def snapshot_step(self) -> int | None:
        return None if self._snapshot is None else self._snapshot["step"]

    # -- decisions ----------------------------------------------------------------------------------------
    def good_step(self, step: int) -> None:
        """Record a step whose update was applied; refresh the snapshot every ``snapshot_every`` of them."""
        self.state.consecutive = 0
        self.state.good_since_snapshot += 1
        if self._snapshot is None or self.state.good_since_snapshot >= self.snapshot_every:
            self.take_snapshot(step)

    def bad_step(self) -> str:
        """Record a skipped step; returns ``"skip"``, ``"rollback"`` or ``"diverged"`` (what to do now)."""
        self.state.consecutive += 1
        self.state.skipped += 1
        if self.state.consecutive < self.max_consecutive:
            return "skip"
        if self.state.rollbacks - self._rollbacks_before >= self.max_rollbacks or self._snapshot is None:
            return "diverged"
        return "rollback"

    def rollback(self) -> dict:
        """Restore the snapshot and lower the learning rate; returns what was done (for the event log)."""
        snap = self._snapshot
        if snap is None:
            raise RuntimeError("guard: no good state to roll back to")
        self.snapshots.restore()
        self.state.rollbacks += 1
        self.state.consecutive = 0
        self.state.lr_scale *= self.lr_factor
        # the restored scheduler holds the learning rates of its own time: apply every reduction since then
        scale_lr(self.optimizer, self.scheduler, self.state.lr_scale / snap["lr_scale"])
        self.optimizer.zero_grad(set_to_none=True)
        return {
            "to_step": snap["step"],
            "rollbacks": self.state.rollbacks,
            "lr_scale": self.state.lr_scale,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def state_dict(self) -> dict:
        s = self.state
        return {"skipped": s.skipped, "rollbacks": s.rollbacks, "lr_scale": s.lr_scale}

    def load_state_dict(self, d: dict) -> None:
        self.state.skipped = int(d.get("skipped", 0))
        self.state.rollbacks = self._rollbacks_before = int(d.get("rollbacks", 0))
        self.state.lr_scale = float(d.get("lr_scale", 1.0))


# -- diagnosis ------------------------------------------------------------------------------------------------
def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def _nonfinite(t: torch.Tensor) -> bool:
    return t.is_floating_point() and not bool(torch.isfinite(t.detach()).all())


def find_overflow(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> dict:
    """Run ``loss_fn`` (forward on the failing batch) and its backward with hooks on every module.

    Returns ``{"forward": first module (in execution order) whose output has inf/NaN, "backward": first module
    (in backward order) whose output gradient has inf/NaN, "loss": the loss value, "reproduced": bool,
    "nonfinite_grads": first parameters with non-finite gradients}``. Gradients are cleared afterwards.
    """
    found: dict = {"forward": None, "forward_type": None, "backward": None, "backward_type": None}
    handles = []

    def on_grad(name: str, kind: str):
        def hook(grad):
            if found["backward"] is None and grad is not None and _nonfinite(grad):
                found["backward"], found["backward_type"] = name, kind
            return grad

        return hook

    def on_forward(name: str):
        def hook(module, args, output):
            outs = list(_tensors(output))
            if found["forward"] is None and any(_nonfinite(t) for t in outs):
                found["forward"], found["forward_type"] = name, type(module).__name__
            for t in outs:
                if t.requires_grad:
                    t.register_hook(on_grad(name, type(module).__name__))

        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(on_forward(name)))
    was_training = model.training
    try:
        loss = loss_fn()
        found["loss"] = float(loss.detach().float())
        if loss.requires_grad:
            loss.backward()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    bad_grads = [n for n, p in model.named_parameters() if p.grad is not None and _nonfinite(p.grad)]
    model.zero_grad(set_to_none=True)
    found["nonfinite_grads"] = bad_grads[:10]
    found["n_nonfinite_grads"] = len(bad_grads)
    found["reproduced"] = not math.isfinite(found["loss"]) or bool(bad_grads) or found["forward"] is not None
    return found


def describe(diagnosis: dict) -> str:
    """One readable sentence for a :func:`find_overflow` result plus the step context."""
    where = []
    if diagnosis.get("forward"):
        where.append(f"activations first overflowed in {diagnosis['forward']} ({diagnosis['forward_type']})")
    if diagnosis.get("backward"):
        where.append(f"gradients first overflowed in {diagnosis['backward']} ({diagnosis['backward_type']})")
    if not where:
        where.append(
            "re-running the batch gave finite activations and gradients (an injected or nondeterministic fault)"
            if not diagnosis.get("reproduced")
            else "the loss itself was non-finite with finite module outputs"
        )
    ctx = ", ".join(
        f"{k} {diagnosis[k]}" for k in ("step", "lr", "precision") if diagnosis.get(k) is not None
    )
    return f"{'; '.join(where)} ({ctx})"

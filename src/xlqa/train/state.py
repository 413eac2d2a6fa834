"""The training loop's typed state: what a checkpoint carries, what a session shares, what a run returns.

* :class:`TrainState`: counters, data position, history and best model; everything a resumed run needs besides
  the weights, optimizer, scheduler, guard and RNG states. Saved in every checkpoint as plain containers.
* :class:`TrainContext`: what set-up builds once per session (accelerator, model, optimizer, data, ...) and the
  phases of :mod:`xlqa.train.loop` share; never saved.
* :class:`EpochRecord` and :class:`TrainResult`: the per-epoch history and the outcome of :func:`xlqa.train.loop.train`
  (written as ``train_results.json``, with the keys it always had).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from xlqa.config import TrainConfig
    from xlqa.data import SquadData
    from xlqa.plan.live import LiveEta
    from xlqa.tasks import Task, TrainData
    from xlqa.train.bf16 import Bf16Weights
    from xlqa.train.events import EventLog
    from xlqa.train.faults import Faults
    from xlqa.train.guard import NonFiniteGuard


@dataclass
class EpochRecord:
    """One end-of-epoch evaluation (``f1``, ``em``, ``rules`` stay None when the run has no dev set)."""

    epoch: int
    step: int
    f1: float | None = None
    em: float | None = None
    rules: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as in events and ``train_results.json``: without the metrics a run without dev set lacks."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochRecord:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class TrainState:
    """Where a run stands. ``epoch`` and ``batch_in_epoch`` are the data position to continue from.

    ``elapsed`` counts the seconds of earlier sessions (a resumed run adds its own: :meth:`TrainContext.seconds`);
    ``loss_sum``/``loss_n`` accumulate the finite losses since the last step event.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    seen: int = 0
    elapsed: float = 0.0
    history: list[EpochRecord] = field(default_factory=list)
    best_f1: float | None = None
    best_em: float | None = None
    best_dir: str | None = None
    loss_sum: float = 0.0
    loss_n: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only, so that a checkpoint loads with ``torch.load(weights_only=True)``."""
        d = asdict(self)
        d["history"] = [r.to_dict() for r in self.history]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        """A state from :meth:`to_dict` output (keys it does not know, e.g. the guard's, are ignored)."""
        values = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        values["history"] = [EpochRecord.from_dict(r) for r in values.get("history", [])]
        return cls(**values)


@dataclass
class TrainResult:
    """What :func:`xlqa.train.loop.train` returns; :meth:`to_dict` is ``train_results.json``."""

    output: str
    best_dir: str | None
    best_f1: float | None
    best_em: float | None
    steps: int
    seconds: float
    history: list[EpochRecord]
    status: str = "finished"  # finished | stopped
    checkpoint: str | None = None
    health: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = [r.to_dict() for r in self.history]
        return d


@dataclass
class TrainContext:
    """What one training session's phases share: built by set-up, read by the epoch, step and checkpoint phases.

    ``model``, ``optimizer`` and ``scheduler`` are Accelerate's prepared objects; ``unwrapped`` is the plain model
    (config, saving, the guard's snapshots).
    """

    cfg: TrainConfig
    task: Task
    accelerator: Any
    model: Any
    unwrapped: torch.nn.Module
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    guard: NonFiniteGuard
    train_set: SquadData
    dev_set: SquadData | None
    data: TrainData  # the training windows of train_set
    events: EventLog
    precision: str
    run_meta: dict[str, Any]
    forward_ctx: Callable[[], AbstractContextManager]
    steps_per_epoch: int
    total_steps: int
    n_epochs: int
    faults: Faults | None = None
    # -- this session: its clock and rates start at the state it began with
    t0: float = field(default_factory=time.time)
    start_step: int = 0
    seen0: int = 0
    progress: Any = None  # xlqa.train.checkpoint.Progress, registered with Accelerate for checkpointing
    pending_rng: dict | None = None  # a resumed process's RNG states, restored right before its first batch
    last_checkpoint: str | None = None
    eta: LiveEta | None = None  # the live ETA this session feeds (xlqa.train.eta.live_eta)
    bf16: Bf16Weights | None = None  # --bf16-weights: the bf16 copy the steps run on (xlqa.train.bf16)

    @property
    def out(self) -> Path:
        return Path(self.cfg.output)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def n_proc(self) -> int:
        return self.accelerator.num_processes

    def train_mode(self) -> None:
        """Training mode for the model the steps run on (dropout, when the model has any)."""
        self.model.train()
        if self.bf16 is not None:
            self.bf16.train()

    def start_clock(self, st: TrainState) -> None:
        """Start this session's clock, step and example counts (the step event's rates and ETA use them)."""
        self.t0, self.start_step, self.seen0 = time.time(), st.step, st.seen

    def seconds(self, st: TrainState) -> float:
        """Training seconds of the whole run: earlier sessions plus this one."""
        return st.elapsed + time.time() - self.t0

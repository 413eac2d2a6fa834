"""What a training run tells the world while it runs: the JSONL event log, the per-step record, and the stop signal.

``events.jsonl`` is what ``xlqa runs status`` and the dashboard follow; :class:`GracefulStop` is how
``xlqa runs stop`` (SIGTERM) or Ctrl-C reach the loop, which then checkpoints before it exits.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from xlqa.train.guard import is_finite

if TYPE_CHECKING:
    from xlqa.train.state import TrainContext, TrainState

log = logging.getLogger("xlqa.train.loop")


class EventLog:
    """Append-only JSONL log of a run (one JSON object a line, flushed at once so others can follow it)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self.t0 = time.time()
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        rec = {"event": event, "time": round(time.time(), 3), "elapsed": round(time.time() - self.t0, 3)}
        rec.update(fields)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


class GracefulStop:
    """SIGTERM (``xlqa runs stop``) and SIGINT ask the loop to finish its step, checkpoint and exit.

    A second SIGINT interrupts at once. Handlers are only installed from the main thread.
    """

    def __init__(self):
        self.requested = False
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("signal %d: stopping after this step (checkpoint first)", signum)
        self.requested = True

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def num(x) -> float | str:
    """A number for the JSON event log: non-finite values as the strings "nan", "inf", "-inf"."""
    v = float(x.detach().float()) if isinstance(x, torch.Tensor) else float(x)
    return v if math.isfinite(v) else str(v)


def step_record(ctx: TrainContext, st: TrainState, grad_norm) -> dict:
    """The ``step`` event: progress, loss since the last one, learning rate, speed, ETA and guard counts.

    ``eta`` (seconds) comes from :class:`~xlqa.plan.live.LiveEta` (fixed + per-token time fitted on the
    run's own batches, over the exact batches left, plus evaluations, checkpoints and guard snapshots), with
    ``eta_low`` and ``eta_high``; until it has measured batches after warm-up, it is the session's mean step time
    times the steps left, plus the same phases.
    """
    now = time.time() - ctx.t0
    live = ctx.eta.estimate() if ctx.eta is not None else None
    mean_eta = now / max(1, st.step - ctx.start_step) * (ctx.total_steps - st.step)
    mean_eta += ctx.eta.phases_left() if ctx.eta is not None else 0.0
    rec = {
        "step": st.step,
        "epoch": round(st.epoch + min(1.0, st.batch_in_epoch / max(1, ctx.steps_per_epoch)), 3),
        "loss": round(st.loss_sum / st.loss_n, 5) if st.loss_n else None,
        "lr": ctx.scheduler.get_last_lr()[0],
        "grad_norm": round(float(grad_norm), 4) if grad_norm is not None and is_finite(grad_norm) else None,
        "examples_per_s": round((st.seen - ctx.seen0) / max(now, 1e-9), 2),
        "elapsed": round(st.elapsed + now, 1),
        "eta": round(live.expected if live is not None else mean_eta, 1),
        "nonfinite": ctx.guard.state.skipped,
        "rollbacks": ctx.guard.state.rollbacks,
    }
    if live is not None:
        rec["eta_low"], rec["eta_high"] = round(live.low, 1), round(live.high, 1)
    return rec

"""What the training loop writes to disk, timed with the loop's own functions on a temporary run folder.

A resumable checkpoint is :func:`xlqa.train.checkpoint.save_checkpoint` (the exported model, Accelerate's
``save_state`` of model, optimizer, scheduler, RNG and progress, ``xlqa.json``, the marker, fsync and rename),
the best model :func:`~xlqa.train.checkpoint.save_best`, the guard's snapshot
:meth:`~xlqa.train.checkpoint.StateSnapshots.save` (``save_state`` again). After an untimed snapshot (the loop
takes its first one before its clock starts, and pays the first write's one-time costs there), each is
written once here, by the same code with the candidate's model, tokenizer and stepped optimizer behind an
Accelerator as the loop builds it, so the planner times what the run will really write rather than a copy.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from xlqa.config import TrainConfig
from xlqa.plan.measure import time_call


@dataclass
class WriteSeconds:
    """Seconds of one write of each kind."""

    checkpoint: float  # a resumable checkpoint (checkpoints/step-N)
    best: float  # the best model (best/)
    snapshot: float  # the guard's snapshot (checkpoints/.guard-snapshot)

    def to_json(self) -> dict[str, float]:
        return {"checkpoint": round(self.checkpoint, 4), "best": round(self.best, 4),
                "guard_snapshot": round(self.snapshot, 4)}  # fmt: skip


def time_writes(model, tokenizer, optimizer, cfg: TrainConfig, task, precision: str) -> WriteSeconds:
    """One checkpoint, one best model and one guard snapshot, written as the loop writes them (then removed).

    ``model`` and ``optimizer`` are prepared by an Accelerator here (the loop's own, single process): use them
    for nothing else afterwards.
    """
    from transformers import get_linear_schedule_with_warmup

    from xlqa.distributed import make_accelerator
    from xlqa.train.checkpoint import Progress, StateSnapshots, save_best, save_checkpoint
    from xlqa.train.events import EventLog
    from xlqa.train.guard import NonFiniteGuard
    from xlqa.train.state import TrainContext, TrainState

    tmp = Path(tempfile.mkdtemp(prefix="xlqa-estimate-"))
    try:
        run_cfg = replace(cfg, output=str(tmp))
        acc = make_accelerator(mixed_precision="no", gradient_accumulation_steps=cfg.grad_accum)
        scheduler = get_linear_schedule_with_warmup(optimizer, 0, 1)
        prepared, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
        unwrapped = acc.unwrap_model(prepared)
        progress = Progress()
        acc.register_for_checkpointing(progress)
        snapshots = StateSnapshots(acc, tmp)
        guard = NonFiniteGuard(unwrapped, optimizer, scheduler, snapshots=snapshots)
        run_meta = {"config": asdict(cfg), "precision": precision, "task": task.name}
        ctx = TrainContext(
            cfg=run_cfg, task=task, accelerator=acc, model=prepared, unwrapped=unwrapped, tokenizer=tokenizer,
            optimizer=optimizer, scheduler=scheduler, guard=guard, train_set=None, dev_set=None, data=None,
            events=EventLog(tmp / "events.jsonl", enabled=False), precision=precision, run_meta=run_meta,
            forward_ctx=contextlib.nullcontext, steps_per_epoch=1, total_steps=1, n_epochs=1, progress=progress,
        )  # fmt: skip
        st = TrainState(step=1)
        snapshots.save()  # untimed, as the loop's first snapshot is taken before its clock starts
        checkpoint = time_call(lambda: save_checkpoint(ctx, st))
        best = time_call(lambda: save_best(ctx, {**run_meta, "epoch": 1, "step": 1}))
        snapshot = time_call(snapshots.save)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return WriteSeconds(checkpoint, best, snapshot)

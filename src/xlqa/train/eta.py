"""The live ETA of a session: its remaining work, and what it measures at its start for phases not seen yet.

:class:`~xlqa.plan.live.LiveEta` sums the remaining batches, evaluations, checkpoint writes and guard snapshots
at the durations the session measured. Until an epoch has ended, a run has measured no evaluation, no best-model
save and no checkpoint (a one-epoch run never does before its end), so the ETA would leave them out: on an
mBERT run whose dev evaluation takes an hour, an hour per epoch. At the start of a session this module gives
each of them a prior, measured, not guessed:

- **dev evaluation**: :func:`xlqa.plan.evaluation.plan_eval` times real dev batches with the run's model,
  precision and evaluation batch size, as ``xlqa estimate`` plans the dev evaluation (one process only: a
  sharded evaluation is not planned that way; with several processes it counts once measured);
- **writes**: the session's first guard snapshot (Accelerate's ``save_state`` of model, optimizer and
  scheduler, taken before the clock starts) is timed, and its seconds per byte scale the bytes of an exported
  model (the best model) and of a checkpoint (both).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from xlqa.plan.live import PROBE_BATCHES, LiveEta, remaining_work

if TYPE_CHECKING:
    from xlqa.train.state import TrainContext, TrainState

log = logging.getLogger("xlqa.train.loop")


def live_eta(ctx: TrainContext, st: TrainState, snapshot_seconds: float | None = None) -> LiveEta:
    """The session's live ETA from its position in ``st``: the exact batches, evaluations, checkpoints and guard
    snapshots left, with priors for the phases (``snapshot_seconds``: the first snapshot's write)."""
    from xlqa.train.checkpoint import StateSnapshots

    work = remaining_work(
        ctx.data.lengths, ctx.cfg, epoch=st.epoch, batch_in_epoch=st.batch_in_epoch, step=st.step,
        total_steps=ctx.total_steps, n_epochs=ctx.n_epochs, n_proc=ctx.n_proc,
        multiple=getattr(ctx.data.collate, "multiple", 1),
    )  # fmt: skip
    guard = ctx.guard
    snapshots = (guard.state.good_since_snapshot + max(0, work.step - st.step)) // guard.snapshot_every
    eta = LiveEta(work, snapshots=snapshots, prior=phase_priors(ctx, snapshot_seconds))
    if isinstance(guard.snapshots, StateSnapshots):  # a snapshot's time is its own, not the next batch's
        guard.snapshots.on_save = lambda seconds: eta.add_phase("snapshot", seconds, new_loader=False)
    return eta


def phase_priors(ctx: TrainContext, snapshot_seconds: float | None) -> dict[str, float]:
    """Seconds of one evaluation (with its best-model save), checkpoint and snapshot, measured now."""
    t0 = time.perf_counter()
    prior: dict[str, float] = {}
    best = 0.0
    folder = getattr(ctx.guard.snapshots, "folder", None)
    state_bytes = _folder_bytes(folder) if folder is not None else 0
    if snapshot_seconds and state_bytes:
        model_bytes = sum(t.numel() * t.element_size() for t in ctx.unwrapped.state_dict().values())
        best = snapshot_seconds * model_bytes / state_bytes
        prior.update(snapshot=snapshot_seconds, checkpoint=snapshot_seconds + best)
    dev = dev_eval_seconds(ctx) if ctx.dev_set is not None and ctx.n_proc == 1 else 0.0
    prior["eval"] = dev + best
    if ctx.main:
        ctx.events.write("eta_prior", **{k: round(v, 3) for k, v in prior.items()},
                         seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
    return prior


def dev_eval_seconds(ctx: TrainContext) -> float:
    """The dev evaluation's expected seconds, from dev batches timed now as ``xlqa estimate`` times them.

    The model runs in eval mode; the RNG states are kept, so a run trains the same with or without this.
    """
    from xlqa.plan.evaluation import plan_dev
    from xlqa.train.checkpoint import capture_rng, restore_rng

    device = ctx.accelerator.device
    model, precision = ctx.unwrapped, ctx.precision
    if ctx.bf16 is not None:  # the dev evaluation runs on the bf16 copy (xlqa.train.loop._evaluate_epoch)
        ctx.bf16.pull()
        model, precision = ctx.bf16.module, "fp32"
    rng = capture_rng()
    model.eval()
    try:
        plan, _, _ = plan_dev(model, ctx.tokenizer, ctx.task.name, ctx.cfg, precision, device, ctx.dev_set,
                              PROBE_BATCHES)  # fmt: skip
    finally:
        ctx.train_mode()
        restore_rng(rng)
    log.info("dev evaluation: %d windows in %d batches, about %.0f s (timed on %d batches)", plan.windows,
             plan.batches, plan.seconds.expected, PROBE_BATCHES)  # fmt: skip
    return plan.seconds.expected


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    except OSError:
        return 0

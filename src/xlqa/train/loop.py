"""Fine-tuning a QA model (extractive or generative) on Accelerate, with a non-finite guard and resumable checkpoints.

:func:`train` reads as its phases: set-up (accelerator, data, model, optimizer, schedule, guard, resume), then
per epoch the optimizer steps (forward/backward, clip, step or skip, guard, log, checkpoint) and the end of the
epoch (evaluate, keep the best, checkpoint). The phases share a :class:`~xlqa.train.state.TrainContext` (built
once) and a :class:`~xlqa.train.state.TrainState` (what a checkpoint carries).

The loop runs unchanged under ``accelerate launch`` (DDP, FSDP, DeepSpeed ZeRO) and ``torchrun``: Accelerate
places the model, shards the batches and reduces gradients; decisions that change control flow (skip a step,
roll back, stop) are taken on values identical in every process. The dev evaluation is sharded over the
processes (every process gets every answer); checkpoints and the guard's snapshots go through Accelerate's own
state saving, so each process saves what it holds; the exported models and the logs are written by the main
process.

Resuming (:func:`train` with ``resume_from``) restores weights, optimizer, scheduler, RNG states and the data
position (epoch, batch within the epoch; the batch order of an epoch is a function of ``seed + epoch``), so a
resumed run ends with the same weights as an uninterrupted one. It needs the number of processes and the
Accelerate backend the checkpoint was written with, and says so when they differ.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xlqa.batching import shuffled_batches
from xlqa.config import TrainConfig
from xlqa.data import SquadData, load_squad
from xlqa.distributed import any_process, make_accelerator
from xlqa.errors import ConfigError, DataError, TrainingDiverged
from xlqa.evaluate import score_examples
from xlqa.fileio import environment, write_json_atomic
from xlqa.modeling import freeze
from xlqa.plan.counts import step_budget
from xlqa.precision import apply_precision_policy, autocast, choose_precision
from xlqa.sources.registry import spec_for_file
from xlqa.tasks import make_optimizer, make_task
from xlqa.train.bf16 import Bf16Weights
from xlqa.train.checkpoint import (
    Progress,
    StateSnapshots,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_best,
    save_checkpoint,
)
from xlqa.train.eta import live_eta
from xlqa.train.events import EventLog, GracefulStop, num, step_record
from xlqa.train.faults import Faults
from xlqa.train.guard import NonFiniteGuard, describe, find_overflow, is_finite
from xlqa.train.state import EpochRecord, TrainContext, TrainResult, TrainState

log = logging.getLogger(__name__)


def train(
    cfg: TrainConfig, *, resume_from: str | Path | None = None, faults: Faults | None = None
) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.train``; evaluate on ``cfg.dev`` after each epoch; keep the best.

    Args:
        cfg: the run's config.
        resume_from: a checkpoint folder, or a run folder (its latest complete checkpoint), to continue from.
        faults: faults to inject (tests of the guard and of checkpoint recovery); None injects nothing.

    Raises:
        TrainingDiverged: the guard gave up; a resumable checkpoint of the last good state was written.
    """
    cfg.validate()
    ctx = _set_up(cfg, faults)
    st = _resume(ctx, resume_from) if resume_from is not None else TrainState()
    _announce(ctx, st, resumed=resume_from is not None)
    t0 = time.perf_counter()
    ctx.guard.take_snapshot(st.step)
    snapshot_seconds = time.perf_counter() - t0
    ctx.start_clock(st)
    ctx.eta = live_eta(ctx, st, snapshot_seconds)
    status = "finished"
    bar = tqdm(total=ctx.total_steps, initial=st.step, desc="train", unit="step",
               disable=not (cfg.progress and ctx.main), dynamic_ncols=True)  # fmt: skip
    try:
        with GracefulStop() as stop, bar:
            while st.epoch < ctx.n_epochs:
                if _run_epoch(ctx, st, stop, bar):
                    status = "stopped"
                    break
                _end_epoch(ctx, st)
    finally:
        ctx.guard.snapshots.discard()
    seconds = round(ctx.seconds(st), 1)
    result = TrainResult(str(ctx.out), st.best_dir, st.best_f1, st.best_em, st.step, seconds, st.history,
                         status, ctx.last_checkpoint, ctx.guard.state_dict())  # fmt: skip
    if ctx.main:
        ctx.events.write("stopped" if status == "stopped" else "end", steps=st.step, seconds=seconds,
                         best_f1=st.best_f1, best_em=st.best_em, checkpoint=ctx.last_checkpoint)  # fmt: skip
        write_json_atomic(ctx.out / "train_results.json", result.to_dict())
    return result


# -- set-up -----------------------------------------------------------------------------------------------------
def _set_up(cfg: TrainConfig, faults: Faults | None) -> TrainContext:
    """Accelerator, data, model, optimizer, schedule and guard: everything the phases share."""
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    task = make_task(cfg)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision = choose_precision(cfg.precision, device_type)
    # Accelerate's fp16 needs a GPU and silently runs fp32 on a CPU: there the loop autocasts itself
    own_autocast = precision == "fp16" and device_type == "cpu"
    bf16_weights = cfg.bf16_weights and precision == "bf16"  # a bf16 copy to train on: no autocast
    accelerator = make_accelerator(
        mixed_precision="no" if precision == "fp32" or own_autocast or bf16_weights else precision,
        gradient_accumulation_steps=cfg.grad_accum,
    )
    if bf16_weights and accelerator.num_processes > 1:
        raise ConfigError(
            f"--bf16-weights trains in one process, not {accelerator.num_processes}: the bf16 copy's gradients"
            " are not reduced across processes; drop it (Accelerate's bf16 mixed precision applies instead)"
        )
    set_seed(cfg.seed)
    events = EventLog(Path(cfg.output) / "events.jsonl", enabled=accelerator.is_main_process)

    # -- data: validated examples -> cached windows (one process tokenizes and fills the cache)
    train_set = load_squad(cfg.train, max_examples=cfg.max_train_examples)
    dev_set = load_squad(cfg.dev, max_examples=cfg.max_dev_examples) if cfg.dev else None
    model, tok = task.load(cfg)
    policy = apply_precision_policy(model, precision, allow_fp16_t5=cfg.allow_fp16_t5)
    freeze(model, embeddings=cfg.freeze_embeddings, layers=cfg.freeze_layers)
    with accelerator.main_process_first():
        data = task.train_data(train_set.examples, tok, cfg)
    if len(data.lengths) == 0:
        raise DataError("no trainable windows (every answer unlocatable?)", path=cfg.train)
    n_proc = accelerator.num_processes
    steps_per_epoch, total_steps, n_epochs = step_budget(len(data.lengths), cfg, n_proc)

    # -- optimizer and schedule: linear warmup then decay to zero (Accelerate steps it once per process)
    optimizer = make_optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * total_steps) * n_proc, total_steps * n_proc
    )
    if accelerator.state.deepspeed_plugin is not None:
        # DeepSpeed reads its micro-batch from a data loader given to prepare(); ours are made per epoch
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(prepared)
    # checkpoints and the guard's snapshots: accelerator.save_state, with the run's progress registered
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    guard = NonFiniteGuard(
        unwrapped, optimizer, scheduler, max_consecutive=cfg.guard_max_consecutive,
        snapshot_every=cfg.guard_snapshot_every, lr_factor=cfg.guard_lr_factor,
        max_rollbacks=cfg.guard_max_rollbacks, snapshots=StateSnapshots(accelerator, cfg.output),
    )  # fmt: skip
    run_meta = {"config": asdict(cfg), "precision": precision, "precision_policy": policy, "task": task.name,
                "bf16_weights": bf16_weights}  # fmt: skip
    return TrainContext(
        cfg=cfg, task=task, accelerator=accelerator, model=prepared, unwrapped=unwrapped, tokenizer=tok,
        optimizer=optimizer, scheduler=scheduler, guard=guard, train_set=train_set, dev_set=dev_set, data=data,
        events=events, precision=precision, run_meta=run_meta,
        forward_ctx=(lambda: autocast("fp16", device_type)) if own_autocast else contextlib.nullcontext,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        n_epochs=n_epochs, faults=faults, progress=progress, bf16=Bf16Weights(unwrapped) if bf16_weights else None,
    )  # fmt: skip


def _resume(ctx: TrainContext, resume_from: str | Path) -> TrainState:
    """The state of a checkpoint folder, or of a run folder's latest complete checkpoint."""
    # -- resume: weights, optimizer, scheduler, guard, counters; the RNG states wait for the first batch
    ckpt = Path(resume_from)
    ckpt = ckpt if (ckpt / "trainer_state.pt").exists() else latest_checkpoint(ckpt)
    if ckpt is None:
        raise ConfigError(f"{resume_from}: no complete checkpoint to resume from")
    st = load_checkpoint(ckpt, ctx)
    if ctx.bf16 is not None:
        ctx.bf16.sync()
    return st


def _announce(ctx: TrainContext, st: TrainState, *, resumed: bool) -> None:
    """The run's ``config.json`` (once: a resumed run keeps its own), a log line and the start event."""
    if not ctx.main:
        return
    out, cfg = ctx.out, ctx.cfg
    out.mkdir(parents=True, exist_ok=True)
    if not resumed or not (out / "config.json").exists():
        dev = _data_report(ctx.dev_set) if ctx.dev_set else None
        info = {**ctx.run_meta, "environment": environment(), "data": {"train": _data_report(ctx.train_set),
                "dev": dev}}  # fmt: skip
        write_json_atomic(out / "config.json", info)
    windows = len(ctx.data.lengths)
    log.info("training %s (%s) on %d windows (%d questions): %d steps, %d epoch(s), precision %s, %d process(es)",
             cfg.model, ctx.task.name, windows, len(ctx.train_set.examples), ctx.total_steps, ctx.n_epochs,
             ctx.precision, ctx.n_proc)  # fmt: skip
    ctx.events.write(
        "resume" if resumed else "start", total_steps=ctx.total_steps, epochs=ctx.n_epochs, windows=windows,
        precision=ctx.precision, task=ctx.task.name, step=st.step, pid=os.getpid(), processes=ctx.n_proc,
    )  # fmt: skip


# -- one epoch --------------------------------------------------------------------------------------------------
def _run_epoch(ctx: TrainContext, st: TrainState, stop: GracefulStop, bar: tqdm) -> bool:
    """The optimizer steps of epoch ``st.epoch`` from ``st.batch_in_epoch``; True when a stop was requested."""
    batches = _epoch_batches(ctx, st)
    if ctx.pending_rng is not None:
        restore_rng(ctx.pending_rng)
        ctx.pending_rng = None
    bad_loss = False
    ctx.train_mode()
    for batch in batches:
        st.batch_in_epoch += 1
        st.seen += len(batch["input_ids"]) * ctx.n_proc
        outcome = _optimizer_step(ctx, st, batch, bad_loss)
        ctx.eta.batch_done()
        bad_loss = outcome.bad_loss
        if not outcome.synced:
            continue
        bad_loss = False
        bar.update(1)
        _guard(ctx, st, outcome, batch)
        # -- log
        if st.step % ctx.cfg.log_every == 0 or st.step == ctx.total_steps:
            ctx.events.write("step", **step_record(ctx, st, outcome.grad_norm))
            st.loss_sum, st.loss_n = 0.0, 0
        # -- checkpoint: periodic, and on a stop request (from any process)
        stopping = any_process(ctx.accelerator, stop.requested)
        if st.step % ctx.cfg.save_every == 0 or stopping:
            _checkpoint(ctx, st)
        if stopping:
            return True
        if st.step >= ctx.total_steps:
            break
    return False


def _epoch_batches(ctx: TrainContext, st: TrainState) -> Iterator[dict]:
    """The batches of epoch ``st.epoch`` still to train on (none once the step budget is spent)."""
    # -- data order: seeded per epoch, identical in every process; a resumed epoch skips what it saw
    cfg = ctx.cfg
    batches = shuffled_batches(ctx.data.lengths, cfg.batch_size, seed=cfg.seed + st.epoch)
    batches = batches[st.batch_in_epoch * ctx.n_proc :]
    if not batches or st.step >= ctx.total_steps:
        return iter(())
    # its own generator: the loader's seed draw must not move the global RNG (dropout), or a resumed epoch
    # would see other dropout masks than the uninterrupted one
    gen = torch.Generator().manual_seed(cfg.seed + st.epoch)
    loader = DataLoader(ctx.data.dataset, batch_sampler=batches, collate_fn=ctx.data.collate, generator=gen)
    return iter(ctx.accelerator.prepare(loader))


# -- one optimizer step -----------------------------------------------------------------------------------------
@dataclass
class StepOutcome:
    """What a batch did: ``synced`` once the accumulated gradients were applied (or the update skipped)."""

    loss: torch.Tensor
    bad_loss: bool  # a non-finite loss in this process since the last optimizer step
    synced: bool = False
    grad_norm: Any = None
    ok: bool = True
    scaler_skip: bool = False


def _optimizer_step(ctx: TrainContext, st: TrainState, batch: dict, bad_loss: bool) -> StepOutcome:
    """Forward and backward of one batch; once the gradients sync: clip, then step or skip the update."""
    acc, faults, optimizer, bf16 = ctx.accelerator, ctx.faults, ctx.optimizer, ctx.bf16
    # -- forward / backward (gradients accumulate until sync_gradients); with --bf16-weights on the bf16 copy,
    # whose gradients are added to the fp32 weights' right after the backward
    with acc.accumulate(ctx.model):
        if bf16 is not None:
            bf16.pull()
        with ctx.forward_ctx():
            loss = ctx.task.loss(ctx.model if bf16 is None else bf16.module, batch, ctx.unwrapped.config)
        if faults is not None:
            loss = faults.poison_loss(st.step + 1, loss)
        if is_finite(loss):
            st.loss_sum += float(loss.detach())
            st.loss_n += 1
        else:
            bad_loss = True
        acc.backward(loss)
        if bf16 is not None:
            bf16.push_grads()
        if not acc.sync_gradients:
            return StepOutcome(loss, bad_loss)
        if faults is not None:
            faults.poison_grad(st.step + 1, ctx.unwrapped)
        # -- clip: the norm is computed after the gradient all-reduce, so every process sees it
        grad_norm = acc.clip_grad_norm_(ctx.model.parameters(), ctx.cfg.max_grad_norm)
        loss_bad = any_process(acc, bad_loss)
        ok = is_finite(grad_norm) and not loss_bad
        # fp16 on a GPU: inf gradients with a finite loss are the loss scaler's business (it skips the update
        # and lowers its scale), not a fault, as long as the scale stays above 1
        scaler = acc.scaler
        scaler_skip = not ok and not loss_bad and scaler is not None and scaler.get_scale() >= 1.0
        # -- step, or skip it: a non-finite update never reaches weights, optimizer or schedule
        if ok:
            optimizer.step()
            ctx.scheduler.step()
        elif scaler is not None:
            optimizer.step()  # the scaler must see the inf: it skips the update and lowers its scale
        optimizer.zero_grad()
    st.step += 1
    return StepOutcome(loss, bad_loss, True, grad_norm, ok, scaler_skip)


def _guard(ctx: TrainContext, st: TrainState, outcome: StepOutcome, batch: dict) -> None:
    """What an applied or skipped update means for the run (the policy: :mod:`xlqa.train.guard`)."""
    # -- guard: count bad steps, roll back after K in a row, give up with a diagnosis
    guard = ctx.guard
    if outcome.ok:
        guard.good_step(st.step)
        return
    if outcome.scaler_skip:
        return
    action = guard.bad_step()
    ctx.events.write("nonfinite", step=st.step, epoch=st.epoch, loss=num(outcome.loss),
                     grad_norm=num(outcome.grad_norm), lr=ctx.scheduler.get_last_lr()[0], precision=ctx.precision,
                     consecutive=guard.state.consecutive, action=action)  # fmt: skip
    if action == "rollback":
        info = guard.rollback()
        if ctx.bf16 is not None:
            ctx.bf16.sync()
        ctx.events.write("rollback", step=st.step, **info)
        log.warning("step %d: %d non-finite steps in a row, rolled back to step %d, lr %.3g",
                    st.step, ctx.cfg.guard_max_consecutive, info["to_step"], info["lr"])  # fmt: skip
    elif action == "diverged":
        diag = diagnose(ctx, st, batch)
        if guard.snapshot_step is not None:
            guard.rollback()
        diag["checkpoint"] = _checkpoint(ctx, st)
        ctx.events.write("diagnosis", **diag)
        raise TrainingDiverged(
            f"training diverged: {describe(diag)}; resumable checkpoint {diag['checkpoint']}", diag
        )


def diagnose(ctx: TrainContext, st: TrainState, batch: dict) -> dict:
    """Re-run the failing batch with hooks (:func:`xlqa.train.guard.find_overflow`) and add the step's context."""
    model = ctx.unwrapped
    if ctx.bf16 is not None:  # the failing step ran on the bf16 copy
        ctx.bf16.pull()
        model = ctx.bf16.module

    def loss_fn():
        with ctx.forward_ctx():
            return ctx.task.loss(model, batch, model.config)

    found = find_overflow(model, loss_fn)
    found.update(step=st.step, lr=ctx.scheduler.get_last_lr()[0], precision=ctx.precision)
    found["message"] = describe(found)
    log.error("step %d: %s", st.step, found["message"])
    return found


# -- end of epoch -----------------------------------------------------------------------------------------------
def _end_epoch(ctx: TrainContext, st: TrainState) -> None:
    """Evaluate, keep the best model, and checkpoint at the position of the next epoch."""
    # -- evaluate (every process: the dev set is sharded); keep the best model
    ctx.accelerator.wait_for_everyone()
    with ctx.eta.timed("eval"):
        _evaluate_epoch(ctx, st)
    ctx.train_mode()
    # -- checkpoint at the epoch end: resuming starts the next epoch (or nothing, once done)
    st.epoch = st.epoch + 1 if st.step < ctx.total_steps else ctx.n_epochs
    st.batch_in_epoch = 0
    _checkpoint(ctx, st)


def _evaluate_epoch(ctx: TrainContext, st: TrainState) -> None:
    """Score the dev set (when there is one), append the epoch's record, save ``best/`` when it improved.

    A collective: every process predicts its shard of the dev set and gets every answer, so every process
    scores the same and takes the same decision about ``best/``, whose weights are gathered from all of them.
    """
    from accelerate.utils import DistributedType

    rec = EpochRecord(epoch=st.epoch + 1, step=st.step)
    dev = ctx.dev_set
    if dev is not None:
        spec = spec_for_file(dev)
        # FSDP and DeepSpeed gather the sharded weights in the wrapped model's forward; DDP's is not needed
        sharded = ctx.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        model, precision = ctx.model if sharded else ctx.unwrapped, ctx.precision
        if ctx.bf16 is not None:  # the bf16 copy, as xlqa evaluate runs a model in bf16: no autocast
            ctx.bf16.pull()
            model, precision = ctx.bf16.module, "fp32"
        preds = ctx.task.predict(model, ctx.tokenizer, dev, ctx.cfg, precision, desc=f"dev epoch {st.epoch + 1}",
                                 accelerator=ctx.accelerator)  # fmt: skip
        scored = score_examples(dev.examples, preds, rules=spec.rules, language=spec.language or None)
        rec.f1, rec.em, rec.rules = scored.f1, scored.em, spec.rules
        ctx.events.write("eval", **rec.to_dict())
        if ctx.main:
            log.info("epoch %d: dev EM %.2f F1 %.2f", rec.epoch, rec.em, rec.f1)
    st.history.append(rec)
    if dev is None or st.best_f1 is None or rec.f1 > st.best_f1:
        st.best_f1, st.best_em = rec.f1, rec.em
        extra = {**ctx.run_meta, "epoch": rec.epoch, "step": st.step, "dev": rec.to_dict(),
                 "environment": environment()}  # fmt: skip
        st.best_dir = str(save_best(ctx, extra))
        ctx.events.write("best", path=st.best_dir, **rec.to_dict())


def _checkpoint(ctx: TrainContext, st: TrainState) -> str:
    """A resumable checkpoint of ``st`` (every process takes part) and its event."""
    with ctx.eta.timed("checkpoint"):
        path = str(save_checkpoint(ctx, st))
    ctx.events.write("checkpoint", step=st.step, epoch=st.epoch, batch_in_epoch=st.batch_in_epoch, path=path)
    ctx.last_checkpoint = path
    return path


# -- helpers ----------------------------------------------------------------------------------------------------
def _data_report(data: SquadData) -> dict:
    """A training or dev file as ``config.json`` records it: path, checksum, language and what was repaired."""
    r = data.report
    return {
        "path": str(data.path),
        "sha256": r.sha256,
        "language": data.language,
        "questions": r.n_questions,
        "repaired": len(r.repaired),
        "unlocatable": len(r.unlocatable),
    }

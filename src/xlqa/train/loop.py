"""Fine-tuning a QA model (extractive or generative) on Accelerate, with a non-finite guard and resumable checkpoints.

The loop runs unchanged under ``accelerate launch`` (DDP, FSDP, DeepSpeed): Accelerate places the model, shards
the batches and reduces gradients; decisions that change control flow (skip a step, roll back, stop) are taken
on values identical in every process; evaluation and file writing happen on the main process.

Resuming (:func:`train` with ``resume_from``) restores weights, optimizer, scheduler, RNG states and the data
position (epoch, batch within the epoch; the batch order of an epoch is a function of ``seed + epoch``), so a
resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xlqa.batching import Collator, WindowDataset, shuffled_batches
from xlqa.config import TrainConfig
from xlqa.data import load_squad
from xlqa.errors import TrainingDiverged
from xlqa.evaluate import em_of, f1_of, rules_for, score_examples
from xlqa.features import FeatureParams, cached_features
from xlqa.fileio import environment, write_json_atomic
from xlqa.modeling import apply_precision_policy, autocast, choose_precision, is_t5_family, save_model
from xlqa.predict import predict_examples
from xlqa.train.checkpoint import latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from xlqa.train.events import EventLog, GracefulStop, num, step_record
from xlqa.train.guard import NonFiniteGuard, describe, find_overflow, is_finite

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output: str
    best_dir: str | None
    best_f1: float | None
    best_em: float | None
    steps: int
    seconds: float
    history: list[dict]
    status: str = "finished"  # finished | stopped
    checkpoint: str | None = None
    health: dict = field(default_factory=dict)


# -- tasks: what differs between extractive and generative QA --------------------------------------------------
@dataclass
class TrainData:
    dataset: torch.utils.data.Dataset
    lengths: np.ndarray
    collate: object


class ExtractiveTask:
    """Start/end span prediction (``AutoModelForQuestionAnswering``) over token windows."""

    name = "extractive"

    def load(self, cfg: TrainConfig):
        from xlqa.modeling import load_qa_model

        return load_qa_model(cfg.model)

    def train_data(self, examples, tok, cfg: TrainConfig) -> TrainData:
        params = FeatureParams(cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length)
        feats = cached_features(examples, tok, params, training=True, cache_dir=cfg.cache_dir)
        collate = Collator(tok.pad_token_id or 0, pad_left=tok.padding_side == "left")
        return TrainData(WindowDataset(feats), feats.lengths, collate)

    def loss(self, model, batch: dict, config) -> torch.Tensor:
        keys = ["input_ids", "attention_mask"]
        if "token_type_ids" in batch and getattr(config, "type_vocab_size", 0) > 1:
            keys.append("token_type_ids")
        inputs = {k: batch[k] for k in keys}
        return model(
            **inputs, start_positions=batch["start_positions"], end_positions=batch["end_positions"]
        ).loss

    def predict(self, model, tok, data, cfg: TrainConfig, precision: str, desc: str) -> dict[str, str]:
        dec = predict_examples(
            model, tok, data.examples,
            params=FeatureParams(cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length),
            batch_size=cfg.eval_batch_size, max_answer_length=cfg.max_answer_length, cache_dir=cfg.cache_dir,
            progress=cfg.progress, null_threshold=0.0 if rules_for(data) == "squad2" else None, desc=desc,
            precision=precision,
        )  # fmt: skip
        return dec.predictions


def make_task(cfg: TrainConfig):
    """The task object for ``cfg.task`` (``auto``: generative for encoder-decoder models)."""
    from xlqa.modeling import is_seq2seq

    task = cfg.task
    if task == "auto":
        task = "generative" if is_seq2seq(cfg.model) else "extractive"
    if task == "generative":
        from xlqa.generative import GenerativeTask

        return GenerativeTask()
    return ExtractiveTask()


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or Adafactor (the default for the T5 family); no weight decay on biases and norms."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kind = cfg.optimizer if cfg.optimizer != "auto" else ("adafactor" if is_t5_family(model) else "adamw")
    if kind == "adafactor":
        from transformers.optimization import Adafactor

        # a fixed learning rate (the T5 fine-tuning recipe), so the schedule and the guard can scale it
        return Adafactor(groups, lr=cfg.lr, scale_parameter=False, relative_step=False, warmup_init=False)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _any_process(accelerator, flag: bool) -> bool:
    """True when ``flag`` is True in any process (a collective: every process must call it)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def _accelerator(**kwargs):
    """An Accelerator; a second run in the same process (tests, notebooks) may change the mixed precision.

    Accelerate keeps one process-wide state and refuses a different ``mixed_precision`` once it is set. Under
    ``accelerate launch`` a process trains once, so resetting the state between runs on one process is safe;
    in a distributed job the state is left alone.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(**kwargs)


def train(cfg: TrainConfig, *, resume_from: str | Path | None = None) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.train``; evaluate on ``cfg.dev`` after each epoch; keep the best.

    Args:
        cfg: the run's config.
        resume_from: a checkpoint folder, or a run folder (its latest complete checkpoint), to continue from.

    Raises:
        TrainingDiverged: the guard gave up; a resumable checkpoint of the last good state was written.
    """
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    cfg.validate()
    task = make_task(cfg)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision = choose_precision(cfg.precision, device_type)
    # Accelerate's fp16 needs a GPU and silently runs fp32 on a CPU: there the loop autocasts itself
    own_autocast = precision == "fp16" and device_type == "cpu"
    accelerator = _accelerator(
        mixed_precision="no" if precision == "fp32" or own_autocast else precision,
        gradient_accumulation_steps=cfg.grad_accum,
    )
    set_seed(cfg.seed)
    main = accelerator.is_main_process
    out = Path(cfg.output)
    events = EventLog(out / "events.jsonl", enabled=main)
    forward_ctx = (lambda: autocast("fp16", device_type)) if own_autocast else contextlib.nullcontext

    # -- data: validated examples -> cached windows (one process tokenizes and fills the cache)
    train_data = load_squad(cfg.train, max_examples=cfg.max_train_examples)
    dev_data = load_squad(cfg.dev, max_examples=cfg.max_dev_examples) if cfg.dev else None
    model, tok = task.load(cfg)
    policy = apply_precision_policy(model, precision, allow_fp16_t5=cfg.allow_fp16_t5)
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    with accelerator.main_process_first():
        data = task.train_data(train_data.examples, tok, cfg)
    if len(data.lengths) == 0:
        raise ValueError(f"{cfg.train}: no trainable windows (every answer unlocatable?)")
    n_proc = accelerator.num_processes
    n_batches = math.ceil(len(data.lengths) / cfg.batch_size)
    steps_per_epoch = max(1, n_batches // (cfg.grad_accum * n_proc))
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    # -- optimizer and schedule: linear warmup then decay to zero (Accelerate steps it once per process)
    optimizer = make_optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * total_steps) * n_proc, total_steps * n_proc
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    guard = NonFiniteGuard(
        unwrapped, optimizer, scheduler, max_consecutive=cfg.guard_max_consecutive,
        snapshot_every=cfg.guard_snapshot_every, lr_factor=cfg.guard_lr_factor,
        max_rollbacks=cfg.guard_max_rollbacks,
    )  # fmt: skip

    # -- resume: weights, optimizer, scheduler, guard, counters; RNG waits for the first batch
    st = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "seen": 0, "elapsed": 0.0, "history": [],
          "best_f1": None, "best_em": None, "best_dir": None, "loss_sum": 0.0, "loss_n": 0}  # fmt: skip
    pending_rng = None
    if resume_from is not None:
        ckpt = Path(resume_from)
        ckpt = ckpt if (ckpt / "trainer_state.pt").exists() else latest_checkpoint(ckpt)
        if ckpt is None:
            raise FileNotFoundError(f"{resume_from}: no complete checkpoint to resume from")
        st.update(load_checkpoint(ckpt, accelerator=accelerator, model=model, optimizer=optimizer,
                                  scheduler=scheduler))  # fmt: skip
        guard.load_state_dict(st.pop("guard", {}))
        pending_rng = st.pop("rng")
    run_meta = {"config": asdict(cfg), "precision": precision, "precision_policy": policy, "task": task.name}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if resume_from is None or not (out / "config.json").exists():
            info = {**run_meta, "environment": environment(), "data": {"train": asdict_report(train_data),
                    "dev": asdict_report(dev_data) if dev_data else None}}  # fmt: skip
            (out / "config.json").write_text(json.dumps(info, indent=2, ensure_ascii=False))
        log.info("training %s (%s) on %d windows (%d questions): %d steps, %d epoch(s), precision %s, %d process(es)",
                 cfg.model, task.name, len(data.lengths), len(train_data.examples), total_steps, n_epochs,
                 precision, n_proc)  # fmt: skip
        events.write(
            "resume" if resume_from is not None else "start", total_steps=total_steps, epochs=n_epochs,
            windows=len(data.lengths), precision=precision, task=task.name, step=st["step"], pid=os.getpid(),
        )  # fmt: skip
    guard.take_snapshot(st["step"])

    def checkpoint(epoch: int, batch_in_epoch: int) -> str:
        state = {
            k: st[k] for k in ("seen", "history", "best_f1", "best_em", "best_dir", "loss_sum", "loss_n")
        }
        state.update(step=step, epoch=epoch, batch_in_epoch=batch_in_epoch, guard=guard.state_dict(),
                     elapsed=st["elapsed"] + time.time() - t0)  # fmt: skip
        path = save_checkpoint(out, step, accelerator=accelerator, model=model, tokenizer=tok,
                               optimizer=optimizer, scheduler=scheduler, state=state,
                               meta={**run_meta, "epoch": epoch, "environment": environment()},
                               keep=cfg.keep_checkpoints)  # fmt: skip
        events.write("checkpoint", step=step, epoch=epoch, batch_in_epoch=batch_in_epoch, path=str(path))
        return str(path)

    step, start_step, start_epoch = st["step"], st["step"], st["epoch"]
    t0 = time.time()
    seen0 = st["seen"]
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step",
               disable=not (cfg.progress and main), dynamic_ncols=True)  # fmt: skip
    inject = set(cfg.inject_nonfinite_steps)
    last_ckpt = status = None
    with GracefulStop() as stop:
        for epoch in range(start_epoch, n_epochs):
            # -- data order: seeded per epoch, identical in every process; a resumed epoch skips what it saw
            skip = st["batch_in_epoch"] if epoch == start_epoch else 0
            batches = shuffled_batches(data.lengths, cfg.batch_size, seed=cfg.seed + epoch)[skip * n_proc :]
            batch_iter = iter(())
            if batches and step < total_steps:
                # its own generator: the loader's seed draw must not move the global RNG (dropout), or a
                # resumed epoch would see other dropout masks than the uninterrupted one
                gen = torch.Generator().manual_seed(cfg.seed + epoch)
                loader = DataLoader(
                    data.dataset, batch_sampler=batches, collate_fn=data.collate, generator=gen
                )
                batch_iter = iter(accelerator.prepare(loader))
            if pending_rng is not None:
                restore_rng(pending_rng)
                pending_rng = None
            batch_in_epoch, bad_local = skip, False
            model.train()
            for batch in batch_iter:
                batch_in_epoch += 1
                st["seen"] += len(batch["input_ids"]) * n_proc
                # -- forward / backward (gradients accumulate until sync_gradients)
                with accelerator.accumulate(model):
                    with forward_ctx():
                        loss = task.loss(model, batch, unwrapped.config)
                    if step + 1 in inject and cfg.inject_nonfinite == "loss":
                        loss = loss * (float("nan") if (step + 1) % 2 else float("inf"))
                    if is_finite(loss):
                        st["loss_sum"] += float(loss.detach())
                        st["loss_n"] += 1
                    else:
                        bad_local = True
                    accelerator.backward(loss)
                    if not accelerator.sync_gradients:
                        continue
                    if step + 1 in inject and cfg.inject_nonfinite == "grad":
                        next(p for p in unwrapped.parameters() if p.grad is not None).grad.fill_(float("nan"))
                    # -- clip: the norm is computed after the gradient all-reduce, so every process sees it
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    loss_bad = _any_process(accelerator, bad_local)
                    ok = is_finite(grad_norm) and not loss_bad
                    # fp16 on a GPU: inf gradients with a finite loss are the loss scaler's business (it skips
                    # the update and lowers its scale), not a fault, as long as the scale stays above 1
                    scaler = accelerator.scaler
                    scaler_skip = not ok and not loss_bad and scaler is not None and scaler.get_scale() >= 1.0
                    # -- step, or skip it: a non-finite update never reaches weights, optimizer or schedule
                    if ok:
                        optimizer.step()
                        scheduler.step()
                    elif scaler is not None:
                        optimizer.step()  # the scaler must see the inf: it skips the update and lowers its scale
                    optimizer.zero_grad()
                step += 1
                bar.update(1)
                # -- guard: count bad steps, roll back after K in a row, give up with a diagnosis
                if ok:
                    guard.good_step(step)
                elif not scaler_skip:
                    action = guard.bad_step()
                    events.write("nonfinite", step=step, epoch=epoch, loss=num(loss), grad_norm=num(grad_norm),
                                 lr=scheduler.get_last_lr()[0], precision=precision,
                                 consecutive=guard.state.consecutive, action=action)  # fmt: skip
                    if action == "rollback":
                        info = guard.rollback()
                        events.write("rollback", step=step, **info)
                        log.warning("step %d: %d non-finite steps in a row, rolled back to step %d, lr %.3g",
                                    step, cfg.guard_max_consecutive, info["to_step"], info["lr"])  # fmt: skip
                    elif action == "diverged":
                        diag = diagnose(unwrapped, task, batch, forward_ctx, step, scheduler, precision)
                        if guard.snapshot_step is not None:
                            guard.rollback()
                        diag["checkpoint"] = checkpoint(epoch, batch_in_epoch)
                        events.write("diagnosis", **diag)
                        raise TrainingDiverged(f"training diverged: {describe(diag)}; resumable checkpoint "
                                               f"{diag['checkpoint']}", diag)  # fmt: skip
                bad_local = False
                # -- log
                if step % cfg.log_every == 0 or step == total_steps:
                    events.write("step", **step_record(st, step, epoch, batch_in_epoch, steps_per_epoch,
                                 total_steps, scheduler, grad_norm, guard, t0, start_step, seen0))  # fmt: skip
                    st["loss_sum"], st["loss_n"] = 0.0, 0
                # -- checkpoint: periodic, and on a stop request (from any process)
                stopping = _any_process(accelerator, stop.requested)
                if step % cfg.save_every == 0 or stopping:
                    last_ckpt = checkpoint(epoch, batch_in_epoch)
                if stopping:
                    status = "stopped"
                    break
                if step >= total_steps:
                    break
            if status == "stopped":
                break
            # -- evaluate on the main process; keep the best model
            accelerator.wait_for_everyone()
            if main:
                _evaluate_epoch(task, unwrapped, tok, dev_data, cfg, precision, epoch, step, st, out, run_meta,
                                events)  # fmt: skip
                model.train()
            accelerator.wait_for_everyone()
            # -- checkpoint at the epoch end: resuming starts the next epoch (or nothing, once done)
            last_ckpt = checkpoint(epoch + 1 if step < total_steps else n_epochs, 0)
            if step >= total_steps:
                break
    bar.close()
    seconds = st["elapsed"] + time.time() - t0
    result = TrainResult(str(out), st["best_dir"], st["best_f1"], st["best_em"], step, round(seconds, 1),
                         st["history"], status or "finished", last_ckpt, guard.state_dict())  # fmt: skip
    if main:
        events.write("stopped" if status else "end", steps=step, seconds=round(seconds, 1),
                     best_f1=st["best_f1"], best_em=st["best_em"], checkpoint=last_ckpt)  # fmt: skip
        write_json_atomic(out / "train_results.json", asdict(result))
    return result


def diagnose(model, task, batch, forward_ctx, step: int, scheduler, precision: str) -> dict:
    """Re-run the failing batch with hooks (:func:`xlqa.train.guard.find_overflow`) and add the step's context."""

    def loss_fn():
        with forward_ctx():
            return task.loss(model, batch, model.config)

    found = find_overflow(model, loss_fn)
    found.update(step=step, lr=scheduler.get_last_lr()[0], precision=precision)
    found["message"] = describe(found)
    log.error("step %d: %s", step, found["message"])
    return found


def _evaluate_epoch(
    task, model, tok, dev_data, cfg, precision, epoch, step, st, out, run_meta, events
) -> None:
    rec = {"epoch": epoch + 1, "step": step}
    if dev_data is not None:
        rules = rules_for(dev_data)
        preds = task.predict(model, tok, dev_data, cfg, precision, desc=f"dev epoch {epoch + 1}")
        scored = score_examples(dev_data.examples, preds, rules=rules, language=dev_data.language)
        rec.update(f1=f1_of(scored), em=em_of(scored), rules=rules)
        events.write("eval", **rec)
        log.info("epoch %d: dev EM %.2f F1 %.2f", epoch + 1, rec["em"], rec["f1"])
    st["history"].append(rec)
    if dev_data is None or st["best_f1"] is None or rec["f1"] > st["best_f1"]:
        st["best_f1"], st["best_em"] = rec.get("f1"), rec.get("em")
        extra = {**run_meta, "epoch": epoch + 1, "step": step, "dev": rec, "environment": environment()}
        st["best_dir"] = str(save_model(model, tok, out / "best", extra=extra))
        events.write("best", path=st["best_dir"], **rec)


def asdict_report(data) -> dict:
    r = data.report
    return {
        "path": str(data.path),
        "sha256": r.sha256,
        "language": data.language,
        "questions": r.n_questions,
        "repaired": len(r.repaired),
        "unlocatable": len(r.unlocatable),
    }

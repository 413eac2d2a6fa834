"""Fine-tuning an extractive QA model on Accelerate.

The loop runs unchanged under ``accelerate launch`` (DDP, FSDP, DeepSpeed): Accelerate places the model,
shards the batches and reduces gradients; evaluation and checkpoint writing happen on the main process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xlqa.batching import Collator, WindowDataset, shuffled_batches
from xlqa.config import TrainConfig, environment
from xlqa.data import load_squad
from xlqa.evaluate import em_of, f1_of, rules_for, score_examples
from xlqa.features import FeatureParams, cached_features
from xlqa.modeling import choose_precision, load_qa_model, save_model
from xlqa.predict import model_inputs, predict_examples

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
        rec = {
            "event": event,
            "time": round(time.time(), 3),
            "elapsed": round(time.time() - self.t0, 3),
            **fields,
        }
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and normalization weights (the BERT recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _freeze_word_embeddings(model) -> None:
    emb = model.get_input_embeddings()
    emb.weight.requires_grad_(False)


def train(cfg: TrainConfig) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.train``; evaluate on ``cfg.dev`` after each epoch; keep the best."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    cfg.validate()
    precision = choose_precision(cfg.precision, "cuda" if torch.cuda.is_available() else "cpu")
    accelerator = Accelerator(
        mixed_precision="no" if precision == "fp32" else precision,
        gradient_accumulation_steps=cfg.grad_accum,
    )
    set_seed(cfg.seed)
    main = accelerator.is_main_process
    out = Path(cfg.output)
    events = EventLog(out / "events.jsonl", enabled=main)

    # -- data: validated examples -> cached token windows
    train_data = load_squad(cfg.train, max_examples=cfg.max_train_examples)
    dev_data = load_squad(cfg.dev, max_examples=cfg.max_dev_examples) if cfg.dev else None
    model, tok = load_qa_model(cfg.model)
    if cfg.freeze_embeddings:
        _freeze_word_embeddings(model)
    params = FeatureParams(cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length)
    with accelerator.main_process_first():  # one process tokenizes and fills the cache, the others read it
        feats = cached_features(train_data.examples, tok, params, training=True, cache_dir=cfg.cache_dir)
    if len(feats) == 0:
        raise ValueError(f"{cfg.train}: no trainable windows (every answer unlocatable?)")
    collate = Collator(tok.pad_token_id or 0, pad_left=tok.padding_side == "left")
    n_batches = math.ceil(len(feats) / cfg.batch_size)
    steps_per_epoch = max(1, n_batches // (cfg.grad_accum * accelerator.num_processes))
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    # -- optimizer and schedule: AdamW, linear warmup then linear decay to zero
    optimizer = _optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    if main:
        out.mkdir(parents=True, exist_ok=True)
        run_info = {"config": asdict(cfg), "precision": precision, "environment": environment()}
        run_info["data"] = {
            "train": asdict_report(train_data),
            "dev": asdict_report(dev_data) if dev_data else None,
        }
        (out / "config.json").write_text(json.dumps(run_info, indent=2, ensure_ascii=False))
        log.info(
            "training %s on %d windows (%d questions): %d steps, %d epoch(s), precision %s, %d process(es)",
            cfg.model,
            len(feats),
            len(train_data.examples),
            total_steps,
            n_epochs,
            precision,
            accelerator.num_processes,
        )
        events.write(
            "start", total_steps=total_steps, epochs=n_epochs, windows=len(feats), precision=precision
        )

    history: list[dict] = []
    best_f1 = best_em = None
    best_dir = None
    step = 0
    t0 = time.time()
    bar = tqdm(
        total=total_steps, desc="train", unit="step", disable=not (cfg.progress and main), dynamic_ncols=True
    )
    seen = 0
    loss_sum, loss_n = 0.0, 0
    for epoch in range(n_epochs):
        # -- data order: seeded per epoch, length-grouped for speed, identical in every process
        batches = shuffled_batches(feats.lengths, cfg.batch_size, seed=cfg.seed + epoch)
        loader = DataLoader(WindowDataset(feats), batch_sampler=batches, collate_fn=collate)
        loader = accelerator.prepare(loader)
        model.train()
        for batch in loader:
            # -- forward / backward (gradients accumulate until sync_gradients)
            with accelerator.accumulate(model):
                inputs = model_inputs(batch, accelerator.unwrap_model(model))
                outputs = model(
                    **inputs, start_positions=batch["start_positions"], end_positions=batch["end_positions"]
                )
                loss = outputs.loss
                if not torch.isfinite(loss):
                    # a non-finite loss must not reach the weights: skip this update entirely
                    events.write("nonfinite_loss", step=step, epoch=epoch)
                    optimizer.zero_grad()
                    continue
                accelerator.backward(loss)
                grad_norm = None
                # -- clip and step, once per accumulated batch
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            loss_sum += float(loss.detach())
            loss_n += 1
            seen += len(batch["input_ids"]) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            # -- log
            if step % cfg.log_every == 0 or step == total_steps:
                elapsed = time.time() - t0
                rec = {
                    "step": step,
                    "epoch": round(epoch + (step - epoch * steps_per_epoch) / steps_per_epoch, 3),
                    "loss": round(loss_sum / max(loss_n, 1), 5),
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": None if grad_norm is None else round(float(grad_norm), 4),
                    "examples_per_s": round(seen / elapsed, 2),
                    "elapsed": round(elapsed, 1),
                    "eta": round(elapsed / step * (total_steps - step), 1),
                }
                events.write("step", **rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}")
                loss_sum, loss_n = 0.0, 0
            if step >= total_steps:
                break
        # -- evaluate and keep the best checkpoint (main process)
        accelerator.wait_for_everyone()
        if main:
            unwrapped = accelerator.unwrap_model(model)
            rec = {"epoch": epoch + 1, "step": step}
            if dev_data is not None:
                rules = rules_for(dev_data)
                dec = predict_examples(
                    unwrapped,
                    tok,
                    dev_data.examples,
                    params=params,
                    batch_size=cfg.eval_batch_size,
                    max_answer_length=cfg.max_answer_length,
                    cache_dir=cfg.cache_dir,
                    progress=cfg.progress,
                    null_threshold=0.0 if rules == "squad2" else None,
                    desc=f"dev epoch {epoch + 1}",
                    precision=precision,
                )
                scored = score_examples(
                    dev_data.examples, dec.predictions, rules=rules, language=dev_data.language
                )
                rec.update(f1=f1_of(scored), em=em_of(scored), rules=rules)
                events.write("eval", **rec)
                log.info("epoch %d: dev EM %.2f F1 %.2f", epoch + 1, rec["em"], rec["f1"])
            history.append(rec)
            improved = dev_data is None or best_f1 is None or rec["f1"] > best_f1
            if improved:
                best_f1, best_em = rec.get("f1"), rec.get("em")
                best_dir = str(
                    save_model(
                        unwrapped,
                        tok,
                        out / "best",
                        extra={
                            "config": asdict(cfg),
                            "precision": precision,
                            "epoch": epoch + 1,
                            "step": step,
                            "dev": rec,
                            "environment": environment(),
                        },
                    )
                )
                events.write("checkpoint", path=best_dir, **rec)
            model.train()
        accelerator.wait_for_everyone()
        if step >= total_steps:
            break
    bar.close()
    seconds = time.time() - t0
    result = TrainResult(str(out), best_dir, best_f1, best_em, step, round(seconds, 1), history)
    if main:
        events.write("end", steps=step, seconds=round(seconds, 1), best_f1=best_f1, best_em=best_em)
        tmp = out / f".train_results.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(asdict(result), indent=2))
        os.replace(tmp, out / "train_results.json")
    return result


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


def seed_everything(seed: int) -> None:  # for callers outside Accelerate (tests, notebooks)
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

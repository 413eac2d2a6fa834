"""One estimate per candidate: exact counts, measured steps, and the predicted times and memory of the run.

For a candidate (a :class:`~xlqa.config.TrainConfig`) the model is loaded as training loads it, its training
windows built by the task's own ``train_data``, and the loop's batches and steps counted
(:mod:`xlqa.plan.counts`). Then, on this hardware: a few real training steps (forward, backward, clipping,
optimizer) on real batches spread over the token range, after a warm-up step, each batch twice (its first run
also builds its shape's kernels, which a run pays once per shape, not per step); a few real evaluation batches
(forward passes, or generation for a generative model) on the real evaluation windows; one checkpoint, one
best model and one guard snapshot written by the loop's own functions (:mod:`xlqa.plan.writes`); the peak
memory. :mod:`xlqa.plan.measure` turns these into ranges over the exact batches of the run.

``train_seconds`` predicts what ``xlqa train`` reports as its seconds (optimizer steps, dev evaluation after
each epoch at the training windows and the live ETA's probe of the dev set at the start, checkpoints, best
models, the guard's snapshots after the first; not loading the model and tokenizing); ``eval_seconds`` what
``xlqa evaluate`` spends per file (loading the cached windows, forward passes, decoding) with windows of
``--eval-max-seq-length`` tokens, the same stride and batch size.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from xlqa.config import EstimateConfig, TrainConfig
from xlqa.data import SquadData, load_squad
from xlqa.errors import ConfigError, DataError
from xlqa.evaluate import eval_batch_size
from xlqa.modeling import freeze, load_qa_model
from xlqa.plan import measure
from xlqa.plan.candidates import candidates, eval_files
from xlqa.plan.counts import TrainCounts, batch_tokens, count_training
from xlqa.plan.evaluation import EvalPlan, plan_dev, plan_eval
from xlqa.plan.live import PROBE_BATCHES
from xlqa.plan.measure import Range, Samples
from xlqa.plan.writes import time_writes
from xlqa.precision import apply_precision_policy, choose_precision, cpu_has_native_bf16, is_t5_family
from xlqa.tasks import make_optimizer, make_task
from xlqa.train.bf16 import Bf16Weights

log = logging.getLogger(__name__)

MEMORY_MARGIN = 0.9  # a peak above this share of the device's memory is named as a risk


@dataclass
class Estimate:
    """The plan of one candidate: counts, predicted seconds (ranges), measured samples, memory and risks."""

    name: str
    config: TrainConfig
    task: str
    precision: str
    device: str
    counts: TrainCounts
    steps_seconds: Range
    dev_seconds: Range
    checkpoint_seconds: Range
    snapshot_seconds: Range
    evals: list[EvalPlan]
    dev: EvalPlan | None
    measured: dict[str, Any]
    peak_memory_mb: float
    device_memory_mb: float | None
    risks: list[str] = field(default_factory=list)
    eval_max_seq_length: int = 0  # tokens per window of the --eval files

    @property
    def steps(self) -> int:
        return self.counts.total_steps

    @property
    def train_seconds(self) -> Range:
        """Training as ``xlqa train`` counts it: steps, dev evaluations, checkpoints, guard snapshots."""
        return self.steps_seconds + self.dev_seconds + self.checkpoint_seconds + self.snapshot_seconds

    @property
    def eval_seconds(self) -> Range:
        total = measure.ZERO
        for e in self.evals:
            total = total + e.seconds
        return total

    def to_json(self) -> dict[str, Any]:
        """One object of ``xlqa estimate --json``."""
        c = self.config
        return {
            "name": self.name, "model": c.model, "task": self.task, "precision": self.precision,
            "device": self.device, "batch_size": c.batch_size, "grad_accum": c.grad_accum,
            "max_seq_length": c.max_seq_length, "eval_max_seq_length": self.eval_max_seq_length,
            "epochs_requested": c.epochs, "max_steps": c.max_steps,
            **self.counts.to_json(), "steps": self.steps,
            "train_seconds": self.train_seconds.to_json(), "eval_seconds": self.eval_seconds.to_json(),
            "train_breakdown": {"steps": self.steps_seconds.to_json(), "dev_eval": self.dev_seconds.to_json(),
                                "checkpoints": self.checkpoint_seconds.to_json(),
                                "guard_snapshots": self.snapshot_seconds.to_json()},
            "dev": self.dev.to_json() if self.dev else None,
            "eval": [e.to_json() for e in self.evals],
            "measured": self.measured,
            "peak_memory_mb": round(self.peak_memory_mb, 1),
            "device_memory_mb": round(self.device_memory_mb, 1) if self.device_memory_mb else None,
            "risks": self.risks,
        }  # fmt: skip


def run_estimate(cfg: EstimateConfig) -> list[Estimate]:
    """Every candidate of ``cfg``, planned and measured one after the other (see the module docstring)."""
    cands = candidates(cfg)  # bad flags fail before any file or model is read
    train_set = load_squad(cfg.train, max_examples=cfg.max_train_examples)
    dev_set = load_squad(cfg.dev, max_examples=cfg.max_dev_examples) if cfg.dev else None
    files, skipped = eval_files(cfg)
    targets = [load_squad(f, max_examples=cfg.max_eval_examples) for f in files]
    out = []
    for name, cand in cands:
        log.info("estimating %s", name)
        est = estimate_candidate(name, cand, train_set, dev_set, targets, cfg)
        est.risks += [f"benchmark {b} skipped: {reason}" for b, reason in skipped]
        out.append(est)
        gc.collect()
    return out


def _precision_risks(model, precision: str, device: torch.device, cfg: TrainConfig) -> list[str]:
    """Known risks of a precision: fp16 on the T5 family (overflow), bf16 a CPU computes slowly."""
    risks = []
    if precision == "fp16" and is_t5_family(model):
        risks.append(
            f"fp16 on a T5-family model ({model.config.model_type}): feed-forward activations overflow fp16 "
            "(inf/NaN losses); xlqa train refuses it unless --allow-fp16-t5 (then wo layers run in fp32); "
            "use bf16 or fp32"
        )
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        risks.append("bf16 on a CPU without native bf16 arithmetic: emulated, usually slower than fp32")
    if precision == "fp16" and device.type == "cpu":
        risks.append("fp16 on a CPU: autocast without native fp16 arithmetic, usually slower than fp32")
    return risks


def estimate_candidate(
    name: str,
    cfg: TrainConfig,
    train_set: SquadData,
    dev_set: SquadData | None,
    targets: list[SquadData],
    opts: EstimateConfig,
) -> Estimate:
    """Count, measure and predict one candidate (see the module docstring)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task = make_task(cfg)
    precision = choose_precision(cfg.precision, device.type)
    measure.reset_peak_memory(device)
    model, tok = task.load(cfg)
    risks = _precision_risks(model, precision, device, cfg)
    try:
        apply_precision_policy(model, precision, allow_fp16_t5=cfg.allow_fp16_t5)
    except ConfigError:  # named as a risk above; measured as --allow-fp16-t5 would run it
        apply_precision_policy(model, precision, allow_fp16_t5=True)
    freeze(model, embeddings=cfg.freeze_embeddings, layers=cfg.freeze_layers)
    model.to(device)
    torch.manual_seed(cfg.seed)

    # -- counts: the windows and batches training will really see
    data = task.train_data(train_set.examples, tok, cfg)
    if len(data.lengths) == 0:
        raise DataError("no trainable windows (every answer unlocatable?)", path=cfg.train)
    counts = count_training(data.lengths, len(train_set.examples), cfg)
    multiple = getattr(data.collate, "multiple", 1)
    trained_tokens = batch_tokens(data.lengths, counts.batches, multiple)

    # -- training steps: forward, backward, clip, optimizer, on real batches across the token range
    optimizer = make_optimizer(model, cfg)
    fb, fb_first, opt_all = _time_training(model, task, data, cfg, precision, device, optimizer, counts, opts)
    opt_s = opt_all[1:]  # the warm-up step allocates the optimizer state: not a step like the others
    opt_mid = float(np.median(opt_s)) if opt_s else 0.0
    opt_range = Range(min(opt_s, default=0.0), opt_mid, max(opt_s, default=0.0)).scale(counts.total_steps)
    n_shapes = len(set(trained_tokens.tolist()))  # windows x padded width: one batch shape each
    first_calls = measure.first_call_extra(fb_first, fb, n_shapes)
    steps_seconds = measure.predict(fb, trained_tokens) + opt_range + first_calls

    # -- evaluation: dev after every epoch (training windows), and the --eval files (--eval-max-seq-length)
    model.eval()
    dev_plan, plans, eval_samples = _plan_evaluations(model, tok, task.name, cfg, precision, device, dev_set,
                                                      targets, opts)  # fmt: skip

    # -- writes, by the loop's own functions: checkpoints; best/ at least once, at most each epoch; the guard's
    # snapshots after the first (written before the loop's clock starts)
    writes = time_writes(model, tok, optimizer, cfg, task, precision)
    ckpt = writes.checkpoint * counts.checkpoints
    best_mid = writes.best * (counts.epochs + 1) / 2
    checkpoint_seconds = Range(ckpt + writes.best, ckpt + best_mid, ckpt + writes.best * counts.epochs)
    snapshot_seconds = Range(*[writes.snapshot * max(0, counts.guard_snapshots - 1)] * 3)

    peak = measure.peak_memory_mb(device)
    total = measure.device_memory_mb(device)
    if total and peak > MEMORY_MARGIN * total:
        risks.append(
            f"peak memory {peak:,.0f} MB is above {MEMORY_MARGIN:.0%} of the device's {total:,.0f} MB"
        )
    step_s = [f + opt for f, opt in zip(fb.seconds, opt_all[2::2], strict=True)]  # second runs, as fb
    measured = {
        "train_batches": fb.to_json(), "train_batches_first_call": fb_first.to_json(),
        "batch_shapes": n_shapes, "first_call_seconds": first_calls.to_json(),
        "optimizer_seconds": [round(s, 5) for s in opt_s],
        "warmup_optimizer_seconds": round(opt_all[0], 5) if opt_all else None,
        "step_seconds": [round(s, 5) for s in step_s],
        "step_seconds_median": round(float(np.median(step_s)), 5) if step_s else None,
        "eval_batches": {str(n): s.to_json() for n, s in eval_samples.items()}, "write_seconds": writes.to_json(),
    }  # fmt: skip
    dev_seconds = measure.ZERO
    if dev_plan is not None:  # every epoch's evaluation, and the session's ETA probe of the dev set
        probe = _eta_probe_seconds(dev_plan, eval_samples["dev"])
        measured["eta_probe_seconds"] = round(probe, 4)
        dev_seconds = dev_plan.seconds.scale(counts.epochs) + Range(probe, probe, probe)
    est = Estimate(name, cfg, task.name, precision, device.type, counts, steps_seconds, dev_seconds, checkpoint_seconds,
                   snapshot_seconds, plans, dev_plan, measured, peak, total, risks,
                   eval_max_seq_length=opts.eval_max_seq_length)  # fmt: skip
    del model, optimizer
    return est


def _plan_evaluations(model, tok, task: str, cfg: TrainConfig, precision: str, device: torch.device,
                      dev_set: SquadData | None, targets: list[SquadData],
                      opts: EstimateConfig) -> tuple[EvalPlan | None, list[EvalPlan], dict[str, Samples]]:  # fmt: skip
    """The dev plan (as the loop evaluates: training windows, ``--eval-batch-size``, autocast or, with
    ``--bf16-weights``, the bf16 copy) and the --eval files' plans (as ``xlqa evaluate`` runs them:
    ``--eval-max-seq-length`` windows, its automatic batch size, and an extractive model in bf16 weights instead of
    autocast), each from batches timed its own way.
    """
    plans: list[EvalPlan] = []
    samples: dict[str, Samples] = {}
    if dev_set:
        dev_model, dev_precision = model, precision
        bf16 = Bf16Weights.when(model, cfg.bf16_weights, precision)
        if bf16 is not None:
            dev_model, dev_precision = bf16.module, "fp32"
        dev_plan, samples["dev"], samples["dev_first_call"] = plan_dev(
            dev_model, tok, task, cfg, dev_precision, device, dev_set, opts.measure_batches
        )
        del dev_model
    else:
        dev_plan = None
    if targets:
        # xlqa evaluate's windows: its length, and the stride asked for (unset: that length's default)
        eval_cfg = replace(cfg, max_seq_length=opts.eval_max_seq_length, doc_stride=opts.doc_stride,
                           eval_batch_size=eval_batch_size(0, device))  # fmt: skip
        eval_model, eval_precision = model, precision
        if (
            task == "extractive"
        ):  # loaded as evaluate_model loads it: bf16 weights, the default attention kernel
            bf16 = precision == "bf16"
            eval_model, _ = load_qa_model(cfg.model, dtype=torch.bfloat16 if bf16 else None)
            eval_model, eval_precision = eval_model.to(device), "fp32" if bf16 else precision
        plans, samples["eval"], samples["eval_first_call"] = plan_eval(
            eval_model, tok, task, eval_cfg, eval_precision, device, targets, opts.measure_batches
        )
        del eval_model
    return dev_plan, plans, samples


def _eta_probe_seconds(dev_plan: EvalPlan, dev: Samples) -> float:
    """What the session start's probe of the dev set (:func:`xlqa.train.eta.dev_eval_seconds`) takes: preparing
    and decoding the file, one warm-up batch and ``PROBE_BATCHES`` batches twice, at the mean timed batch."""
    batch = float(np.mean(dev.seconds)) if dev.seconds else 0.0
    return dev_plan.prepare_seconds + dev_plan.decode_seconds + (1 + 2 * PROBE_BATCHES) * batch


def _time_training(model, task, data, cfg: TrainConfig, precision: str, device: torch.device, optimizer,
                   counts: TrainCounts, opts: EstimateConfig) -> tuple[Samples, Samples, list[float]]:  # fmt: skip
    """Forward/backward samples (tokens, seconds) of real steps, each batch's second run (its shape's kernels
    built) and its first; and the optimizer seconds (warm-up first)."""
    from xlqa.precision import autocast

    params = [p for p in model.parameters() if p.requires_grad]
    opt_seconds: list[float] = []
    totals: list[float] = []
    model.train()
    # --bf16-weights: the loop's steps run on a bf16 copy without autocast (xlqa.train.bf16)
    bf16 = Bf16Weights.when(model, cfg.bf16_weights, precision)
    step_model, step_precision = (model, precision) if bf16 is None else (bf16.module, "fp32")

    def run(idx: list[int]) -> None:
        t0 = time.perf_counter()
        batch = data.collate([data.dataset[i] for i in idx])  # the loader collates in this thread too
        batch = {k: v.to(device) for k, v in batch.items()}
        if bf16 is not None:
            bf16.pull()
        with autocast(step_precision, device):
            loss = task.loss(step_model, batch, model.config)
        float(loss.detach())  # the loop reads the loss every batch
        loss.backward()
        if bf16 is not None:
            bf16.push_grads()
        measure.synchronize(device)
        t1 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        measure.synchronize(device)
        t2 = time.perf_counter()
        opt_seconds.append(t2 - t1)
        totals.append(t1 - t0)

    # sample the batches of the first epoch, as training builds them (not padded to max_seq_length)
    first = counts.batches[: max(1, counts.batches_per_epoch)]
    tokens = batch_tokens(data.lengths, first, getattr(data.collate, "multiple", 1))
    # each batch twice: its first run also builds its shape's kernels, which the run pays once per shape
    timed = measure.time_batches(run, first, tokens, opts.measure_steps, device, repeats=2)
    steady, first_calls = Samples(timed.tokens, totals[2::2]), Samples(timed.tokens, totals[1::2])
    return steady, first_calls, opt_seconds

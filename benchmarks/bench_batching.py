"""Training and evaluation throughput: xlqa's batching against the classic pad-to-max baseline, same run.

Baseline: random batches padded to ``max_seq_length`` (what the transformers ``run_qa.py`` example does by
default). xlqa: per-batch dynamic padding, length-grouped training batches, length-sorted evaluation batches.
Both run the same model, data, precision and number of windows; the figure that matters is the ratio.

    python benchmarks/bench_batching.py --model minilm-l6 --train ../shared/data/squad/train-v1.1.json \
        --steps 20 --batch-size 16 --out benchmarks/results/batching-cpu.json

Weights do not matter for speed, so ``--random-config bert-base-multilingual`` builds mBERT-base with random
weights (vocabulary from ``--tokenizer``) to measure the real architecture where its weights are not available.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from xlqa.batching import Collator, WindowDataset, shuffled_batches, sorted_batches
from xlqa.data import load_squad
from xlqa.features import FeatureParams, cached_features
from xlqa.modeling import autocast, choose_precision, load_qa_model, load_tokenizer
from xlqa.predict import model_inputs


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[i : i + batch_size].tolist() for i in range(0, n, batch_size)]


def build_model(args):
    if args.random_config:
        from transformers import AutoModelForQuestionAnswering, BertConfig

        tok = load_tokenizer(args.tokenizer)
        cfg = BertConfig(vocab_size=len(tok))  # bert-base shapes: 12 layers, hidden 768
        return AutoModelForQuestionAnswering.from_config(cfg), tok
    return load_qa_model(args.model)


def time_train(model, loader, steps, device, precision) -> tuple[float, int, int]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    windows = tokens = 0
    it = iter(loader)
    for i in range(steps + 2):
        batch = next(it)
        if i == 2:  # two warm-up steps (allocator, kernel selection)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with autocast(precision, device):
            out = model(
                **{k: v.to(device) for k, v in model_inputs(batch, model).items()},
                start_positions=batch["start_positions"].to(device),
                end_positions=batch["end_positions"].to(device),
            )
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            windows += len(batch["input_ids"])
            tokens += int(batch["attention_mask"].sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, windows, tokens


@torch.inference_mode()
def time_eval(model, loader, device, precision) -> tuple[float, int]:
    model.eval()
    windows = 0
    t0 = time.perf_counter()
    for batch in loader:
        with autocast(precision, device):
            model(**{k: v.to(device) for k, v in model_inputs(batch, model).items()})
        windows += len(batch["input_ids"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--random-config", action="store_true", help="bert-base shapes, random weights")
    ap.add_argument("--tokenizer", default=None, help="tokenizer for --random-config")
    ap.add_argument("--train", required=True)
    ap.add_argument("--eval", default=None, help="evaluation file (default: the training file)")
    ap.add_argument("--max-examples", type=int, default=2000)
    ap.add_argument("--max-seq-length", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--precision", default="auto")
    ap.add_argument(
        "--pad-multiple", type=int, default=8, help="xlqa mode: pad each batch to a multiple of this"
    )
    ap.add_argument("--out", default="benchmarks/results/batching.json")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = choose_precision(args.precision, device)
    model, tok = build_model(args)
    model.to(device)
    params = FeatureParams(max_seq_length=args.max_seq_length, doc_stride=128)
    train = load_squad(args.train, max_examples=args.max_examples)
    feats = cached_features(train.examples, tok, params, training=True)
    ev = load_squad(args.eval or args.train, max_examples=args.max_examples)
    efeats = cached_features(ev.examples, tok, params, training=False)
    ds, eds = WindowDataset(feats), WindowDataset(efeats, with_labels=False)
    dyn = Collator(tok.pad_token_id or 0, pad_to_multiple_of=args.pad_multiple)
    fixed = Collator(tok.pad_token_id or 0, pad_to_multiple_of=args.max_seq_length)

    results = {}
    for name, batches, collate in (
        ("baseline_pad_to_max", random_batches(len(feats), args.batch_size, 0), fixed),
        ("xlqa_dynamic_grouped", shuffled_batches(feats.lengths, args.batch_size, 0), dyn),
    ):
        loader = DataLoader(ds, batch_sampler=batches, collate_fn=collate)
        secs, windows, tokens = time_train(model, loader, args.steps, device, precision)
        results[f"train_{name}"] = {"seconds": secs, "windows": windows, "windows_per_s": windows / secs}
        print(f"train {name:24s} {windows / secs:8.2f} windows/s ({tokens / windows:.0f} real tokens/window)")
    for name, batches, collate in (
        ("baseline_pad_to_max", random_batches(len(efeats), args.eval_batch_size, 0), fixed),
        ("xlqa_dynamic_sorted", sorted_batches(efeats.lengths, args.eval_batch_size), dyn),
    ):
        loader = DataLoader(eds, batch_sampler=batches, collate_fn=collate)
        secs, windows = time_eval(model, loader, device, precision)
        results[f"eval_{name}"] = {"seconds": secs, "windows": windows, "windows_per_s": windows / secs}
        print(f"eval  {name:24s} {windows / secs:8.2f} windows/s")
    train_ratio = (
        results["train_xlqa_dynamic_grouped"]["windows_per_s"]
        / results["train_baseline_pad_to_max"]["windows_per_s"]
    )
    eval_ratio = (
        results["eval_xlqa_dynamic_sorted"]["windows_per_s"]
        / results["eval_baseline_pad_to_max"]["windows_per_s"]
    )
    print(f"speed-up over pad-to-max: train x{train_ratio:.2f}, eval x{eval_ratio:.2f}")
    summary = {
        "model": "random bert-base" if args.random_config else args.model,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "precision": precision,
        "args": vars(args),
        "torch": torch.__version__,
        "results": results,
        "train_speedup": train_ratio,
        "eval_speedup": eval_ratio,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

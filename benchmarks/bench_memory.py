"""Peak memory of the demo's training and evaluation: the process's resident set (RSS), phase by phase.

Training is the real loop (:func:`xlqa.train.loop.train`) with the demo's settings (``DemoConfig``: E5-small,
256-token windows, batch 16, frozen embeddings and bottom layers, dropouts, attention kernel, bf16 weights,
precision auto) for ``--steps`` optimizer steps; then the real evaluation (:func:`xlqa.evaluate.evaluate_model`,
384-token windows, its automatic batch size) of the trained model on one XQuAD language. Each phase's peak is its own: ``VmHWM`` is reset between them (``benchlib``).
tracemalloc would miss it: PyTorch allocates outside Python's allocator.

    python benchmarks/bench_memory.py --out benchmarks/results/memory-cpu.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchlib import machine, peak_rss_mb, reset_peak_rss, write_result
from xlqa.config import DemoConfig
from xlqa.demo import demo_freeze_layers

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DemoConfig().model)
    ap.add_argument("--train", default=str(ROOT.parent / "shared" / "data" / "squad" / "train-v1.1.json"))
    ap.add_argument("--eval", default=str(ROOT.parent / "shared" / "data" / "xquad" / "xquad.de.json"))
    ap.add_argument("--max-train-examples", type=int, default=400)
    ap.add_argument("--max-eval-examples", type=int, default=None, help="default: the whole file")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--eval-batch-size", type=int, default=0, help="0: as xlqa evaluate (16 on a CPU)")
    ap.add_argument("--out", default="benchmarks/results/memory.json")
    args = ap.parse_args(argv)

    from xlqa.config import EvalConfig, TrainConfig
    from xlqa.evaluate import evaluate_model
    from xlqa.train.loop import train

    demo = DemoConfig(model=args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    runs = os.environ.get("XLQA_RUNS")
    try:
        os.environ.setdefault("XLQA_RUNS", str(work / "runs"))
        start_mb = peak_rss_mb()  # the interpreter with xlqa and torch imported
        reset_peak_rss()
        t0 = time.perf_counter()
        result = train(TrainConfig(
            model=args.model, train=args.train, output=str(work / "run"), max_steps=args.steps, lr=1.5e-4,
            batch_size=args.batch_size, max_seq_length=256, max_train_examples=args.max_train_examples,
            freeze_embeddings=True, freeze_layers=demo_freeze_layers(demo), attention_dropout=demo.attention_dropout,
            hidden_dropout=demo.hidden_dropout, attention=demo.attention, bf16_weights=demo.bf16_weights,
            progress=False, save_every=10**6,
        ))  # fmt: skip
        train_s, train_mb = time.perf_counter() - t0, peak_rss_mb()
        reset_peak_rss()
        t0 = time.perf_counter()
        ev = evaluate_model(EvalConfig(
            model=str(result.best_dir), data=[args.eval], output=str(work / "eval"), batch_size=args.eval_batch_size,
            max_examples=args.max_eval_examples, progress=False, cache_dir=str(work / "cache"),
        ))  # fmt: skip
        eval_s, eval_mb = time.perf_counter() - t0, peak_rss_mb()
        summary = {"benchmark": "memory", "model": args.model, **machine(), "args": vars(args),
                   "imports_rss_mb": round(start_mb), "train": {"steps": result.steps, "seconds": round(train_s, 2),
                   "peak_rss_mb": round(train_mb)}, "eval": {"file": Path(args.eval).name,
                   "questions": ev.datasets[0].n_questions, "seconds": round(eval_s, 2),
                   "peak_rss_mb": round(eval_mb)}}  # fmt: skip
        print(f"peak RSS: training {train_mb:.0f} MB ({result.steps} steps), evaluation {eval_mb:.0f} MB "
              f"({ev.datasets[0].n_questions} questions); after imports {start_mb:.0f} MB")  # fmt: skip
        write_result(args.out, summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # its runs and cached features
        if runs is None:
            os.environ.pop("XLQA_RUNS", None)


if __name__ == "__main__":
    main()

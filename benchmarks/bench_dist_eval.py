"""Evaluation on one process against two (``torchrun --nproc_per_node 2``): wall time and identical answers.

Runs the same ``xlqa evaluate`` command twice, each into its own run store: once as one process (the torch
default of threads), once as two processes with one thread each (gloo on a CPU, NCCL on GPUs), and reports the
wall time of each (model loading, features and scoring included, as a user waits for it), the speed-up, and
whether predictions and metrics are identical.

    python benchmarks/bench_dist_eval.py --model minilm-l6 --data ../shared/data/xquad/xquad.en.json \
        --max-examples 400 --out benchmarks/results/dist-eval-cpu.json

Run it under the torch lock: a concurrent model run skews the times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def frozen_model(name: str, out: Path) -> str:
    """The model saved with its QA head: a model without one gets a new random head at every load (in every
    process differently), and the two runs must evaluate the same weights."""
    import torch

    from xlqa.modeling import load_qa_model

    torch.manual_seed(0)
    model, tok = load_qa_model(name)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--max-examples", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dist-eval-"))
    try:
        model = frozen_model(args.model, tmp / "model")
        flags = ["evaluate", "--model", model, "--data", args.data, "--max-examples", str(args.max_examples),
                 "--batch-size", str(args.batch_size), "--precision", "fp32", "--no-progress"]  # fmt: skip
        rows = {}
        for name, launcher, threads in (
            ("1 process", [str(BIN / "xlqa")], None),
            (
                "2 processes (torchrun)",
                [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "xlqa.cli.main"],
                "1",
            ),
        ):
            # torchrun leaves a torchelastic_* folder in TMPDIR per launch: this one's, removed with it
            env = {**os.environ, "XLQA_RUNS": str(tmp / name[0] / "store"), "TMPDIR": str(tmp)}
            if threads:
                env["OMP_NUM_THREADS"] = threads
            out = tmp / name[0] / "out"
            # a first run fills the feature cache, so both timed runs read the same cached windows
            run([*launcher, *flags, "--output", str(tmp / name[0] / "warm")], env)
            seconds = run([*launcher, *flags, "--output", str(out)], env)
            stem = Path(args.data).name.removesuffix(".gz").removesuffix(".json")
            results = json.loads((out / "results.json").read_text())
            rows[name] = {
                "seconds": round(seconds, 2),
                "predictions": json.loads((out / stem / "predictions.json").read_text()),
                "metrics": results["datasets"][0]["metrics"],
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the saved model, the runs and the predictions
    one, two = rows["1 process"], rows["2 processes (torchrun)"]
    same = one["predictions"] == two["predictions"] and one["metrics"] == two["metrics"]
    print(f"{'setup':<26}{'wall s':>9}{'x':>7}")
    for name, r in rows.items():
        print(f"{name:<26}{r['seconds']:>9.2f}{one['seconds'] / r['seconds']:>7.2f}")
    print(f"identical predictions and metrics: {same} ({len(one['predictions'])} questions)")
    report = {
        "args": vars(args),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "runs": {k: {"seconds": v["seconds"], "metrics": v["metrics"]} for k, v in rows.items()},
        "speedup": round(one["seconds"] / two["seconds"], 3),
        "identical": same,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

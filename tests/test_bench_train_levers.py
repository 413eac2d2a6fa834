"""The training-levers benchmark runs every lever on a tiny model and writes one row per variant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchscript import run_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_every_lever_runs_on_a_tiny_model(tmp_path, shared_data, tiny_model_dir):
    out = tmp_path / "levers.json"
    args = [
        "--model", str(tiny_model_dir),
        "--train", str(shared_data / "squad" / "train-v1.1.json"), "--max-examples", "40", "--max-seq-length",
        "192", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--variants", "base,nohd+eager,nohd+bf16w,master+fused",
        "--out", str(out),
    ]  # fmt: skip
    run_benchmark("bench_train_levers.py", args, tmp_path, timeout=300)
    rows = json.loads(out.read_text())["variants"]
    assert list(rows) == ["base", "nohd+eager", "nohd+bf16w", "master+fused"]
    assert rows["base"]["speedup"] == rows["base"]["speedup_paired"] == 1.0
    assert all(r["speedup_paired"] > 0 for r in rows.values())
    assert all(len(r["step_seconds"]) == 2 and r["step_seconds_median"] > 0 for r in rows.values())


def test_an_unknown_lever_is_named(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_train_levers.py"), "--variants", "nohd+flash"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "flash" in proc.stderr

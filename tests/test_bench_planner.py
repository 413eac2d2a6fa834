"""The planner benchmark on two of its small configurations (an extractive BERT and a generative T5): the
estimate's exact step count matches the real run, its ranges hold their expected values, and the JSON carries
the per-configuration and summary figures the README quotes."""

from __future__ import annotations

import json
import subprocess
import sys

from benchscript import ROOT, run_benchmark


def test_two_configurations_predicted_against_their_real_runs(tmp_path, shared_data):
    out = tmp_path / "planner.json"
    args = ["--shared", shared_data.parent, "--quick", "--only", "bert-h64,t5-tiny fp32", "--out", out]
    run_benchmark("bench_planner.py", args, tmp_path, timeout=300)
    report = json.loads(out.read_text())
    rows = report["configs"]
    assert [r["name"] for r in rows] == ["bert-h64 fp32 s128 b8", "t5-tiny fp32 b16 (generative)"]
    for r in rows:
        assert r["steps"] == r["actual_steps"] > 0, r["name"]  # exact counts, not an estimate
        assert len(r["measured_step_seconds"]) >= 2 and all(s > 0 for s in r["measured_step_seconds"])
        for part in ("train", "eval"):
            p = r[part]["predicted"]
            assert 0 < p["low"] <= p["expected"] <= p["high"], (r["name"], part, p)
            assert r[part]["actual"] > 0
        assert r["eval_windows"] > 0 and r["peak_memory_mb"] > 0
        total = r["total"]
        # predicted and actual are kept to 3 decimals, the error from the unrounded values
        tolerance = 1e-3 / total["actual"] + 1e-4
        assert abs(total["error"] - abs(total["predicted"] - total["actual"]) / total["actual"]) < tolerance
    assert report["malloc"] in ("tcmalloc", "jemalloc", "system")  # the figures depend on it: recorded
    summary = report["summary"]
    assert summary["configs"] == 2 and 0 <= summary["in_range"] <= 2
    assert summary["worst_abs_error"] == max(r["total"]["error"] for r in rows)


def test_a_filter_that_matches_nothing_is_named(tmp_path, shared_data):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_planner.py"), "--shared", str(shared_data.parent),
           "--only", "no-such-config", "--out", str(tmp_path / "p.json")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no-such-config" in proc.stderr
    assert not (tmp_path / "p.json").exists()

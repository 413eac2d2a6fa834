"""The benchmark runner runs its benchmarks one after another on a tiny model and collects one JSON and table."""

from __future__ import annotations

import json
import re

from benchscript import run_benchmark


def test_runner_quick_on_a_tiny_model(tmp_path, shared_data, tiny_model_dir):
    out = tmp_path / "cpu.json"
    args = [
        "--quick", "--only", "batching", "eval", "memory",
        "loss_curve", "--model", str(tiny_model_dir), "--out", str(out),
    ]  # fmt: skip
    proc = run_benchmark("run.py", args, tmp_path, timeout=300)
    report = json.loads(out.read_text())
    assert list(report["benchmarks"]) == ["batching", "eval", "memory", "loss_curve"]
    assert all(b["rc"] == 0 for b in report["benchmarks"].values())
    measures = {(r["benchmark"], r["measure"].split(",")[0]) for r in report["table"]}
    assert ("batching", "training windows/s") in measures
    assert ("memory", "training peak RSS (2 steps)") in measures
    assert "FAILED" not in proc.stdout
    assert re.search(r"^benchmark +measure +result$", proc.stdout, re.M)  # the table was printed

    batching = report["benchmarks"]["batching"]["result"]
    assert batching["speedup"]["train"] > 0 and batching["speedup"]["eval"] > 0
    loss = batching["loss_curve"]
    assert loss["steps"] == 3 and loss["mean_abs_diff_baseline_seed1_vs_seed0"] >= 0
    # the two baseline seeds train on the same batches from the same weights: their first losses agree closely
    train = batching["train"]
    base0, base1 = train["baseline_seed0"]["losses"], train["baseline_seed1"]["losses"]
    assert abs(base0[0] - base1[0]) < 0.5

    ev = report["benchmarks"]["eval"]["result"]
    assert set(ev["languages"]) == {"en", "de"} and ev["questions"] == 40
    # a fresh cache: tokenized the first time ...
    assert all(r["cache"] == "miss" for r in ev["languages"].values())
    second = ev["second_run"]
    assert second["all_hits"] and second["evaluate_says_cached"]  # ... and skipped the second, and said so
    assert "tokenization skipped" in second["evaluate_says"][0]
    assert ev["peak_rss_mb"] > 100

    mem = report["benchmarks"]["memory"]["result"]
    assert mem["train"]["steps"] == 2 and mem["train"]["peak_rss_mb"] > mem["imports_rss_mb"] * 0.5

    curve = report["benchmarks"]["loss_curve"]["result"]
    assert curve["eval_steps"] == [0, 1, 2] and len(curve["runs"]) == 4  # two seeds on each side
    assert all(len(r["heldout"]) == 3 and len(r["losses"]) == 2 for r in curve["runs"].values())
    # step 0: the same initial weights on both sides, in eval mode: the same held-out loss
    start = curve["verdict"]["points"][0]
    assert abs(start["diff"]) < 1e-4 and start["recipe_sd"] == 0
    assert curve["verdict"]["points_judged"] == 2 and ("loss_curve", "held-out loss") in measures

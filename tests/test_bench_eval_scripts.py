"""The evaluation-phases and loss-curve benchmarks end to end on a tiny model with 128-token windows (both failed
on windows that short against a fixed doc stride of 128 before ``benchlib.window_params``)."""

from __future__ import annotations

import json

from benchscript import run_benchmark

PHASES = {"load", "features", "forward", "decoding", "scoring"}


def test_eval_phases_per_language_and_a_second_run_from_the_cache(tmp_path, shared_data, tiny_model_dir):
    out = tmp_path / "eval.json"
    args = [
        "--model", tiny_model_dir, "--xquad", shared_data / "xquad", "--langs", "en,de", "--max-examples", "30",
        "--max-seq-length", "128", "--batch-size", "16", "--lever-examples", "20", "--lever-batch-sizes", "16,8",
        "--lever-rounds", "1", "--out", out,
    ]  # fmt: skip
    run_benchmark("bench_eval.py", args, tmp_path, timeout=300)
    report = json.loads(out.read_text())
    assert set(report["languages"]) == {"en", "de"} and report["questions"] == 60
    for lang in report["languages"].values():
        assert lang["questions"] == 30 and lang["windows"] > 0 and set(lang["seconds"]) == PHASES
        assert lang["cache"] == "miss"
    assert report["biggest_phase"] in PHASES and set(report["phase_seconds"]) == PHASES
    # the same data and tokenizer again: tokenization skipped, and evaluation says so
    again = report["second_run"]
    assert again["all_hits"] and again["evaluate_says_cached"]
    levers = report["forward_levers"]
    assert levers["reference"] == "autocast batch 16" and levers["speedup"]["autocast batch 16"] == 1.0
    assert len(levers["median_seconds"]) == 4


def test_loss_curves_of_both_sides_at_every_checkpoint(tmp_path, shared_data, tiny_model_dir):
    out = tmp_path / "loss.json"
    args = [
        "--model", tiny_model_dir, "--train", shared_data / "squad" / "train-v1.1.json",
        "--heldout", shared_data / "squad" / "dev-v1.1.json", "--max-examples", "40", "--heldout-examples", "10",
        "--heldout-windows", "8", "--max-seq-length", "128", "--seeds", "2", "--steps", "3", "--eval-every", "2",
        "--out", out,
    ]  # fmt: skip
    run_benchmark("bench_loss_curve.py", args, tmp_path, timeout=300)
    report = json.loads(out.read_text())
    assert report["eval_steps"] == [0, 2, 3]
    assert set(report["runs"]) == {"recipe_seed0", "recipe_seed1", "xlqa_seed0", "xlqa_seed1"}
    points = report["verdict"]["points"]
    assert [p["step"] for p in points] == [0, 2, 3]
    # both sides start from the same weights: the same held-out loss before any step
    assert points[0]["diff"] == 0.0 and points[0]["recipe_mean"] == points[0]["xlqa_mean"]
    assert report["windows_per_s"]["xlqa"] > 0 and report["windows_per_s"]["recipe"] > 0

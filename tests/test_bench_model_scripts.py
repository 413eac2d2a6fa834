"""The serving load test, the evaluation profile and the distributed-evaluation benchmark, end to end on the tiny
model: each one's promise in its JSON (every request answered in both serving modes; every phase timed; two
torchrun processes answer exactly as one), and that each cleans up after itself (``run_benchmark``)."""

from __future__ import annotations

from benchscript import benchmark_json


def test_load_serve_answers_every_request_batched_and_one_by_one(tmp_path, shared_data, tiny_model_dir):
    args = ["--model", tiny_model_dir, "--data", shared_data / "xquad", "--requests", "24", "--clients", "4",
            "--warmup", "4", "--max-seq-length", "256", "--time-limit", "120"]  # fmt: skip
    report = benchmark_json("load_serve.py", args, tmp_path)
    assert [r["batch_size"] for r in report["results"]] == [32, 1]
    for r in report["results"]:
        assert not r["failed"] and not r["timed_out"] and r["requests_per_s"] > 0, r
        assert r["p99_ms"] >= r["p50_ms"] > 0 and r["requests_per_pass"] > 0, r
    batched, one = report["results"]  # a request of several windows takes several passes one by one
    assert batched["requests_per_pass"] >= one["requests_per_pass"]
    assert report["ratio_requests_per_s"] > 0 and report["questions"] == 12 * 50


def test_profile_eval_times_every_phase(tmp_path, shared_data, tiny_model_dir):
    args = ["--model", tiny_model_dir, "--data", shared_data / "xquad" / "xquad.de.json", "--batch-size", "32",
            "--precision", "fp32"]  # fmt: skip
    report = benchmark_json("profile_eval.py", args, tmp_path)
    phases = {"load_model", "load_data", "features", "forward", "offsets", "decode", "score"}
    assert set(report["phases_s"]) == phases and all(s >= 0 for s in report["phases_s"].values())
    assert report["windows"] >= 1190 and 0 <= report["metrics"]["f1"] <= 100


def test_two_torchrun_processes_evaluate_exactly_as_one(tmp_path, shared_data, tiny_model_dir):
    args = ["--model", tiny_model_dir, "--data", shared_data / "xquad" / "xquad.de.json", "--max-examples", "24",
            "--batch-size", "8"]  # fmt: skip
    report = benchmark_json("bench_dist_eval.py", args, tmp_path)
    assert report["identical"] is True and set(report["runs"]) == {"1 process", "2 processes (torchrun)"}
    assert all(r["seconds"] > 0 for r in report["runs"].values()) and report["speedup"] > 0


def test_postprocess_benchmark_checks_identical_answers_on_real_logits(tmp_path, shared_data, tiny_model_dir):
    args = ["--model", tiny_model_dir, "--data", shared_data / "xquad" / "xquad.de.json", "--repeats", "1",
            "--cache", tmp_path / "logits"]  # fmt: skip
    report = benchmark_json("bench_postprocess.py", args, tmp_path)
    (row,) = report["files"]
    assert row["questions"] == 1190 and row["windows"] >= 1190
    for mode in ("v1", "v2"):  # the script fails unless both decoders gave the same answers
        assert row[mode]["identical"] is True and row[mode]["decode_s"] > 0 and row[mode]["loop_s"] > 0, mode

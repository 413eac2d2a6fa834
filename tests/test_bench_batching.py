"""The training-throughput benchmark (xlqa's batching against the usual padded recipe) end to end on a tiny
model with 128-token windows: every row it promises, and the same number of losses per side. 128-token windows
used to fail against its fixed doc stride of 128 (now halved for windows that short)."""

from __future__ import annotations

import json

from benchscript import run_benchmark


def test_rows_speedups_and_loss_curve_on_a_tiny_model(tmp_path, shared_data, tiny_model_dir):
    out = tmp_path / "batching.json"
    args = [
        "--model", tiny_model_dir, "--train", shared_data / "squad" / "train-v1.1.json",
        "--eval", shared_data / "xquad" / "xquad.en.json", "--max-examples", "40", "--eval-windows", "16",
        "--steps", "2", "--warmup", "1", "--loss-seeds", "2", "--max-seq-length", "128", "--out", out,
    ]  # fmt: skip
    run_benchmark("bench_batching.py", args, tmp_path, timeout=300)
    report = json.loads(out.read_text())
    train = report["train"]
    assert {"baseline_seed0", "baseline_seed1", "xlqa", "xlqa_same_batches"} <= set(train)
    for name, row in train.items():
        assert row["steps"] == 2 and len(row["step_seconds"]) == 2 and row["windows_per_s"] > 0, name
        assert len(row["losses"]) == 3, name  # warm-up steps' losses count
    assert set(report["eval"]) == {"baseline", "xlqa"} and all(r > 0 for r in report["speedup"].values())
    curve = report["loss_curve"]
    assert curve["steps"] == 3 and isinstance(curve["within_noise"], bool)

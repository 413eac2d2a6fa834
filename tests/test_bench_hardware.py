"""The hardware benchmark runs end to end on a tiny model and writes the JSON it promises, on any CPU.

On a CPU that emulates bf16 (AVX2 only) its bf16 peak is measured on a small product only: the 4096^3 one ran
for over 6 minutes there before the benchmark reached the model.
"""

from __future__ import annotations

import json

from benchscript import run_benchmark
from xlqa.precision import cpu_has_native_bf16


def test_bench_hardware_tiny_model(tmp_path, shared_data, tiny_model_dir):
    out = tmp_path / "hardware.json"
    args = [
        "--model", str(tiny_model_dir),
        "--train", str(shared_data / "squad" / "dev-v1.1.json"), "--eval", str(shared_data / "xquad" / "xquad.en.json"),
        "--max-examples", "16", "--steps", "1", "--warmup", "1", "--batch-size", "4",
        "--max-seq-length", "128", "--eval-max-seq-length", "128", "--out", str(out),
    ]  # fmt: skip
    proc = run_benchmark("bench_hardware.py", args, tmp_path)
    summary = json.loads(out.read_text())
    peaks = summary["peak_tflops"]
    assert summary["device_type"] == "cpu" and peaks["fp32_max"] > 0 and peaks["bf16_max"] > 0
    assert peaks["bf16_native"] == cpu_has_native_bf16()
    assert summary["precision"] == ("bf16" if peaks["bf16_native"] else "fp32")
    if not peaks["bf16_native"]:  # emulated: one small product, and no fraction of an emulated peak
        assert list(peaks["bf16"]) == ["512x512x512"]
        assert summary["train"]["fraction_of_bf16_peak"] is None
    assert set(peaks["fp32"]) == {"4096x4096x4096", "3200x384x1536"}
    for phase in ("train", "eval"):
        row = summary[phase]
        assert row["tflop"] > 0 and row["tflops"] > 0 and 0 < row["fraction_of_peak"] < 1.5, (phase, row)
    train = summary["train"]
    assert 0 < train["real_tokens"] <= train["padded_tokens"] and len(train["step_seconds"]) == 1
    prof = summary["train_profile"]
    attributed = sum(prof["groups_seconds"].values()) + prof["unattributed_seconds"]
    assert prof["groups_seconds"]["matmul"] > 0 and attributed >= 0.99 * prof["wall_seconds"]
    assert "of peak" in proc.stdout and "one training step" in proc.stdout

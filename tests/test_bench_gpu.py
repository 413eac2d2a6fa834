"""The GPU benchmark command runs end to end on a CPU with ``--tiny`` and writes the JSON it promises."""

from __future__ import annotations

import json

from benchscript import run_benchmark

NUMBERS = ("windows", "real_tokens", "padded_tokens", "seconds", "windows_per_s", "tokens_per_s", "tflops",
           "mfu", "peak_memory_mb", "flops", "params_m")  # fmt: skip


def test_bench_gpu_tiny_on_cpu(tmp_path, shared_data, shared_models):
    out = tmp_path / "gpu.json"
    args = [
        "--tiny",
        "--train", str(shared_data / "squad" / "dev-v1.1.json"),
        "--eval", str(shared_data / "squad" / "dev-v1.1.json"),
        "--models", str(shared_models), "--max-examples", "24", "--steps", "2", "--warmup", "1",
        "--batch-size", "8", "--eval-batch-size", "16", "--out", str(out),
    ]  # fmt: skip
    proc = run_benchmark("bench_gpu.py", args, tmp_path)
    summary = json.loads(out.read_text())
    assert summary["device_type"] == "cpu" and summary["peak_tflops"] > 0
    assert summary["peak_source"].startswith("measured")
    rows = summary["rows"]
    seen = {(r["family"], r["mode"], r["phase"]) for r in rows}
    expected = {
        (f, m, p) for f in ("mbert", "xlmr", "mt5") for m in ("baseline", "xlqa") for p in ("train", "eval")
    }
    assert seen == expected and len(rows) == len(expected)
    for r in rows:
        for key in NUMBERS:
            assert r[key] > 0, (r["family"], r["mode"], r["phase"], key, r[key])
        assert r["real_tokens"] <= r["padded_tokens"]
        assert 0 < r["mfu"] < 1
    for r in rows:  # the baseline pads every window to --max-seq-length (384), xlqa does not
        if r["mode"] == "baseline" and r["family"] != "mt5":
            assert r["padded_tokens"] == r["windows"] * 384
    for fam in ("mbert", "xlmr", "mt5"):
        base, xlqa = (next(r for r in rows if r["family"] == fam and r["mode"] == m and r["phase"] == "eval")
                      for m in ("baseline", "xlqa"))  # fmt: skip
        assert base["windows"] == xlqa["windows"]  # evaluation covers the same windows in both modes
        assert xlqa["padded_tokens"] < base["padded_tokens"]
        assert summary["speedups"][fam]["train"] > 0 and summary["speedups"][fam]["eval"] > 0
    assert summary["mbert_squad_epoch_seconds"] > 0
    assert "xlqa over padded baseline" in proc.stdout


def test_bench_gpu_bf16_weights_lever_on_cpu(tmp_path, shared_data, shared_models):
    """``--bf16-weights``: xlqa's rows train on a bf16 copy (fp32 master weights); the args record the lever."""
    out = tmp_path / "gpu.json"
    args = [
        "--tiny", "--families", "mbert",
        "--train", str(shared_data / "squad" / "dev-v1.1.json"),
        "--eval", str(shared_data / "squad" / "dev-v1.1.json"),
        "--models", str(shared_models), "--max-examples", "24", "--steps", "2", "--warmup", "1",
        "--batch-size", "8", "--eval-batch-size", "16", "--bf16-weights", "--out", str(out),
    ]  # fmt: skip
    run_benchmark("bench_gpu.py", args, tmp_path)
    summary = json.loads(out.read_text())
    assert summary["args"]["bf16_weights"] is True
    rows = {(r["mode"], r["phase"]): r for r in summary["rows"]}
    assert set(rows) == {(m, p) for m in ("baseline", "xlqa") for p in ("train", "eval")}
    assert all(rows[k]["windows_per_s"] > 0 and 0 < rows[k]["mfu"] < 1 for k in rows)

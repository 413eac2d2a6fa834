"""Running a script of ``benchmarks/`` as a user would: its own process, on the CPU, with its own cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(
    script: str, args: list, tmp_path: Path, *, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python benchmarks/SCRIPT ARGS`` with no GPU visible, ``XLQA_CACHE`` and ``TMPDIR`` under ``tmp_path``; it
    must exit 0 and leave no temporary folder behind (a benchmark's runs and caches take up to 100s of MB)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)]
    # a short path of its own (under tmp_path, Chromium's sockets would pass the 108-byte limit of a socket path)
    tmp = Path(tempfile.mkdtemp(prefix="xlqa-bench-"))
    try:
        # importing transformers' models imports torch._dynamo, which makes its cache folder (TMPDIR's
        # torchinductor_USER unless TORCHINDUCTOR_CACHE_DIR names one) and writes the variable into os.environ:
        # name it here, so that a benchmark run alone behaves as one run after in-process tests
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", XLQA_CACHE=str(tmp_path / "cache"), TMPDIR=str(tmp))
        env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "torchinductor")
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        left = sorted(p.name for p in tmp.iterdir())
        assert not left, f"{script} left {left} in its TMPDIR"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return proc


def benchmark_json(script: str, args: list, tmp_path: Path, *, timeout: int = 600) -> dict:
    """:func:`run_benchmark` with ``--out`` a file under ``tmp_path``; the JSON it wrote."""
    out = tmp_path / f"{Path(script).stem}.json"
    run_benchmark(script, [*args, "--out", out], tmp_path, timeout=timeout)
    return json.loads(out.read_text())

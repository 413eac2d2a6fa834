"""Running a script of ``benchmarks/`` as a user would: its own process, on the CPU, with its own cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(
    script: str, args: list, tmp_path: Path, *, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python benchmarks/SCRIPT ARGS`` with no GPU visible and ``XLQA_CACHE`` under ``tmp_path``; it must exit 0."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", XLQA_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc

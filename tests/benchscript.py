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
    """``python benchmarks/SCRIPT ARGS`` with no GPU visible, ``XLQA_CACHE`` and ``TMPDIR`` under ``tmp_path``; it
    must exit 0 and leave no temporary folder behind (a benchmark's runs and caches take up to 100s of MB)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)]
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", XLQA_CACHE=str(tmp_path / "cache"), TMPDIR=str(tmp))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not list(tmp.iterdir()), f"{script} left {sorted(p.name for p in tmp.iterdir())} in its TMPDIR"
    return proc

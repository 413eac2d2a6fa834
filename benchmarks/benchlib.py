"""What the benchmarks share: one training step, device sync, peak resident memory, machine facts, results.

Every benchmark that trains times the same step (:func:`train_step`), so a ratio between two of them never
hides a difference in what a step does. Peak memory is the process's resident set (``VmHWM``), reset between
phases through ``/proc/self/clear_refs`` where Linux allows it, so one process can report each phase's own
peak; elsewhere it falls back to ``ru_maxrss`` (monotonic: only the first phase is its own).
"""

from __future__ import annotations

import json
import platform
import re
import resource
from pathlib import Path

import torch

from xlqa.allocator import active
from xlqa.features import FeatureParams
from xlqa.precision import autocast
from xlqa.tasks import ExtractiveTask
from xlqa.train.bf16 import Bf16Weights

_TASK = ExtractiveTask()  # the loop's loss of an extractive batch (xlqa.tasks)


def sync(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, batch: dict, opt: torch.optim.Optimizer, *, device, precision: str,
               max_grad_norm: float | None = None, bf16: Bf16Weights | None = None) -> float:  # fmt: skip
    """One step as the loop takes it: forward (under ``precision``'s autocast, or on ``bf16``'s bf16 copy without
    autocast, as ``--bf16-weights`` does) and the loop's loss, backward, optional clipping, optimizer step; the loss.
    """
    call = model
    if bf16 is not None:
        bf16.pull()
        call, precision = bf16.module, "fp32"
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    with autocast(precision, device):
        loss = _TASK.loss(call, batch, model.config)
    loss.backward()
    if bf16 is not None:
        bf16.push_grads()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def _status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def reset_peak_rss() -> bool:
    """Start a new peak-RSS period (Linux ``clear_refs`` 5); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_rss` (else since it started)."""
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: ru_maxrss (kB on Linux, bytes on macOS)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = rss / 1024 if platform.system() == "Darwin" else rss
    return kb / 1024


def machine() -> dict:
    """The facts a figure depends on: CPU or GPU name, threads, torch version, malloc (a benchmark script runs
    with the malloc it was started with: preload tcmalloc to measure what xlqa's commands run with)."""
    gpu = torch.cuda.is_available()
    return {
        "malloc": active(),
        "device": torch.cuda.get_device_name() if gpu else platform.processor() or platform.machine(),
        "device_type": "cuda" if gpu else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "host": platform.node(),
    }


def write_result(out: str | Path, summary: dict) -> Path:
    """Write a benchmark's JSON (folders made) and say where."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    print(f"written {path}")
    return path


def window_params(max_seq_length: int) -> FeatureParams:
    """Windows of ``max_seq_length`` tokens with xlqa's default doc stride, as ``--max-seq-length`` alone gives
    them (128, at most half the window: :func:`xlqa.features.default_stride`)."""
    return FeatureParams(max_seq_length)

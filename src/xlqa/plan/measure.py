"""Measurements on this hardware, and predictions made from them.

A step's cost is taken as a fixed part plus a part per token computed (windows x padded width): a line is
fitted through a few real batches, chosen across the token range of the batches the job will really run, and
summed over all of them. The range comes from the measured batches themselves: the lowest and highest ratio
of a measured time to the fitted one scale the sum. Nothing here guesses a speed: every second in a
prediction comes from a timed call of the code the job runs.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class Range:
    """A predicted duration in seconds: ``expected`` (from the fitted line) between ``low`` and ``high``."""

    low: float
    expected: float
    high: float

    def __add__(self, other: Range) -> Range:
        return Range(self.low + other.low, self.expected + other.expected, self.high + other.high)

    def scale(self, k: float) -> Range:
        return Range(self.low * k, self.expected * k, self.high * k)

    def to_json(self) -> dict[str, float]:
        return {"low": round(self.low, 3), "expected": round(self.expected, 3), "high": round(self.high, 3)}


ZERO = Range(0.0, 0.0, 0.0)


@dataclass
class Samples:
    """Measured batches: tokens computed and seconds taken, one entry per timed batch."""

    tokens: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens.append(int(tokens))
        self.seconds.append(float(seconds))

    def to_json(self) -> dict[str, list]:
        return {"tokens": self.tokens, "seconds": [round(s, 5) for s in self.seconds]}


def fit(samples: Samples) -> tuple[float, float]:
    """``(fixed seconds, seconds per token)`` of a line through the samples (proportional when it cannot fit)."""
    t = np.asarray(samples.tokens, dtype=np.float64)
    s = np.asarray(samples.seconds, dtype=np.float64)
    if len(set(samples.tokens)) >= 2:
        b, a = np.polyfit(t, s, 1)
        if b > 0 and a >= 0:
            return float(a), float(b)
    return 0.0, float(np.sum(s) / max(np.sum(t), 1.0))


def predict(samples: Samples, tokens: np.ndarray) -> Range:
    """The summed seconds of batches of ``tokens`` tokens each, from the measured ``samples``."""
    if not samples.seconds or len(tokens) == 0:
        return ZERO
    a, b = fit(samples)
    expected = float(np.sum(a + b * np.asarray(tokens, dtype=np.float64)))
    fitted = a + b * np.asarray(samples.tokens, dtype=np.float64)
    ratios = np.asarray(samples.seconds) / np.maximum(fitted, 1e-12)
    return Range(expected * float(ratios.min()), expected, expected * float(ratios.max()))


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick(tokens: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` batches spread over the token range (the largest always among them)."""
    order = np.argsort(np.asarray(tokens), kind="stable")
    if len(order) == 0:
        return []
    qs = np.linspace(1.0, 0.0, num=min(n, len(order)), endpoint=False) if n > 1 else np.array([1.0])
    chosen = [int(order[min(len(order) - 1, round(q * (len(order) - 1)))]) for q in qs]
    return list(dict.fromkeys(chosen))


def time_batches(run: Callable[[list[int]], None], batches: list[list[int]], tokens: np.ndarray, n: int,
                 device: torch.device, *, repeats: int = 1, first: Samples | None = None) -> Samples:  # fmt: skip
    """Time ``run(batch)`` on ``n`` batches spread over the token range, after one untimed warm-up batch.

    ``repeats`` > 1 runs each batch that many times and keeps the fastest: a whole run meets each batch shape
    many times, so one slow first call of a shape (building its kernels, or a stray load on the machine) would
    otherwise be counted for every batch of the run (an E5-small estimate once took 1.21 s for a 16 x 384
    evaluation batch that takes 0.35 s). ``first`` receives each batch's first call, for what a run pays once
    per shape.
    """
    chosen = pick(tokens, n)
    samples = Samples()
    if not chosen:
        return samples
    run(batches[chosen[0]])  # warm-up on the largest batch: allocator, kernels, optimizer state, peak memory
    for i in chosen:
        best = float("inf")
        for r in range(repeats):
            synchronize(device)
            t0 = time.perf_counter()
            run(batches[i])
            synchronize(device)
            took = time.perf_counter() - t0
            if r == 0 and first is not None:
                first.add(int(tokens[i]), took)
            best = min(best, took)
        samples.add(int(tokens[i]), best)
    return samples


def time_call(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- memory ---------------------------------------------------------------------------------------------------
def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: the GPU's allocator statistics, or the process's peak RSS (Linux ``clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # not Linux, or not allowed: the peak then counts from the start of the process
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since :func:`reset_peak_memory`: GPU memory allocated, or the process's peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 1024)


def device_memory_mb(device: torch.device) -> float | None:
    """The memory the device has: the GPU's, or the machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**20
    try:
        import os

        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):
        return None


def first_call_extra(first: Samples, steady: Samples, n_shapes: int) -> Range:
    """What a run spends once per batch shape beyond its steady steps (on a CPU, oneDNN building the shape's
    kernels: an E5-small step on a new shape took 7.2 s where the same shape later took 6.0 s), over its
    ``n_shapes`` shapes: the extra seconds of each measured batch's first call over its fastest, low to high.

    The first measured batch is the warm-up's own (the largest), whose shape is built already; it is left out
    where there are others.
    """
    extra = [max(0.0, f - s) for f, s in zip(first.seconds, steady.seconds, strict=True)]
    extra = extra[1:] or extra
    if not extra or n_shapes <= 0:
        return ZERO
    return Range(min(extra), float(np.median(extra)), max(extra)).scale(n_shapes)

"""Percentile-bootstrap confidence intervals over per-question scores (seeded, vectorized numpy).

Used by the evaluation (a 95% interval beside every EM/F1) and by the report's statistics
(:mod:`xlqa.report.stats`: paired tests, differences between runs).
"""

from __future__ import annotations

import numpy as np

CHUNK = 1000  # resamples per vectorized block: bounds memory at CHUNK x n_questions


def as_1d(values, name: str) -> np.ndarray:
    """``values`` as a non-empty 1-D float64 array; ``name`` goes into the error otherwise."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    return arr


def bootstrap_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples with replacement, computed in blocks of CHUNK."""
    out = np.empty(n_resamples)
    for lo in range(0, n_resamples, CHUNK):
        hi = min(lo + CHUNK, n_resamples)
        idx = rng.integers(0, values.size, size=(hi - lo, values.size))
        out[lo:hi] = values[idx].mean(axis=1)
    return out


def bootstrap_ci(
    values, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap confidence interval of the mean, in points.

    Args:
        values: per-question scores in 0..1 (EM or F1).
        n_resamples: bootstrap resamples of the questions (with replacement).
        alpha: 1 - confidence level (0.05: a 95% interval).
        seed: RNG seed.

    Returns:
        (mean, low, high), each x 100.
    """
    arr = as_1d(values, "values")
    means = bootstrap_means(arr, n_resamples, np.random.default_rng(seed))
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return 100 * float(arr.mean()), 100 * float(low), 100 * float(high)

"""Statistics over per-question scores: paired significance tests, the transfer gap, cross-lingual
consistency and SQuAD v2 no-answer threshold curves.

All are pure numpy functions. Randomness always comes from ``np.random.default_rng(seed)``, so the same
inputs and seed give the same numbers. Scores go in as fractions (EM 0/1, F1 0..1) and come out in points
(x 100), like the official metrics. Loading the scores is :mod:`xlqa.report.loading`; breakdowns by question
type and length are :mod:`xlqa.report.breakdowns`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from xlqa.metrics.bootstrap import CHUNK, as_1d, bootstrap_means
from xlqa.metrics.squad_v2 import threshold_sweep

PIVOT = "en"


def language_order(languages: Sequence[str]) -> list[str]:
    """Languages in the fixed report order: English first, then the rest alphabetically."""
    return sorted(set(languages), key=lambda lang: (lang != PIVOT, lang))


# -- confidence intervals and tests ---------------------------------------------------------------------------
def paired_test(a, b, method: str = "bootstrap", n: int = 10000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Two-sided paired test of mean(b) - mean(a) over the same questions (aligned by position).

    - ``bootstrap``: resample the per-question differences ``d = b - a`` with replacement;
      p = min(1, 2 * (1 + min(#{mean* <= 0}, #{mean* >= 0})) / (n + 1)) over the resampled means (the
      percentile interval inverted; the +1 keeps p above 0, like a permutation p-value).
    - ``permutation``: paired sign-flip test; under H0 (no difference) each ``d_i`` is as likely to be
      ``-d_i``; p = (1 + #{|flipped mean| >= |observed mean|}) / (n + 1), so identical inputs give p = 1.

    The confidence interval is the paired percentile bootstrap in both cases.

    Args:
        a: per-question scores of the reference system (0..1).
        b: per-question scores of the compared system, same questions in the same order.
        method: ``bootstrap`` or ``permutation``.
        n: resamples (or sign flips).
        seed: RNG seed.
        alpha: 1 - confidence level of the interval.

    Returns:
        ``diff`` (mean(b) - mean(a)), ``ci_low``, ``ci_high`` in points, ``p_value``.
    """
    a, b = as_1d(a, "a"), as_1d(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired_test needs equal lengths, got {a.size} and {b.size}")
    if method not in ("bootstrap", "permutation"):
        raise ValueError(f"unknown method {method!r}; valid: bootstrap, permutation")
    d = b - a
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    boot = bootstrap_means(d, n, rng)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    tol = 1e-12
    if method == "bootstrap":
        p = min(1.0, 2 * (1 + min(np.sum(boot <= tol), np.sum(boot >= -tol))) / (n + 1))
    else:
        hits = 0
        for lo in range(0, n, CHUNK):
            signs = rng.integers(0, 2, size=(min(CHUNK, n - lo), d.size)) * 2 - 1
            hits += int(np.sum(np.abs((signs * d).mean(axis=1)) >= abs(observed) - tol))
        p = (1 + hits) / (n + 1)
    return {
        "diff": 100 * observed,
        "p_value": float(p),
        "ci_low": 100 * float(low),
        "ci_high": 100 * float(high),
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), for several languages tested at once."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
    out = np.empty_like(p)
    out[order] = np.minimum(adj, 1.0)
    return out.tolist()


def transfer_gap(scores_by_lang: Mapping[str, float], pivot: str = PIVOT) -> dict[str, float]:
    """Score of the pivot language minus the score of every other language (positive: worse than pivot).

    Args:
        scores_by_lang: language -> score (e.g. F1).
        pivot: the training language.
    """
    if pivot not in scores_by_lang:
        raise ValueError(
            f"transfer_gap: pivot {pivot!r} missing; languages: {', '.join(sorted(scores_by_lang))}"
        )
    ref = float(scores_by_lang[pivot])
    return {
        lang: ref - float(scores_by_lang[lang]) for lang in language_order(scores_by_lang) if lang != pivot
    }


# -- cross-lingual consistency --------------------------------------------------------------------------------
def consistency(per_lang: Mapping[str, Mapping[str, float]]) -> dict:
    """How consistently questions are answered across languages of a parallel set (XQuAD: same ids).

    Args:
        per_lang: language -> (question id -> EM 0/1). Only ids present in every language are used.

    Returns:
        ``languages`` (report order), ``n_questions`` (shared ids), ``counts`` (list of length L + 1:
        how many shared questions are answered exactly in k languages, k = 0..L), ``agreement`` (L x L:
        share of shared questions where both languages are right or both wrong) and ``kappa`` (L x L
        Cohen's kappa of the same pairs; NaN where the chance agreement is 1, e.g. one language all wrong).
    """
    langs = language_order(per_lang)
    if len(langs) < 2:
        raise ValueError(f"consistency needs at least two languages, got {langs}")
    shared = set.intersection(*(set(per_lang[lang]) for lang in langs))
    if not shared:
        raise ValueError(f"consistency: no question id is shared by all of {', '.join(langs)}")
    qids = sorted(shared)
    m = np.array([[per_lang[lang][q] for q in qids] for lang in langs], dtype=np.float64)
    m = (m > 0.5).astype(np.float64)
    n = m.shape[1]
    agree = (m @ m.T + (1 - m) @ (1 - m).T) / n
    p = m.mean(axis=1)
    chance = np.outer(p, p) + np.outer(1 - p, 1 - p)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(chance < 1 - 1e-12, (agree - chance) / (1 - chance), np.nan)
    counts = np.bincount(m.sum(axis=0).astype(np.int64), minlength=len(langs) + 1)
    return {
        "languages": langs,
        "n_questions": n,
        "counts": counts.tolist(),
        "agreement": agree,
        "kappa": kappa,
    }


# -- SQuAD v2 -------------------------------------------------------------------------------------------------
def squad2_curves(
    null_odds: Mapping[str, float],
    gold: Mapping[str, Sequence[str]],
    f1_per_question: Mapping[str, float],
    em_per_question: Mapping[str, float] | None = None,
) -> dict:
    """Scores and precision/recall as the no-answer threshold moves (SQuAD v2 style data).

    A question is answered with its best span when ``null_odds <= threshold`` and abstains otherwise;
    abstaining scores 1 on an unanswerable question and 0 on an answerable one. Precision and recall follow
    the official script's PR curves: over the answered questions, precision = (sum of span scores of answered
    answerable questions) / (answered questions), recall = the same sum / (answerable questions).

    Args:
        null_odds: question id -> null score minus best span score (``null_odds.json``).
        gold: question id -> gold texts (``[]`` for unanswerable).
        f1_per_question: question id -> F1 (0..1) of the best non-null span; only these ids are used.
        em_per_question: the same for EM (optional).

    Returns:
        ``thresholds`` (one per distinct odds value, ascending; the first is ``-inf``: answer nothing),
        ``f1`` and ``em`` (points at each threshold), ``precision``, ``recall`` (arrays, threshold order),
        ``average_precision`` (sum of precision x recall increments), ``best_f1``, ``best_threshold``.

    The scores come from the one threshold sweep (:func:`xlqa.metrics.squad_v2.threshold_sweep`), read only
    where a threshold can actually be applied: after every question of a run of equal odds is answered. The
    official sweep (:func:`xlqa.metrics.squad_v2.find_best_thresh`) also looks part-way through such a run, so
    with tied odds its ``best_f1`` can be higher than the one here, at a threshold that, applied, answers the
    whole run. Two more differences from the official ``best_*``: an answered unanswerable question scores its
    span's F1 against the empty answer here (1 when the span normalizes to nothing, like "the"), where the
    official sweep scores any non-empty raw prediction 0; and answering nothing is the threshold ``-inf``
    here, ``0.0`` there.
    """
    qids = [q for q in f1_per_question if q in null_odds and q in gold]
    if not qids:
        raise ValueError("squad2_curves: no question has a score, a null odds value and gold answers")
    odds = np.array([null_odds[q] for q in qids], dtype=np.float64)
    abstain = np.array([0.0 if gold[q] else 1.0 for q in qids])  # abstaining is right when there is no answer
    n, n_has = len(qids), int(len(qids) - abstain.sum())
    sweeps = {}
    for key, per_q in (("f1", f1_per_question), ("em", em_per_question)):
        if per_q is not None:
            span = np.array([per_q.get(q, 0.0) for q in qids], dtype=np.float64)
            sweeps[key] = (span, *threshold_sweep(odds, span - abstain, start=n - n_has))
    span, order, _ = sweeps["f1"]
    sorted_odds = odds[order]
    # k = number answered (the k smallest odds); keep k = 0 and every k that ends a run of equal odds
    ends = np.concatenate([[0], np.flatnonzero(np.append(sorted_odds[1:] != sorted_odds[:-1], True)) + 1])
    out: dict = {"thresholds": np.concatenate([[-np.inf], sorted_odds[ends[1:] - 1]])}
    out.update({key: 100 * totals[ends] / n for key, (_, _, totals) in sweeps.items()})
    true_pos = np.concatenate([[0.0], np.cumsum((span * (1 - abstain))[order])])[ends]
    out["precision"] = np.divide(true_pos, ends, out=np.ones_like(true_pos), where=ends > 0)
    out["recall"] = true_pos / n_has if n_has else np.zeros_like(true_pos)
    out["average_precision"] = float(np.sum(np.diff(out["recall"]) * out["precision"][1:]))
    best = int(np.argmax(out["f1"]))
    out["best_f1"], out["best_threshold"] = float(out["f1"][best]), float(out["thresholds"][best])
    return out

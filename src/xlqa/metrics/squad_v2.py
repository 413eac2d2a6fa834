"""SQuAD v2.0 scoring, equal to the official ``evaluate-v2.0.py`` (Rajpurkar et al., 2018).

Rules, as in the official script:

- normalization as SQuAD v1.1 (:func:`xlqa.metrics.squad_v1.normalize_answer`);
- gold answers that normalize to the empty string are dropped; a question left with none (an unanswerable
  question, or only answers like "the") has the single gold answer ``""``;
- F1 is 1 when the gold and the predicted token lists are both empty, 0 when only one is;
- a question is "HasAns" when its raw answer list is non-empty (``bool(qa["answers"])``), else "NoAns";
- with no-answer probabilities, a question whose probability exceeds ``na_prob_thresh`` is predicted as
  no-answer (scores 1 if NoAns, else 0); ``best_*`` come from the official threshold sweep
  (``find_all_best_thresh``): questions sorted by probability (stable, in ``na_probs`` order), a running score
  starting at the number of NoAns questions, +score for HasAns, -1 for NoAns with a non-empty raw prediction.

Missing predictions (documented deviation where the official script has no answer): the official script
skips questions without a prediction in ``exact``/``f1``/``total`` but then crashes with ``KeyError`` in the
HasAns/NoAns subsets. Here every number is computed over the predicted questions only: ``HasAns_*`` and
``NoAns_*`` cover the predicted questions of each kind (keys absent when that subset is empty), and the
threshold sweep starts from the number of predicted NoAns questions. With every question predicted this is
exactly the official result. When ``na_probs`` lacks a scored question (the official script crashes with
``KeyError``) or no question has a prediction (``ZeroDivisionError`` there), a ``ValueError`` is raised.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from xlqa.metrics.squad_v1 import check_answers, check_predictions, normalize_answer

logger = logging.getLogger(__name__)

__all__ = ["compute_exact", "compute_f1", "evaluate", "find_best_thresh", "per_question", "threshold_sweep"]


def _f1_tokens(gold_tokens: list[str], pred_tokens: list[str]) -> float:
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    num_same = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def compute_exact(a_gold: str, a_pred: str) -> int:
    """1 when gold and prediction are equal after normalization, else 0."""
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    """SQuAD v2.0 F1 of one prediction against one gold answer (1 when both normalize to nothing)."""
    return _f1_tokens(normalize_answer(a_gold).split(), normalize_answer(a_pred).split())


def _raw_scores(
    gold: Mapping[str, Sequence[str]], preds: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, float], list[str]]:
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    missing: list[str] = []
    for qid, answers in gold.items():
        check_answers(qid, answers)
        golds = [normalize_answer(a) for a in answers]
        golds = [g for g in golds if g] or [""]
        if qid not in preds:
            missing.append(qid)
            continue
        norm_pred = normalize_answer(preds[qid])
        pred_tokens = norm_pred.split()
        exact[qid] = max(int(g == norm_pred) for g in golds)
        f1[qid] = max(_f1_tokens(g.split(), pred_tokens) for g in golds)
    return exact, f1, missing


def _thresholded(
    gold: Mapping[str, Sequence[str]],
    predictions: Mapping[object, object],
    na_probs: Mapping[object, float] | None,
    na_prob_thresh: float,
) -> tuple[dict[str, str], dict[str, float], dict[str, float], dict[str, float], dict[str, float], dict]:
    if not isinstance(gold, Mapping):
        raise TypeError(f"gold must be a dict of question id -> list of answer texts, got {type(gold)}")
    preds = check_predictions(predictions)
    exact_raw, f1_raw, missing = _raw_scores(gold, preds)
    if missing:
        logger.warning(
            "squad2: %d of %d questions have no prediction and are skipped (first: %s)",
            len(missing),
            len(gold),
            ", ".join(missing[:5]),
        )
    probs: dict[str, float] = {}
    if na_probs is not None:
        probs = {k if isinstance(k, str) else str(k): v for k, v in na_probs.items()}
        absent = [qid for qid in exact_raw if qid not in probs]
        if absent:
            raise ValueError(
                f"squad2: na_probs has no no-answer probability for {len(absent)} predicted question(s), "
                f"e.g. {absent[0]!r}"
            )
    exact_thr: dict[str, float] = {}
    f1_thr: dict[str, float] = {}
    for qid in exact_raw:
        if (probs[qid] if na_probs is not None else 0.0) > na_prob_thresh:
            exact_thr[qid] = f1_thr[qid] = float(not gold[qid])
        else:
            exact_thr[qid] = exact_raw[qid]
            f1_thr[qid] = f1_raw[qid]
    return preds, exact_raw, f1_raw, exact_thr, f1_thr, probs


def per_question(
    gold: Mapping[str, Sequence[str]],
    predictions: Mapping[object, object],
    na_probs: Mapping[object, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, tuple[float, float]]:
    """Question id -> (em, f1) after the no-answer threshold, for the predicted questions only."""
    _, _, _, exact_thr, f1_thr, _ = _thresholded(gold, predictions, na_probs, na_prob_thresh)
    return {qid: (float(exact_thr[qid]), float(f1_thr[qid])) for qid in exact_thr}


def _eval_dict(exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str]) -> dict[str, float]:
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[k] for k in qids) / total,
        "f1": 100.0 * sum(f1[k] for k in qids) / total,
        "total": total,
    }


def threshold_sweep(
    odds: Sequence[float], gain: Sequence[float], start: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The no-answer threshold sweep: the running score as questions are answered in order of their odds.

    The one implementation of the sweep, shared by the official ``best_*`` numbers (:func:`find_best_thresh`),
    the report's threshold curves (``xlqa.report.stats.squad2_curves``) and the dev-set tuning of
    ``xlqa.postprocess.best_null_threshold``. A question is answered when its odds (no-answer probability, or
    null odds) are <= the threshold and abstains otherwise. As in the official script, questions are taken in
    a stable ascending sort of ``odds`` (ties keep the input order) and the score is accumulated one question
    at a time from ``start``, so ``totals`` are bit for bit the official running ``cur_score``.

    Args:
        odds: one value per question.
        gain: what answering the question adds to the score: its answered score minus its abstained score.
        start: the score when no question is answered.

    Returns:
        ``order`` (question indices in sweep order) and ``totals`` (length n + 1): ``totals[k]`` is the score
        with the questions ``order[:k]`` answered and the others abstaining.
    """
    odds_arr = np.asarray(odds, dtype=np.float64)
    gain_arr = np.asarray(gain, dtype=np.float64)
    if odds_arr.ndim != 1 or odds_arr.shape != gain_arr.shape:
        raise ValueError(
            f"threshold_sweep: odds {odds_arr.shape} and gain {gain_arr.shape} must be equal 1-D"
        )
    order = np.argsort(odds_arr, kind="stable")
    # np.cumsum adds left to right (no pairwise summation), as the official loop does
    return order, np.cumsum(np.concatenate([[float(start)], gain_arr[order]]))


def find_best_thresh(
    preds: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """Best score over no-answer thresholds, as the official ``find_best_thresh`` (over scored questions).

    Args:
        preds: raw predictions (a NoAns question with a non-empty raw prediction loses 1 when answered).
        scores: question id -> raw (un-thresholded) score of the predicted questions.
        na_probs: question id -> no-answer probability; its order breaks ties in the sweep.
        has_ans: question id -> whether the question has a gold answer.

    Returns:
        (best score in percent, the threshold reaching it; 0.0 when answering nothing is best).
    """
    qids = [qid for qid in na_probs if qid in scores]  # the official loop skips unscored questions
    # HasAns: gain its score; NoAns: lose 1 when the raw prediction is non-empty (even " ").
    gain = [scores[qid] if has_ans[qid] else (-1 if preds[qid] else 0) for qid in qids]
    start = sum(1 for qid in scores if not has_ans[qid])
    order, totals = threshold_sweep([na_probs[qid] for qid in qids], gain, start)
    # the first maximum: the official sweep moves its best only on a strict improvement
    best = int(np.argmax(totals))
    best_thresh = na_probs[qids[order[best - 1]]] if best else 0.0
    return 100.0 * float(totals[best]) / len(scores), best_thresh


def evaluate(
    gold: Mapping[str, Sequence[str]],
    predictions: Mapping[object, object],
    na_probs: Mapping[object, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """Score predictions as the official SQuAD v2.0 script does.

    Args:
        gold: question id -> gold answer texts, ``[]`` for unanswerable (see :func:`xlqa.metrics.read_gold`).
        predictions: question id -> predicted text (``""`` predicts no answer); absent ids are skipped.
        na_probs: optional question id -> no-answer probability (the official ``--na-prob-file``).
        na_prob_thresh: predict no answer when the probability exceeds this (official default 1.0).

    Returns:
        ``exact``, ``f1``, ``total``, ``HasAns_*``/``NoAns_*`` (``exact``, ``f1``, ``total``) when such
        questions were predicted, and with ``na_probs`` also ``best_exact``, ``best_exact_thresh``,
        ``best_f1``, ``best_f1_thresh``.

    Raises:
        ValueError: no question has a prediction, or ``na_probs`` misses a predicted question.
    """
    preds, exact_raw, f1_raw, exact_thr, f1_thr, probs = _thresholded(
        gold, predictions, na_probs, na_prob_thresh
    )
    if not exact_raw:
        raise ValueError(f"squad2: none of the {len(gold)} questions has a prediction")
    scored = list(exact_raw)
    out = _eval_dict(exact_thr, f1_thr, scored)
    has_ans = {qid: bool(gold[qid]) for qid in scored}
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        subset = [qid for qid in scored if has_ans[qid] is wanted]
        if subset:
            for key, value in _eval_dict(exact_thr, f1_thr, subset).items():
                out[f"{prefix}_{key}"] = value
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(preds, exact_raw, probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(preds, f1_raw, probs, has_ans)
    return out

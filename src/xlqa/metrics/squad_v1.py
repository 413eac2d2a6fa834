"""SQuAD v1.1 scoring, equal to the official ``evaluate-v1.1.py`` (Rajpurkar et al., 2016).

The same rules are used by XTREME for XQuAD and TyDi QA GoldP.

Rules, as in the official script:

- normalization: lower-case; drop every character of Python's ``string.punctuation`` (ASCII only); replace the
  words ``a``/``an``/``the`` (``\\b(a|an|the)\\b``) by a space; collapse whitespace (``str.split``);
- EM: normalized strings are equal; F1: multiset overlap of whitespace tokens, 0 when nothing overlaps;
- each question takes the maximum over its gold answers;
- a question without a prediction scores 0 and still counts in the denominator;
- results are means x 100 under the keys ``exact_match`` and ``f1``.

This module also holds the pieces shared by the "count missing as 0" rule sets (MLQA, xlqa-ext): prediction
checking, token F1 and the aggregation loop.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

__all__ = [
    "aggregate",
    "check_answers",
    "check_predictions",
    "evaluate",
    "exact_match_score",
    "f1_score",
    "normalize_answer",
    "per_question",
    "score_questions",
    "token_f1",
    "token_scorer",
]

_ASCII_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

# A scorer maps (prediction, gold answers) to (em 0/1, f1 0..1) for one question.
Scorer = Callable[[str, Sequence[str]], tuple[float, float]]


def normalize_answer(text: str) -> str:
    """Normalize an answer as the official SQuAD v1.1/v2.0 scripts do."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(pred_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    """Token F1 of the SQuAD v1.1 / MLQA scripts: 0 when no token overlaps (also when one side is empty)."""
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """True when both strings are equal after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """SQuAD v1.1 token F1 between one prediction and one gold answer."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def token_scorer(tokenize: Callable[[str], list[str]]) -> Scorer:
    """A per-question scorer from a tokenizer: EM = equal token lists, F1 = :func:`token_f1`, max over golds.

    Token-list equality is string equality after normalization, since every normalization here joins its
    (non-empty, space-free) tokens by single spaces.
    """

    def score(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
        pred_tokens = tokenize(prediction)
        em = 0.0
        f1 = 0.0
        for gold in golds:
            gold_tokens = tokenize(gold)
            em = max(em, float(pred_tokens == gold_tokens))
            f1 = max(f1, token_f1(pred_tokens, gold_tokens))
        return em, f1

    return score


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def check_predictions(predictions: Mapping[object, object]) -> dict[str, str]:
    """Return predictions keyed by ``str`` question id; every value must be a string.

    Args:
        predictions: question id -> predicted answer text (as in a predictions JSON file).

    Raises:
        TypeError: when ``predictions`` is not a mapping or a value is not a string (names the question id).
    """
    if not isinstance(predictions, Mapping):
        raise TypeError(f"predictions must be a dict of question id -> answer text, got {type(predictions)}")
    out: dict[str, str] = {}
    for qid, text in predictions.items():
        if not isinstance(text, str):
            raise TypeError(f"prediction for question id {qid!r} must be a string, got {type(text).__name__}")
        out[qid if isinstance(qid, str) else str(qid)] = text
    return out


def check_answers(qid: str, golds: object) -> None:
    """Raise ``TypeError`` unless ``golds`` is a list (sequence, not a string) of answer texts."""
    if isinstance(golds, str) or not isinstance(golds, Sequence):
        raise TypeError(f"gold answers of question id {qid!r} must be a list of strings, got {golds!r}")


def _check_gold(gold: Mapping[str, Sequence[str]], rules: str) -> None:
    if not isinstance(gold, Mapping):
        raise TypeError(f"gold must be a dict of question id -> list of answer texts, got {type(gold)}")
    if not gold:
        raise ValueError(f"{rules}: the gold data has no questions")


def score_questions(
    gold: Mapping[str, Sequence[str]], predictions: Mapping[object, object], scorer: Scorer, rules: str
) -> dict[str, tuple[float, float]]:
    """Per-question (em, f1) in gold order; a missing prediction gives (0.0, 0.0) and is logged.

    Raises:
        ValueError: a question has no gold answer (these rules cannot score unanswerable questions; the
            official scripts crash there), or the gold data is empty.
    """
    _check_gold(gold, rules)
    preds = check_predictions(predictions)
    scores: dict[str, tuple[float, float]] = {}
    missing: list[str] = []
    for qid, golds in gold.items():
        check_answers(qid, golds)
        if not golds:
            raise ValueError(
                f"{rules}: question id {qid!r} has no gold answer (unanswerable); "
                "score data with unanswerable questions under the 'squad2' rules"
            )
        if qid not in preds:
            missing.append(qid)
            scores[qid] = (0.0, 0.0)
            continue
        scores[qid] = scorer(preds[qid], golds)
    if missing:
        logger.warning(
            "%s: %d of %d questions have no prediction and score 0 (first: %s)",
            rules,
            len(missing),
            len(gold),
            ", ".join(missing[:5]),
        )
    return scores


def aggregate(scores: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Mean x 100 of per-question (em, f1), summed in order like the official loops."""
    exact_match = 0.0
    f1 = 0.0
    for em, f in scores.values():
        exact_match += em
        f1 += f
    total = len(scores)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def per_question(
    gold: Mapping[str, Sequence[str]], predictions: Mapping[object, object]
) -> dict[str, tuple[float, float]]:
    """Question id -> (em 0/1, f1 0..1) under SQuAD v1.1 rules; missing predictions give (0.0, 0.0)."""
    return score_questions(gold, predictions, token_scorer(_tokens), "squad1")


def evaluate(gold: Mapping[str, Sequence[str]], predictions: Mapping[object, object]) -> dict[str, float]:
    """Score predictions as the official SQuAD v1.1 script does.

    Args:
        gold: question id -> gold answer texts (see :func:`xlqa.metrics.read_gold`).
        predictions: question id -> predicted text; ids absent here score 0 and count.

    Returns:
        ``{"exact_match": float, "f1": float}`` in percent.
    """
    return aggregate(per_question(gold, predictions))

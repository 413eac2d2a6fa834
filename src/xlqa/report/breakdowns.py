"""Scores by question type, gold answer length and context length (where a model gains or loses).

For a parallel benchmark the buckets come from the English question of the same id, so a bucket means the
same in every language. Pure numpy over per-question scores from :func:`xlqa.report.loading.per_question_scores`.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np

from xlqa.data import Example
from xlqa.report.stats import PIVOT

# -- buckets -----------------------------------------------------------------------------------------------
WH_WORDS = ("what", "which", "who", "when", "where", "why", "how")
ANSWER_EDGES = (5, 10, 20, 40)  # characters of the first gold answer
CONTEXT_EDGES = (500, 750, 1000, 1500)  # characters of the context


def _strip_punct(token: str) -> str:
    return "".join(
        c for c in token if c not in string.punctuation and not unicodedata.category(c).startswith("P")
    )


def question_word(question: str, language: str | None) -> str:
    """A question's type bucket.

    English: the first wh-word anywhere in the question (``whom``/``whose`` count as ``who``; ``how many``
    and ``how much`` are their own buckets), else ``other``. Other languages: the first whitespace token,
    lower-cased without punctuation; text written without spaces (Chinese, Japanese, Thai) gives its first
    two characters. Use the parallel English question (``reference`` in :func:`breakdowns`) for types that
    compare across languages.
    """
    tokens = [_strip_punct(t) for t in question.lower().split()]
    tokens = [t for t in tokens if t]
    if language == "en":
        for i, tok in enumerate(tokens):
            tok = "who" if tok in ("whom", "whose") else tok
            if tok in WH_WORDS:
                nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
                return f"how {nxt}" if tok == "how" and nxt in ("many", "much") else tok
        return "other"
    if not tokens:
        return "other"
    return tokens[0][:2] if _unspaced(tokens[0][0]) else tokens[0]


def _unspaced(char: str) -> bool:
    """A character of a script written without spaces between words (Thai, CJK, kana)."""
    code = ord(char)
    return 0x0E00 <= code <= 0x0E7F or 0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x9FFF


def _bucket_labels(edges: Sequence[int]) -> list[str]:
    lows = [1, *(e + 1 for e in edges)]
    return [f"{lo}-{hi}" for lo, hi in zip(lows, edges)] + [f">{edges[-1]}"]


def _summarize(keys: list[str], em: np.ndarray, f1: np.ndarray, order: list[str]) -> dict[str, dict]:
    codes = np.array([order.index(k) for k in keys], dtype=np.int64)
    n = np.bincount(codes, minlength=len(order))
    em_sum = np.bincount(codes, weights=em, minlength=len(order))
    f1_sum = np.bincount(codes, weights=f1, minlength=len(order))
    return {
        label: {"n": int(n[i]), "em": float(100 * em_sum[i] / n[i]), "f1": float(100 * f1_sum[i] / n[i])}
        for i, label in enumerate(order)
        if n[i] > 0
    }


def breakdowns(
    examples: Sequence[Example],
    scores: Mapping[str, tuple[float, float]],
    *,
    language: str | None = None,
    reference: Sequence[Example] | None = None,
    top_k: int = 8,
    answer_edges: Sequence[int] = ANSWER_EDGES,
    context_edges: Sequence[int] = CONTEXT_EDGES,
) -> dict[str, dict[str, dict]]:
    """EM and F1 by question type, gold answer length and context length.

    Args:
        examples: the scored examples; only ids present in ``scores`` count.
        scores: question id -> (em, f1) as from :func:`per_question_scores`.
        language: the questions' language, for :func:`question_word`.
        reference: parallel examples (e.g. the English XQuAD file) whose question type and lengths are used
            for the same ids, so buckets mean the same in every language; ids it lacks use their own.
        top_k: question-type buckets kept (most frequent first); the rest are merged into ``other``.
        answer_edges: upper bounds (characters, inclusive) of the answer-length buckets; unanswerable
            questions form ``no answer``.
        context_edges: upper bounds (characters, inclusive) of the context-length buckets.

    Returns:
        ``{"question": ..., "answer_length": ..., "context_length": ...}``, each bucket ->
        ``{"n", "em", "f1"}`` (EM and F1 in points), buckets in a fixed order.
    """
    ref = {ex.id: ex for ex in reference} if reference is not None else {}
    rows = [(ref.get(ex.id, ex), ex.id in ref) for ex in examples if ex.id in scores]
    if not rows:
        raise ValueError("breakdowns: none of the examples has a score")
    em = np.array([scores[ex.id][0] for ex, _ in rows])
    f1 = np.array([scores[ex.id][1] for ex, _ in rows])
    qtype = [question_word(ex.question, PIVOT if from_ref else language) for ex, from_ref in rows]
    kinds, freq = np.unique(qtype, return_counts=True)
    ranked = [str(kinds[i]) for i in np.lexsort((kinds, -freq))]
    keep = [k for k in ranked if k != "other"][:top_k]
    qtype = [q if q in keep else "other" for q in qtype]
    ans_labels, ctx_labels = _bucket_labels(answer_edges), _bucket_labels(context_edges)
    ans_len = [len(ex.answers[0].text) if ex.answers and not ex.is_impossible else -1 for ex, _ in rows]
    ans = [ans_labels[int(np.searchsorted(answer_edges, n))] if n >= 0 else "no answer" for n in ans_len]
    ctx = [ctx_labels[int(np.searchsorted(context_edges, len(ex.context)))] for ex, _ in rows]
    return {
        "question": _summarize(qtype, em, f1, [*keep, "other"]),
        "answer_length": _summarize(ans, em, f1, [*ans_labels, "no answer"]),
        "context_length": _summarize(ctx, em, f1, ctx_labels),
    }

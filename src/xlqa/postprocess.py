"""From start/end logits to answer texts: vectorized n-best span decoding (numpy only, pure).

For every window the ``top_k`` best start and end tokens inside the context are paired (``top_k x top_k``
candidates, all windows at once); pairs that end before they start or are longer than ``max_answer_length``
tokens are dropped; candidates of all windows of an example are ranked together, duplicates of the same
character span removed, and the best ``n_best`` kept. For SQuAD v2 the null score (start and end on the CLS
token, the smallest over windows as in the transformers QA examples) is compared with the best span through a
threshold, and ``null_odds = null_score - best_span_score`` is written in the format of the official scorer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xlqa.metrics.squad_v2 import threshold_sweep
from xlqa.results import NBestCandidate

# Longest answer, in tokens. The SQuAD/XTREME habit of 30 was set for English WordPiece; mBERT cuts Thai, Greek
# and Arabic into many more pieces, so 30 tokens lose up to 8% of XQuAD th answers before the model is even
# asked (the answer ceiling in the README). 100 loses none of them.
MAX_ANSWER_LENGTH = 100


@dataclass
class Decoded:
    """The result of :func:`decode`: per question id."""

    predictions: dict[str, str]
    nbest: dict[str, list[NBestCandidate]]  # best first; written with results.nbest_to_json
    null_odds: dict[str, float]
    best_span: dict[str, tuple[int, int]] = field(default_factory=dict)  # character span of the best answer


def pad_ragged(rows: list[np.ndarray], fill: float, dtype=np.float32) -> np.ndarray:
    """Stack 1-D or 2-D arrays of different lengths into ``[n, max_len, ...]`` filled with ``fill``."""
    n = len(rows)
    width = max((len(r) for r in rows), default=0)
    tail = rows[0].shape[1:] if rows else ()
    out = np.full((n, width, *tail), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


# characters a span never starts or ends with: white space and clause punctuation (, ; : and their CJK, Arabic
# and Greek forms), which sentencepiece tokenizers glue to words ("2014," "丛林，"). Full stops stay (translated
# gold answers often end with "。" or "।": trimming them costs as much EM on XQuAD as it gains), and so do quotes,
# brackets and % (gold answers include them).
_EDGE_PUNCT = frozenset(",;:、，；：،؛\u037e")


def _edge_char(ch: str) -> bool:
    return ch.isspace() or ch in _EDGE_PUNCT


def trim_span(context: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` past edge white space and sentence punctuation; never to nothing."""
    s, e = start, end
    while s < e and _edge_char(context[s]):
        s += 1
    while e > s and _edge_char(context[e - 1]):
        e -= 1
    return (s, e) if s < e else (start, end)


def _top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row (unordered)."""
    k = min(k, x.shape[1])
    return np.argpartition(-x, k - 1, axis=1)[:, :k]


@dataclass
class _Spans:
    """Candidate spans as parallel arrays: example index, character start/end, score."""

    ex: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray

    def take(self, index: np.ndarray) -> _Spans:
        return _Spans(self.ex[index], self.start[index], self.end[index], self.score[index])


def decode(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    example_index: np.ndarray,
    cls_index: np.ndarray,
    example_ids: list[str],
    contexts: list[str],
    *,
    n_best: int = 20,
    top_k: int = 20,
    max_answer_length: int = MAX_ANSWER_LENGTH,
    null_threshold: float | None = None,
    trim: bool = True,
) -> Decoded:
    """Decode answers for every example.

    Args:
        start_logits: ``[n_windows, seq_len]`` float; padding positions may hold anything.
        end_logits: same shape.
        offsets: ``[n_windows, seq_len, 2]`` character spans into the example's context; -1 for tokens that are
            not context (question, special tokens, padding).
        example_index: ``[n_windows]`` index of each window's example in ``example_ids``/``contexts``.
        cls_index: ``[n_windows]`` position of the CLS token (the null answer) in each window.
        example_ids: question ids, one per example.
        contexts: context strings, one per example.
        n_best: how many distinct spans to keep per question.
        top_k: start and end candidates per window.
        max_answer_length: longest answer in tokens.
        null_threshold: None for SQuAD v1 (always answer); a float for v2: answer "" when
            ``null_score - best_span_score > null_threshold``.
        trim: strip white space and sentence punctuation that a token glued to the span's edges (see
            :func:`trim_span`).

    Returns:
        Decoded predictions, n-best lists (with probabilities over the kept candidates) and null odds.
    """
    start_logits, end_logits, offsets, example_index, cls_index = _checked(
        start_logits, end_logits, offsets, example_index, cls_index, len(example_ids), len(contexts)
    )
    if start_logits.size == 0:
        empty = {q: "" for q in example_ids}
        return Decoded(
            predictions=empty, nbest={q: [] for q in example_ids}, null_odds={q: 0.0 for q in example_ids}
        )
    spans = _candidates(start_logits, end_logits, offsets, example_index, top_k, max_answer_length)
    kept, rank = _ranked(_best_per_span(spans), n_best)
    null_score = _null_scores(start_logits, end_logits, cls_index, example_index, len(example_ids))
    best_score = np.full(len(example_ids), -np.inf)
    best_score[kept.ex[rank == 0]] = kept.score[rank == 0]
    return _assemble(kept, null_score, best_score, example_ids, contexts, null_threshold, trim)


def _checked(start_logits, end_logits, offsets, example_index, cls_index, n_ids: int, n_contexts: int):
    """The inputs as float64/int64 arrays, after checking that their shapes agree."""
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    offsets = np.asarray(offsets)
    n_win, seq_len = start_logits.shape
    if end_logits.shape != (n_win, seq_len) or offsets.shape != (n_win, seq_len, 2):
        raise ValueError(
            f"shape mismatch: start {start_logits.shape}, end {end_logits.shape}, offsets {offsets.shape}"
        )
    example_index = np.asarray(example_index, dtype=np.int64)
    cls_index = np.asarray(cls_index, dtype=np.int64)
    if example_index.shape != (n_win,) or cls_index.shape != (n_win,):
        raise ValueError("example_index and cls_index need one entry per window")
    if n_contexts != n_ids:
        raise ValueError(f"{n_contexts} contexts for {n_ids} example ids")
    return start_logits, end_logits, offsets, example_index, cls_index


def _candidates(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    example_index: np.ndarray,
    top_k: int,
    max_answer_length: int,
) -> _Spans:
    """The top_k starts x top_k ends of every window (all windows at once), without pairs that end before
    they start, are longer than ``max_answer_length`` tokens or touch a token outside the context."""
    in_ctx = offsets[..., 0] >= 0
    s_masked = np.where(in_ctx, start_logits, -np.inf)
    e_masked = np.where(in_ctx, end_logits, -np.inf)
    s_idx = _top_k(s_masked, top_k)[:, :, None]  # [W, k, 1]
    e_idx = _top_k(e_masked, top_k)[:, None, :]  # [W, 1, k]
    r = np.arange(len(start_logits))[:, None, None]
    s_score = s_masked[r, s_idx]
    e_score = e_masked[r, e_idx]
    length = e_idx - s_idx + 1
    valid = np.isfinite(s_score) & np.isfinite(e_score) & (length >= 1) & (length <= max_answer_length)
    win, si, ei = np.broadcast_arrays(r, s_idx, e_idx)
    win, si, ei = win[valid], si[valid], ei[valid]
    return _Spans(
        ex=example_index[win],
        start=offsets[win, si, 0].astype(np.int64),
        end=offsets[win, ei, 1].astype(np.int64),
        score=(s_score + e_score)[valid],
    )


def _best_per_span(spans: _Spans) -> _Spans:
    """One candidate per (example, character span): the best-scoring window wins (windows overlap)."""
    spans = spans.take(np.lexsort((-spans.score, spans.end, spans.start, spans.ex)))
    first = np.ones(len(spans.ex), dtype=bool)
    first[1:] = (
        (spans.ex[1:] != spans.ex[:-1])
        | (spans.start[1:] != spans.start[:-1])
        | (spans.end[1:] != spans.end[:-1])
    )
    return spans.take(first)


def _ranked(spans: _Spans, n_best: int) -> tuple[_Spans, np.ndarray]:
    """The ``n_best`` best candidates of each example, grouped by example and best first, with their ranks."""
    spans = spans.take(np.lexsort((-spans.score, spans.ex)))
    rank = np.arange(len(spans.ex)) - np.searchsorted(spans.ex, spans.ex, side="left")
    keep = rank < n_best
    return spans.take(keep), rank[keep]


def _null_scores(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    cls_index: np.ndarray,
    example_index: np.ndarray,
    n_ex: int,
) -> np.ndarray:
    """Per example, the smallest CLS score (start + end logit) over its windows; inf for one without windows."""
    rows = np.arange(len(cls_index))
    null_win = start_logits[rows, cls_index] + end_logits[rows, cls_index]
    null_score = np.full(n_ex, np.inf)
    np.minimum.at(null_score, example_index, null_win)
    return null_score


def _assemble(
    kept: _Spans,
    null_score: np.ndarray,
    best_score: np.ndarray,
    example_ids: list[str],
    contexts: list[str],
    null_threshold: float | None,
    trim: bool,
) -> Decoded:
    """Texts, n-best lists with probabilities, null odds and predictions, one question at a time (each
    question holds at most ``n_best`` candidates, so this loop is over questions, not candidate pairs)."""
    bounds = np.searchsorted(kept.ex, np.arange(len(example_ids) + 1), side="left").tolist()
    c_start, c_end, score = kept.start.tolist(), kept.end.tolist(), kept.score.tolist()
    predictions: dict[str, str] = {}
    nbest: dict[str, list[NBestCandidate]] = {}
    null_odds: dict[str, float] = {}
    best_span: dict[str, tuple[int, int]] = {}
    for i, qid in enumerate(example_ids):
        a, b = bounds[i], bounds[i + 1]
        ctx = contexts[i]
        entries = []
        for cs, ce, sc in zip(c_start[a:b], c_end[a:b], score[a:b]):
            cs, ce = trim_span(ctx, cs, ce) if trim else (cs, ce)
            entries.append(NBestCandidate(text=ctx[cs:ce], score=sc, start=cs, end=ce))
        if null_threshold is not None and np.isfinite(null_score[i]):
            entries.append(NBestCandidate(text="", score=float(null_score[i]), start=-1, end=-1))
            entries.sort(key=lambda e: -e.score)
        _add_probabilities(entries)
        nbest[qid] = entries
        odds = float(null_score[i] - best_score[i]) if np.isfinite(null_score[i]) else -np.inf
        null_odds[qid] = odds if np.isfinite(odds) else (1e9 if odds > 0 else -1e9)
        if a < b and (null_threshold is None or null_odds[qid] <= null_threshold):
            top_span = next(e for e in entries if e.start >= 0)
            predictions[qid] = top_span.text
            best_span[qid] = (top_span.start, top_span.end)
        else:
            predictions[qid] = ""
    return Decoded(predictions=predictions, nbest=nbest, null_odds=null_odds, best_span=best_span)


def _add_probabilities(entries: list[NBestCandidate]) -> None:
    """Softmax over the scores of one question's n-best list, written into its entries."""
    if not entries:
        return
    sc = np.array([e.score for e in entries])
    p = np.exp(sc - sc.max())
    p /= p.sum()
    for e, pi in zip(entries, p):
        e.probability = float(pi)


def best_null_threshold(
    null_odds: dict[str, float], gold: dict[str, list[str]], predictions_f1: dict[str, float]
) -> float:
    """Threshold on ``null_odds`` that maximizes F1, for tuning SQuAD v2 on dev.

    The sweep is the official one (:func:`xlqa.metrics.squad_v2.threshold_sweep`, as in ``best_f1``); what
    differs is only the threshold returned: the official script returns the odds of the last question it
    answers (0.0 when answering nothing is best), this returns the midpoint between that and the next odds
    (below all odds when answering nothing is best, above all when answering everything is), a margin for
    questions not in the tuning set. Like the official sweep it can peak part-way through a run of equal odds;
    the threshold then answers the whole run.

    Args:
        null_odds: question id -> null score minus best span score.
        gold: question id -> gold texts (empty list = unanswerable).
        predictions_f1: question id -> F1 (0..1) of the best non-null span (0 when absent).

    Returns:
        The threshold: predict "" when ``null_odds > threshold``.
    """
    qids = [q for q in null_odds if q in gold]
    if not qids:
        return 0.0
    abstain = np.array([0.0 if gold[q] else 1.0 for q in qids])  # abstaining is right when there is no answer
    span = np.array([predictions_f1.get(q, 0.0) for q in qids], dtype=np.float64)
    odds = np.array([null_odds[q] for q in qids], dtype=np.float64)
    order, totals = threshold_sweep(odds, span - abstain, start=abstain.sum())
    odds = odds[order]
    best = int(np.argmax(totals))
    if best == 0:
        return float(odds[0] - 1.0)
    if best == len(odds):
        return float(odds[-1] + 1.0)
    return float((odds[best - 1] + odds[best]) / 2)

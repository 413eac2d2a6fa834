"""From start/end logits to answer texts: vectorized n-best span decoding (numpy only, pure).

For every window the ``top_k`` best start and end tokens inside the context are paired (``top_k x top_k``
candidates, all windows at once); pairs that end before they start or are longer than ``max_answer_length``
tokens are dropped; candidates of all windows of an example are ranked together, duplicates of the same
character span removed, and the best ``n_best`` kept. For SQuAD v2 the null score (start and end on the CLS
token, the smallest over windows as in the transformers QA examples) is compared with the best span through a
threshold, and ``null_odds = null_score - best_span_score`` is written in the format of the official scorer.
"""

from __future__ import annotations

import functools
from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from dataclasses import dataclass, field

import numpy as np

from xlqa.metrics.squad_v2 import threshold_sweep
from xlqa.results import NBestCandidate
from xlqa.spans import (
    Candidates,
    free_lengths,
    null_scores,
    rank_per_example,
    softmax_rows,
    window_candidates,
)

# Longest answer, in tokens. The SQuAD/XTREME habit of 30 was set for English WordPiece; mBERT cuts Thai, Greek
# and Arabic into many more pieces, so 30 tokens lose up to 8% of XQuAD th answers before the model is even
# asked (the answer ceiling in the README). 100 loses none of them.
MAX_ANSWER_LENGTH = 100
# ... but real models score higher with short limits (the demo's E5-small: XQuAD F1 43.5 at 15 tokens, 43.0 at
# 30, 41.8 at 100), as they stretch uncertain spans. So a span longer than FREE_ANSWER_TOKENS English-like
# tokens (scaled by the tokenizer's fertility on the window, spans.free_lengths) loses LENGTH_PENALTY of its
# score per token beyond: long answers stay reachable (the ceiling keeps every XQuAD language at 99% EM or
# more for mBERT and XLM-R), but a model must be sure of them. Measured in benchmarks/bench_answer_length.py.
FREE_ANSWER_TOKENS = 10.0
LENGTH_PENALTY = 0.1


@dataclass
class Decoded:
    """The result of :func:`decode`: per question id."""

    predictions: dict[str, str]
    nbest: Mapping[str, list[NBestCandidate]]  # best first; written with results.nbest_to_json
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
# and Greek forms), which sentencepiece tokenizers glue to words ("2014," "▁(2"). Only where a token glues them
# to the answer: a punctuation token of its own at the span's edge was the model's choice, and the scoring
# rules may keep it (SQuAD v1.1 removes only ASCII punctuation, so a gold answer ending in "،" needs its "،",
# which mBERT always makes a token of its own). Full stops stay (translated gold answers often end with "。" or
# "।": trimming them costs as much EM on XQuAD as it gains), and so do quotes, brackets and %.
_EDGE_PUNCT = frozenset(",;:、，；：،؛\u037e")


def _edge_char(ch: str) -> bool:
    return ch.isspace() or ch in _EDGE_PUNCT


def trim_span(
    context: str,
    start: int,
    end: int,
    start_token_end: int | None = None,
    end_token_start: int | None = None,
) -> tuple[int, int]:
    """Shrink ``[start, end)`` past edge white space and clause punctuation; never to nothing.

    Given the span's edge tokens (the end of its first token, the start of its last), only characters inside
    them go: a first or last token made of nothing but such characters stays whole.
    """
    s, e = start, end
    while s < e and _edge_char(context[s]):
        s += 1
    while e > s and _edge_char(context[e - 1]):
        e -= 1
    if s >= e:
        return start, end
    if start_token_end is not None and s >= start_token_end:
        s = start
    if end_token_start is not None and e <= end_token_start:
        e = end
    return s, e


def inside_edge_tokens(
    offsets: np.ndarray,
    win: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    new: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed spans ``new`` of :func:`trim_spans`, undone at an edge whose whole token was trimmed.

    The edge tokens are looked up in window ``win`` (its ``offsets``), only for the spans that were trimmed:
    the first token is the longest one starting at ``start`` (XLM-R's bare "▁" shares a start with the word
    after it), the last token the one ending at ``end``.
    """
    s, e = new[0].copy(), new[1].copy()
    moved = np.flatnonzero(s != start)
    if len(moved):
        offs = offsets[win[moved]]
        first_end = np.where(offs[..., 0] == start[moved, None], offs[..., 1], -1).max(axis=1)
        undo = moved[s[moved] >= first_end]
        s[undo] = start[undo]
    moved = np.flatnonzero(e != end)
    if len(moved):
        offs = offsets[win[moved]]
        hit = (offs[..., 1] == end[moved, None]) & (offs[..., 0] >= 0)
        last_start = np.where(hit, offs[..., 0], np.iinfo(offs.dtype).max).min(axis=1)  # no wrap-around
        undo = moved[e[moved] <= last_start]
        e[undo] = end[undo]
    return s, e


@functools.cache
def _edge_table() -> np.ndarray:
    """``table[c]`` is True for the code points :func:`trim_span` strips; the last entry stands for all above."""
    codes = [c for c in range(0x3001) if chr(c).isspace()] + [
        ord(c) for c in _EDGE_PUNCT
    ]  # U+3000: last space
    table = np.zeros(max(codes) + 2, dtype=bool)
    table[codes] = True
    return table


def trim_spans(
    contexts: list[str], example: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`trim_span` without edge tokens for many spans at once: ``[start, end)`` into ``contexts[example]``,
    same results (:func:`inside_edge_tokens` then applies the tokens).

    ``example`` must be sorted. Only the characters at the spans' edges are looked at, a step at a time for
    the spans whose edge is still white space or punctuation (a few steps: edges are one token's glue).
    """
    head = np.flatnonzero(np.diff(example, prepend=-1))  # first candidate of each example
    slot: dict[str, int] = {}  # questions on one paragraph share its context: each distinct text once
    ex_slot = [slot.setdefault(contexts[i], len(slot)) for i in example[head].tolist()]
    texts = list(slot)
    bounds = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=bounds[1:])
    chars = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    table = _edge_table()
    cand_slot = np.repeat(np.array(ex_slot, dtype=np.int64), np.diff(np.append(head, len(example))))
    base, length = bounds[cand_slot], bounds[cand_slot + 1] - bounds[cand_slot]
    s, e = start.copy(), end.copy()

    def edge_at(pos: np.ndarray, which: np.ndarray) -> np.ndarray:
        return table[np.minimum(chars[base[which] + pos], len(table) - 1)]

    act = np.flatnonzero((start >= 0) & (start < end) & (end <= length))  # spans inside their context
    todo = act
    while len(todo):  # leading edge characters
        todo = todo[edge_at(s[todo], todo)]
        s[todo] += 1
        todo = todo[s[todo] < e[todo]]
    todo = act[s[act] < e[act]]
    while len(todo):  # trailing ones
        todo = todo[edge_at(e[todo] - 1, todo)]
        e[todo] -= 1
        todo = todo[e[todo] > s[todo]]
    nothing_left = s >= e  # edge characters only: kept as they were
    return np.where(nothing_left, start, s), np.where(nothing_left, end, e)


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
    length_penalty: float = LENGTH_PENALTY,
    free_answer_tokens: float = FREE_ANSWER_TOKENS,
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
        top_k: start and end candidates per window (context tokens with finite logits; ties: the earlier).
        max_answer_length: longest answer in tokens.
        null_threshold: None for SQuAD v1 (always answer); a float for v2: answer "" when
            ``null_score - best_span_score > null_threshold``.
        trim: strip white space and clause punctuation that a token glued to the span's edges (see
            :func:`trim_span`); a token of nothing but punctuation at an edge stays.
        length_penalty: score taken off a span per token beyond its window's free length (0: none).
        free_answer_tokens: the free length in English-like tokens, scaled per window by the tokenizer's
            fertility there (:func:`xlqa.spans.free_lengths`).

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
    cands = window_candidates(
        start_logits,
        end_logits,
        offsets,
        example_index,
        top_k=top_k,
        max_answer_length=max_answer_length,
        n_best=n_best,
        length_penalty=length_penalty,
        free_length=free_lengths(offsets, free_answer_tokens) if length_penalty > 0 else None,
    )
    kept, rank = rank_per_example(cands, n_best)
    null = null_scores(start_logits, end_logits, cls_index, example_index, len(example_ids))
    if trim and len(kept.ex):
        trimmed = trim_spans(contexts, kept.ex, kept.start, kept.end)
        kept.start, kept.end = inside_edge_tokens(offsets, kept.win, kept.start, kept.end, trimmed)
    return _assemble(kept, rank, null, example_ids, contexts, null_threshold)


def _checked(start_logits, end_logits, offsets, example_index, cls_index, n_ids: int, n_contexts: int):
    """The inputs as arrays (logits keep a float dtype; indices int64), after checking that shapes agree."""
    start_logits = np.asarray(start_logits)
    end_logits = np.asarray(end_logits)
    offsets = np.asarray(offsets)
    if start_logits.ndim != 2:
        raise ValueError(f"shape mismatch: start logits {start_logits.shape}, need [n_windows, seq_len]")
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


def _assemble(
    kept: Candidates,
    rank: np.ndarray,
    null: np.ndarray,
    example_ids: list[str],
    contexts: list[str],
    null_threshold: float | None,
) -> Decoded:
    """Entries (spans, and the null answer for v2 at its place by score), probabilities, null odds and answers.

    Every number is computed for all questions at once; the only per-question Python work is slicing the
    answer text. The n-best lists are :class:`NBestLists`, whose entries are built when a question is read.
    """
    n = len(example_ids)
    n_spans = np.bincount(kept.ex, minlength=n)
    best = np.full(n, -np.inf)
    best[kept.ex[rank == 0]] = kept.score[rank == 0]
    with_null = np.isfinite(null) if null_threshold is not None else np.zeros(n, dtype=bool)
    # the null entry goes after every span scoring at least as much (a stable sort of spans + null by score)
    null_at = np.bincount(kept.ex, weights=kept.score >= null[kept.ex], minlength=n).astype(np.int64)
    n_entries = n_spans + with_null
    first = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_entries, out=first[1:])
    span_pos = first[kept.ex] + rank + (with_null[kept.ex] & (rank >= null_at[kept.ex]))
    null_ex = np.flatnonzero(with_null)
    null_pos = first[null_ex] + null_at[null_ex]

    total = int(first[-1])
    ex_e = np.empty(total, dtype=np.int64)
    score_e = np.empty(total)
    start_e = np.full(total, -1, dtype=np.int64)
    end_e = np.full(total, -1, dtype=np.int64)
    ex_e[span_pos], score_e[span_pos], start_e[span_pos], end_e[span_pos] = (
        kept.ex,
        kept.score,
        kept.start,
        kept.end,
    )
    ex_e[null_pos], score_e[null_pos] = null_ex, null[null_ex]
    col = np.arange(total) - first[ex_e]
    padded = np.full((n, int(n_entries.max(initial=0))), -np.inf)
    padded[ex_e, col] = score_e
    prob_e = softmax_rows(padded)[ex_e, col]

    with np.errstate(invalid="ignore"):
        odds = np.where(np.isfinite(null), null - best, -np.inf)
    odds = np.where(np.isfinite(odds), odds, np.where(odds > 0, 1e9, -1e9))
    answered = n_spans > 0
    if null_threshold is not None:
        answered &= odds <= null_threshold
    top = np.where(answered, first[:-1] + (with_null & (null_at == 0)), -1)
    asked = np.flatnonzero(answered).tolist()
    starts, ends = start_e[top[asked]].tolist(), end_e[top[asked]].tolist()
    best_span = {example_ids[i]: (a, b) for i, a, b in zip(asked, starts, ends)}
    predictions = dict.fromkeys(example_ids, "")
    predictions.update({example_ids[i]: contexts[i][a:b] for i, a, b in zip(asked, starts, ends)})
    nbest = NBestLists(example_ids, contexts, first, (ex_e, score_e, start_e, end_e, prob_e))
    return Decoded(
        predictions=predictions,
        nbest=nbest,
        null_odds=dict(zip(example_ids, odds.tolist())),
        best_span=best_span,
    )


class NBestLists(Mapping[str, list[NBestCandidate]]):
    """Question id -> n-best list, kept as columns and turned into :class:`NBestCandidate` objects when read.

    A decode keeps about 20 entries per question; building them all as objects took most of a decode's time
    (about 20 ms of 45 on XQuAD de), while callers mostly read a few questions (the server) or write them
    all once (``nbest_predictions.json``). Each list is built on first access and then kept.
    """

    def __init__(self, example_ids: list[str], contexts: list[str], first: np.ndarray, columns) -> None:
        self._row = {q: i for i, q in enumerate(example_ids)}
        self._contexts = contexts
        self._first = first
        self._columns = columns  # per entry: example, score, start, end, probability
        self._built: dict[str, list[NBestCandidate]] = {}

    def __getitem__(self, qid: str) -> list[NBestCandidate]:
        got = self._built.get(qid)
        if got is None:
            i = self._row[qid]
            a, b = int(self._first[i]), int(self._first[i + 1])
            _, score, start, end, prob = (c[a:b].tolist() for c in self._columns)
            ctx = self._contexts[i]
            texts = [ctx[s:e] for s, e in zip(start, end)]  # the null entry: [-1:-1] == ""
            got = self._built[qid] = list(map(NBestCandidate, texts, score, start, end, prob))
        return got

    def __iter__(self) -> Iterator[str]:
        return iter(self._row)

    def values(self) -> ValuesView[list[NBestCandidate]]:
        self._build_all()
        return self._built.values()

    def items(self) -> ItemsView[str, list[NBestCandidate]]:
        self._build_all()
        return self._built.items()

    def _build_all(self) -> None:
        """Every list at once (column-wise, a fraction of the cost of one question at a time), in id order."""
        if len(self._built) == len(self._row):
            return
        ex, score, start, end, prob = (c.tolist() for c in self._columns)
        texts = [self._contexts[i][a:b] for i, a, b in zip(ex, start, end)]
        entries = list(map(NBestCandidate, texts, score, start, end, prob))
        bounds = self._first.tolist()
        built = {q: entries[bounds[i] : bounds[i + 1]] for q, i in self._row.items()}
        built.update(self._built)  # lists already handed out stay the same objects
        self._built = {q: built[q] for q in self._row}

    def __len__(self) -> int:
        return len(self._row)


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

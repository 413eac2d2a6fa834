"""The numeric half of span decoding, for all windows and questions at once (numpy only, no Python loop over
windows, questions or candidate pairs).

:func:`window_candidates` pairs every window's ``top_k`` best start and end tokens inside the context and keeps,
per window, only the pairs that can still reach a question's n-best list; :func:`rank_per_example` ranks the
survivors of all windows of a question together, keeps one entry per character span and cuts to ``n_best``.

The rules are exact, so that the result equals a per-question double loop (``tests/test_postprocess_reference.py``)
bit for bit: among equal logits the earlier token is a top-k candidate; among equal span scores the smaller
character offsets rank first; a character span found in several windows (or by several token pairs) keeps its
best score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# English, in the subword tokenizers of multilingual QA: 0.217 mBERT and 0.232 XLM-R tokens per character of
# the XQuAD en contexts; the unit :func:`free_lengths` measures other languages' fertility against.
ENGLISH_TOKENS_PER_CHAR = 0.225


@dataclass
class Candidates:
    """Candidate spans as parallel arrays: example, character start and end, score (start + end logit), and a
    window that holds the span (every window holding it has the same tokens inside it)."""

    ex: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray
    win: np.ndarray

    def take(self, index: np.ndarray) -> Candidates:
        return Candidates(
            self.ex[index], self.start[index], self.end[index], self.score[index], self.win[index]
        )


def top_k_columns(x: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values of every row of ``x`` (``[n, k]``, ascending columns).

    Among values equal to the k-th largest the earlier columns are taken, as a stable descending sort would.
    ``x`` must hold no NaN.
    """
    n, width = x.shape
    k = min(k, width)
    if k == width:
        return np.broadcast_to(np.arange(width), (n, width)).copy()
    ordered = np.sort(x, axis=1)  # sorting whole rows beats partitioning them (SIMD sort)
    kth = ordered[:, width - k]
    take = x >= kth[:, None]
    tied = np.flatnonzero(ordered[:, width - k - 1] == kth)  # more than k values reach the k-th largest
    if len(tied):  # of the values equal to the k-th largest, the earliest
        sub, cut = x[tied], kth[tied, None]
        equal = sub == cut
        room = k - np.count_nonzero(sub > cut, axis=1)
        take[tied] = (sub > cut) | (equal & (np.cumsum(equal, axis=1) <= room[:, None]))
    return (np.flatnonzero(take) % width).reshape(n, k)


def _masked(start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray):
    """Both logits with -inf outside the context and wherever they are not finite (never candidates)."""
    dtype = np.result_type(start_logits.dtype, end_logits.dtype, np.float32)
    in_context = offsets[..., 0] >= 0
    out = []
    for logits in (start_logits, end_logits):
        masked = np.where(in_context, logits, dtype.type(-np.inf)).astype(dtype, copy=False)
        top = masked.max(initial=-np.inf)
        if np.isnan(top) or top == np.inf:  # NaN or +inf logits (rare): never candidates either
            masked = np.where(masked < np.inf, masked, -np.inf)
        out.append(masked)
    return out


def _multiplicity(char_pos: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Per row of ``[n, k]`` character offsets, how often the most repeated usable one occurs (1: all distinct).

    Tokens share an offset where a tokenizer splits one character or glues a bare word-start piece (XLM-R's
    "▁") to it; then different token pairs of one window can be the same character span.
    """
    n, k = char_pos.shape
    tagged = np.where(usable, char_pos, -1 - np.arange(k))  # unusable entries made distinct
    tagged.sort(axis=1)
    same = tagged[:, 1:] == tagged[:, :-1]  # equal offsets are neighbours: the longest run of them
    run = np.zeros(n, dtype=np.int64)
    longest = np.zeros(n, dtype=np.int64)
    for j in range(k - 1):  # k columns, all rows at once
        run = (run + 1) * same[:, j]
        np.maximum(longest, run, out=longest)
    return longest + 1


def _valid_pairs(s_tok, e_tok, s_ok, e_ok, max_answer_length, seq_len: int) -> np.ndarray:
    """``[W, k, k]``: usable start and end tokens, end not before start, at most ``max_answer_length`` tokens
    (one number, or one per window).

    One unsigned subtraction tests it all: an end before its start wraps around to a large number, and so do
    the stand-in positions given to unusable tokens.
    """
    if seq_len < 2**15:
        s_pos = np.where(s_ok, s_tok, 2**15).astype(np.uint16)
        e_pos = np.where(e_ok, e_tok, 2**16 - 1).astype(np.uint16)
    else:
        s_pos = np.where(s_ok, s_tok, 2**40).astype(np.uint64)
        e_pos = np.where(e_ok, e_tok, 2**41).astype(np.uint64)
    limit = np.clip(max_answer_length, 0, seq_len).astype(s_pos.dtype)
    if limit.ndim:
        limit = limit[:, None, None]
    return (e_pos[:, None, :] - s_pos[:, :, None]) < limit


def _best_pairs(
    s_val: np.ndarray, e_val: np.ndarray, valid: np.ndarray, need: np.ndarray, shift: tuple | None
) -> np.ndarray:
    """Flat indices into ``[W, k, k]`` of at least the ``need[w]`` best valid pairs of every window, and of
    every pair tied with the last of them.

    A pair scores ``s_val + e_val``, or with a length penalty (``shift``: start and end shifts ``[W, k]`` and
    a bound ``[W]`` of their size) the smaller of that and ``(s_val + s_shift) + (e_val + e_shift)``, which is
    the score less the penalty for the span's tokens beyond the free length (a line in the span's length).
    The cut is found on float32 sums (half the memory traffic of float64) and lowered by their worst error,
    ``16 * 2**-24`` times the largest logit (plus the shifts) of the window, so that the selection keeps every
    pair the exact cut keeps (and perhaps a few more, which ranking sorts out). Invalid pairs are pushed down
    by -3e38 (arithmetic: ``np.where`` on a scattered mask costs several times more).
    """
    n_win, k_s, k_e = valid.shape
    big = np.maximum(
        np.abs(np.where(s_val > -np.inf, s_val, 0)).max(1), np.abs(np.where(e_val > -np.inf, e_val, 0)).max(1)
    )
    if shift is not None:
        big = big + shift[2]
    if (big < 1e30).all():
        approx = s_val.astype(np.float32)[:, :, None] + e_val.astype(np.float32)[:, None, :]
        if shift is not None:
            s2, e2 = (s_val + shift[0]).astype(np.float32), (e_val + shift[1]).astype(np.float32)
            np.minimum(approx, s2[:, :, None] + e2[:, None, :], out=approx)
        approx -= (valid.view(np.uint8) ^ np.uint8(1)) * np.float32(3e38)
        margin = 16 * 2.0**-24 * big
    else:  # float32 would overflow: cut on float64
        approx = s_val[:, :, None] + e_val[:, None, :]
        margin = 0.0
        if shift is not None:
            approx = np.minimum(approx, (s_val + shift[0])[:, :, None] + (e_val + shift[1])[:, None, :])
            margin = 16 * 2.0**-52 * big
        approx = np.where(valid, approx, -np.inf)
    approx = approx.reshape(n_win, k_s * k_e)
    cut = np.sort(approx, axis=1)[np.arange(n_win), np.maximum(k_s * k_e - need, 0)].astype(np.float64)
    low = np.nextafter((cut - margin).astype(approx.dtype), approx.dtype.type(-np.inf))
    chosen = approx >= low[:, None]
    if (low < -1e38).any():  # a window with fewer valid pairs than it needs: its cut fell among invalid ones
        chosen &= valid.reshape(n_win, k_s * k_e)
    return np.flatnonzero(chosen)


def free_lengths(offsets: np.ndarray, free_tokens: float) -> np.ndarray:
    """Per window, ``free_tokens`` English-like tokens in the window's own tokens: ``free_tokens`` times the
    tokens per character of its context over :data:`ENGLISH_TOKENS_PER_CHAR`.

    A tokenizer cuts some languages far finer than English (mBERT: Thai 2.8x, Greek 1.8x the tokens per
    character), so an answer of the same content is that many more tokens. Characters include spaces; for
    scripts that pack a word into one or two characters (Chinese) this gives more room than the content needs,
    which costs little: the penalty only demotes long spans, it never drops them.
    """
    in_context = offsets[..., 0] >= 0
    n_tokens = np.count_nonzero(in_context, axis=1)
    rows = np.arange(len(offsets))
    first = offsets[rows, in_context.argmax(axis=1), 0]  # offsets grow along the context
    last = offsets[..., 1].max(axis=1, initial=0)
    chars = np.maximum(last - first, 1)
    fertility = np.where(n_tokens > 0, n_tokens / chars / ENGLISH_TOKENS_PER_CHAR, 1.0)
    return free_tokens * fertility


def _length_shift(s_tok, e_tok, free: np.ndarray, per_token: float, seq_len: int) -> tuple:
    """The shifts of :func:`_best_pairs` for a penalty of ``per_token`` per token beyond ``free``: a span
    ``[s, e]`` beyond it loses ``per_token * (e - s + 1 - free)``, which is ``per_token * (s - 1 + free)`` on
    the start and ``-per_token * e`` on the end; their size is below ``per_token * (seq_len + free)``."""
    s_shift = per_token * (s_tok - 1 + free[:, None])
    e_shift = -per_token * e_tok.astype(np.float64)
    return s_shift, e_shift, per_token * (seq_len + np.abs(free))


def _exact_penalty(score: np.ndarray, length: np.ndarray, free: np.ndarray, per_token: float) -> np.ndarray:
    """``score`` less ``per_token`` times the tokens of ``length`` beyond ``free``, where there are some."""
    over = length - free
    return np.where(over > 0, score - per_token * over, score)


def window_candidates(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    example_index: np.ndarray,
    *,
    top_k: int,
    max_answer_length: int,
    n_best: int,
    length_penalty: float = 0.0,
    free_length: np.ndarray | None = None,
) -> Candidates:
    """The pairs of every window's ``top_k`` start x ``top_k`` end context tokens that can make the n-best list.

    A pair is valid when both tokens are context tokens with finite logits, the end is not before the start and
    the span has at most ``max_answer_length`` tokens. Its score is the start plus the end logit, less
    ``length_penalty`` for every token beyond the window's ``free_length`` (when both are given). Each n-best
    span of a question is the best pair of some window, with fewer than ``n_best`` other distinct spans ranked
    above it there; a span occurs at most ``m`` times among a window's pairs (``m``: how many of its candidate
    tokens share a start offset, times the same for ends), so a window only needs its ``n_best * m`` best pairs
    (and any tied with the last of them).
    """
    n_win, seq_len = start_logits.shape
    s_masked, e_masked = _masked(start_logits, end_logits, offsets)
    rows = np.arange(n_win)[:, None]
    s_tok = top_k_columns(s_masked, top_k)  # [W, k]
    e_tok = top_k_columns(e_masked, top_k)
    s_val = s_masked[rows, s_tok].astype(np.float64)
    e_val = e_masked[rows, e_tok].astype(np.float64)
    char_start = offsets[rows, s_tok, 0].astype(np.int64)
    char_end = offsets[rows, e_tok, 1].astype(np.int64)

    s_ok, e_ok = s_val > -np.inf, e_val > -np.inf
    valid = _valid_pairs(s_tok, e_tok, s_ok, e_ok, max_answer_length, seq_len)  # all k x k pairs: [W, k, k]
    need = n_best * _multiplicity(char_start, s_ok) * _multiplicity(char_end, e_ok)
    penalized = length_penalty > 0 and free_length is not None
    shift = _length_shift(s_tok, e_tok, free_length, length_penalty, seq_len) if penalized else None
    keep = _best_pairs(s_val, e_val, valid, need, shift)
    k_s, k_e = valid.shape[1:]
    win = keep // (k_s * k_e)
    at_s, at_e = keep // k_e, win * k_e + keep % k_e  # flat indices into the [W, k] start and end columns
    score = s_val.ravel()[at_s] + e_val.ravel()[at_e]
    if penalized:
        length = e_tok.ravel()[at_e] - s_tok.ravel()[at_s] + 1
        score = _exact_penalty(score, length, free_length[win], length_penalty)
    return Candidates(
        ex=example_index[win],
        start=char_start.ravel()[at_s],
        end=char_end.ravel()[at_e],
        score=score,
        win=win,
    )


def rank_per_example(cands: Candidates, n_best: int) -> tuple[Candidates, np.ndarray]:
    """The ``n_best`` best distinct character spans of each example, grouped by example, best first.

    Ranked by score, then character start, then end; a span found more than once keeps its best score.
    Returns the kept candidates and each one's rank within its example.
    """
    n = len(cands.ex)
    if n == 0:
        return cands, np.zeros(0, dtype=np.int64)
    # one integer key per candidate: (example, score rank, start, end), where it fits in 63 bits
    by_score = np.argsort(-cands.score)
    new = np.ones(n, dtype=bool)
    new[1:] = cands.score[by_score[1:]] != cands.score[by_score[:-1]]
    score_rank = np.empty(n, dtype=np.int64)
    score_rank[by_score] = np.cumsum(new) - 1
    width = int(max(cands.start.max(), cands.end.max(), 0)) + 2
    span = (cands.start + 1) * width + (cands.end + 1)  # offsets >= -1
    n_ranks = int(score_rank.max()) + 1
    if int(cands.ex.max() + 1) * n_ranks * width * width < 2**62:
        order = np.argsort(
            (cands.ex * n_ranks + score_rank) * (width * width) + span
        )  # equal keys: the same span, in windows that hold the same tokens there
    else:
        order = np.lexsort((cands.end, cands.start, score_rank, cands.ex))
    # the same span again (overlapping windows, tokens sharing offsets) ranks after its best occurrence: keep
    # the first of each (example, span) in ranked order
    ex = cands.ex[order]
    key = ex * (width * width) + span[order]
    by_span = np.argsort(key)
    first = np.ones(n, dtype=bool)
    first[1:] = key[by_span[1:]] != key[by_span[:-1]]
    keep = np.zeros(n, dtype=bool)
    keep[np.minimum.reduceat(by_span, np.flatnonzero(first))] = True
    order, ex = order[keep], ex[keep]
    head = np.flatnonzero(np.diff(ex, prepend=-1))  # each example's best
    rank = np.arange(len(ex)) - np.repeat(head, np.diff(np.append(head, len(ex))))
    top = rank < n_best
    return cands.take(order[top]), rank[top]


def null_scores(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    cls_index: np.ndarray,
    example_index: np.ndarray,
    n_ex: int,
) -> np.ndarray:
    """Per example, the smallest CLS score (start + end logit) over its windows; inf for one without windows."""
    rows = np.arange(len(cls_index))
    null_win = start_logits[rows, cls_index].astype(np.float64) + end_logits[rows, cls_index].astype(
        np.float64
    )
    null_score = np.full(n_ex, np.inf)
    np.minimum.at(null_score, example_index, null_win)
    return null_score


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Softmax of each row of ``[n, m]`` scores sorted best first, ``-inf`` padded (a row needs one finite score).

    The sum runs left to right over the columns, as a plain loop over one row's scores would, so the
    probabilities are the same to the last bit as those of a per-question computation.
    """
    with np.errstate(invalid="ignore"):
        p = np.exp(scores - scores[:, :1])
    p[scores == -np.inf] = 0.0
    total = np.zeros(len(scores))
    for j in range(scores.shape[1]):  # m <= n_best + 1 columns, all rows at once
        total += p[:, j]
    with np.errstate(invalid="ignore", divide="ignore"):
        return p / total[:, None]

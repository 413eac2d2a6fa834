"""Vectorized span decoding agrees with a brute-force reference and handles the edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from xlqa.postprocess import best_null_threshold, decode, pad_ragged, trim_span
from xlqa.spans import ENGLISH_TOKENS_PER_CHAR, free_lengths


def _brute(start, end, offsets, ex_index, cls, ids, contexts, max_len, null_threshold=None):
    """Reference: every (start, end) pair of every window, in plain Python."""
    best = {q: (-np.inf, None) for q in ids}
    null = {q: np.inf for q in ids}
    for w in range(start.shape[0]):
        q = ids[ex_index[w]]
        null[q] = min(null[q], start[w, cls[w]] + end[w, cls[w]])
        for s in range(start.shape[1]):
            for e in range(s, min(s + max_len, start.shape[1])):
                if offsets[w, s, 0] < 0 or offsets[w, e, 0] < 0:
                    continue
                sc = start[w, s] + end[w, e]
                if sc > best[q][0]:
                    best[q] = (sc, contexts[ex_index[w]][offsets[w, s, 0] : offsets[w, e, 1]])
    preds = {}
    for q in ids:
        text = best[q][1] or ""
        if null_threshold is not None and null[q] - best[q][0] > null_threshold:
            text = ""
        preds[q] = text
    return preds


def _random_case(rng, n_ex=6, seq=24, ctx_from=5):
    contexts = ["".join(rng.choice(list("abcdefgh ")) for _ in range(200)) for _ in range(n_ex)]
    ex_index = np.repeat(np.arange(n_ex), rng.integers(1, 4, size=n_ex))
    W = len(ex_index)
    offsets = np.full((W, seq, 2), -1, dtype=np.int64)
    for w in range(W):
        base = rng.integers(0, 100)
        n_ctx = rng.integers(3, seq - ctx_from)
        pos = base + np.arange(n_ctx) * 3
        offsets[w, ctx_from : ctx_from + n_ctx, 0] = pos
        offsets[w, ctx_from : ctx_from + n_ctx, 1] = pos + 2
    start = rng.normal(size=(W, seq))
    end = rng.normal(size=(W, seq))
    cls = np.zeros(W, dtype=np.int64)
    return start, end, offsets, ex_index, cls, [f"q{i}" for i in range(n_ex)], contexts


@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    start, end, offsets, ex_index, cls, ids, contexts = _random_case(rng)
    got = decode(start, end, offsets, ex_index, cls, ids, contexts, max_answer_length=5, top_k=24, trim=False)
    want = _brute(start, end, offsets, ex_index, cls, ids, contexts, max_len=5)
    assert got.predictions == want


@pytest.mark.parametrize("seed", range(4))
def test_null_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    start, end, offsets, ex_index, cls, ids, contexts = _random_case(rng)
    start[:, 0] += rng.normal(size=start.shape[0]) * 3
    for thr in (-1.0, 0.0, 1.5):
        got = decode(
            start,
            end,
            offsets,
            ex_index,
            cls,
            ids,
            contexts,
            max_answer_length=4,
            top_k=24,
            null_threshold=thr,
            trim=False,
        )
        want = _brute(start, end, offsets, ex_index, cls, ids, contexts, max_len=4, null_threshold=thr)
        assert got.predictions == want


def test_spans_stay_inside_the_context_and_in_order():
    ctx = "Paris is the capital of France."
    offsets = np.array([[[-1, -1], [-1, -1], [0, 5], [6, 8], [9, 12], [13, 20], [-1, -1]]])
    start = np.array([[9.0, 9.0, 1.0, 0.0, 0.0, 0.0, 9.0]])  # the best logits sit on non-context tokens
    end = np.array([[9.0, 0.0, 0.0, 0.0, 0.0, 2.0, 9.0]])
    dec = decode(start, end, offsets, np.array([0]), np.array([0]), ["a"], [ctx])
    assert dec.predictions["a"] == "Paris is the capital"
    # an end before the start is never chosen
    start = np.array([[0, 0, 0, 0, 0, 5.0, 0]])
    end = np.array([[0, 0, 5.0, 0, 0, 0, 0]])
    dec = decode(start, end, offsets, np.array([0]), np.array([0]), ["a"], [ctx])
    s, e = dec.best_span["a"]
    assert s < e


def test_nbest_is_deduplicated_ranked_and_normalized():
    rng = np.random.default_rng(7)
    start, end, offsets, ex_index, cls, ids, contexts = _random_case(rng)
    dec = decode(start, end, offsets, ex_index, cls, ids, contexts, n_best=5, trim=False)
    for q, entries in dec.nbest.items():
        assert 1 <= len(entries) <= 5
        spans = [(e.start, e.end) for e in entries]
        assert len(set(spans)) == len(spans)
        scores = [e.score for e in entries]
        assert scores == sorted(scores, reverse=True)
        assert abs(sum(e.probability for e in entries) - 1) < 1e-9
        assert entries[0].text == dec.predictions[q]


def test_question_without_context_tokens_gets_empty_answer():
    offsets = np.full((1, 4, 2), -1)
    dec = decode(np.zeros((1, 4)), np.zeros((1, 4)), offsets, np.array([0]), np.array([0]), ["x"], ["ctx"])
    assert dec.predictions == {"x": ""}


def test_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        decode(
            np.zeros((2, 4)), np.zeros((2, 5)), np.zeros((2, 4, 2)), np.zeros(2), np.zeros(2), ["a"], ["c"]
        )


def test_pad_ragged():
    out = pad_ragged([np.array([1.0, 2.0]), np.array([3.0])], fill=-np.inf)
    assert out.shape == (2, 2) and out[1, 1] == -np.inf


def test_best_null_threshold_separates_answerable_from_not():
    gold = {"a": ["x"], "b": ["y"], "c": [], "d": []}
    odds = {"a": -3.0, "b": -1.0, "c": 2.0, "d": 4.0}
    f1 = {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0}
    t = best_null_threshold(odds, gold, f1)
    assert -1.0 < t < 2.0


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("William Iron Arm)，", "William Iron Arm)"),
        ("欧洲人权法院。", "欧洲人权法院。"),  # full stops stay: translated gold answers often end with one
        ('"آلة لإنهاء الحرب"،', '"آلة لإنهاء الحرب"'),
        (" 2014, ", "2014"),
        ("«Paris»", "«Paris»"),  # paired quotes stay
        ("...", "..."),  # never trimmed to nothing
    ],
)
def test_trim_span(text, want):
    s, e = trim_span(text, 0, len(text))
    assert text[s:e] == want


def test_decode_trims_glued_punctuation():
    ctx = "计算问题，很难"
    offsets = np.array([[[-1, -1], [0, 5], [5, 7], [-1, -1]]])
    start = np.array([[0, 5.0, 0, 0]])
    end = np.array([[0, 5.0, 0, 0]])
    dec = decode(start, end, offsets, np.array([0]), np.array([0]), ["z"], [ctx])
    assert dec.predictions["z"] == "计算问题"


def test_trim_span_keeps_a_punctuation_token_of_its_own():
    """Only what the edge token glued goes: "،" as its own last token was the model's choice (mBERT's)."""
    text = "الحرب، ثم"
    assert trim_span(text, 0, 6, start_token_end=5, end_token_start=5) == (0, 6)  # tokens "الحرب" "،"
    assert trim_span(text, 0, 6, start_token_end=6, end_token_start=0) == (0, 5)  # one token "الحرب،"
    assert trim_span(" ،x", 0, 3, start_token_end=2, end_token_start=2) == (0, 3)  # leading " ،" token stays
    assert trim_span(" ،x", 0, 3, start_token_end=3, end_token_start=0) == (2, 3)


def test_decode_keeps_punctuation_tokens_and_trims_glued_ones():
    ctx = "قال إن الحرب، انتهت"
    # mBERT-like: "الحرب" and "،" are tokens; XLM-R-like: one token "الحرب،"
    split = np.array([[[-1, -1], [0, 3], [4, 6], [7, 12], [12, 13], [14, 19], [-1, -1]]])
    glued = np.array([[[-1, -1], [0, 3], [4, 6], [7, 13], [14, 19], [-1, -1], [-1, -1]]])
    for offsets, end_tok, want in ((split, 4, "الحرب،"), (glued, 3, "الحرب")):
        start = np.zeros((1, 7))
        end = np.zeros((1, 7))
        start[0, 3] = end[0, end_tok] = 9.0
        dec = decode(start, end, offsets, np.array([0]), np.array([0]), ["a"], [ctx])
        assert dec.predictions["a"] == want


def test_length_penalty_prefers_the_shorter_of_close_spans():
    """A span longer than its window's free length pays per token: a 2-token span beats a 40-token one
    whose logits are only slightly higher, unless the penalty is off."""
    n = 48
    ctx = " ".join(f"w{i:03d}" for i in range(n))  # 4 characters a word, 1 token a word
    offsets = np.full((1, n + 2, 2), -1)
    offsets[0, 1 : n + 1] = [(5 * i, 5 * i + 4) for i in range(n)]
    start = np.zeros((1, n + 2))
    end = np.zeros((1, n + 2))
    start[0, 2] = 5.0
    end[0, 3], end[0, 41] = 4.0, 4.5  # the 2-token span [2, 3] or the 40-token span [2, 41]
    args = (start, end, offsets, np.array([0]), np.array([0]), ["a"], [ctx])
    assert decode(*args, length_penalty=0.0).predictions["a"] == ctx[5:204]
    assert decode(*args).predictions["a"] == "w001 w002"
    assert decode(*args).nbest["a"][0].score == 9.0


def test_free_length_follows_the_tokenizer_fertility():
    """Twice the tokens per character (a tokenizer cutting the language finer) gives twice the free length."""
    coarse = np.full((1, 10, 2), -1)
    coarse[0, 1:9] = [(10 * i, 10 * i + 9) for i in range(8)]  # 8 tokens over 79 characters
    fine = np.full((1, 18, 2), -1)
    fine[0, 1:17] = [(5 * i, 5 * i + 4) for i in range(16)]  # 16 tokens over 79 characters
    a, b = free_lengths(coarse, 10.0)[0], free_lengths(fine, 10.0)[0]
    assert b == pytest.approx(2 * a) and a == pytest.approx(10 * 8 / 79 / ENGLISH_TOKENS_PER_CHAR)
    assert free_lengths(np.full((1, 4, 2), -1), 10.0)[0] == 10.0  # no context: English-like

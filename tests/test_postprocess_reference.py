"""The vectorized span decoder gives exactly the answers of the usual recipe's per-example double loop.

``reference_decode`` is the post-processing of the transformers ``run_qa.py`` example
(``postprocess_qa_predictions``), written here from its description and not copied: for each question, for each
of its windows, the ``top_k`` best start and end tokens (``np.argsort``), a Python double loop over the pairs
that drops invalid ones, then a sort, the n-best texts and a softmax per question. It follows xlqa's rules where
the recipe has none: candidates are the best tokens *inside the context* (ties: the earlier token), one entry per
character span (its best window), ties ranked by character offsets, edge trimming (``trim_span``), the SQuAD v2
null score is the smallest CLS score over the windows and the softmax sums left to right. The benchmark
``benchmarks/bench_postprocess.py`` times it against :func:`xlqa.postprocess.decode` on real logits.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from xlqa.data import load_squad
from xlqa.features import FeatureParams, build_features
from xlqa.postprocess import (
    FREE_ANSWER_TOKENS,
    LENGTH_PENALTY,
    MAX_ANSWER_LENGTH,
    Decoded,
    decode,
    trim_span,
    trim_spans,
)
from xlqa.predict import padded_offsets
from xlqa.results import NBestCandidate
from xlqa.spans import ENGLISH_TOKENS_PER_CHAR, top_k_columns


def reference_decode(
    start_logits,
    end_logits,
    offsets,
    example_index,
    cls_index,
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
    """The per-example double loop; same arguments and result as :func:`xlqa.postprocess.decode`."""
    if np.asarray(start_logits).size == 0:  # no windows at all: xlqa answers "" with odds 0
        return Decoded(
            {q: "" for q in example_ids}, {q: [] for q in example_ids}, {q: 0.0 for q in example_ids}
        )
    features_per_example = defaultdict(list)
    for w, i in enumerate(np.asarray(example_index).tolist()):
        features_per_example[i].append(w)
    out = Decoded(predictions={}, nbest={}, null_odds={}, best_span={})
    for i, qid in enumerate(example_ids):
        prelim_predictions = []
        min_null_score = math.inf
        for w in features_per_example[i]:
            s_log = np.asarray(start_logits[w], dtype=np.float64)
            e_log = np.asarray(end_logits[w], dtype=np.float64)
            cls = int(cls_index[w])
            min_null_score = min(min_null_score, float(s_log[cls] + e_log[cls]))
            # xlqa: the best tokens *of the context* (finite logits; ties: the earlier token); the recipe's
            # offset_mapping holds None for the tokens that cannot be a start (or an end)
            in_context = np.asarray(offsets[w])[:, 0] >= 0
            s_cand = np.where(in_context & np.isfinite(s_log), s_log, -np.inf)
            e_cand = np.where(in_context & np.isfinite(e_log), e_log, -np.inf)
            pairs = np.asarray(offsets[w]).tolist()
            free = _free_tokens(pairs, free_answer_tokens) if length_penalty > 0 else math.inf
            start_map = [o if ok else None for o, ok in zip(pairs, (s_cand > -np.inf).tolist())]
            end_map = [o if ok else None for o, ok in zip(pairs, (e_cand > -np.inf).tolist())]
            start_indexes = np.argsort(-s_cand, kind="stable")[:top_k].tolist()
            end_indexes = np.argsort(-e_cand, kind="stable")[:top_k].tolist()
            for s in start_indexes:
                for e in end_indexes:
                    if (
                        s >= len(start_map)
                        or e >= len(end_map)
                        or start_map[s] is None
                        or len(start_map[s]) < 2
                        or end_map[e] is None
                        or len(end_map[e]) < 2
                    ):
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    score = s_log[s] + e_log[e]
                    if length_penalty > 0 and e - s + 1 - free > 0:  # xlqa: long spans pay per token
                        score = score - length_penalty * (e - s + 1 - free)
                    prelim_predictions.append(
                        {
                            "offsets": (start_map[s][0], end_map[e][1]),
                            "score": score,
                            "start_logit": s_log[s],
                            "end_logit": e_log[e],
                            "window": w,
                        }
                    )
        # xlqa: ties ranked by character offsets; one entry per character span (its best window)
        prelim_predictions.sort(key=lambda p: (-p["score"], p["offsets"]))
        predictions, seen = [], set()
        for p in prelim_predictions:
            if len(predictions) == n_best:
                break
            if p["offsets"] not in seen:
                seen.add(p["offsets"])
                predictions.append(p)
        _finish(out, qid, contexts[i], predictions, min_null_score, null_threshold, offsets if trim else None)
    return out


def _free_tokens(window_offsets: list, free_answer_tokens: float) -> float:
    """The window's free answer length: ``free_answer_tokens`` times its context tokens per character over
    xlqa's English rate (1.0 for a window without context)."""
    context = [(a, b) for a, b in window_offsets if a >= 0]
    if not context:
        return free_answer_tokens * 1.0
    chars = max(max(b for _, b in window_offsets) - context[0][0], 1)  # from the first context token
    return free_answer_tokens * (len(context) / chars / ENGLISH_TOKENS_PER_CHAR)


def _edge_tokens(window_offsets, cs: int, ce: int) -> tuple[int, int]:
    """The end of the longest context token starting at ``cs`` and the start of the one ending at ``ce``."""
    pairs = [(a, b) for a, b in np.asarray(window_offsets).tolist() if a >= 0]
    return max(b for a, b in pairs if a == cs), min(a for a, b in pairs if b == ce)


def _finish(out: Decoded, qid, ctx, predictions, null_score, null_threshold, trim_offsets) -> None:
    """One question's n-best list, probabilities, null odds and prediction, written into ``out``; spans are
    trimmed when ``trim_offsets`` (the windows' offsets) is given."""
    entries = []
    for pred in predictions:
        cs, ce = pred["offsets"]
        if trim_offsets is not None and trim_span(ctx, cs, ce) != (cs, ce):  # edge tokens only when needed
            cs, ce = trim_span(ctx, cs, ce, *_edge_tokens(trim_offsets[pred["window"]], cs, ce))
        entries.append(NBestCandidate(text=ctx[cs:ce], score=float(pred["score"]), start=cs, end=ce))
    if null_threshold is not None and math.isfinite(null_score):
        entries.append(NBestCandidate(text="", score=null_score, start=-1, end=-1))
        entries.sort(key=lambda c: -c.score)
    if entries:
        p = np.exp(np.array([c.score for c in entries]) - max(c.score for c in entries))
        total = 0.0  # summed left to right
        for x in p.tolist():
            total += x
        for c, x in zip(entries, p.tolist()):
            c.probability = x / total
    out.nbest[qid] = entries
    best_score = float(predictions[0]["score"]) if predictions else -math.inf
    odds = null_score - best_score if math.isfinite(null_score) else -math.inf
    out.null_odds[qid] = odds if math.isfinite(odds) else (1e9 if odds > 0 else -1e9)
    if predictions and (null_threshold is None or out.null_odds[qid] <= null_threshold):
        top = next(c for c in entries if c.start >= 0)
        out.predictions[qid] = top.text
        out.best_span[qid] = (top.start, top.end)
    else:
        out.predictions[qid] = ""


def assert_same_decoded(got: Decoded, want: Decoded) -> None:
    """Equal predictions, best spans, null odds and n-best lists (every field, floats bit for bit)."""
    assert got.predictions == want.predictions
    assert list(got.predictions) == list(want.predictions)
    assert got.best_span == want.best_span
    assert got.null_odds == want.null_odds
    assert list(got.nbest) == list(want.nbest)
    for qid, w in want.nbest.items():
        g = got.nbest[qid]
        assert [c.to_json() for c in g] == [c.to_json() for c in w], qid
        assert all(type(c.score) is float and type(c.probability) is float for c in g)


# ---------------------------------------------------------------------------------------------- test cases
_WORDS = ["Paris", "is", "the", "capital", "of", "France", "2014", "丛林", "«Berlin»", "9.5%", "x", "Ελλάδα"]
_GLUE = [",", "，", "、", "،", ";", ":", ".", "。", ")"]


def _context_tokens(rng, n_words: int, shared: bool) -> tuple[str, list[tuple[int, int]]]:
    """A context and its tokens' character spans: some glue a leading space or trailing punctuation (trimming
    has work to do), some make a token of the punctuation alone (as mBERT does: trimming must keep it), some
    words split in two, and with ``shared`` some tokens repeat the previous one's span."""
    text, spans = "", []
    for _ in range(n_words):
        glue = str(rng.choice(_GLUE)) if rng.random() < 0.3 else ""
        word = str(rng.choice(_WORDS)) + glue
        a = len(text) + (1 if text else 0)
        text = f"{text} {word}" if text else word
        lead = a - 1 if a > 0 and rng.random() < 0.3 else a
        alone = glue and rng.random() < 0.4  # the punctuation is a token of its own
        stop = a + len(word) - (1 if alone else 0)
        if stop - a > 3 and rng.random() < 0.3:
            spans += [(lead, a + 2), (a + 2, stop)]
        else:
            spans.append((lead, stop))
        if alone:
            spans.append((stop, stop + 1))
        if shared and rng.random() < 0.2:
            spans.append(spans[-1])
    return text, spans


def make_case(
    rng, *, n_ex=10, seq=32, n_words=(1, 40), ties=False, shared=False, shuffle=False, dtype=np.float64
):
    """Windows laid out as a tokenizer does: [CLS] question [SEP] context slice [SEP] padding (offsets -1, logits
    -inf past the end), consecutive windows of an example overlapping by half."""
    contexts, rows, ex_index, cls = [], [], [], []
    for i in range(n_ex):
        text, toks = _context_tokens(rng, int(rng.integers(*n_words)), shared)
        contexts.append(text)
        q_len = int(rng.integers(2, 7))
        room = seq - q_len - 3
        p = 0
        while True:
            part = toks[p : p + room]
            rows.append([(-1, -1)] * (q_len + 2) + part + [(-1, -1)])
            ex_index.append(i)
            cls.append(0)
            if p + room >= len(toks):
                break
            p += max(1, room // 2)
    n_win = len(rows)
    offsets = np.full((n_win, seq, 2), -1, dtype=np.int64)
    start = rng.normal(scale=3.0, size=(n_win, seq))
    end = rng.normal(scale=3.0, size=(n_win, seq))
    if ties:
        start, end = np.round(start), np.round(end)
    for w, r in enumerate(rows):
        offsets[w, : len(r)] = r
        start[w, len(r) :] = end[w, len(r) :] = -np.inf
    order = rng.permutation(n_win) if shuffle else np.arange(n_win)
    ids = [f"q{i}" for i in range(n_ex)]
    return (
        start[order].astype(dtype),
        end[order].astype(dtype),
        offsets[order],
        np.array(ex_index)[order],
        np.array(cls)[order],
        ids,
        contexts,
    )


def _both(case, **kw) -> Decoded:
    got, want = decode(*case, **kw), reference_decode(*case, **kw)
    assert_same_decoded(got, want)
    return got


# ---------------------------------------------------------------------------------------------- the tests
OPTIONS = [
    {},
    {"null_threshold": 0.0},
    {"null_threshold": -2.0, "n_best": 5},
    {"null_threshold": 3.0, "top_k": 5, "max_answer_length": 3},
    {"n_best": 1, "top_k": 3},
    {"max_answer_length": 1, "trim": False},
    {"top_k": 50, "n_best": 40, "null_threshold": 1.0},
    {"n_best": 400, "top_k": 20, "max_answer_length": 5},
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default"
)
def test_random_windows_match_the_loop(seed, opts):
    rng = np.random.default_rng(seed)
    case = make_case(rng, shuffle=seed % 2 == 1, dtype=np.float32 if seed % 3 == 0 else np.float64)
    if seed % 2:  # offsets as int32 (as cached by the benchmarks): no sentinel may wrap around
        case = (*case[:2], case[2].astype(np.int32), *case[3:])
    dec = _both(case, **opts)
    assert any(dec.predictions.values())  # the cases have answers to find


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("opts", OPTIONS[:4], ids=str)
def test_tied_logits_and_shared_offsets_match_the_loop(seed, opts):
    """Rounded logits tie everywhere (top-k cuts, span scores, null against span); tokens share spans."""
    rng = np.random.default_rng(1000 + seed)
    case = make_case(rng, ties=True, shared=seed % 2 == 0, n_words=(1, 60))
    _both(case, **opts)


def test_many_windows_per_question_match_the_loop():
    rng = np.random.default_rng(5)
    case = make_case(rng, n_ex=4, seq=16, n_words=(60, 120))
    assert len(case[0]) > 30
    for opts in OPTIONS:
        _both(case, **opts)


def test_non_finite_logits_and_questions_without_windows():
    rng = np.random.default_rng(9)
    start, end, offsets, ex_index, cls, ids, contexts = make_case(rng, n_ex=8)
    start[0, 6], end[0, 7], start[1, 8] = np.inf, np.nan, np.nan  # never candidates
    keep = ex_index != 3  # q3 loses its windows: no answer, odds -1e9
    case = (start[keep], end[keep], offsets[keep], ex_index[keep], cls[keep], ids, contexts)
    for thr in (None, 0.0):
        dec = _both(case, null_threshold=thr)
        assert dec.predictions["q3"] == "" and dec.nbest["q3"] == [] and dec.null_odds["q3"] == -1e9


def test_windows_without_context_and_empty_input():
    offsets = np.full((2, 6, 2), -1)
    offsets[1, 2:4] = [[0, 3], [4, 7]]
    logits = np.arange(12.0).reshape(2, 6)
    case = (
        logits,
        logits[:, ::-1].copy(),
        offsets,
        np.array([0, 1]),
        np.array([0, 5]),
        ["a", "b"],
        ["", "abc def"],
    )
    for thr in (None, 0.0, 100.0):
        dec = _both(case, null_threshold=thr)
        assert dec.predictions["a"] == ""
    empty = (np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0, 2)), [], [], ["a"], ["c"])
    assert _both(empty).null_odds == {"a": 0.0}


def test_the_loop_finds_the_known_answer_and_the_null():
    """The reference is itself checked on a hand-made case, so that agreeing with it means something."""
    ctx = "Paris is the capital of France."
    offsets = np.array([[[-1, -1], [-1, -1], [0, 5], [6, 8], [9, 12], [13, 20], [-1, -1]]])
    start = np.array([[1.0, 9.0, 3.0, 0.0, 0.0, 0.0, 9.0]])  # the best logits sit on non-context tokens
    end = np.array([[1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 9.0]])
    case = (start, end, offsets, np.array([0]), np.array([0]), ["a"], [ctx])
    dec = reference_decode(*case)
    assert dec.predictions["a"] == "Paris is the capital" and dec.best_span["a"] == (0, 20)
    assert dec.nbest["a"][0].score == 5.0 and dec.null_odds["a"] == 2.0 - 5.0
    assert abs(sum(c.probability for c in dec.nbest["a"]) - 1.0) < 1e-12
    assert reference_decode(*case, null_threshold=-3.5).predictions["a"] == ""
    assert reference_decode(*case, null_threshold=-2.5).predictions["a"] == "Paris is the capital"


@pytest.mark.parametrize("seed", range(3))
def test_top_k_columns_takes_the_earlier_of_equal_values(seed):
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(50, 40)))
    x[::7, 30:] = -np.inf
    for k in (1, 5, 20, 40, 60):
        got = np.sort(top_k_columns(x, k), axis=1)
        want = np.sort(np.argsort(-x, axis=1, kind="stable")[:, :k], axis=1)
        finite = np.take_along_axis(x, want, axis=1) > -np.inf
        assert np.array_equal(np.where(finite, got, 0), np.where(finite, want, 0))


def test_trim_spans_matches_trim_span():
    rng = np.random.default_rng(3)
    alphabet = [*"ab ,;:、，；：،؛\u037e。«»\u3000\u00a0\n", "丛"]
    contexts = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 30)))) for _ in range(40)]
    ex, st, en = [], [], []
    for i, c in enumerate(contexts):
        for _ in range(20):
            a, b = sorted(rng.integers(0, len(c) + 1, size=2).tolist())
            ex.append(i), st.append(a), en.append(b)
    got_s, got_e = trim_spans(contexts, np.array(ex), np.array(st), np.array(en))
    want = [trim_span(contexts[i], a, b) for i, a, b in zip(ex, st, en)]
    assert list(zip(got_s.tolist(), got_e.tolist())) == want


@pytest.fixture(scope="module")
def xquad_windows(shared_data, xlmr_tokenizer):
    """Real windows: XQuAD de tokenized by XLM-R's tokenizer, short windows so questions have several."""
    data = load_squad(shared_data / "xquad" / "xquad.de.json", max_examples=150)
    feats = build_features(data.examples, xlmr_tokenizer, FeatureParams(max_seq_length=128, doc_stride=48))
    return data.examples, feats


@pytest.mark.parametrize("peaky", [False, True])
def test_real_windows_match_the_loop(xquad_windows, peaky):
    """Real offsets (XLM-R pieces sharing spans, question tokens at -1, padding) with model-shaped logits."""
    examples, feats = xquad_windows
    rng = np.random.default_rng(int(peaky))
    lengths = feats.lengths
    shape = (len(feats), int(lengths.max()))
    start = rng.normal(scale=2.0, size=shape).astype(np.float32)
    end = rng.normal(scale=2.0, size=shape).astype(np.float32)
    if peaky:  # a trained model: a few tokens far above the rest, CLS high where the answer is elsewhere
        start[rng.random(shape) < 0.02] += 10.0
        end[rng.random(shape) < 0.02] += 10.0
    past = np.arange(shape[1]) >= lengths[:, None]
    start[past] = end[past] = -np.inf
    case = (
        start,
        end,
        padded_offsets(feats),
        feats.example_index,
        feats.cls_index,
        [e.id for e in examples],
        [e.context for e in examples],
    )
    assert len(feats) > 1.5 * len(examples)
    for thr in (None, 0.0, -3.0):
        _both(case, null_threshold=thr)
    _both(case, max_answer_length=30, n_best=10)

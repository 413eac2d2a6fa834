"""Windows, offsets and labels: exact for the mBERT and XLM-R tokenizers in every XQuAD script."""

from __future__ import annotations

import numpy as np
import pytest

from xlqa.data import Answer, Example, load_squad
from xlqa.features import FeatureParams, Features, build_features, cached_features

XQUAD_LANGS = ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]


def _ex(
    context: str, answer: str, question: str = "Where is it?", qid: str = "q1", occurrence: int = 0
) -> Example:
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(answer, start + 1)
    return Example(id=qid, question=question, context=context, answers=[Answer(answer, start)])


def _span_text(feats: Features, i: int, context: str) -> str:
    w = feats.window(i)
    s, e = feats.start_positions[i], feats.end_positions[i]
    return context[w["offsets"][s][0] : w["offsets"][e][1]]


@pytest.mark.parametrize("tok_name", ["mbert_tokenizer", "xlmr_tokenizer"])
def test_labels_cover_the_answer_in_every_window_that_holds_it(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    context = (
        " ".join(f"Sentence number {i} talks about topic {i}." for i in range(80))
        + " The Eiffel Tower is in Paris."
    )
    ex = _ex(context, "Paris")
    feats = build_features([ex], tok, FeatureParams(max_seq_length=64, doc_stride=24))
    assert len(feats) > 5  # a long context becomes many windows
    hits = [i for i in range(len(feats)) if feats.start_positions[i] != feats.cls_index[i]]
    assert hits, "the answer must be labelled in at least one window"
    for i in range(len(feats)):
        if i in hits:
            assert _span_text(feats, i, context) == "Paris"
            assert feats.end_positions[i] >= feats.start_positions[i]
        else:
            assert feats.start_positions[i] == feats.end_positions[i] == feats.cls_index[i]
        w = feats.window(i)
        assert len(w["input_ids"]) <= 64
        # offsets are -1 exactly on non-context tokens
        ctx = w["offsets"][:, 0] >= 0
        assert not ctx[0] and ctx.sum() > 0


def test_question_is_truncated(mbert_tokenizer):
    ex = _ex("Paris is a city.", "Paris", question="word " * 200)
    feats = build_features(
        [ex], mbert_tokenizer, FeatureParams(max_seq_length=128, doc_stride=32, max_query_length=16)
    )
    w = feats.window(0)
    n_question = int((w["offsets"][:, 0] < 0).sum()) - 3  # minus [CLS] [SEP] [SEP]
    assert n_question == 16
    assert _span_text(feats, 0, ex.context) == "Paris"


def test_unanswerable_and_unlocatable_questions(mbert_tokenizer):
    ctx = "Berlin is the capital of Germany."
    imp = Example(id="imp", question="Who?", context=ctx, answers=[], is_impossible=True)
    lost = Example(id="lost", question="What?", context=ctx, answers=[Answer("Paris", -1)])
    eval_feats = build_features([imp, lost], mbert_tokenizer)
    assert list(eval_feats.start_positions) == list(eval_feats.cls_index)
    train_feats = build_features([imp, lost], mbert_tokenizer, training=True)
    assert list(train_feats.example_index) == [0]  # the unlocatable answer is never trained on


def test_answer_with_surrounding_space(mbert_tokenizer):
    ctx = "The tower is in Paris today."
    ex = Example(id="s", question="Where?", context=ctx, answers=[Answer(" Paris ", ctx.index(" Paris "))])
    feats = build_features([ex], mbert_tokenizer)
    assert _span_text(feats, 0, ctx) == "Paris"


def test_left_padding_tokenizer_puts_context_first(shared_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(shared_models / "mbert-cased-tokenizer"), padding_side="left")
    ctx = " ".join(["filler"] * 100) + " The answer is Lisbon."
    ex = _ex(ctx, "Lisbon")
    feats = build_features([ex], tok, FeatureParams(max_seq_length=48, doc_stride=16))
    hits = [i for i in range(len(feats)) if feats.start_positions[i] != feats.cls_index[i]]
    assert hits and all(_span_text(feats, i, ctx) == "Lisbon" for i in hits)
    w = feats.window(0)
    assert w["offsets"][1, 0] >= 0  # context right after CLS


def test_feature_params_are_checked():
    with pytest.raises(ValueError, match="--doc-stride"):
        FeatureParams(max_seq_length=64, doc_stride=64)
    with pytest.raises(ValueError, match="--max-query-length"):
        FeatureParams(max_seq_length=64, doc_stride=16, max_query_length=0)
    assert FeatureParams(max_seq_length=64, doc_stride=16, max_query_length=40).max_query_length == 32


def test_cache_hit_and_key(tmp_path, mbert_tokenizer):
    exs = [_ex("Rome is in Italy.", "Italy"), _ex("Oslo is in Norway.", "Norway", qid="q2")]
    a = cached_features(exs, mbert_tokenizer, cache_dir=tmp_path)
    assert a.meta["cache"] == "miss"
    b = cached_features(exs, mbert_tokenizer, cache_dir=tmp_path)
    assert b.meta["cache"] == "hit"
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    c = cached_features(exs, mbert_tokenizer, FeatureParams(max_seq_length=256), cache_dir=tmp_path)
    assert c.meta["cache"] == "miss"  # other parameters, other key
    changed = [exs[0], _ex("Oslo is in Norway!", "Norway", qid="q2")]
    assert cached_features(changed, mbert_tokenizer, cache_dir=tmp_path).meta["cache"] == "miss"
    # a damaged cache entry is rebuilt, not trusted
    for f in tmp_path.glob("*.npz"):
        f.write_bytes(b"garbage")
    assert cached_features(exs, mbert_tokenizer, cache_dir=tmp_path).meta["cache"] == "miss"


def test_tokenizer_fingerprint_is_computed_once_per_tokenizer_and_padding_side(shared_models, monkeypatch):
    from transformers import AutoTokenizer

    from xlqa import features

    tok = AutoTokenizer.from_pretrained(str(shared_models / "mbert-cased-tokenizer"))
    attributes = set(vars(tok))
    hashed = []
    sha256 = features.hashlib.sha256
    monkeypatch.setattr(features.hashlib, "sha256", lambda *a: hashed.append(1) or sha256(*a))
    first = features.tokenizer_fingerprint(tok)
    assert features.tokenizer_fingerprint(tok) == first and len(hashed) == 1
    assert set(vars(tok)) == attributes  # kept beside the tokenizer, not patched onto it
    tok.padding_side = "left"
    assert features.tokenizer_fingerprint(tok) != first and len(hashed) == 2
    twin = AutoTokenizer.from_pretrained(str(shared_models / "mbert-cased-tokenizer"), padding_side="left")
    assert features.tokenizer_fingerprint(twin) == features.tokenizer_fingerprint(tok)


@pytest.mark.parametrize("tok_name", ["mbert_tokenizer", "xlmr_tokenizer"])
@pytest.mark.parametrize("lang", XQUAD_LANGS)
def test_xquad_labels_recover_the_gold_answer(request, shared_data, tok_name, lang):
    """In every XQuAD script, the labelled token span decodes to text that contains the gold answer and adds
    little; whole-token extraction loses only what the tokenizer fuses (checked in aggregate)."""
    tok = request.getfixturevalue(tok_name)
    data = load_squad(shared_data / "xquad" / f"xquad.{lang}.json", max_examples=150)
    feats = build_features(
        data.examples, tok, FeatureParams(max_seq_length=384, doc_stride=128), training=True
    )
    exact = total = 0
    for i in range(len(feats)):
        if feats.start_positions[i] == feats.cls_index[i]:
            continue
        ex = data.examples[feats.example_index[i]]
        gold = ex.train_answer.text.strip()
        got = _span_text(feats, i, ex.context)
        assert gold in got, (ex.id, gold, got)
        assert len(got) <= len(gold) + 12, (ex.id, gold, got)
        total += 1
        exact += got.strip() == gold
    assert total >= 150
    assert exact / total >= 0.9, f"{lang}: only {exact}/{total} spans decode exactly"


@pytest.mark.parametrize("tok_name", ["mbert_tokenizer", "xlmr_tokenizer"])
@pytest.mark.parametrize(("length", "stride"), [(128, 64), (64, 32), (256, 128)])
def test_a_long_question_leaves_the_stride_room_in_every_window(request, tok_name, length, stride):
    """The question is cut so that the context part of a window stays longer than the stride (the tokenizer
    refuses a stride that does not fit the room the question leaves, and windows need that room to advance)."""
    tok = request.getfixturevalue(tok_name)
    context = " ".join(f"Sentence {i} is about topic {i}." for i in range(60)) + " The answer is Lisbon."
    ex = _ex(context, "Lisbon", question=" ".join(f"long{i}" for i in range(300)) + "?")
    params = FeatureParams(max_seq_length=length, doc_stride=stride, max_query_length=length)
    feats = build_features([ex], tok, params, training=True)
    special = tok.num_special_tokens_to_add(pair=True)
    for i in range(len(feats)):
        w = feats.window(i)
        assert len(w["input_ids"]) <= length
        n_context = int((w["offsets"][:, 0] >= 0).sum())
        assert n_context > stride or i == len(feats) - 1, (i, n_context)
        assert len(w["input_ids"]) - n_context - special <= length - stride - special - 1
    hits = [i for i in range(len(feats)) if feats.start_positions[i] != feats.cls_index[i]]
    assert hits and all(_span_text(feats, i, context) == "Lisbon" for i in hits)


def test_a_stride_that_leaves_no_room_for_a_question_is_named(mbert_tokenizer):
    ex = _ex("Paris is a city.", "Paris")
    with pytest.raises(ValueError, match=r"--doc-stride 60 leaves no room .* at most 59"):
        build_features([ex], mbert_tokenizer, FeatureParams(max_seq_length=64, doc_stride=60))
    assert len(build_features([ex], mbert_tokenizer, FeatureParams(max_seq_length=64, doc_stride=59))) == 1


@pytest.mark.parametrize(("length", "stride"), [(384, 128), (256, 128), (200, 100), (128, 64), (64, 32)])
def test_an_unset_stride_is_128_or_half_the_window(length, stride, mbert_tokenizer):
    from xlqa.config import EvalConfig, TrainConfig

    assert FeatureParams(max_seq_length=length).doc_stride == stride
    train = TrainConfig(model="m", train="t.json", output="o", max_seq_length=length)
    train.validate()
    assert train.doc_stride == stride  # recorded with the run as a number
    explicit = EvalConfig(model="m", data=["d.json"], max_seq_length=length, doc_stride=7)
    explicit.validate()
    assert explicit.doc_stride == 7
    ex = _ex(" ".join(f"word{i}" for i in range(400)) + " Lisbon.", "Lisbon")
    feats = build_features([ex], mbert_tokenizer, FeatureParams(max_seq_length=length))
    first, second = feats.window(0)["offsets"], feats.window(1)["offsets"]
    overlap = {tuple(o) for o in first if o[0] >= 0} & {tuple(o) for o in second if o[0] >= 0}
    assert len(overlap) == stride


def test_a_tokenizer_panic_names_the_question_it_fails_on(mbert_tokenizer):
    """A real panic of the Rust tokenizer (a stride that does not fit the room one long question leaves) becomes a
    DataError naming that question, where pyo3's PanicException would slip past ``except Exception``."""
    from xlqa.errors import DataError
    from xlqa.features import tokenized_or_named

    context = " ".join(f"Sentence {i}." for i in range(100))
    short, long = (
        _ex(context, "Sentence 7", qid="short"),
        _ex(context, "Sentence 7", "why " * 100, qid="long"),
    )

    def call(exs):
        return mbert_tokenizer([e.question for e in exs], [e.context for e in exs], truncation="only_second",
                               max_length=128, stride=40, return_overflowing_tokens=True)  # fmt: skip

    assert len(tokenized_or_named([short], call)["input_ids"]) > 1  # what fits is tokenized as usual
    with pytest.raises(BaseException) as raw:
        call([short, long, short])
    assert type(raw.value).__name__ == "PanicException" and not isinstance(raw.value, Exception)
    with pytest.raises(DataError, match=r"question id 'long': the tokenizer failed on this question"):
        tokenized_or_named([short, long, short], call)

"""The answer ceiling: gold answers survive windowing and span decoding in every XQuAD language."""

from __future__ import annotations

import json

import pytest

from xlqa.ceiling import answer_ceiling
from xlqa.data import load_squad
from xlqa.features import FeatureParams

XQUAD_LANGS = ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]


@pytest.mark.parametrize("tok_name", ["mbert_tokenizer", "xlmr_tokenizer"])
@pytest.mark.parametrize("lang", XQUAD_LANGS)
def test_xquad_ceiling_is_at_least_99_em(request, shared_data, tok_name, lang):
    tok = request.getfixturevalue(tok_name)
    c = answer_ceiling(load_squad(shared_data / "xquad" / f"xquad.{lang}.json"), tok)
    assert c.questions == 1190 and c.not_in_window == 0 and c.too_long == 0 and c.trimmed == 0
    assert c.exact_match >= 99.0, (lang, c.exact_match, c.examples)
    assert c.f1 >= c.exact_match


def test_short_max_answer_length_shows_up_as_too_long(shared_data, mbert_tokenizer):
    """mBERT splits Thai finely: the SQuAD habit of 30 answer tokens loses answers the default keeps."""
    data = load_squad(shared_data / "xquad" / "xquad.th.json")
    c = answer_ceiling(data, mbert_tokenizer, max_answer_length=30)
    assert c.too_long > 50 and c.exact_match < 95


def test_tiny_windows_lose_answers_to_windowing(shared_data, xlmr_tokenizer):
    data = load_squad(shared_data / "xquad" / "xquad.el.json", max_examples=200)
    c = answer_ceiling(
        data, xlmr_tokenizer, FeatureParams(max_seq_length=48, doc_stride=8, max_query_length=16)
    )
    assert c.not_in_window > 0 and c.exact_match < 100 - 100 * (c.not_in_window - 1) / c.questions


def _squad_file(path, items: list[tuple[str, str]]):
    """A SQuAD v1.1 file with one question per (context, answer) pair; the answer is found in the context."""
    paragraphs = [
        {"context": ctx, "qas": [{"id": f"q{i}", "question": "ما هو؟", "answers": [
            {"text": ans, "answer_start": ctx.index(ans)}]}]}
        for i, (ctx, ans) in enumerate(items)
    ]  # fmt: skip
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return load_squad(path)


def test_gold_answers_ending_in_arabic_comma_are_kept(tmp_path, mbert_tokenizer):
    """SQuAD v1.1 rules remove only ASCII punctuation, so a gold answer ending in "،" needs it; mBERT makes "،"
    a token of its own, so the labelled span ends on it and trimming must not take it away."""
    data = _squad_file(
        tmp_path / "arabic.json",
        [
            ("قال الرئيس إن الحرب، وفق تقديره، انتهت أمس.", "الحرب،"),
            ("في عام 1990، بدأت المرحلة الثانية؛ ثم توقفت.", "المرحلة الثانية؛"),
            ("زار المدينة ثلاثة وفود، منها وفد مصر.", "ثلاثة وفود،"),
        ],
    )
    c = answer_ceiling(data, mbert_tokenizer)
    assert c.rules == "squad1" and c.questions == 3
    assert (c.exact_match, c.trimmed, c.tokenizer) == (100.0, 0, 0), c.examples


def test_trimming_glued_punctuation_is_counted_apart_from_the_tokenizer(tmp_path, xlmr_tokenizer):
    """XLM-R glues "،" to a closing quote ('"،' is one piece): a gold answer without it is won by trimming, and one
    with it is lost by trimming - a loss of the pipeline, not of the tokenizer."""
    ctx = 'وصفها الكاتب بأنها "آلة لإنهاء الحرب"، ثم غادر.'
    data = _squad_file(tmp_path / "quote.json", [(ctx, '"آلة لإنهاء الحرب"'), (ctx, '"آلة لإنهاء الحرب"،')])
    c = answer_ceiling(data, xlmr_tokenizer)
    assert (c.trim_gained, c.trimmed, c.tokenizer, c.exact_match) == (1, 1, 0, 50.0), c.examples
    assert c.pipeline == 1 and c.examples[0][0] == "q1"

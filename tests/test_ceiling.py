"""The answer ceiling: gold answers survive windowing and span decoding in every XQuAD language."""

from __future__ import annotations

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
    assert c.questions == 1190 and c.not_in_window == 0 and c.too_long == 0
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

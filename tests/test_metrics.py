"""Metrics: hand-computed cases for every rule set, errors, and real xquad/mlqa/squad files."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from xlqa import metrics
from xlqa.metrics import extended, mlqa, squad_v1, squad_v2


def dataset(*qas: tuple[object, list[str]]) -> dict:
    """A SQuAD-format file object with one paragraph holding the given (id, answer texts) questions."""
    items = [
        {"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in texts]}
        for qid, texts in qas
    ]
    return {"version": "test", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": items}]}]}


# ---------------------------------------------------------------- reading


def test_read_gold_order_int_ids_and_unanswerable():
    ds = dataset(("b", ["x", "y"]), (7, []), ("a", ["z"]))
    gold = metrics.read_gold(ds)
    assert gold == {"b": ["x", "y"], "7": [], "a": ["z"]}
    assert list(gold) == ["b", "7", "a"]
    assert metrics.score(ds, {"7": "", "b": "y", "a": "z"}, "squad2")["exact"] == 100.0


def test_read_gold_errors_name_the_place():
    with pytest.raises(ValueError, match="'data'"):
        metrics.read_gold({"version": "1.1"})
    ds = dataset(("q1", ["x"]))
    del ds["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["text"]
    with pytest.raises(ValueError, match=r"qas\[0\]\.answers\[0\] \(question id 'q1'\): missing field"):
        metrics.read_gold(ds)
    with pytest.raises(ValueError, match="question id 'q1' appears more than once"):
        metrics.read_gold(dataset(("q1", ["x"]), ("q1", ["y"])))


def test_load_json_plain_and_gz(tmp_path):
    ds = dataset(("q1", ["Ἀθῆναι"]))
    plain, packed = tmp_path / "d.json", tmp_path / "d.json.gz"
    plain.write_text(json.dumps(ds, ensure_ascii=False), encoding="utf-8")
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        json.dump(ds, f)
    assert metrics.load_json(plain) == ds == metrics.load_json(str(packed))
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        metrics.load_json(tmp_path / "bad.json")


# ---------------------------------------------------------------- SQuAD v1.1


def test_squad1_normalization_ascii_only():
    assert squad_v1.normalize_answer("The  Cat,\tsat!  ") == "cat sat"
    assert squad_v1.normalize_answer("an apple a day") == "apple day"
    assert squad_v1.normalize_answer("theatre") == "theatre"  # \b: no article inside words
    assert squad_v1.normalize_answer("«Hola»") == "«hola»"  # Unicode punctuation is kept by v1.1


def test_squad1_f1_em_and_max_over_golds():
    # pred tokens [cat sat on mat], gold [cat on mat]: P = 3/4, R = 1, F1 = 6/7
    assert squad_v1.f1_score("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    gold = {"q1": ["Paris", "city of Paris"], "q2": ["42"]}
    # q1: "the city" vs "city of paris": P = 1, R = 1/3, F1 = 1/2 (vs "paris": 0); q2 exact
    out = squad_v1.evaluate(gold, {"q1": "the city", "q2": "42."})
    assert out == {"exact_match": pytest.approx(50.0), "f1": pytest.approx(75.0)}
    assert metrics.per_question(gold, {"q1": "the city", "q2": "42."}, "squad1") == {
        "q1": (0.0, pytest.approx(0.5)),
        "q2": (1.0, 1.0),
    }


def test_missing_prediction_counts_in_v1_but_is_skipped_in_v2(caplog):
    gold = {"q1": ["blue"], "q2": ["red"]}
    with caplog.at_level(logging.WARNING, logger="xlqa.metrics"):
        assert metrics.score(gold, {"q1": "Blue"}, "squad1") == {"exact_match": 50.0, "f1": 50.0}
    assert "1 of 2 questions have no prediction" in caplog.text and "q2" in caplog.text
    assert metrics.score(gold, {"q1": "Blue"}, "mlqa", lang="en") == {"exact_match": 50.0, "f1": 50.0}
    v2 = metrics.score(gold, {"q1": "Blue"}, "squad2")
    assert (v2["exact"], v2["f1"], v2["total"]) == (100.0, 100.0, 1)
    assert (v2["HasAns_exact"], v2["HasAns_f1"], v2["HasAns_total"]) == (100.0, 100.0, 1)
    assert len(v2) == 6  # no NoAns_* keys: the gold has no unanswerable question
    assert metrics.per_question(gold, {"q1": "Blue"}, "squad1") == {"q1": (1.0, 1.0), "q2": (0.0, 0.0)}
    assert metrics.per_question(gold, {"q1": "Blue"}, "squad2") == {"q1": (1.0, 1.0)}


# ---------------------------------------------------------------- SQuAD v2.0


def test_squad2_empty_gold_and_empty_prediction_rule():
    gold = {"na": [], "the": ["The"], "has": ["big dog"]}
    # empty vs empty -> 1; "the" normalizes to nothing so it matches the no-answer ""; gold "The" is dropped
    # (normalizes to empty) so that question's only gold is "" although it counts as HasAns
    out = squad_v2.evaluate(gold, {"na": "", "the": "a", "has": ""})
    assert out["exact"] == pytest.approx(200 / 3) and out["f1"] == pytest.approx(200 / 3)
    assert (out["HasAns_total"], out["NoAns_total"]) == (2, 1)
    assert out["HasAns_exact"] == 50.0 and out["NoAns_exact"] == 100.0
    assert squad_v2.compute_f1("", "x") == 0.0 and squad_v2.compute_f1("", "") == 1.0
    assert squad_v2.compute_f1("big dog", "dog") == pytest.approx(2 / 3)
    # under v1.1 an empty prediction never scores F1, and a question without gold cannot be scored
    assert squad_v1.f1_score("", "") == 0.0
    with pytest.raises(ValueError, match=r"question id 'na' has no gold answer.*'squad2'"):
        squad_v1.evaluate(gold, {"na": ""})


def _sweep_example():
    gold = {"q1": ["cat"], "q2": ["big dog"], "q3": [], "q4": []}
    preds = {"q1": "cat", "q2": "dog", "q3": "bird", "q4": ""}
    probs = {"q1": 0.1, "q2": 0.6, "q3": 0.8, "q4": 0.3}
    return gold, preds, probs


def test_squad2_best_threshold_sweep_by_hand():
    gold, preds, probs = _sweep_example()
    out = squad_v2.evaluate(gold, preds, na_probs=probs)
    # raw: q1 EM 1; q2 EM 0 F1 2/3; q3 0 (answered a no-answer); q4 1
    assert out["exact"] == 50.0 and out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0 + 1) / 4)
    # sweep by probability q1 .1, q4 .3, q2 .6, q3 .8 from 2 (= NoAns count):
    # EM: 3 (t=.1), 3, 3, 2 -> best 3/4 at .1; F1: 3 (t=.1), 3, 3+2/3 (t=.6), 2+2/3 -> best (11/3)/4 at .6
    assert out["best_exact"] == 75.0 and out["best_exact_thresh"] == 0.1
    assert out["best_f1"] == pytest.approx(100 * (11 / 3) / 4) and out["best_f1_thresh"] == 0.6
    # threshold .5: q2 (.6) and q3 (.8) predicted no-answer -> q2 0, q3 1
    thr = squad_v2.evaluate(gold, preds, na_probs=probs, na_prob_thresh=0.5)
    assert thr["exact"] == 75.0 and thr["f1"] == 75.0 and thr["NoAns_exact"] == 100.0
    pq = metrics.per_question(gold, preds, "squad2", na_probs=probs, na_prob_thresh=0.5)
    assert pq == {"q1": (1.0, 1.0), "q2": (0.0, 0.0), "q3": (1.0, 1.0), "q4": (1.0, 1.0)}
    assert "best_f1" not in squad_v2.evaluate(gold, preds)


def test_squad2_errors():
    gold, preds, probs = _sweep_example()
    del probs["q2"]
    with pytest.raises(ValueError, match=r"no-answer probability.*'q2'"):
        squad_v2.evaluate(gold, preds, na_probs=probs)
    with pytest.raises(ValueError, match="none of the 4 questions has a prediction"):
        squad_v2.evaluate(gold, {"other": "x"})


# ---------------------------------------------------------------- MLQA


def test_mlqa_unicode_punctuation_and_symbols():
    assert mlqa.normalize_answer("«¿Qué?»", "es") == "qué"
    assert mlqa.normalize_answer("€5 $", "en") == "€5"  # $ is in string.punctuation, € is a symbol (Sc)
    assert mlqa.normalize_answer("भारत।", "hi") == "भारत"
    assert mlqa.is_punct("_") and mlqa.is_punct("、") and mlqa.is_punct("+")
    assert not mlqa.is_punct("€") and not mlqa.is_punct("ー")


def test_mlqa_articles_per_language():
    assert mlqa.normalize_answer("The cat", "en") == "cat"
    assert mlqa.normalize_answer("El gato y la casa", "es") == "gato y casa"
    assert mlqa.normalize_answer("Der Hund des Mannes", "de") == "hund mannes"
    assert mlqa.normalize_answer("cái bàn của tôi", "vi") == "bàn tôi"
    assert mlqa.normalize_answer("The cat", "hi") == "the cat"
    # Arabic: every ال goes, also inside a word (بالكتاب -> ب كتاب)
    assert mlqa.tokens("الكتاب", "ar") == ["كتاب"]
    assert mlqa.tokens("بالكتاب", "ar") == ["ب", "كتاب"]
    assert mlqa.evaluate({"q": ["الكتاب"]}, {"q": "كتاب"}, "ar") == {"exact_match": 100.0, "f1": 100.0}
    assert squad_v1.evaluate({"q": ["الكتاب"]}, {"q": "كتاب"})["f1"] == 0.0


def test_mlqa_zh_mixed_segmentation():
    assert mlqa.tokens("北京 ABC def，", "zh") == ["北", "京", "abc", "def"]
    # pred [北 京 大 学] vs gold [北 京]: P = 1/2, R = 1, F1 = 2/3; spacing does not matter for EM
    out = mlqa.evaluate({"q1": ["北京"], "q2": ["北 京"]}, {"q1": "北京大学", "q2": "北京"}, "zh")
    assert out["exact_match"] == 50.0 and out["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert mlqa.tokens("鿦鿦", "zh") == ["鿦鿦"]  # U+9FA6 is outside the official U+4E00..U+9FA5 range
    assert mlqa.tokens("北京", "en") == ["北京"]


def test_mlqa_language_errors():
    with pytest.raises(ValueError, match=r"en, es, de, vi, ar, hi, zh; got 'th'.*xlqa-ext"):
        mlqa.evaluate({"q": ["x"]}, {"q": "x"}, "th")
    with pytest.raises(ValueError, match="need the answer language"):
        metrics.score({"q": ["x"]}, {"q": "x"}, "mlqa")


# ---------------------------------------------------------------- xlqa-ext


def test_extended_character_tokens_and_whitespace_scripts():
    assert extended.tokens("กรุงเทพ๚", "th") == list("กรุงเทพ")  # ๚ (U+0E5A) is punctuation (Po)
    assert extended.tokens("東京タワーへ", "ja") == list("東京タワーへ")
    assert extended.tokens("서울 특별시!", "ko") == ["서울", "특별시"]
    assert extended.tokens("«Η Αθήνα»", "el") == ["η", "αθήνα"]  # no article list for Greek
    assert extended.tokens("鿦鿦 abc", "zh") == ["鿦", "鿦", "abc"]
    assert extended.tokens("The Cat", "en") == mlqa.tokens("The Cat", "en") == ["cat"]
    # th: pred 4 chars vs gold 7: P = 1, R = 4/7, F1 = 8/11; squad1 sees one token each -> 0
    gold, pred = {"q": ["กรุงเทพ"]}, {"q": "กรุง"}
    assert metrics.score(gold, pred, "xlqa-ext", lang="th")["f1"] == pytest.approx(800 / 11)
    assert metrics.score(gold, pred, "squad1")["f1"] == 0.0
    with pytest.raises(ValueError, match="xlqa-ext rules need a language code"):
        extended.evaluate(gold, pred, "")


# ---------------------------------------------------------------- dispatcher and errors


def test_score_dispatch_and_errors():
    gold = {"q": ["x"]}
    valid = "valid rules: squad1, squad2, mlqa, xlqa-ext"
    with pytest.raises(ValueError, match=f"unknown metric rules 'squad3'; {valid}"):
        metrics.score(gold, {"q": "x"}, "squad3")
    with pytest.raises(ValueError, match="unknown metric rules"):
        metrics.per_question(gold, {"q": "x"}, "bleu")
    with pytest.raises(ValueError, match="na_probs are used only by the 'squad2' rules"):
        metrics.score(gold, {"q": "x"}, "squad1", na_probs={"q": 0.1})
    with pytest.raises(TypeError, match="prediction for question id 'q' must be a string"):
        metrics.score(gold, {"q": None}, "squad1")
    for rule in ("squad1", "squad2"):
        with pytest.raises(TypeError, match="gold answers of question id 'q' must be a list of strings"):
            metrics.score({"q": "x"}, {"q": "x"}, rule)
    with pytest.raises(ValueError, match="no questions"):
        metrics.score({}, {}, "squad1")
    assert metrics.RULES == ("squad1", "squad2", "mlqa", "xlqa-ext")
    assert metrics.score(gold, {"q": "x"}, "xlqa-ext", lang="ru") == {"exact_match": 100.0, "f1": 100.0}


# ---------------------------------------------------------------- real data

XQUAD_LANGS = ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]


def _first_answers(gold):
    return {qid: (texts[0] if texts else "") for qid, texts in gold.items()}


@pytest.mark.parametrize(
    "path, lang",
    [(f"xquad/xquad.{lang}.json", lang) for lang in XQUAD_LANGS]
    + [("mlqa/dev-context-de-question-de.json", "de"), ("mlqa/dev-context-ar-question-ar.json", "ar")],
)
def test_real_files_gold_is_perfect_and_empty_is_zero(shared_data, path, lang):
    gold = metrics.read_gold(metrics.load_json(shared_data / path))
    assert len(gold) in (1190, 512, 517)
    perfect, empty = _first_answers(gold), dict.fromkeys(gold, "")
    rules = ["squad1", "xlqa-ext"] + (["mlqa"] if lang in mlqa.LANGUAGES else [])
    for rule in rules:
        assert metrics.score(gold, perfect, rule, lang=lang) == {"exact_match": 100.0, "f1": 100.0}, rule
        assert metrics.score(gold, empty, rule, lang=lang) == {"exact_match": 0.0, "f1": 0.0}, rule
    pq = metrics.per_question(gold, {q: t + " extra" for q, t in perfect.items()}, "squad1")
    agg = metrics.score(gold, {q: t + " extra" for q, t in perfect.items()}, "squad1")
    assert 0 < agg["f1"] < 100
    assert 100 * sum(f for _, f in pq.values()) / len(pq) == pytest.approx(agg["f1"], abs=1e-9)


def test_real_squad_v2_gold_and_empty(shared_data):
    gold = metrics.read_gold(metrics.load_json(shared_data / "squad/dev-v2.0.json"))
    out = squad_v2.evaluate(gold, _first_answers(gold))
    assert out["exact"] == out["f1"] == 100.0 and out["total"] == 11873 and out["NoAns_total"] == 5945
    empty = squad_v2.evaluate(gold, dict.fromkeys(gold, ""))
    assert empty["exact"] == pytest.approx(100 * 5945 / 11873) and empty["HasAns_f1"] == 0.0
    assert empty["NoAns_exact"] == 100.0

"""Analysis functions against hand-computed expectations and the official scorers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_squad
from xlqa import metrics
from xlqa.data import Answer, Example, load_squad
from xlqa.errors import ConfigError, DataError
from xlqa.evaluate import score_examples
from xlqa.metrics.bootstrap import bootstrap_ci
from xlqa.metrics.squad_v2 import find_best_thresh, threshold_sweep
from xlqa.postprocess import best_null_threshold
from xlqa.report import stats
from xlqa.report.breakdowns import breakdowns, question_word
from xlqa.report.loading import per_question_scores, read_results
from xlqa.results import EvalResult
from xlqa.sources.registry import spec_for_file


# -- bootstrap_ci ---------------------------------------------------------------------------------------------
def test_bootstrap_ci_of_a_constant_is_that_constant():
    assert bootstrap_ci(np.ones(50)) == (100.0, 100.0, 100.0)


def test_bootstrap_ci_contains_the_mean_narrows_with_n_and_matches_the_normal_width():
    small = np.tile([1.0, 0.0], 50)  # n = 100, mean 0.5
    large = np.tile([1.0, 0.0], 2000)  # n = 4000
    mean, lo, hi = bootstrap_ci(small)
    assert mean == 50.0 and lo < mean < hi
    m2, lo2, hi2 = bootstrap_ci(large)
    assert m2 == 50.0 and lo2 < m2 < hi2
    assert (hi2 - lo2) < (hi - lo) / 4  # width ~ 1/sqrt(n): 40x the data, about 6x narrower
    # normal approximation: half-width 1.96 * sqrt(.25 / n) * 100 = 9.8 points for n = 100
    assert 8.0 < (hi - lo) / 2 < 11.5
    assert 1.3 < (hi2 - lo2) / 2 < 1.8


def test_bootstrap_ci_is_seeded():
    values = np.random.default_rng(3).random(200)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        bootstrap_ci(np.array([]))


# -- paired_test ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["bootstrap", "permutation"])
def test_identical_systems_have_p_one_and_zero_difference(method):
    a = np.random.default_rng(0).random(300)
    out = stats.paired_test(a, a.copy(), method=method, n=2000)
    assert out == {"diff": 0.0, "p_value": 1.0, "ci_low": 0.0, "ci_high": 0.0}


@pytest.mark.parametrize("method", ["bootstrap", "permutation"])
def test_strongly_different_systems_are_significant(method):
    rng = np.random.default_rng(1)
    a = (rng.random(400) < 0.5).astype(float)
    b = np.maximum(a, (rng.random(400) < 0.6).astype(float))  # b is right wherever a is, and more
    out = stats.paired_test(a, b, method=method, n=5000)
    assert out["p_value"] < 0.01
    assert out["diff"] == pytest.approx(100 * (b.mean() - a.mean()))
    assert 0 < out["ci_low"] < out["diff"] < out["ci_high"]
    flipped = stats.paired_test(b, a, method=method, n=5000)  # sign follows b - a
    assert flipped["diff"] == pytest.approx(-out["diff"]) and flipped["p_value"] < 0.01


def test_permutation_p_value_matches_the_exact_sign_flip_distribution():
    # 5 questions, all differences +1: of 2^5 sign patterns only all-plus and all-minus reach |mean| = 1
    out = stats.paired_test(np.zeros(5), np.ones(5), method="permutation", n=20000, seed=0)
    assert out["p_value"] == pytest.approx(2 / 32, abs=0.006)
    # the bootstrap never resamples a mean <= 0 here: p is its floor 2 / (n + 1)
    boot = stats.paired_test(np.zeros(5), np.ones(5), method="bootstrap", n=999)
    assert boot["p_value"] == pytest.approx(2 / 1000) and boot["ci_low"] == boot["ci_high"] == 100.0
    # differences (+1, -1, +1, +1): |mean| = 0.5 is reached by 2 + 2 * 4 = 10 of 16 patterns
    out = stats.paired_test(np.zeros(4), np.array([1.0, -1.0, 1.0, 1.0]), method="permutation", n=20000)
    assert out["p_value"] == pytest.approx(10 / 16, abs=0.015)


def test_paired_test_rejects_bad_input():
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_test(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="unknown method"):
        stats.paired_test(np.zeros(3), np.zeros(3), method="t-test")


def test_holm_adjustment_by_hand():
    # sorted: 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 -> max(0.06, 0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


# -- transfer gap, order --------------------------------------------------------------------------------------
def test_transfer_gap_is_pivot_minus_language_in_report_order():
    gap = stats.transfer_gap({"zh": 60.0, "en": 80.0, "de": 70.5})
    assert gap == {"de": 9.5, "zh": 20.0} and list(gap) == ["de", "zh"]
    assert stats.transfer_gap({"de": 70.0, "es": 75.0}, pivot="es") == {"de": 5.0}
    with pytest.raises(ValueError, match="pivot 'en' missing; languages: de, zh"):
        stats.transfer_gap({"de": 1.0, "zh": 2.0})
    assert stats.language_order(["zh", "ar", "en", "de"]) == ["en", "ar", "de", "zh"]


# -- consistency ----------------------------------------------------------------------------------------------
def test_consistency_by_hand():
    per_lang = {
        "zh": {"q1": 0, "q2": 0, "q3": 0, "q4": 1},
        "en": {"q1": 1, "q2": 1, "q3": 0, "q4": 1, "q5": 1},  # q5 is not shared: ignored
        "de": {"q1": 1, "q2": 0, "q3": 0, "q4": 1},
    }
    out = stats.consistency(per_lang)
    assert out["languages"] == ["en", "de", "zh"] and out["n_questions"] == 4
    assert out["counts"] == [1, 1, 1, 1]  # q3 in 0 languages, q2 in 1, q1 in 2, q4 in 3
    # en-de agree on q1, q3, q4; en-zh on q3, q4; de-zh on q2, q3, q4
    expected = np.array([[1, 0.75, 0.5], [0.75, 1, 0.75], [0.5, 0.75, 1]])
    np.testing.assert_allclose(out["agreement"], expected)
    # kappa en-de: p_en = .75, p_de = .5, chance = .75*.5 + .25*.5 = .5, (.75 - .5) / .5 = .5
    assert out["kappa"][0, 1] == pytest.approx(0.5) and out["kappa"][1, 0] == pytest.approx(0.5)
    # de-zh: p = .5, .25, chance = .125 + .375 = .5, (.75 - .5) / .5 = .5
    assert out["kappa"][1, 2] == pytest.approx(0.5)


def test_consistency_undefined_kappa_and_errors():
    out = stats.consistency({"en": {"a": 1, "b": 1}, "de": {"a": 1, "b": 1}})
    assert out["counts"] == [0, 0, 2] and np.isnan(out["kappa"][0, 1])
    with pytest.raises(ValueError, match="no question id is shared"):
        stats.consistency({"en": {"a": 1}, "de": {"b": 1}})
    with pytest.raises(ValueError, match="at least two"):
        stats.consistency({"en": {"a": 1}})


# -- breakdowns -----------------------------------------------------------------------------------------------
def _ex(qid, question, answer="x" * 3, context_len=100, impossible=False):
    answers = [] if impossible else [Answer(answer, 0)]
    return Example(
        qid, question, answer + "." * (context_len - len(answer)), answers, is_impossible=impossible
    )


def test_question_words():
    assert question_word("What is it?", "en") == "what"
    assert question_word("In which year was it?", "en") == "which"
    assert question_word("How many cats are there?", "en") == "how many"
    assert question_word("Whose house is it?", "en") == "who"
    assert question_word("Name the king.", "en") == "other"
    assert question_word("Wer schrieb das Buch?", "de") == "wer"
    assert question_word("¿Quién escribió?", "es") == "quién"
    assert question_word("谁写了这本书？", "zh") == "谁写"
    assert question_word("", "de") == "other"


def test_breakdowns_by_hand():
    examples = [
        _ex("a", "What is it?", "x" * 3, 400),
        _ex("b", "What was it?", "x" * 12, 600),
        _ex("c", "Who did it?", "x" * 50, 2000),
        _ex("d", "Name it.", "x" * 7, 900),
        _ex("e", "What is this?", impossible=True),
        _ex("f", "What is not scored?"),
    ]
    scores = {"a": (1.0, 1.0), "b": (0.0, 0.5), "c": (0.0, 0.0), "d": (1.0, 1.0), "e": (1.0, 1.0)}
    out = breakdowns(examples, scores, language="en")
    assert list(out["question"]) == ["what", "who", "other"]
    assert out["question"]["what"] == {"n": 3, "em": pytest.approx(200 / 3), "f1": pytest.approx(250 / 3)}
    assert out["question"]["who"] == {"n": 1, "em": 0.0, "f1": 0.0}
    assert list(out["answer_length"]) == ["1-5", "6-10", "11-20", ">40", "no answer"]
    assert out["answer_length"]["11-20"] == {"n": 1, "em": 0.0, "f1": 50.0}
    assert {k: v["n"] for k, v in out["context_length"].items()} == {
        "1-500": 2,
        "501-750": 1,
        "751-1000": 1,
        ">1500": 1,
    }
    merged = breakdowns(examples, scores, language="en", top_k=1)
    assert list(merged["question"]) == ["what", "other"] and merged["question"]["other"]["n"] == 2


def test_breakdowns_take_types_and_lengths_from_the_parallel_reference():
    english = [_ex("a", "Who wrote it?", "x" * 30, 1200)]
    german = [_ex("a", "Welcher Autor schrieb es?", "x" * 4, 300), _ex("b", "Wann war das?", "x" * 4, 300)]
    out = breakdowns(german, {"a": (1.0, 1.0), "b": (0.0, 0.0)}, language="de", reference=english)
    assert out["question"] == {
        "who": {"n": 1, "em": 100.0, "f1": 100.0},
        "wann": {"n": 1, "em": 0.0, "f1": 0.0},
    }
    assert set(out["answer_length"]) == {"21-40", "1-5"} and set(out["context_length"]) == {
        "1001-1500",
        "1-500",
    }


# -- SQuAD v2 curves ------------------------------------------------------------------------------------------
def test_squad2_curves_by_hand():
    gold = {"q1": ["Paris"], "q2": [], "q3": ["blue sky"], "q4": []}
    odds = {"q1": -2.0, "q2": -1.0, "q3": 0.5, "q4": 1.0}
    f1 = {"q1": 1.0, "q2": 0.0, "q3": 0.5, "q4": 0.0}
    out = stats.squad2_curves(odds, gold, f1, em_per_question={"q1": 1.0, "q2": 0.0, "q3": 0.0, "q4": 0.0})
    np.testing.assert_array_equal(out["thresholds"], [-np.inf, -2.0, -1.0, 0.5, 1.0])
    # answer the k smallest odds; abstaining is right for q2 and q4
    np.testing.assert_allclose(out["f1"], [50.0, 75.0, 50.0, 62.5, 37.5])
    np.testing.assert_allclose(out["em"], [50.0, 75.0, 50.0, 50.0, 25.0])
    np.testing.assert_allclose(out["precision"], [1.0, 1.0, 0.5, 0.5, 0.375])
    np.testing.assert_allclose(out["recall"], [0.0, 0.5, 0.5, 0.75, 0.75])
    assert out["average_precision"] == pytest.approx(0.5 * 1.0 + 0.25 * 0.5)
    assert (out["best_f1"], out["best_threshold"]) == (75.0, -2.0)


def test_squad2_curves_ties_and_best_f1_equal_the_official_sweep():
    rng = np.random.default_rng(5)
    gold, raw, odds = {}, {}, {}
    for i in range(120):
        qid = f"q{i}"
        gold[qid] = [] if rng.random() < 0.5 else ["red fox jumps"]
        raw[qid] = ["red fox jumps", "red fox", "blue whale"][int(rng.integers(3))]
        odds[qid] = float(np.round(rng.normal(), 1))  # ties, as real odds can have
    per_q = metrics.per_question(gold, raw, "squad2")
    out = stats.squad2_curves(
        odds, gold, {q: s[1] for q, s in per_q.items()}, {q: s[0] for q, s in per_q.items()}
    )
    official = metrics.score(gold, raw, rules="squad2", na_probs=odds)
    assert out["best_f1"] == pytest.approx(official["best_f1"])
    assert max(out["em"]) == pytest.approx(official["best_exact"])
    assert len(out["thresholds"]) == len(set(odds.values())) + 1


# -- the one threshold sweep --------------------------------------------------------------------------------
def _official_find_best_thresh(preds, scores, na_probs, qid_to_has_ans):
    """``find_best_thresh`` of the official evaluate-v2.0.py, verbatim but for the formatting."""
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:  # noqa: SIM108 (kept as the official script writes it)
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def test_threshold_sweep_by_hand():
    # answering b (odds -1) gains 1, a and c (odds 0, tied: input order kept) gain -1 and 0.5
    order, totals = threshold_sweep([0.0, -1.0, 0.0], [-1.0, 1.0, 0.5], start=1)
    assert order.tolist() == [1, 0, 2] and totals.tolist() == [1.0, 2.0, 1.0, 1.5]
    with pytest.raises(ValueError, match="equal 1-D"):
        threshold_sweep([0.0, 1.0], [1.0])


@pytest.mark.parametrize("seed", range(6))
def test_find_best_thresh_is_bit_for_bit_the_official_loop(seed):
    rng = np.random.default_rng(seed)
    n = 300
    qids = [f"q{i}" for i in range(n)]
    has_ans = {q: bool(rng.random() < 0.5) for q in qids}
    preds = {q: ["", " ", "a cat", "dog"][int(rng.integers(4))] for q in qids}
    exact = {q: int(rng.integers(2)) for q in qids}
    f1 = {q: float(rng.choice([0.0, 1.0, 1 / 3, 0.4, rng.random()])) for q in qids}
    decimals = 1 if seed % 2 else 8  # odd seeds: many tied probabilities
    na_probs = {q: float(np.round(rng.random(), decimals)) for q in rng.permutation(qids)}
    for scores in (exact, f1):
        assert find_best_thresh(preds, scores, na_probs, has_ans) == _official_find_best_thresh(
            preds, scores, na_probs, has_ans
        )


def test_squad2_curves_and_best_null_threshold_follow_the_official_sweep():
    rng = np.random.default_rng(11)
    words = ["red", "fox", "jumps", "over", "lazy", "dog"]  # none normalizes to nothing
    gold, raw, odds = {}, {}, {}
    for i in range(400):
        qid = f"q{i}"
        gold[qid] = [] if rng.random() < 0.5 else [" ".join(rng.choice(words, int(rng.integers(1, 4))))]
        raw[qid] = " ".join(rng.choice(words, int(rng.integers(1, 4))))
        if gold[qid] and rng.random() < 0.6:
            raw[qid] = gold[qid][0] + " fox"  # partly right: fractional F1
        odds[qid] = float(rng.normal() + (0.0 if gold[qid] else 1.0))  # distinct: every threshold applies
    f1 = {q: s[1] for q, s in metrics.per_question(gold, raw, "squad2").items()}
    official = metrics.score(gold, raw, rules="squad2", na_probs=odds)
    out = stats.squad2_curves(odds, gold, f1)
    assert np.isfinite(official["best_f1_thresh"]) and official["best_f1"] > official["f1"]
    assert out["best_f1"] == official["best_f1"]  # the same sweep: equal to the last bit
    assert out["best_threshold"] == official["best_f1_thresh"]
    t = best_null_threshold(odds, gold, f1)
    above = [v for v in odds.values() if v > official["best_f1_thresh"]]
    assert official["best_f1_thresh"] < t < min(above)  # the midpoint after the official threshold
    applied = {q: raw[q] if odds[q] <= t else "" for q in raw}
    assert metrics.score(gold, applied, rules="squad2")["f1"] == pytest.approx(official["best_f1"])


# -- per_question_scores on an evaluation folder -------------------------------------------------------------
def _eval_folder(root: Path, data: Path, preds: dict[str, str], odds: dict[str, float] | None = None) -> Path:
    loaded = load_squad(data)
    rules = spec_for_file(loaded).rules
    entry = score_examples(loaded.examples, preds, rules=rules, language=loaded.language, null_odds=odds)
    entry.name, entry.path, entry.sha256 = data.stem, f"../{data.name}", loaded.report.sha256
    entry.language, entry.n_questions = loaded.language, len(loaded.examples)
    out = root / "eval"
    (out / data.stem).mkdir(parents=True)
    (out / data.stem / "predictions.json").write_text(json.dumps(preds))
    EvalResult(datasets=[entry]).write(out)
    return out


def test_per_question_scores_mean_equals_the_official_score(tmp_path):
    data = write_squad(tmp_path / "xquad.de.json", [
        {"id": "1", "question": "Wer?", "context": "Der Hund bellt laut.", "answers": [("Der Hund", 0)]},
        {"id": "2", "question": "Was?", "context": "Die Katze schläft.", "answers": [("Katze", 4)]},
        {"id": "3", "question": "Wo?", "context": "Im Haus ist es warm.", "answers": [("Im Haus", 0)]},
    ])  # fmt: skip
    eval_dir = _eval_folder(tmp_path, data, {"1": "Hund", "2": "die Katze schläft", "3": "Garten"})
    scores = per_question_scores(eval_dir)  # data path stored relative to the eval folder's parent
    entry = read_results(eval_dir).datasets[0]
    assert list(scores) == ["1", "2", "3"] and scores["3"] == (0.0, 0.0)
    assert 100 * np.mean([s[0] for s in scores.values()]) == pytest.approx(entry.em)
    assert 100 * np.mean([s[1] for s in scores.values()]) == pytest.approx(entry.f1)
    assert per_question_scores(entry, eval_dir=eval_dir) == scores


def test_per_question_scores_squad2_follow_the_thresholded_predictions(tmp_path):
    data = write_squad(tmp_path / "dev-v2.0.json", [
        {"id": "a", "question": "Who?", "context": "Ann ran.", "answers": [("Ann", 0)]},
        {"id": "b", "question": "Why?", "context": "Bob sat.", "answers": [], "impossible": True},
        {"id": "c", "question": "What?", "context": "Cats nap.", "answers": [("Cats", 0)]},
    ], version="v2.0")  # fmt: skip
    eval_dir = _eval_folder(tmp_path, data, {"a": "Ann", "b": "", "c": ""}, {"a": -1.0, "b": 2.0, "c": 0.5})
    entry = read_results(eval_dir).datasets[0]
    assert entry.rules == "squad2"
    scores = per_question_scores(eval_dir, "dev-v2.0")
    assert scores == {"a": (1.0, 1.0), "b": (1.0, 1.0), "c": (0.0, 0.0)}
    assert 100 * np.mean([s[1] for s in scores.values()]) == pytest.approx(entry.f1)


def test_loading_errors_name_the_file_and_field(tmp_path):
    data = write_squad(
        tmp_path / "xquad.en.json",
        [{"id": "1", "question": "Q?", "context": "Bob b.", "answers": [("Bob", 0)]}],
    )
    eval_dir = _eval_folder(tmp_path, data, {"1": "Bob"})
    with pytest.raises(ConfigError, match=r"this folder has: xquad\.en"):
        per_question_scores(eval_dir, "xquad.fr")
    with pytest.raises(ValueError, match="needs eval_dir"):
        per_question_scores(read_results(eval_dir).datasets[0])
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    data.rename(moved / data.name)
    with pytest.raises(DataError, match=r"results\.json: data file of 'xquad\.en' not found"):
        per_question_scores(eval_dir)
    assert per_question_scores(eval_dir, data_dirs=[moved]) == {"1": (1.0, 1.0)}
    (moved / data.name).write_text((moved / data.name).read_text().replace("Q?", "Q2?"))
    with pytest.raises(DataError, match=r"xquad\.en\.json: sha256 .* differs"):
        per_question_scores(eval_dir, data_dirs=[moved])
    results = json.loads((eval_dir / "results.json").read_text())
    del results["datasets"][0]["path"]
    (eval_dir / "results.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match=r"results\.json: field 'datasets\[0\]\.path': missing field"):
        read_results(eval_dir)
    (eval_dir / "results.json").write_text("{}")
    with pytest.raises(DataError, match=r"results\.json: field 'datasets': no datasets"):
        read_results(eval_dir)
    with pytest.raises(DataError, match=r"nowhere/results\.json: no results\.json \(expected an evaluation"):
        read_results(tmp_path / "nowhere")

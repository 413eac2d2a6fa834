"""Tests for xlqa.data: hand-made SQuAD files for every error and repair case, then every real file."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import pickle
from pathlib import Path

import pytest

from xlqa.data import (
    Answer,
    DataError,
    Example,
    LoadReport,
    RepairedAnswer,
    UnlocatableAnswer,
    check_files,
    format_report,
    load_squad,
)
from xlqa.languages import guess_language

CONTEXT = "Paris is the capital of France. Paris has 2 million people."


def qa(qid="q1", question="What is the capital?", answers=None, **extra) -> dict:
    answers = [{"text": "Paris", "answer_start": 0}] if answers is None else answers
    return {"id": qid, "question": question, "answers": answers, **extra}


def doc(*qas, context=CONTEXT, title="France", version="1.1") -> dict:
    article = {"title": title, "paragraphs": [{"context": context, "qas": list(qas) or [qa()]}]}
    return {"version": version, "data": [article]}


def write(tmp_path: Path, obj, name="data.json") -> Path:
    path = tmp_path / name
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False).encode()
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    return path


def load(tmp_path, obj, **kwargs):
    return load_squad(write(tmp_path, obj), **kwargs)


# ---------------------------------------------------------------------------------------------- valid files


def test_plain_v11_file(tmp_path):
    path = write(
        tmp_path, doc(qa(), qa("q2", "How many people?", [{"text": "2 million", "answer_start": 42}]))
    )
    data = load_squad(path, language="fr")
    assert len(data) == 2 and data.language == "fr" and data.report.language == "fr"
    ex = data.examples[0]
    assert ex == Example("q1", "What is the capital?", CONTEXT, [Answer("Paris", 0)], False, "France")
    assert data.examples[1].train_answer == Answer("2 million", 42)
    report = data.report
    assert (report.version, report.n_articles, report.n_paragraphs) == ("1.1", 1, 1)
    assert (report.n_questions, report.n_answers, report.n_impossible, report.n_trainable) == (2, 2, 0, 2)
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.repaired == report.unlocatable == report.untrainable == report.warnings == []
    assert not report.truncated


def test_gzip_file_gives_same_examples_and_hashes_compressed_bytes(tmp_path):
    plain = load(tmp_path, doc())
    path = write(tmp_path, doc(), "data.json.gz")
    packed = load_squad(path)
    assert packed.examples == plain.examples
    assert packed.report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != plain.report.sha256


def test_int_ids_become_strings_and_missing_title_is_empty(tmp_path):
    obj = doc(qa(7), qa(8))
    del obj["data"][0]["title"]
    obj["version"] = 2.0
    data = load(tmp_path, obj)
    assert [e.id for e in data] == ["7", "8"]
    assert all(e.title == "" for e in data)
    assert data.report.version == "2.0"


def test_v2_impossible_question_ignores_plausible_answers(tmp_path):
    plausible = [{"text": "Paris", "answer_start": 0}]
    data = load(tmp_path, doc(qa(), qa("q2", answers=[], is_impossible=True, plausible_answers=plausible)))
    ex = data.examples[1]
    assert ex.is_impossible and ex.answers == [] and ex.train_answer is None
    assert (data.report.n_impossible, data.report.n_answers, data.report.n_trainable) == (1, 1, 1)
    assert data.report.warnings == []


def test_impossible_question_may_omit_answers(tmp_path):
    item = qa("q2", is_impossible=True)
    del item["answers"]
    assert load(tmp_path, doc(item)).examples[0].is_impossible


def test_impossible_with_answers_trusts_the_flag_and_warns(tmp_path):
    data = load(tmp_path, doc(qa(is_impossible=True)))
    assert data.examples[0].is_impossible and data.examples[0].answers == []
    assert data.report.impossible_with_answers == ["q1"]
    assert any("is_impossible" in w for w in data.report.warnings)


def test_empty_answer_list_not_marked_impossible_is_unanswerable_with_warning(tmp_path):
    data = load(tmp_path, doc(qa(answers=[]), qa("q2", answers=[], is_impossible=False)))
    assert all(e.is_impossible and e.answers == [] for e in data)
    assert data.report.unmarked_no_answer == ["q1", "q2"] and data.report.n_impossible == 2
    assert data.report.untrainable == []
    assert any("not marked is_impossible" in w for w in data.report.warnings)


# ---------------------------------------------------------------------------------------------- repair


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (0, 0),  # correct: kept
        (32, 32),  # correct second occurrence: kept
        (30, 32),  # off by two: nearest occurrence
        (5, 0),  # nearer the first
        (17, 32),  # 17 from 0, 15 from 32
        (-1, 0),  # negative: nearest is the first
        (-27, 0),  # negative start where Python's negative slicing would find "Paris"
        (10_000, 32),  # beyond the context: nearest is the last
    ],
)
def test_wrong_answer_start_moves_to_nearest_occurrence(tmp_path, given, expected):
    assert CONTEXT[-27 : -27 + 5] == "Paris"  # the trap the (-27, 0) case checks
    data = load(tmp_path, doc(qa(answers=[{"text": "Paris", "answer_start": given}])))
    assert data.examples[0].answers == [Answer("Paris", expected)]
    assert data.report.repaired == ([] if given == expected else [("q1", "Paris", given, expected)])
    assert data.report.unlocatable == []


def test_equidistant_occurrences_prefer_the_earlier(tmp_path):
    data = load(tmp_path, doc(qa(answers=[{"text": "ab", "answer_start": 3}]), context="ab--x-ab"))
    assert data.examples[0].answers == [Answer("ab", 0)]
    assert data.report.repaired == [RepairedAnswer("q1", "ab", 3, 0)]


def test_unlocatable_answers_are_kept_for_scoring_but_never_trained_on(tmp_path):
    bad = {"text": "Lyon", "answer_start": 0}
    answers = [bad, {"text": "Paris", "answer_start": 3}]
    data = load(tmp_path, doc(qa("q1", answers=[bad]), qa("q2", answers=answers)))
    q1, q2 = data.examples
    assert q1.answers == [Answer("Lyon", -1)] and q1.train_answer is None and not q1.is_impossible
    assert q2.answers == [Answer("Lyon", -1), Answer("Paris", 0)] and q2.train_answer == Answer("Paris", 0)
    report = data.report
    assert report.unlocatable == [UnlocatableAnswer("q1", "Lyon", 0), UnlocatableAnswer("q2", "Lyon", 0)]
    assert report.repaired == [("q2", "Paris", 3, 0)]
    assert report.untrainable == ["q1"] and report.n_trainable == 1
    assert any("not in the context" in w for w in report.warnings)


def test_empty_answer_texts_are_kept_with_start_minus_one(tmp_path):
    empty = {"text": "", "answer_start": -1}
    data = load(
        tmp_path,
        doc(qa("q1", answers=[empty, {"text": "Paris", "answer_start": 0}]), qa("q2", answers=[empty])),
    )
    q1, q2 = data.examples
    assert q1.answers == [Answer("", -1), Answer("Paris", 0)] and q1.train_answer == Answer("Paris", 0)
    assert q2.answers == [Answer("", -1)] and not q2.is_impossible and q2.train_answer is None
    assert data.report.empty_answers == ["q1", "q2"] and data.report.untrainable == ["q2"]
    assert data.report.unlocatable == data.report.repaired == []


def test_contexts_are_not_stripped_or_normalized(tmp_path):
    context = "  \u00a0Cafe\u0301 الْعَرَبِيَّة\n\tnaïve \U0001f600 end  "
    answers = [{"text": "الْعَرَبِيَّة", "answer_start": 0}, {"text": "\U0001f600 end", "answer_start": 0}]
    ex = load(tmp_path, doc(qa(answers=answers), context=context)).examples[0]
    assert ex.context == context
    for answer in ex.answers:
        assert answer.start > 0 and ex.context[answer.start : answer.start + len(answer.text)] == answer.text


# ---------------------------------------------------------------------------------------------- errors


def _set(path: tuple, value=None, delete=False):
    def mutate(obj):
        node = obj
        for key in path[:-1]:
            node = node[key]
        if delete:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return obj

    return mutate


QA0 = ("data", 0, "paragraphs", 0, "qas", 0)
PAR0 = ("data", 0, "paragraphs", 0)
ERROR_CASES = {
    "article not object": (_set(("data", 0), "x"), None, None),
    "paragraphs missing": (_set(("data", 0, "paragraphs"), delete=True), None, "paragraphs"),
    "paragraphs not list": (_set(("data", 0, "paragraphs"), {}), None, "paragraphs"),
    "context missing": (_set((*PAR0, "context"), delete=True), None, "context"),
    "context not str": (_set((*PAR0, "context"), 5), None, "context"),
    "qas missing": (_set((*PAR0, "qas"), delete=True), None, "qas"),
    "qas not list": (_set((*PAR0, "qas"), {"id": "q1"}), None, "qas"),
    "question not object": (_set(QA0, "q1"), None, None),
    "id missing": (_set((*QA0, "id"), delete=True), None, "id"),
    "id float": (_set((*QA0, "id"), 1.5), None, "id"),
    "id bool": (_set((*QA0, "id"), True), None, "id"),
    "question missing": (_set((*QA0, "question"), delete=True), "q1", "question"),
    "question not str": (_set((*QA0, "question"), ["x"]), "q1", "question"),
    "question empty": (_set((*QA0, "question"), ""), "q1", "question"),
    "question blank": (_set((*QA0, "question"), " \n"), "q1", "question"),
    "answers missing": (_set((*QA0, "answers"), delete=True), "q1", "answers"),
    "answers not list": (_set((*QA0, "answers"), {"text": ["Paris"], "answer_start": [0]}), "q1", "answers"),
    "answer not object": (_set((*QA0, "answers"), ["Paris"]), "q1", "answers"),
    "text missing": (_set((*QA0, "answers", 0, "text"), delete=True), "q1", "text"),
    "text not str": (_set((*QA0, "answers", 0, "text"), 3), "q1", "text"),
    "answer_start missing": (_set((*QA0, "answers", 0, "answer_start"), delete=True), "q1", "answer_start"),
    "answer_start str": (_set((*QA0, "answers", 0, "answer_start"), "0"), "q1", "answer_start"),
    "answer_start float": (_set((*QA0, "answers", 0, "answer_start"), 0.0), "q1", "answer_start"),
    "answer_start bool": (_set((*QA0, "answers", 0, "answer_start"), False), "q1", "answer_start"),
    "answer_start null": (_set((*QA0, "answers", 0, "answer_start"), None), "q1", "answer_start"),
    "is_impossible str": (_set((*QA0, "is_impossible"), "true"), "q1", "is_impossible"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_invalid_structure_raises_data_error_naming_file_question_and_field(tmp_path, case):
    mutate, qid, field = ERROR_CASES[case]
    path = write(tmp_path, mutate(copy.deepcopy(doc())))
    with pytest.raises(DataError) as info:
        load_squad(path)
    err = info.value
    assert (err.path, err.qid, err.field) == (str(path), qid, field)
    message = str(err)
    assert str(path) in message and "data[0]" in message
    for part in (qid, field):
        assert part is None or repr(part) in message


@pytest.mark.parametrize(
    ("content", "field", "needle"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"\xff\xfe\x00garbage", None, "not"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"version": "1.1"}', "data", "missing"),
        (b'{"data": {"paragraphs": []}}', "data", "expected list"),
        (b"\x1f\x8b\x08\x00broken gzip", None, "gzip"),
    ],
)
def test_unreadable_files_raise_data_error(tmp_path, content, field, needle):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=needle) as info:
        load_squad(path)
    assert info.value.path == str(path) and info.value.field == field and str(path) in str(info.value)


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_squad(tmp_path / "absent.json")


def test_duplicate_ids_name_both_occurrences_even_across_int_and_str(tmp_path):
    obj = doc(qa(5))
    obj["data"].append(
        {"title": "B", "paragraphs": [{"context": "x", "qas": [qa("9"), qa("5", answers=[])]}]}
    )
    with pytest.raises(DataError) as info:
        load(tmp_path, obj)
    assert (info.value.qid, info.value.field) == ("5", "id")
    assert "data[0].paragraphs[0].qas[0]" in str(info.value) and "data[1].paragraphs[0].qas[1]" in str(
        info.value
    )


def test_data_error_keeps_attributes_through_pickle():
    err = DataError("bad", path="f.json", qid="q1", field="text")
    assert str(err) == "f.json: question id 'q1': field 'text': bad" and err.message == "bad"
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.path, again.qid, again.field) == (str(err), "f.json", "q1", "text")
    assert str(DataError("plain")) == "plain" and isinstance(err, ValueError)


# ---------------------------------------------------------------------------------------------- options


def test_max_examples_keeps_the_first_questions_in_file_order(tmp_path):
    obj = doc(qa("a"), qa("b"))
    obj["data"].append({"title": "B", "paragraphs": [{"context": CONTEXT, "qas": [qa("c"), qa("d")]}]})
    path = write(tmp_path, obj)
    three = load_squad(path, max_examples=3)
    assert [e.id for e in three] == ["a", "b", "c"] and three.report.truncated
    assert (three.report.n_questions, three.report.n_articles, three.report.n_paragraphs) == (3, 2, 2)
    assert "truncated" in format_report(three.report)
    two = load_squad(path, max_examples=2).report
    assert (two.n_questions, two.n_articles, two.n_paragraphs, two.truncated) == (2, 1, 1, True)
    assert [e.id for e in load_squad(path, max_examples=4)] == ["a", "b", "c", "d"]
    assert not load_squad(path, max_examples=4).report.truncated
    assert len(load_squad(path, max_examples=0)) == 0
    with pytest.raises(ValueError, match="--max-examples"):
        load_squad(path, max_examples=-1)


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("xquad/xquad.de.json", "de"),
        ("xquad.zh.json.gz", "zh"),
        ("mlqa/dev-context-de-question-de.json", "de"),
        ("mlqa/test-context-ar-question-en.json", "ar"),
        ("tydiqa/tydiqa-goldp-dev-arabic.json", "ar"),
        ("tydiqa-goldp-v1.1-dev-swahili.json", "sw"),
        ("squad/train-v1.1.json", "en"),
        ("dev-v2.0.json", "en"),
        ("squad-it/SQuAD_it-test.json", "it"),
        ("cmrc2018/cmrc2018_dev.json", "zh"),
        ("jaquad/jaquad_dev_0003.json", "ja"),
        ("squad-es/dev-v1.1-es_small.json", "es"),
        ("squad-es/dev.json", "es"),
        ("/tmp/data/questions.json", None),
        ("dev.json", None),
    ],
)
def test_guess_language(path, language):
    assert guess_language(path) == language
    assert guess_language(Path(path)) == language


def test_language_argument_overrides_the_guess(tmp_path):
    path = write(tmp_path, doc(), "xquad.de.json")
    assert load_squad(path).language == "de" and load_squad(path, language="en").language == "en"


def test_format_report_shows_counts_examples_and_warnings(tmp_path):
    answers = [{"text": "Paris", "answer_start": 3}, {"text": "Lyon", "answer_start": 1}]
    report = load(tmp_path, doc(*[qa(f"q{i}", answers=answers) for i in range(8)])).report
    text = format_report(report, max_items=2)
    assert "8 questions" in text and "16 answers" in text
    assert "repaired: 8" in text and "q0: 'Paris' 3 -> 0" in text and "q2:" not in text
    assert "unlocatable: 8" in text and "q1: 'Lyon' at 1" in text
    assert "warnings:" in text and len(text.splitlines()) < 25
    assert format_report(LoadReport("empty.json")).startswith("empty.json")


def test_check_files_never_raises_and_expands_folders(tmp_path):
    good = write(tmp_path, doc(), "good.json")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", b"[]", "bad.json.gz")
    write(tmp_path / "sub", b"ignored", "notes.txt")
    results = check_files([good, tmp_path / "sub", tmp_path / "missing.json"])
    assert [type(r) for r in results] == [LoadReport, DataError, DataError]
    assert results[0].n_questions == 1 and results[1].path.endswith("bad.json.gz")
    assert [type(r) for r in check_files([tmp_path])] == [LoadReport, DataError]


# ---------------------------------------------------------------------------------------------- real data

# file: (articles, paragraphs, questions, unanswerable)
KNOWN = {
    "squad/train-v1.1.json": (442, 18_896, 87_599, 0),
    "squad/dev-v1.1.json": (48, 2_067, 10_570, 0),
    "squad/dev-v2.0.json": (35, 1_204, 11_873, 5_945),
    "mlqa/dev-context-de-question-de.json": (1, 456, 512, 0),
    "mlqa/dev-context-ar-question-ar.json": (238, 439, 517, 0),
    "tydiqa/tydiqa-goldp-dev-arabic.json": (921, 921, 921, 0),
    "squad-es/dev-v1.1-es_small.json": (48, 1_996, 6_583, 0),
    "squad-es/dev-v2.0-es_small.json": (35, 1_192, 7_134, 3_256),
    "squad-it/SQuAD_it-test.json": (48, 2_010, 7_609, 0),
    "cmrc2018/cmrc2018_dev.json": (848, 848, 3_219, 0),
}
XQUAD = ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]
KNOWN.update({f"xquad/xquad.{lang}.json": (48, 240, 1_190, 0) for lang in XQUAD})


@pytest.fixture(scope="module")
def real(shared_data) -> dict:
    """Every SQuAD file in the shared data, loaded once (about 3 s, most of it train-v1.1)."""
    return {
        p.relative_to(shared_data).as_posix(): load_squad(p) for p in sorted(shared_data.glob("**/*.json"))
    }


def test_every_shared_file_loads_with_consistent_offsets(real):
    assert set(KNOWN) <= set(real) and len(real) >= 26
    for name, data in real.items():
        report = data.report
        assert len(data) == report.n_questions > 0, name
        assert data.language is not None and len(report.sha256) == 64, name
        assert len({e.id for e in data}) == len(data), name
        assert report.n_answers == sum(len(e.answers) for e in data), name
        assert report.n_impossible == sum(e.is_impossible for e in data), name
        for ex in data:
            assert isinstance(ex.id, str) and ex.question.strip(), (name, ex.id)
            assert not (ex.is_impossible and ex.answers), (name, ex.id)
            for a in ex.answers:
                if a.start >= 0:
                    assert ex.context[a.start : a.start + len(a.text)] == a.text, (name, ex.id)
                else:
                    assert a.start == -1 and (a.text == "" or a.text not in ex.context), (name, ex.id)
            trainable = ex.train_answer is not None
            assert trainable == (not ex.is_impossible and ex.id not in report.untrainable), (name, ex.id)


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_counts(real, name):
    report = real[name].report
    counts = (report.n_articles, report.n_paragraphs, report.n_questions, report.n_impossible)
    assert counts == KNOWN[name]


def test_known_languages_and_versions(real):
    languages = {name: data.language for name, data in real.items()}
    assert {languages[f"xquad/xquad.{lang}.json"] for lang in XQUAD} == set(XQUAD)
    assert languages["cmrc2018/cmrc2018_dev.json"] == "zh" and languages["squad/dev-v2.0.json"] == "en"
    assert all(languages[f"jaquad/jaquad_dev_000{i}.json"] == "ja" for i in range(4))
    versions = {data.report.version for data in real.values()}
    assert {"1.1", "v2.0", "v1.0", "TyDiQA-GoldP-1.1-for-SQuAD-1.1", "JaQuAD-version-0.1.0"} <= versions


def test_xquad_is_parallel_and_jaquad_shards_add_up(real):
    ids = [[e.id for e in real[f"xquad/xquad.{lang}.json"]] for lang in XQUAD]
    assert all(other == ids[0] for other in ids)
    shards = [real[f"jaquad/jaquad_dev_000{i}.json"].report for i in range(4)]
    assert sum(r.n_articles for r in shards) == 101 and sum(r.n_paragraphs for r in shards) == 1_431
    assert sum(r.n_questions for r in shards) == 3_939


def test_clean_files_need_no_repair(real):
    for name in [
        "squad/train-v1.1.json",
        "squad/dev-v1.1.json",
        "squad/dev-v2.0.json",
        "xquad/xquad.th.json",
    ]:
        report = real[name].report
        assert report.repaired == report.unlocatable == report.untrainable == report.warnings == [], name
    assert real["squad/dev-v1.1.json"].report.sha256.startswith("95aa6a52d5d6")
    # the rebuilt train set puts every answer at the first occurrence of its text
    assert all(
        ex.answers[0].start == ex.context.find(ex.answers[0].text) for ex in real["squad/train-v1.1.json"]
    )


def test_cmrc2018_answers_are_repaired_or_unlocatable(real):
    report = real["cmrc2018/cmrc2018_dev.json"].report
    assert (len(report.repaired), len(report.unlocatable), report.untrainable) == (7, 193, [])
    assert all(r.new_start != r.old_start for r in report.repaired)
    assert report.unlocatable[0] == (
        "DEV_6_QUERY_2",
        "2010年是邹游在河南建业効力的最后一个赛季更无法得到出场机会。",
        -1,
    )


def test_squad_it_answers_are_repaired_and_empty_answers_reported(real):
    data = real["squad-it/SQuAD_it-test.json"]
    report = data.report
    assert (len(report.repaired), len(report.unlocatable), len(report.empty_answers)) == (98, 0, 11)
    assert report.repaired[0] == ("5726487b5951b619008f6edf", "Il Regno Unito", 158, 442)
    assert report.untrainable == ["d250"]  # its two gold answers are empty strings


def test_squad_es_empty_answers_are_kept_for_scoring(real):
    for name, n_empty in [
        ("squad-es/dev-v1.1-es_small.json", 4_080),
        ("squad-es/dev-v2.0-es_small.json", 2_386),
    ]:
        report = real[name].report
        assert len(report.empty_answers) == n_empty and report.untrainable == [] and report.repaired == []

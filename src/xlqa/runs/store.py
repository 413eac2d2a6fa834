"""Run store: one folder per run (config, checkpoints, events, predictions, metrics) indexed in SQLite.

Layout::

    <root>/index.sqlite         runs, evaluations, per-dataset metrics (WAL mode, schema_version table)
    <root>/<run_id>/run.json    what the run is: kind, model, config, environment, status
    <root>/<run_id>/...         what it writes: best/, events.jsonl, <dataset>/predictions.json, results.json

``root`` defaults to ``$XLQA_RUNS``, else ``./runs``. A run folder may also live elsewhere (``create_run(dir=)``,
``import_results``); the index records where. Every write is one ``BEGIN IMMEDIATE`` transaction and files
are written under a temporary name then moved with ``os.replace``, so several processes can share a store.

A command records itself in a couple of calls::

    store = RunStore()
    run = store.create_run("eval", model=cfg.model, config=asdict(cfg))
    cfg.output = str(run.dir)
    with store.tracking(run.id):  # status: finished, failed (exception) or stopped (Ctrl-C)
        store.record_evaluation(run.id, evaluate_model(cfg), results_path=run.dir / "results.json")
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import secrets
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from xlqa.errors import RunNotFoundError, RunStoreError
from xlqa.fileio import environment as package_versions
from xlqa.fileio import write_json_atomic
from xlqa.runs.schema import (
    INDEX_NAME,
    KINDS,
    MIGRATIONS,
    NAME_RE,
    RUN_FILE,
    SCHEMA_VERSION,
    STATUSES,
    Run,
    metric_row,
    to_json,
    utc_now,
)
from xlqa.settings import get_settings

__all__ = ["INDEX_NAME", "KINDS", "RUN_FILE", "SCHEMA_VERSION", "STATUSES", "Run", "RunStore"]


log = logging.getLogger(__name__)


class RunStore:
    """Run folders under ``root`` plus the SQLite index ``root/index.sqlite``.

    Args:
        root: store folder; default ``$XLQA_RUNS``, else ``./runs``.
        timeout: seconds a writer waits for another process's transaction before giving up.
    """

    def __init__(self, root: str | Path | None = None, *, timeout: float = 30.0):
        self.root = (Path(root).expanduser() if root is not None else get_settings().runs).absolute()
        self.db_path = self.root / INDEX_NAME
        self.timeout = timeout
        self._ready_pid: int | None = None  # schema checked in this process (connections never cross a fork)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # -- connections and transactions ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self, create: bool = False) -> Iterator[sqlite3.Connection | None]:
        """A fresh connection (None when reading a store that does not exist yet)."""
        if not self.db_path.exists():
            if not create:
                yield None
                return
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.db_path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as err:
            raise RunStoreError(f"cannot open run index {self.db_path}: {err}") from err
        try:
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            con.execute("PRAGMA foreign_keys = ON")
            if self._ready_pid != os.getpid():
                self._migrate(con)
            yield con
        except sqlite3.Error as err:  # locked past the timeout, corrupt file, disk full: name the index
            raise RunStoreError(f"run index {self.db_path}: {err}") from err
        finally:
            con.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: the write lock is taken at BEGIN, everything commits or nothing does."""
        with self._connect(create=True) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @staticmethod
    def _version(con: sqlite3.Connection) -> int:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone():
            return 0
        return con.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]

    def _migrate(self, con: sqlite3.Connection) -> None:
        """Bring the schema up to date (a read when it already is, so read-only stores stay readable)."""
        if self._version(con) < SCHEMA_VERSION:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode = WAL")  # persistent: recorded in the database file
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied TEXT)"
                )
                for version in range(
                    self._version(con) + 1, SCHEMA_VERSION + 1
                ):  # another process may have won
                    for stmt in MIGRATIONS[version - 1]:
                        con.execute(stmt)
                    con.execute(
                        "INSERT INTO schema_version (version, applied) VALUES (?, ?)", (version, utc_now())
                    )
                    log.debug("%s: schema migrated to version %d", self.db_path, version)
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        current = self._version(con)
        if current > SCHEMA_VERSION:
            raise RunStoreError(
                f"{self.db_path}: schema version {current} is newer than this xlqa ({SCHEMA_VERSION});"
                " upgrade xlqa to read it"
            )
        self._ready_pid = os.getpid()

    def schema_version(self) -> int:
        """The index's schema version (0 when the store does not exist yet)."""
        with self._connect() as con:
            return 0 if con is None else self._version(con)

    # -- rows <-> objects --------------------------------------------------------------------------------------
    def _run(self, row: sqlite3.Row) -> Run:
        d = Path(row["dir"])
        return Run(
            id=row["id"], name=row["name"], kind=row["kind"], model=row["model"], status=row["status"],
            created=row["created"], updated=row["updated"], dir=d if d.is_absolute() else self.root / d,
            config=json.loads(row["config_json"]), environment=json.loads(row["environment_json"]),
            host=row["host"], pid=row["pid"],
        )  # fmt: skip

    def _stored_dir(self, folder: Path) -> str:
        """Folders inside the root are stored relative to it, so a store can be moved or mounted elsewhere."""
        return str(folder.relative_to(self.root)) if folder.is_relative_to(self.root) else str(folder)

    @staticmethod
    def _run_file(run: Run) -> dict:
        return {k: v for k, v in run.to_dict().items() if k != "dir"}

    # -- writing -----------------------------------------------------------------------------------------------
    def _new_folder(self, name: str | None, folder: str | Path | None) -> tuple[str, Path, bool]:
        """A fresh run id and its folder (claimed with an exclusive mkdir); True when the folder is new."""
        for _ in range(10):
            run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
            run_id += f"-{name}" if name else ""
            if folder is not None:
                path = Path(folder).absolute()
                made = not path.exists()
                path.mkdir(parents=True, exist_ok=True)
                return run_id, path, made
            try:
                (self.root / run_id).mkdir(parents=True)
                return run_id, self.root / run_id, True
            except FileExistsError:
                continue
        raise RunStoreError(f"{self.root}: could not find a free run id")  # pragma: no cover

    def _check_free(self, con: sqlite3.Connection, folder: Path) -> None:
        try:
            other = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("id")
        except (OSError, ValueError, AttributeError):
            return
        if con.execute("SELECT 1 FROM runs WHERE id = ?", (other,)).fetchone():
            raise RunStoreError(f"{folder} already holds run {other}; choose another folder")

    def _insert_run(self, con, kind, model, config, name, folder, environment, status) -> Run:
        if kind not in KINDS:
            raise RunStoreError(f"unknown run kind {kind!r}; expected one of {', '.join(KINDS)}")
        if status not in STATUSES:
            raise RunStoreError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        if name is not None and not NAME_RE.fullmatch(name):
            raise RunStoreError(f"run name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if not model:
            raise RunStoreError("a run needs a model (hub id, folder or offline source)")
        run_id, path, made = self._new_folder(name, folder)
        now = utc_now()
        run = Run(run_id, name, kind, model, status, now, now, path, dict(config or {}),
                  dict(environment if environment is not None else package_versions()),
                  socket.gethostname(), os.getpid())  # fmt: skip
        wrote = False
        try:
            self._check_free(con, path)
            write_json_atomic(run.run_json, self._run_file(run))
            wrote = True
            con.execute(
                "INSERT INTO runs (id, name, kind, model, status, created, updated, dir, config_json,"
                " environment_json, host, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.id, name, kind, model, status, now, now, self._stored_dir(path), to_json(run.config),
                 to_json(run.environment), run.host, run.pid),
            )  # fmt: skip
        except BaseException:
            if made:
                shutil.rmtree(path, ignore_errors=True)
            elif wrote:
                run.run_json.unlink(missing_ok=True)
            raise
        return run

    def create_run(
        self,
        kind: str,
        *,
        model: str,
        config: dict,
        name: str | None = None,
        dir: str | Path | None = None,
        environment: dict | None = None,
        status: str = "running",
    ) -> Run:
        """Make the run folder, write ``run.json`` and insert the ``runs`` row (status ``running``).

        Args:
            kind: ``train`` or ``eval``.
            model: the model trained or evaluated (hub id, folder or offline source).
            config: the run's full config (saved in ``run.json`` and the index).
            name: optional readable name, appended to the id and accepted wherever a run id is.
            dir: put the run in this folder (e.g. ``xlqa train --output``) instead of ``<root>/<run_id>``.
            environment: package versions; default :func:`xlqa.fileio.environment`.
        """
        with self._transaction() as con:
            run = self._insert_run(con, kind, model, config, name, dir, environment, status)
        log.info("run %s created in %s", run.id, run.dir)
        return run

    def update_status(self, run_id: str, status: str) -> Run:
        """Set a run's status (running, finished, failed, stopped) in the index and its ``run.json``."""
        if status not in STATUSES:
            raise RunStoreError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        run = self.get_run(run_id)
        now = utc_now()
        with self._transaction() as con:
            con.execute("UPDATE runs SET status = ?, updated = ? WHERE id = ?", (status, now, run.id))
        run = replace(run, status=status, updated=now)
        try:  # the index is the record; run.json follows it for people reading the folder
            if not run.dir.is_dir():
                raise FileNotFoundError(f"folder {run.dir} is gone")
            write_json_atomic(run.run_json, self._run_file(run))
        except OSError as err:
            log.warning("run %s: could not update %s: %s", run.id, run.run_json, err)
        return run

    @contextlib.contextmanager
    def tracking(self, run_id: str) -> Iterator[Run]:
        """Mark the run finished when the block ends, failed on an exception, stopped on Ctrl-C."""
        run = self.get_run(run_id)
        try:
            yield run
        except KeyboardInterrupt:
            self.update_status(run.id, "stopped")
            raise
        except BaseException:
            self.update_status(run.id, "failed")
            raise
        self.update_status(run.id, "finished")

    def _insert_evaluation(self, con, run: Run, results: dict, results_path: Path) -> int:
        cur = con.execute(
            "INSERT INTO evaluations (run_id, created, results_path, precision, config_json, environment_json)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (run.id, utc_now(), str(results_path), results.get("precision"), to_json(results.get("config", {})),
             to_json(results.get("environment", {}))),
        )  # fmt: skip
        eval_id = cur.lastrowid
        for i, d in enumerate(results["datasets"]):
            row = metric_row(i, d)
            try:
                con.execute(
                    "INSERT INTO metrics (evaluation_id, dataset, language, rules, n_questions, exact_match, f1,"
                    " metrics_json, extended_json, seconds, data_path, data_sha256, null_threshold)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (eval_id, *row),
                )
            except sqlite3.IntegrityError as err:
                raise RunStoreError(f"run {run.id}: results datasets[{i}] ({row[0]!r}): {err}") from err
        con.execute("UPDATE runs SET updated = ? WHERE id = ?", (utc_now(), run.id))
        return eval_id

    @staticmethod
    def _check_results(results, where: str) -> None:
        if not isinstance(results, dict) or not isinstance(results.get("datasets"), list):
            raise RunStoreError(
                f"{where}: not xlqa evaluation results (expected a dict with a 'datasets' list)"
            )

    def record_evaluation(self, run_id: str, results: dict, *, results_path: str | Path | None = None) -> int:
        """Index the results dict of :func:`xlqa.evaluate.evaluate_model`; returns the evaluation id.

        Args:
            run_id: the run evaluated (id, unique prefix or name).
            results: ``{"config", "precision", "environment", "datasets": [...]}`` as in ``results.json``.
            results_path: where that dict already is on disk; default: written to
                ``<run dir>/evaluations/<time>.json``.
        """
        run = self.get_run(run_id)
        self._check_results(results, f"run {run.id}")
        written = None
        if results_path is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
            written = results_path = run.dir / "evaluations" / f"{stamp}.json"
            write_json_atomic(written, results)
        elif not Path(results_path).is_file():
            raise RunStoreError(f"run {run.id}: results file {results_path} does not exist")
        try:
            with self._transaction() as con:
                eval_id = self._insert_evaluation(con, run, results, Path(results_path).absolute())
        except BaseException:
            if written is not None:
                written.unlink(missing_ok=True)
            raise
        log.info("run %s: evaluation %d recorded (%d datasets)", run.id, eval_id, len(results["datasets"]))
        return eval_id

    def import_results(
        self, results_json_path: str | Path, *, model: str | None = None, name: str | None = None
    ) -> Run:
        """Register an existing evaluation output folder (its ``results.json``) as a finished ``eval`` run."""
        path = Path(results_json_path).absolute()
        if path.is_dir():
            path = path / "results.json"
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunStoreError(f"{path}: no such results file") from None
        except (OSError, ValueError) as err:
            raise RunStoreError(f"{path}: cannot read results: {err}") from err
        self._check_results(results, str(path))
        config = results.get("config") or {}
        model = model or config.get("model")
        if not model:
            raise RunStoreError(f"{path}: no config.model in the results; pass the model (--model)")
        with self._transaction() as con:
            dup = con.execute(
                "SELECT run_id FROM evaluations WHERE results_path = ?", (str(path),)
            ).fetchone()
            if dup:
                raise RunStoreError(f"{path} is already indexed as run {dup[0]}")
            run = self._insert_run(con, "eval", model, config, name, path.parent,
                                   results.get("environment"), "finished")  # fmt: skip
            try:
                self._insert_evaluation(con, run, results, path)
            except BaseException:
                run.run_json.unlink(missing_ok=True)
                raise
        log.info("imported %s as run %s", path, run.id)
        return run

    # -- reading -----------------------------------------------------------------------------------------------
    def list_runs(self, limit: int | None = None, *, kind: str | None = None) -> list[Run]:
        """Runs, newest first (optionally only ``kind`` and at most ``limit``)."""
        if limit is not None and limit < 1:
            raise RunStoreError(f"limit must be >= 1, got {limit}")
        sql, args = "SELECT * FROM runs", []
        if kind is not None:
            sql, args = sql + " WHERE kind = ?", [kind]
        sql += " ORDER BY created DESC, id DESC" + (" LIMIT ?" if limit else "")
        with self._connect() as con:
            if con is None:
                return []
            return [self._run(r) for r in con.execute(sql, [*args, *([limit] if limit else [])])]

    def get_run(self, ref: str) -> Run:
        """A run by exact id, exact name or unique id prefix; otherwise an error listing close matches."""
        ref = (ref or "").strip()
        if not ref:
            raise RunNotFoundError(f"empty run id (store {self.root})")
        with self._connect() as con:
            if con is None:
                raise RunNotFoundError(f"no run {ref!r}: there is no run store in {self.root} yet")
            for where in ("id = ?1", "name = ?1", "substr(id, 1, length(?1)) = ?1"):
                found = con.execute(
                    f"SELECT * FROM runs WHERE {where} ORDER BY created DESC", (ref,)
                ).fetchall()
                if len(found) == 1:
                    return self._run(found[0])
                if found:
                    ids = [r["id"] for r in found]
                    shown = ", ".join(ids[:10]) + (f" (and {len(ids) - 10} more)" if len(ids) > 10 else "")
                    raise RunNotFoundError(f"{ref!r} matches {len(ids)} runs in {self.root}: {shown}", ids)
            keys = [k for row in con.execute("SELECT id, name FROM runs") for k in row if k]
        close = difflib.get_close_matches(ref, keys, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `xlqa runs list`"
        raise RunNotFoundError(f"no run {ref!r} in {self.root}{hint}", close)

    def run_metrics(self, run_id: str) -> list[dict]:
        """EM/F1 (and the full official metrics) of the latest evaluation of each dataset of a run.

        See :func:`xlqa.runs.queries.run_metrics`.
        """
        from xlqa.runs import queries as runs_query

        return runs_query.run_metrics(self, run_id)

    def metrics_summary(self, run_ids: list[str]) -> dict[str, dict]:
        """Per run id: number of datasets and mean EM/F1 over their latest evaluations (None without any).

        See :func:`xlqa.runs.queries.metrics_summary`.
        """
        from xlqa.runs import queries as runs_query

        return runs_query.metrics_summary(self, run_ids)

    def compare(self, run_ids: list[str]) -> dict:
        """Dataset x run table of EM/F1 and each later run's difference to the first.

        See :func:`xlqa.runs.queries.compare` for the returned structure.
        """
        from xlqa.runs import queries as runs_query

        return runs_query.compare(self, run_ids)

"""Run store: one folder per run (config, checkpoints, events, predictions, metrics) and an index of them.

Layout::

    <root>/index.sqlite         runs, evaluations, per-dataset metrics (WAL mode, PRAGMA user_version)
    <root>/<run_id>/run.json    what the run is: kind, model, config, environment, status
    <root>/<run_id>/...         what it writes: best/, events.jsonl, <dataset>/predictions.json, results.json

``root`` defaults to ``$XLQA_RUNS``, else ``./runs``. The index is ``<root>/index.sqlite`` unless ``db`` or
``$XLQA_RUNS_DB`` names another SQLite file or a PostgreSQL database (``postgresql://...``: a store shared
by several machines, whose run folders are on a shared disk; :mod:`xlqa.runs.database`). A run folder may
also live elsewhere (``create_run(dir=)``, ``import_results``); the index records where, and such a run is
named after its folder unless given a name. Every write is one transaction holding the index's writer lock
and files are written under a temporary name then moved with ``os.replace``, so several processes (and,
with PostgreSQL, machines) can share a store. Users name a run by id, unique id prefix, name or
folder: :meth:`RunStore.resolve` is the one place that turns any of these into a :class:`Run`.

A command records itself in a couple of calls::

    store = RunStore()
    run = store.create_run("eval", model=cfg.model, config=asdict(cfg))
    cfg.output = str(run.dir)
    with store.tracking(run.id):  # status: finished, failed (exception) or stopped (Ctrl-C)
        store.record_evaluation(run.id, evaluate_model(cfg), results_path=run.dir / "results.json")
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from xlqa.errors import RunNotFoundError, RunStoreError
from xlqa.fileio import environment as package_versions
from xlqa.fileio import write_json_atomic
from xlqa.results import EvalResult
from xlqa.runs import queries, schema
from xlqa.runs.database import Index, SqliteIndex, open_index
from xlqa.runs.schema import INDEX_NAME, RUN_FILE, Run, to_json, utc_now
from xlqa.settings import get_settings

__all__ = ["RunStore"]


log = logging.getLogger(__name__)


class RunStore:
    """Run folders under ``root`` plus their index (SQLite ``root/index.sqlite``, or ``db``).

    Args:
        root: store folder; default ``$XLQA_RUNS``, else ``./runs``.
        db: the index: a SQLite file or a ``postgresql://`` URL; default ``$XLQA_RUNS_DB``, else
            ``<root>/index.sqlite``.
        timeout: seconds a writer waits for another process's transaction before giving up.
    """

    def __init__(
        self, root: str | Path | None = None, *, db: str | Path | None = None, timeout: float = 30.0
    ):
        settings = get_settings()
        self.root = (Path(root).expanduser() if root is not None else settings.runs).absolute()
        self.timeout = timeout
        self.index: Index = open_index(db or settings.runs_db or self.root / INDEX_NAME, timeout)
        # the SQLite file (None for PostgreSQL): what `runs rebuild` moves aside when it is corrupt
        self.db_path: Path | None = self.index.path if isinstance(self.index, SqliteIndex) else None

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r}, db={self.index.where!r})"

    def child_env(self) -> dict[str, str]:
        """The environment variables that make a child process (a detached job) open this same store."""
        return {"XLQA_RUNS": str(self.root), "XLQA_RUNS_DB": self.index.setting()}

    # -- connections and transactions ------------------------------------------------------------------------
    def connect(self, create: bool = False) -> contextlib.AbstractContextManager:
        """A fresh connection to the index with an up-to-date schema; None when reading a store not made yet.

        Readers (:mod:`xlqa.runs.queries`, :mod:`xlqa.runs.listing`) take it as it is; writers go through one
        transaction of the store's own. Database errors (locked past the timeout, a corrupt file, a server
        gone, a read-only store written to) come out as :class:`RunStoreError` naming the index.
        """
        return self.index.reader(create)

    def _transaction(self) -> contextlib.AbstractContextManager:
        """One write transaction: the writer lock is taken at its start, everything commits or nothing does."""
        return self.index.writer()

    def schema_version(self) -> int:
        """The index's schema version (0 when the store does not exist yet)."""
        return self.index.schema_version()

    # -- rows <-> objects --------------------------------------------------------------------------------------
    def _run(self, row) -> Run:
        return schema.run_from_row(row, self.root)

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

    def _check_free(self, con, folder: Path) -> None:
        try:
            other = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("id")
        except (OSError, ValueError, AttributeError):
            return
        if con.execute("SELECT 1 FROM runs WHERE id = ?", (other,)).fetchone():
            raise RunStoreError(f"{folder} already holds run {other}; choose another folder")

    def _insert_run(self, con, kind, model, config, name, folder, environment, status) -> Run:
        schema.check_run(kind, status, name, model)
        if name is None and folder is not None:
            name = schema.name_for_folder(Path(folder).absolute(), lambda n: queries.name_taken(con, n))
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
            name: a readable name, appended to the id and accepted wherever a run id is. Default: none for a
                run in ``<root>``; with ``dir``, the folder's name (made valid, and given the first free
                suffix ``-2``, ``-3``, ... when another run has it).
            dir: put the run in this folder (e.g. ``xlqa train --output``) instead of ``<root>/<run_id>``.
            environment: package versions; default :func:`xlqa.fileio.environment`.
        """
        with self._transaction() as con:
            run = self._insert_run(con, kind, model, config, name, dir, environment, status)
        log.info("run %s created in %s", run.id, run.dir)
        return run

    def update_status(self, run_id: str, status: str) -> Run:
        """Set a run's status (running, finished, failed, stopped) in the index and its ``run.json``."""
        schema.check_status(status)
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

    def _insert_evaluation(
        self, con, run: Run, results: EvalResult, results_path: Path, created: str | None = None
    ) -> int:
        eval_id = con.execute(
            "INSERT INTO evaluations (run_id, created, results_path, precision, config_json, environment_json)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (run.id, created or utc_now(), str(results_path), results.precision, to_json(results.config),
             to_json(results.environment)),
        ).fetchone()[0]  # fmt: skip
        for i, d in enumerate(results.datasets):
            row = schema.metric_row(d)
            try:
                con.execute(
                    "INSERT INTO metrics (evaluation_id, dataset, language, rules, n_questions, exact_match, f1,"
                    " metrics_json, extended_json, seconds, data_path, data_sha256, null_threshold)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (eval_id, *row),
                )
            except self.index.integrity_errors as err:
                raise RunStoreError(
                    f"run {run.id}: results datasets[{i}] ({row[0]!r}): named twice in one evaluation"
                    f" (UNIQUE evaluation and dataset): {str(err).splitlines()[0]}"
                ) from err
        con.execute("UPDATE runs SET updated = ? WHERE id = ?", (utc_now(), run.id))
        return eval_id

    def record_evaluation(
        self, run_id: str, results: EvalResult | dict, *, results_path: str | Path | None = None
    ) -> int:
        """Index the results of an evaluation (:func:`xlqa.evaluate.evaluate_model`); returns the evaluation id.

        Args:
            run_id: the run evaluated (id, unique prefix or name).
            results: an :class:`~xlqa.results.EvalResult` or its ``results.json`` dict; validated before
                anything is written (:class:`RunStoreError` naming the dataset and field).
            results_path: where those results already are on disk; default: written to
                ``<run dir>/evaluations/<time>.json``.
        """
        run = self.get_run(run_id)
        parsed = schema.parse_results(results, f"run {run.id}")
        written = None
        if results_path is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
            written = results_path = run.dir / "evaluations" / f"{stamp}.json"
            if isinstance(results, EvalResult):
                results.write(written)
            else:  # the dict as given, unknown keys and all
                write_json_atomic(written, results)
        elif not Path(results_path).is_file():
            raise RunStoreError(f"run {run.id}: results file {results_path} does not exist")
        try:
            with self._transaction() as con:
                eval_id = self._insert_evaluation(con, run, parsed, Path(results_path).absolute())
        except BaseException:
            if written is not None:
                written.unlink(missing_ok=True)
            raise
        log.info("run %s: evaluation %d recorded (%d datasets)", run.id, eval_id, len(parsed.datasets))
        return eval_id

    def import_results(
        self, results_json_path: str | Path, *, model: str | None = None, name: str | None = None
    ) -> Run:
        """Register an existing evaluation output folder (its ``results.json``) as a finished ``eval`` run.

        The run's name defaults to the folder's name, as in :meth:`create_run`.
        """
        path = Path(results_json_path).absolute()
        if path.is_dir():
            path = path / "results.json"
        parsed = schema.read_results(path)
        model = model or parsed.config.get("model")
        if not model:
            raise RunStoreError(f"{path}: no config.model in the results; pass the model (--model)")
        with self._transaction() as con:
            dup = con.execute(
                "SELECT run_id FROM evaluations WHERE results_path = ?", (str(path),)
            ).fetchone()
            if dup:
                raise RunStoreError(f"{path} is already indexed as run {dup[0]}")
            environment = parsed.environment if "environment" in parsed.model_fields_set else None
            run = self._insert_run(
                con, "eval", model, parsed.config, name, path.parent, environment, "finished"
            )
            try:
                self._insert_evaluation(con, run, parsed, path)
            except BaseException:
                run.run_json.unlink(missing_ok=True)
                raise
        log.info("imported %s as run %s", path, run.id)
        return run

    def restore_run(
        self, run: Run, evaluations: list[tuple[Path, EvalResult, str]]
    ) -> tuple[bool, int, Path | None]:
        """Index a run read from its folder, and those of its evaluations the index lacks (``runs rebuild``).

        Args:
            run: the run as its ``run.json`` has it (``run.dir``: the folder it was read from).
            evaluations: ``(results file, parsed results, created)``, oldest first.

        Returns:
            ``(added, evaluations added, other folder)``: ``added`` is False when the run was indexed already;
            ``other folder`` is where the index has this run when that is another folder (nothing is written).
        """
        stored = self._stored_dir(run.dir)
        with self._transaction() as con:
            row = con.execute("SELECT * FROM runs WHERE id = ?", (run.id,)).fetchone()
            if row is not None and self._run(row).dir != run.dir:
                return False, 0, self._run(row).dir
            if row is None:
                con.execute(
                    "INSERT INTO runs (id, name, kind, model, status, created, updated, dir, config_json,"
                    " environment_json, host, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run.id, run.name, run.kind, run.model, run.status, run.created, run.updated, stored,
                     to_json(run.config), to_json(run.environment), run.host, run.pid),
                )  # fmt: skip
            known = {
                r[0] for r in con.execute("SELECT results_path FROM evaluations WHERE run_id = ?", (run.id,))
            }
            added = 0
            for path, parsed, created in evaluations:
                if str(path) not in known:
                    self._insert_evaluation(con, run, parsed, path, created)
                    added += 1
            if row is None:  # the run as its folder has it, not as of this rebuild
                con.execute("UPDATE runs SET updated = ? WHERE id = ?", (run.updated, run.id))
        return row is None, added, None

    # -- reading -----------------------------------------------------------------------------------------------
    def list_runs(self, limit: int | None = None, *, kind: str | None = None) -> list[Run]:
        """Runs, newest first (optionally only ``kind`` and at most ``limit``)."""
        if limit is not None and limit < 1:
            raise RunStoreError(f"limit must be >= 1, got {limit}")
        with self.connect() as con:
            return [] if con is None else [self._run(r) for r in queries.list_runs(con, limit, kind)]

    def resolve(self, ref: str | os.PathLike) -> Run:
        """The run a user means: a folder holding ``run.json``, else an exact id, exact name or unique id prefix.

        Every command that takes a run (the CLI's ``runs`` commands, run control, the API) resolves it here.

        Raises:
            RunNotFoundError: nothing or several runs match; the message and ``candidates`` list close matches.
        """
        text = str(ref).strip()
        folder = Path(text).expanduser()
        if text and (folder / RUN_FILE).is_file():
            try:
                run_id = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))["id"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise RunStoreError(f"{folder / RUN_FILE}: not a readable run file ({err})") from err
            try:
                return self.get_run(run_id)
            except RunNotFoundError as err:
                raise RunNotFoundError(
                    f"{folder} holds run {run_id}, which is not in the run store {self.root}"
                    " (another --root or $XLQA_RUNS?)",
                    err.candidates,
                ) from None
        try:
            return self.get_run(text)
        except RunNotFoundError as err:
            if not (text and folder.is_dir()):
                raise
            raise RunNotFoundError(
                f"{err} ({folder} is a folder without {RUN_FILE})", err.candidates
            ) from None

    def get_run(self, ref: str) -> Run:
        """A run by exact id, exact name or unique id prefix; otherwise an error listing close matches.

        :meth:`resolve` also takes a run's folder; use it for what a user typed.
        """
        ref = (ref or "").strip()
        if not ref:
            raise RunNotFoundError(f"empty run id (store {self.root})")
        with self.connect() as con:
            if con is None:
                raise RunNotFoundError(f"no run {ref!r}: there is no run store in {self.root} yet")
            found, close = queries.find_runs(con, ref)
        if len(found) == 1:
            return self._run(found[0])
        if found:
            ids = [r["id"] for r in found]
            shown = ", ".join(ids[:10]) + (f" (and {len(ids) - 10} more)" if len(ids) > 10 else "")
            raise RunNotFoundError(f"{ref!r} matches {len(ids)} runs in {self.root}: {shown}", ids)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `xlqa runs list`"
        raise RunNotFoundError(f"no run {ref!r} in {self.root}{hint}", close)

    def _latest(self, run_ids: list[str]) -> dict[str, list[dict]]:
        with self.connect() as con:
            return queries.latest_metrics(con, run_ids)

    def run_metrics(self, ref: str | os.PathLike) -> list[dict]:
        """EM/F1 (and the full official metrics) of the latest evaluation of each dataset of a run.

        See :func:`xlqa.runs.queries.latest_metrics` for the rows.
        """
        run = self.resolve(ref)
        return self._latest([run.id])[run.id]

    def metrics_summary(self, run_ids: list[str]) -> dict[str, dict]:
        """Per run id: number of datasets and mean EM/F1 over their latest evaluations (None without any)."""
        return queries.metrics_summary(self._latest(list(run_ids)))

    def compare(self, refs: list[str | os.PathLike]) -> dict:
        """Dataset x run table of EM/F1 and each later run's difference to the first (runs as :meth:`resolve`).

        See :func:`xlqa.runs.queries.compare` for the returned structure.
        """
        runs = [self.resolve(r) for r in refs]
        return queries.compare(runs, self._latest([r.id for r in runs]))

"""The run store's data: the SQLite schema and its migrations, the ``Run`` row, results -> rows, helpers.

The PostgreSQL form of each migration is in :mod:`xlqa.runs.pg` (same tables and columns, PostgreSQL's types);
a new migration is added to both.

Kept apart from :mod:`xlqa.runs.store` (the ``RunStore`` that reads and writes them) so the schema can be read
on its own and the helpers imported without the store.

The schema version is SQLite's own ``PRAGMA user_version`` (a number in the database header, written in the
same transaction as the migration). Stores made before that kept it in a ``schema_version`` table; the first
open by this version copies it into ``user_version`` and drops the table, once.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from xlqa.errors import DataError, RunStoreError
from xlqa.results import DatasetResult, EvalResult

log = logging.getLogger(__name__)

KINDS = ("train", "eval")
STATUSES = ("running", "finished", "failed", "stopped")
INDEX_NAME = "index.sqlite"
RUN_FILE = "run.json"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# Each migration is a list of statements applied in one transaction; the schema version (``PRAGMA
# user_version``) is its 1-based index. Never edit a released migration: append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: runs, their evaluations, one metrics row per evaluated dataset
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY, name TEXT, kind TEXT NOT NULL CHECK (kind IN ('train', 'eval')),
            model TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'stopped')),
            created TEXT NOT NULL, updated TEXT NOT NULL, dir TEXT NOT NULL,
            config_json TEXT NOT NULL DEFAULT '{}', environment_json TEXT NOT NULL DEFAULT '{}',
            host TEXT, pid INTEGER)""",
        "CREATE INDEX runs_created ON runs (created)",
        "CREATE INDEX runs_name ON runs (name)",
        """CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            created TEXT NOT NULL, results_path TEXT, precision TEXT,
            config_json TEXT NOT NULL DEFAULT '{}', environment_json TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX evaluations_run ON evaluations (run_id)",
        """CREATE TABLE metrics (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            evaluation_id INTEGER NOT NULL REFERENCES evaluations (id) ON DELETE CASCADE,
            dataset TEXT NOT NULL, language TEXT, rules TEXT, n_questions INTEGER,
            exact_match REAL NOT NULL, f1 REAL NOT NULL, metrics_json TEXT NOT NULL, extended_json TEXT,
            seconds REAL, data_path TEXT, data_sha256 TEXT, null_threshold REAL,
            UNIQUE (evaluation_id, dataset))""",
        "CREATE INDEX metrics_dataset ON metrics (dataset, language)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
LEGACY_VERSION_TABLE = "schema_version"  # where stores made before ``user_version`` kept their version


@dataclass(frozen=True)
class Run:
    """One row of the ``runs`` table, with its folder resolved."""

    id: str
    name: str | None
    kind: str
    model: str
    status: str
    created: str
    updated: str
    dir: Path
    config: dict
    environment: dict
    host: str | None = None
    pid: int | None = None

    @property
    def label(self) -> str:
        """The name when there is one, else the id (for table headers)."""
        return self.name or self.id

    @property
    def run_json(self) -> Path:
        return self.dir / RUN_FILE

    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def best_dir(self) -> Path:
        return self.dir / "best"

    def to_dict(self) -> dict:
        return {**asdict(self), "dir": str(self.dir)}


def check_status(status: str) -> None:
    """Refuse a status the index cannot hold, listing those it can."""
    if status not in STATUSES:
        raise RunStoreError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")


def check_run(kind: str, status: str, name: str | None, model: str) -> None:
    """Refuse a new run's kind, status, name or model that the index cannot hold, saying what is allowed."""
    if kind not in KINDS:
        raise RunStoreError(f"unknown run kind {kind!r}; expected one of {', '.join(KINDS)}")
    check_status(status)
    if name is not None and not NAME_RE.fullmatch(name):
        raise RunStoreError(f"run name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if not model:
        raise RunStoreError("a run needs a model (hub id, folder or offline source)")


def run_from_row(row: sqlite3.Row, root: Path) -> Run:
    """A ``runs`` row as a :class:`Run`; folders stored relative to the store are resolved against ``root``."""
    d = Path(row["dir"])
    return Run(
        id=row["id"], name=row["name"], kind=row["kind"], model=row["model"], status=row["status"],
        created=row["created"], updated=row["updated"], dir=d if d.is_absolute() else root / d,
        config=json.loads(row["config_json"]), environment=json.loads(row["environment_json"]),
        host=row["host"], pid=row["pid"],
    )  # fmt: skip


def name_for_folder(folder: Path, taken: Callable[[str], bool]) -> str | None:
    """The default name of a run in ``folder``: the folder's name, so ``--output runs/e5`` is run ``e5``.

    Fallbacks, logged: in a folder name that is not a valid name, each run of other characters becomes one
    ``-``, leading ``.``/``_``/``-`` and trailing ``-`` go, and it is cut to 64 characters (nothing left: no
    name); a name ``taken`` by another run gets the first free suffix ``-2``, ``-3``, ...
    """
    base = folder.name
    if not NAME_RE.fullmatch(base):
        base = re.sub(r"^[^A-Za-z0-9]+", "", re.sub(r"[^A-Za-z0-9._-]+", "-", base))[:64].rstrip("-")
        log.info("run in %s: folder name %r is not a valid run name; using %r", folder, folder.name, base)
        if not base:
            return None
    name, n = base, 1
    while taken(name):
        n += 1
        name = f"{base[: 63 - len(str(n))]}-{n}"
    if n > 1:
        log.info("run in %s: another run is named %r; using %r", folder, base, name)
    return name


def utc_now() -> str:
    """Now, UTC, ISO 8601 with microseconds (how every timestamp in the index is written)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def to_json(obj) -> str:
    """Compact JSON for an index column (non-ASCII kept, anything else as its str)."""
    return json.dumps(obj, ensure_ascii=False, default=str)


# -- schema version and migrations --------------------------------------------------------------------------
def schema_version(con: sqlite3.Connection) -> int:
    """The schema version recorded in the database header (0: empty, or made before ``user_version``)."""
    return con.execute("PRAGMA user_version").fetchone()[0]


def use_wal(con: sqlite3.Connection, timeout: float = 30.0) -> None:
    """Switch the database to WAL mode (persistent: recorded in the file), waiting out other processes.

    Changing the journal mode needs the database to itself; while another process holds it (creating the same
    new store, say) SQLite answers "database is locked" at once instead of waiting for the busy timeout, so
    the switch is retried until ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def migrate(con: sqlite3.Connection, where: str | Path) -> int:
    """Bring the schema up to date and return its version; only a read when it already is up to date.

    A read-only store that is current stays readable; a newer schema than this xlqa knows is refused.
    Several processes may open a new store at once: the migration runs under ``BEGIN IMMEDIATE`` and reads
    the version again there, so the one that gets the write lock second finds the work done.
    """
    version = schema_version(con)
    if version < SCHEMA_VERSION:  # also every store made before user_version (it reads 0)
        use_wal(con)
        con.execute("BEGIN IMMEDIATE")
        try:
            version = _upgrade(con, where)
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    if version > SCHEMA_VERSION:
        raise RunStoreError(
            f"{where}: schema version {version} is newer than this xlqa ({SCHEMA_VERSION}); upgrade xlqa to read it"
        )
    return version


def _upgrade(con: sqlite3.Connection, where: str | Path) -> int:
    """Inside the write transaction: adopt a legacy version table, apply the missing migrations."""
    version = schema_version(con)  # another process may have migrated while this one waited for the lock
    if (
        version == 0
        and con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LEGACY_VERSION_TABLE,)
        ).fetchone()
    ):
        version = con.execute(f"SELECT COALESCE(MAX(version), 0) FROM {LEGACY_VERSION_TABLE}").fetchone()[0]
        if version > SCHEMA_VERSION:
            return version  # refused by the caller; nothing changed
        con.execute(f"DROP TABLE {LEGACY_VERSION_TABLE}")
        log.info("%s: schema version %d moved from the %s table to user_version", where, version,
                 LEGACY_VERSION_TABLE)  # fmt: skip
    for v in range(version + 1, SCHEMA_VERSION + 1):
        for stmt in MIGRATIONS[v - 1]:
            con.execute(stmt)
        log.debug("%s: schema migrated to version %d", where, v)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")  # no parameters in PRAGMA; an int from here
    return SCHEMA_VERSION


# -- results -> rows ---------------------------------------------------------------------------------------------
def parse_results(results: EvalResult | dict, where: str) -> EvalResult:
    """Validate evaluation results before anything is written; errors name the dataset and the field.

    Args:
        results: an :class:`~xlqa.results.EvalResult`, or the dict of a ``results.json``.
        where: what to name in errors (the run, the file).

    Raises:
        RunStoreError: not results, a field of the wrong type, or a dataset without EM and F1.
    """
    if isinstance(results, dict) and isinstance(results.get("datasets"), list):
        try:
            results = EvalResult.parse(results, source=where)
        except DataError as err:
            raise RunStoreError(f"{where}: {_locate(results, err.field)}{err.message}") from err
    if not isinstance(results, EvalResult):
        raise RunStoreError(f"{where}: not xlqa evaluation results (expected a dict with a 'datasets' list)")
    for i, d in enumerate(results.datasets):
        if not d.name:
            raise RunStoreError(f"{where}: results datasets[{i}]: missing field 'name'")
        m = d.metrics
        if "f1" not in m or not ({"exact_match", "exact"} & set(m)):
            raise RunStoreError(
                f"{where}: results datasets[{i}] ({d.name!r}): 'metrics' needs 'f1' and 'exact_match'"
                f" (or 'exact'), got {m!r}"
            )
        try:
            _ = (d.em, d.f1)  # both must read as numbers before a row is written
        except (TypeError, ValueError) as err:
            raise RunStoreError(f"{where}: results datasets[{i}] ({d.name!r}): 'metrics': {err}") from err
    return results


def read_results(path: Path) -> EvalResult:
    """A ``results.json`` to import, validated as :func:`parse_results` does; errors name the file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunStoreError(f"{path}: no such results file") from None
    except (OSError, ValueError) as err:
        raise RunStoreError(f"{path}: cannot read results: {err}") from err
    return parse_results(raw, str(path))


def _locate(raw: dict, field: str | None) -> str:
    """``datasets.2.metrics`` -> ``results datasets[2] ('xquad.de'): field 'metrics': `` (the dataset named)."""
    parts = (field or "").split(".")
    if len(parts) < 2 or parts[0] != "datasets" or not parts[1].isdigit():
        return f"results field {field!r}: " if field else ""
    i = int(parts[1])
    entry = raw["datasets"][i]
    name = f" ({entry['name']!r})" if isinstance(entry, dict) and "name" in entry else ""
    rest = ".".join(parts[2:])
    return f"results datasets[{i}]{name}: " + (f"field {rest!r}: " if rest else "")


def metric_row(d: DatasetResult) -> tuple:
    """One validated dataset result -> a ``metrics`` row (without the evaluation id)."""
    return (d.name, d.language, d.rules, d.n_questions, d.em, d.f1, to_json(d.metrics),
            to_json(d.extended) if d.extended else None, d.seconds, d.path, d.sha256,
            d.null_threshold)  # fmt: skip

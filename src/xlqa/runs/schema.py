"""The run store's data: the SQLite schema and its migrations, the ``Run`` row, errors and file helpers.

Kept apart from :mod:`xlqa.runs.store` (the ``RunStore`` that reads and writes them) so the schema can be read on its own
and the helpers imported without the store.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from xlqa.errors import RunStoreError
from xlqa.evaluate import em_of, f1_of

KINDS = ("train", "eval")
STATUSES = ("running", "finished", "failed", "stopped")
INDEX_NAME = "index.sqlite"
RUN_FILE = "run.json"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# Each migration is a list of statements applied in one transaction; the schema version is its 1-based index.
# Never edit a released migration: append a new one.
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


def utc_now() -> str:
    """Now, UTC, ISO 8601 with microseconds (how every timestamp in the index is written)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def to_json(obj) -> str:
    """Compact JSON for an index column (non-ASCII kept, anything else as its str)."""
    return json.dumps(obj, ensure_ascii=False, default=str)


def metric_row(i: int, d: dict) -> tuple:
    """One ``datasets`` entry of a results dict -> a ``metrics`` row (without the evaluation id)."""
    where = f"results datasets[{i}]" + (f" ({d['name']!r})" if isinstance(d, dict) and "name" in d else "")
    if not isinstance(d, dict):
        raise RunStoreError(f"{where}: expected an object, got {type(d).__name__}")
    for key in ("name", "metrics"):
        if key not in d:
            raise RunStoreError(f"{where}: missing field {key!r}")
    m = d["metrics"]
    if not isinstance(m, dict) or "f1" not in m or not ({"exact_match", "exact"} & set(m)):
        raise RunStoreError(f"{where}: 'metrics' needs 'f1' and 'exact_match' (or 'exact'), got {m!r}")
    try:
        em, f1 = em_of(d), f1_of(d)
        seconds = None if d.get("seconds") is None else float(d["seconds"])
        threshold = None if d.get("null_threshold") is None else float(d["null_threshold"])
        n = None if d.get("n_questions") is None else int(d["n_questions"])
    except (TypeError, ValueError) as err:
        raise RunStoreError(f"{where}: {err}") from err
    ext = d.get("extended")
    return (str(d["name"]), d.get("language"), d.get("rules"), n, em, f1, to_json(m),
            to_json(ext) if ext else None, seconds, d.get("path"), d.get("sha256"), threshold)  # fmt: skip

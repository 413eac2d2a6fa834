"""``xlqa runs rebuild``: make the index again from the run folders, which hold everything it records.

Every run folder has ``run.json`` (what the run is: id, name, kind, model, config, environment, status) and
the results of its evaluations: ``results.json`` (``xlqa evaluate``) and ``evaluations/*.json`` (results the
store was given as data). So an index that was lost, emptied or corrupted can be rebuilt without losing a run:

- a SQLite index that is not a readable database is moved aside (``index.sqlite.corrupt-<time>``, with its
  ``-wal``/``-shm`` files) and a new one is made;
- each folder of the store, and each folder given (a run folder, or a folder of run folders: runs kept
  outside the store, such as imported evaluations), is read; a run already indexed is left as it is, and an
  evaluation whose results file is already indexed for its run is not added again, so a rebuild can be run
  any number of times;
- a folder whose ``run.json`` or results file cannot be read is reported by its path and skipped; the other
  runs are indexed.

Evaluations are added oldest file first (by modification time), so the newest stays the latest of each dataset.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from xlqa.errors import RunStoreError
from xlqa.results import RESULTS_FILE
from xlqa.runs import schema
from xlqa.runs.schema import RUN_FILE, Run
from xlqa.runs.store import RunStore

log = logging.getLogger(__name__)

RUN_FIELDS = ("id", "kind", "model", "status", "created", "updated")  # run.json fields a run cannot lack


@dataclass
class RebuildReport:
    """What :func:`rebuild` found and did."""

    index: str
    moved_aside: str | None = None  # where a corrupt SQLite index went
    folders: int = 0  # run folders found (with run.json)
    added: list[str] = field(default_factory=list)  # run ids added to the index
    present: list[str] = field(default_factory=list)  # run ids already indexed
    evaluations: int = 0  # evaluations added
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, message naming that path)

    def to_dict(self) -> dict:
        return {**self.__dict__, "problems": [{"path": p, "problem": m} for p, m in self.problems]}

    def skip(self, path: Path, err: Exception | str) -> None:
        """Record a file that could not be indexed; the message starts with its path."""
        text = str(err)
        self.problems.append((str(path), text if text.startswith(str(path)) else f"{path}: {text}"))
        log.debug("runs rebuild: skipped %s", self.problems[-1][1])


def set_aside_corrupt(db_path: Path | None) -> Path | None:
    """Move a SQLite index that is not a sound database aside (with its WAL files); returns where it went."""
    if db_path is None or not db_path.exists() or db_path.stat().st_size == 0:
        return None
    try:
        con = sqlite3.connect(f"file:{quote(str(db_path))}?mode=ro", uri=True)
        try:
            sound = con.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        finally:
            con.close()
    except sqlite3.DatabaseError:
        sound = False
    if sound:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}")
    try:
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{db_path}{suffix}")
            if src.exists():
                os.replace(src, Path(f"{target}{suffix}"))
    except OSError as err:
        raise RunStoreError(
            f"run index {db_path} is not a readable database and cannot be moved aside: {err}"
        ) from err
    log.debug("run index %s is not a readable database: moved to %s", db_path, target)
    return target


def links_out(store: RunStore) -> list[Path]:
    """Entries of the store's folder that are symlinks to somewhere outside it: never indexed by a scan (a link
    must not pull another folder's files into the store); give the target as a folder to index it."""
    root = store.root.resolve()
    return sorted(
        p for p in store.root.iterdir() if p.is_symlink() and not p.resolve().is_relative_to(root)
    ) if store.root.is_dir() else []  # fmt: skip


def run_folders(store: RunStore, extra: list[Path]) -> list[Path]:
    """Folders holding ``run.json``: the store's own, then each given folder or the run folders inside it."""
    found: list[Path] = []
    outside = set(links_out(store))
    for top, inside in [(store.root, True)] + [(Path(f).absolute(), False) for f in extra]:
        if not inside and (top / RUN_FILE).is_file():
            found.append(top)
        elif top.is_dir():
            found += sorted(p for p in top.iterdir() if (p / RUN_FILE).is_file() and p not in outside)
        elif not inside:
            raise RunStoreError(f"{top}: no such folder")
    return list(dict.fromkeys(found))


def read_run(folder: Path) -> Run:
    """The run a folder's ``run.json`` describes; errors name the file and the field."""
    path = folder / RUN_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunStoreError(f"{path}: not a readable run file ({err})") from err
    if not isinstance(raw, dict):
        raise RunStoreError(f"{path}: not a readable run file (expected a JSON object)")
    missing = [k for k in RUN_FIELDS if not isinstance(raw.get(k), str) or not raw[k]]
    if missing:
        raise RunStoreError(f"{path}: missing or empty field {missing[0]!r}")
    try:
        schema.check_run(raw["kind"], raw["status"], raw.get("name"), raw["model"])
    except RunStoreError as err:
        raise RunStoreError(f"{path}: {err}") from err
    pid = raw.get("pid")
    return Run(
        id=raw["id"], name=raw.get("name"), kind=raw["kind"], model=raw["model"], status=raw["status"],
        created=raw["created"], updated=raw["updated"], dir=folder, config=_dict(raw.get("config")),
        environment=_dict(raw.get("environment")), host=raw.get("host"),
        pid=pid if isinstance(pid, int) else None,
    )  # fmt: skip


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def results_files(folder: Path) -> list[Path]:
    """A run folder's results files, oldest first: ``results.json`` and ``evaluations/*.json``."""
    files = [folder / RESULTS_FILE] if (folder / RESULTS_FILE).is_file() else []
    evals = folder / "evaluations"
    files += sorted(evals.glob("*.json")) if evals.is_dir() else []
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def rebuild(store: RunStore, folders: list[str | Path] = ()) -> RebuildReport:
    """Index every run folder of ``store`` (and of ``folders``) that the index lacks; see the module docstring."""
    report = RebuildReport(index=store.index.where)
    moved = set_aside_corrupt(store.db_path)
    report.moved_aside = str(moved) if moved else None
    with store.connect(create=True):  # a usable (if empty) index even when no run folder is found
        pass
    given = {Path(f).resolve() for f in folders}
    for link in (lk for lk in links_out(store) if lk.resolve() not in given):
        report.skip(link, f"a link out of the run store (to {link.resolve()}): give that folder to index it")
    for folder in run_folders(store, [Path(f) for f in folders]):
        report.folders += 1
        try:
            run = read_run(folder)
        except RunStoreError as err:
            report.skip(folder / RUN_FILE, err)
            continue
        evaluations = []
        for path in results_files(folder):
            try:
                parsed = schema.read_results(path)
            except RunStoreError as err:
                report.skip(path, err)
                continue
            created = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(
                timespec="microseconds"
            )
            evaluations.append((path, parsed, created))
        try:
            added, n, other_dir = store.restore_run(run, evaluations)
        except RunStoreError as err:
            report.skip(folder / RUN_FILE, err)
            continue
        if other_dir is not None:
            report.skip(folder / RUN_FILE, f"run {run.id} is already indexed in another folder, {other_dir}")
            continue
        (report.added if added else report.present).append(run.id)
        report.evaluations += n
    return report

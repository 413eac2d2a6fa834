"""What the runs API answers, as plain functions of the run store: the runs table, one run, checkpoints.

The routes (:mod:`xlqa.server.routes.runs`) only parse parameters and call these. Rows come from one paged
SQL query (:func:`xlqa.runs.listing.page_runs`); only the rows of the page returned read their folders (the
training events, the pid file), so a listing costs the same with ten runs or ten thousand.
"""

from __future__ import annotations

import json
from pathlib import Path

from xlqa.runs import listing
from xlqa.runs.launch import eval_log, live_status, run_pid
from xlqa.runs.schema import STATUSES, Run, run_from_row
from xlqa.runs.store import RunStore
from xlqa.server.runs_events import summary
from xlqa.train import control

LIVE_STATUSES = ("dead",)  # statuses only a look at the process can tell (stored as running)


def run_row(run: Run, best_f1: float | None = None) -> dict:
    """One row of the runs table: progress and health of a training run from its events, liveness for all."""
    status = live_status(run)
    row = {"id": run.id, "name": run.name, "kind": run.kind, "model": run.model, "status": status,
           "step": None, "total_steps": None, "epoch": None, "epochs": None, "eta": None, "best_f1": best_f1,
           "health": "dead" if status == "dead" else "ok", "created": run.created,
           "updated": run.updated}  # fmt: skip
    if run.kind == "train":
        s = summary(run.events_path)
        row.update(
            step=s.step.get("step", s.start.get("step")),
            total_steps=s.start.get("total_steps"),
            epoch=s.step.get("epoch"),
            epochs=s.start.get("epochs", run.config.get("epochs")),
            eta=s.step.get("eta") if status == "running" else None,
            best_f1=s.best_f1 if s.best_f1 is not None else best_f1,
            health=s.health(status),
        )
    return row


def list_rows(
    store: RunStore,
    *,
    kind: str | None = None,
    status: str | None = None,
    q: str | None = None,
    sort: str = "-created",
    limit: int = 50,
    offset: int = 0,
) -> dict:
    """A page of the runs table: ``{"total", "offset", "limit", "runs": [row, ...]}``.

    ``status`` is a stored status, or ``dead`` (stored as ``running``, its process gone); ``running`` means
    really running. Both need a look at the processes of the stored ``running`` runs (few, and a pid file
    each), so those are filtered here; every other filter, the sort and the page are SQL.
    """
    filt = listing.RunFilter(kind=kind, statuses=(status,) if status in STATUSES else (), text=q or None)
    if status in ("running", *LIVE_STATUSES):
        filt = listing.RunFilter(kind=kind, statuses=("running",), text=q or None)
        with store.connect() as con:
            _, rows = listing.page_runs(con, filt, sort, None)
        rows = [r for r in rows if live_status(run_from_row(r, store.root)) == status]
        total, rows = len(rows), rows[offset : offset + limit]
    else:
        with store.connect() as con:
            total, rows = listing.page_runs(con, filt, sort, limit, offset)
    runs = [run_row(run_from_row(r, store.root), r["best_f1"]) for r in rows]
    return {"total": total, "offset": offset, "limit": limit, "runs": runs}


def checkpoints(run: Run) -> list[dict]:
    """The run's complete resumable checkpoints (``checkpoints/step-N``), oldest first, then ``best/``."""
    from xlqa.train.checkpoint import list_checkpoints

    out = [
        {"step": int(p.name.split("-")[1]), "path": str(p), "best": False} for p in list_checkpoints(run.dir)
    ]
    best = run.best_dir
    if (best / "config.json").is_file():
        try:
            step = json.loads((best / "xlqa.json").read_text(encoding="utf-8")).get("step")
        except (OSError, ValueError):
            step = None
        out.append({"step": step, "path": str(best), "best": True})
    return out


def run_detail(store: RunStore, run: Run) -> dict:
    """One run: its row with folder, config and environment; training status; checkpoints; evaluations."""
    with store.connect() as con:
        evaluations = listing.evaluations(con, run.id)
    latest = store.run_metrics(run.id)
    mean = sum(m["f1"] for m in latest) / len(latest) if latest else None
    detail = {
        "run": {
            **run_row(run, mean),
            "dir": str(run.dir),
            "config": run.config,
            "environment": run.environment,
        },
        "status": control.run_status(run.id, store=store) if run.kind == "train" else None,
        "checkpoints": checkpoints(run) if run.kind == "train" else [],
        "evaluations": evaluations,
        "metrics": latest,
    }
    if run.kind == "eval":
        pid, host = run_pid(run)
        log = eval_log(run)
        detail["job"] = {"pid": pid, "host": host, "log": str(log) if log.exists() else None}
    return detail


def all_checkpoints(store: RunStore) -> list[dict]:
    """Every checkpoint of every training run, newest run first (what ``xlqa evaluate --model`` takes)."""
    out = []
    for run in store.list_runs(kind="train"):
        for c in reversed(checkpoints(run)):
            out.append({"run": run.id, "run_name": run.name, **c})
    return out


def benchmarks() -> dict:
    """The registered benchmarks and groups (:mod:`xlqa.sources.registry`)."""
    from xlqa.sources import registry

    specs = registry.list_benchmarks()
    rows = [
        {"name": s.name, "languages": list(dict.fromkeys(x for x in (s.language, s.question_language) if x)),
         "family": s.family, "rules": s.rules, "split": s.split}
        for s in specs
    ]  # fmt: skip
    return {"benchmarks": rows, "groups": {k: list(v) for k, v in registry.GROUPS.items()}}


def tail_log(path: Path, max_bytes: int = 20000) -> str:
    """The end of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - max_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""

"""Read-side queries of the run store: latest metrics per dataset, per-run summaries, run comparisons.

Plain functions of an open connection (:meth:`xlqa.runs.store.RunStore.connect`) or of rows already read, so
they depend on the schema only, never on the store: ``RunStore.run_metrics``, ``.metrics_summary`` and
``.compare`` resolve the runs and call these. They never write. The SQL is what SQLite and PostgreSQL both
run (:mod:`xlqa.runs.database`): ``?`` placeholders, a named subquery, no numbered parameters.
"""

from __future__ import annotations

import difflib
import json

from xlqa.errors import RunStoreError
from xlqa.runs.schema import Run


def find_runs(con, ref: str) -> tuple[list, list[str]]:
    """The ``runs`` rows ``ref`` names, newest first, and close ids and names when none does.

    The first rule that matches wins: exact id, exact name, id prefix (several rows: ``ref`` is ambiguous).
    """
    for where, args in (("id = ?", (ref,)), ("name = ?", (ref,)), ("substr(id, 1, ?) = ?", (len(ref), ref))):
        found = con.execute(f"SELECT * FROM runs WHERE {where} ORDER BY created DESC", args).fetchall()
        if found:
            return found, []
    keys = [k for row in con.execute("SELECT id, name FROM runs") for k in row if k]
    return [], difflib.get_close_matches(ref, keys, n=5, cutoff=0.5)


def list_runs(con, limit: int | None, kind: str | None) -> list:
    """``runs`` rows, newest first: all, or only ``kind``, at most ``limit``."""
    sql, args = "SELECT * FROM runs", []
    if kind is not None:
        sql, args = sql + " WHERE kind = ?", [kind]
    sql += " ORDER BY created DESC, id DESC" + (" LIMIT ?" if limit else "")
    return con.execute(sql, [*args, *([limit] if limit else [])]).fetchall()


def name_taken(con, name: str) -> bool:
    """True when a run of the index already has this name."""
    return con.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone() is not None


def latest_metrics(con, run_ids: list[str]) -> dict[str, list[dict]]:
    """Per run, the newest evaluation's row for each dataset, in the order they were recorded.

    Args:
        con: a connection to the index (None: a store not made yet, so no rows).
        run_ids: exact run ids.

    Returns:
        ``{run_id: [{"dataset", "language", "rules", "n_questions", "exact_match", "f1", "metrics",
        "extended", "seconds", "path", "sha256", "null_threshold", "evaluation_id", "evaluated",
        "results_path"}, ...]}``.
    """
    out: dict[str, list[dict]] = {r: [] for r in run_ids}
    marks = ", ".join("?" * len(run_ids))
    sql = f"""SELECT * FROM (
        SELECT e.run_id, e.created AS evaluated, e.results_path, m.*, ROW_NUMBER() OVER (
            PARTITION BY e.run_id, m.dataset ORDER BY e.id DESC) AS rn
        FROM metrics m JOIN evaluations e ON e.id = m.evaluation_id WHERE e.run_id IN ({marks}))
        AS latest WHERE rn = 1 ORDER BY evaluation_id, id"""
    rows = [] if con is None or not run_ids else con.execute(sql, run_ids).fetchall()
    for r in map(dict, rows):
        r["metrics"], r["extended"] = (
            json.loads(r.pop("metrics_json")),
            json.loads(r.pop("extended_json") or "{}"),
        )
        r["path"], r["sha256"] = r.pop("data_path"), r.pop("data_sha256")
        for k in ("rn", "id"):
            del r[k]
        out[r.pop("run_id")].append(r)
    return out


def metrics_summary(latest: dict[str, list[dict]]) -> dict[str, dict]:
    """Per run id of :func:`latest_metrics`: number of datasets and mean EM/F1 (None without any)."""
    out = {}
    for rid, rows in latest.items():
        n = len(rows)
        out[rid] = {"datasets": n, "exact_match": sum(r["exact_match"] for r in rows) / n if n else None,
                    "f1": sum(r["f1"] for r in rows) / n if n else None}  # fmt: skip
    return out


def compare(runs: list[Run], latest: dict[str, list[dict]]) -> dict:
    """Dataset x run table of EM/F1, each later run's difference to the first, and the mean over shared data.

    ``latest`` is :func:`latest_metrics` of the runs.

    Returns ``{"runs": [run dicts], "rows": [{"dataset", "language", "rules", "same_data", "values":
    {run_id: {"exact_match", "f1"} | None}, "delta": {run_id: {...} | None}}], "average": {...} | None}``;
    ``delta`` holds the runs after the first; ``same_data`` is False when the runs scored files with
    different sha256 under one dataset name.
    """
    if not runs:
        raise RunStoreError("compare needs at least one run")
    ids = [r.id for r in runs]
    if len(set(ids)) < len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise RunStoreError(f"run {dup} is given twice")
    by_run = {rid: {m["dataset"]: m for m in rows} for rid, rows in latest.items()}
    names = list(dict.fromkeys(m["dataset"] for rid in ids for m in latest[rid]))
    rows = []
    for ds in names:
        cells = {rid: by_run[rid].get(ds) for rid in ids}
        some = next(c for c in cells.values() if c)
        shas = {c["sha256"] for c in cells.values() if c}
        rows.append({"dataset": ds, "language": some["language"], "rules": some["rules"],
                     "same_data": len(shas) <= 1, **_values_and_deltas(ids, cells)})  # fmt: skip
    common = [r for r in rows if all(r["values"][rid] for rid in ids)]
    average = None
    if common:
        mean = {rid: {k: sum(r["values"][rid][k] for r in common) / len(common) for k in ("exact_match", "f1")}
                for rid in ids}  # fmt: skip
        average = {"datasets": len(common), **_values_and_deltas(ids, mean)}
    return {"runs": [r.to_dict() for r in runs], "rows": rows, "average": average}


def _values_and_deltas(ids: list[str], cells: dict[str, dict | None]) -> dict:
    values = {
        rid: ({"exact_match": c["exact_match"], "f1": c["f1"]} if c else None) for rid, c in cells.items()
    }
    base = values[ids[0]]
    delta = {
        rid: {k: values[rid][k] - base[k] for k in ("exact_match", "f1")} if base and values[rid] else None
        for rid in ids[1:]
    }
    return {"values": values, "delta": delta}

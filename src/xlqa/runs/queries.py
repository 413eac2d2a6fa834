"""Read-side queries of the run store: latest metrics per dataset, per-run summaries, run comparisons.

`RunStore.run_metrics`, `RunStore.metrics_summary` and `RunStore.compare` call these; they read the index
only (one connection per call) and never write.
"""

from __future__ import annotations

import json

from xlqa.errors import RunStoreError
from xlqa.runs.store import RunStore


def latest_metrics(store: RunStore, run_ids: list[str]) -> dict[str, list[dict]]:
    """Per run, the newest evaluation's row for each dataset, in the order they were recorded."""
    out: dict[str, list[dict]] = {r: [] for r in run_ids}
    marks = ", ".join("?" * len(run_ids))
    sql = f"""SELECT * FROM (
        SELECT e.run_id, e.created AS evaluated, e.results_path, m.*, ROW_NUMBER() OVER (
            PARTITION BY e.run_id, m.dataset ORDER BY e.id DESC) AS rn
        FROM metrics m JOIN evaluations e ON e.id = m.evaluation_id WHERE e.run_id IN ({marks}))
        WHERE rn = 1 ORDER BY evaluation_id, id"""
    with store._connect() as con:
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


def run_metrics(store: RunStore, run_id: str) -> list[dict]:
    """EM/F1 (and the full official metrics) of the latest evaluation of each dataset of a run."""
    run = store.get_run(run_id)
    return latest_metrics(store, [run.id])[run.id]


def metrics_summary(store: RunStore, run_ids: list[str]) -> dict[str, dict]:
    """Per run id: number of datasets and mean EM/F1 over their latest evaluations (None without any)."""
    out = {}
    for rid, rows in latest_metrics(store, list(run_ids)).items():
        n = len(rows)
        out[rid] = {"datasets": n, "exact_match": sum(r["exact_match"] for r in rows) / n if n else None,
                    "f1": sum(r["f1"] for r in rows) / n if n else None}  # fmt: skip
    return out


def compare(store: RunStore, run_ids: list[str]) -> dict:
    """Dataset x run table of EM/F1, each later run's difference to the first, and the mean over shared data.

    Returns ``{"runs": [run dicts], "rows": [{"dataset", "language", "rules", "same_data", "values":
    {run_id: {"exact_match", "f1"} | None}, "delta": {run_id: {...} | None}}], "average": {...} | None}``;
    ``delta`` holds the runs after the first; ``same_data`` is False when the runs scored files with
    different sha256 under one dataset name.
    """
    if not run_ids:
        raise RunStoreError("compare needs at least one run")
    runs = [store.get_run(r) for r in run_ids]
    ids = [r.id for r in runs]
    if len(set(ids)) < len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise RunStoreError(f"run {dup} is given twice")
    latest = latest_metrics(store, ids)
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

"""Paged run listings for the HTTP API and the dashboard: filter, sort and page in SQL, never in Python.

A store may hold thousands of runs; a page of the runs table must cost one indexed query, not one per run.
:func:`page_runs` filters (kind, stored status, text), sorts (created, name, kind, model, status, mean F1 of
the latest evaluation of each dataset) and pages in one statement, and counts the matches in another. Plain
functions of an open connection (:meth:`xlqa.runs.store.RunStore.connect`), like :mod:`xlqa.runs.queries`, in
the SQL that SQLite and PostgreSQL both run.
"""

from __future__ import annotations

from dataclasses import dataclass

SORT_KEYS = ("created", "name", "kind", "model", "status", "best_f1")
NO_LIMIT = 2**63 - 1  # "all rows" as a LIMIT both databases take (SQLite needs a LIMIT before OFFSET)

# mean F1 over the datasets of each run, each dataset at its newest evaluation (as queries.latest_metrics)
_F1 = """WITH latest AS (
    SELECT e.run_id, m.f1, ROW_NUMBER() OVER (PARTITION BY e.run_id, m.dataset ORDER BY e.id DESC) AS rn
    FROM metrics m JOIN evaluations e ON e.id = m.evaluation_id),
  f1 AS (SELECT run_id, AVG(f1) AS best_f1 FROM latest WHERE rn = 1 GROUP BY run_id)"""


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing shows: ``kind`` (train | eval), stored ``statuses``, ``text`` in id/name/model."""

    kind: str | None = None
    statuses: tuple[str, ...] = ()
    text: str | None = None

    def where(self) -> tuple[str, list]:
        """The SQL ``WHERE`` clause (empty when nothing is filtered) and its parameters."""
        parts, args = [], []
        if self.kind:
            parts.append("kind = ?")
            args.append(self.kind)
        if self.statuses:
            parts.append(f"status IN ({', '.join('?' * len(self.statuses))})")
            args += list(self.statuses)
        if self.text:
            like = "%" + self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            parts.append(
                " OR ".join(f"{col} LIKE ? ESCAPE '\\'" for col in ("id", "name", "model")).join("()")
            )
            args += [like, like, like]
        return (" WHERE " + " AND ".join(parts)) if parts else "", args


def order_by(sort: str) -> str:
    """``ORDER BY`` for a sort key of :data:`SORT_KEYS`, ``-`` first for descending (runs without F1 last)."""
    key, desc = sort.lstrip("-"), sort.startswith("-")
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r}; valid: {', '.join(SORT_KEYS)} (prefix - to descend)")
    way = "DESC" if desc else "ASC"
    col = {"name": "COALESCE(name, id)"}.get(key, key)
    nulls = "(best_f1 IS NULL), " if key == "best_f1" else ""
    return f" ORDER BY {nulls}{col} {way}, created {way}, id {way}"


def page_runs(con, filt: RunFilter, sort: str, limit: int | None, offset: int = 0) -> tuple[int, list[dict]]:
    """The number of runs matching ``filt`` and one page of them, sorted.

    Args:
        con: a connection to the index (None: a store not made yet, so nothing).
        filt: the filter.
        sort: a key of :data:`SORT_KEYS`, ``-`` first for descending.
        limit: rows in the page (None: all from ``offset``).
        offset: rows skipped.

    Returns:
        ``(total, rows)``: each row the ``runs`` columns plus ``best_f1`` (mean F1 of the latest evaluation of
        each dataset, None without any).
    """
    if con is None:
        return 0, []
    where, args = filt.where()
    total = con.execute(f"SELECT COUNT(*) FROM runs{where}", args).fetchone()[0]
    sql = f"{_F1} SELECT runs.*, f1.best_f1 FROM runs LEFT JOIN f1 ON f1.run_id = runs.id{where}"
    sql += order_by(sort) + " LIMIT ? OFFSET ?"
    rows = con.execute(sql, [*args, NO_LIMIT if limit is None else limit, offset]).fetchall()
    return total, [dict(r) for r in rows]


def evaluations(con, run_id: str) -> list[dict]:
    """A run's evaluations, oldest first: id, created, results_path, precision, datasets (count)."""
    if con is None:
        return []
    rows = con.execute(
        "SELECT e.id, e.created, e.results_path, e.precision, COUNT(m.id) AS datasets FROM evaluations e"
        " LEFT JOIN metrics m ON m.evaluation_id = e.id WHERE e.run_id = ? GROUP BY e.id ORDER BY e.id",
        (run_id,),
    ).fetchall()
    return [dict(r) for r in rows]

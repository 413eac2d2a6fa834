"""The run store on SQLite and on PostgreSQL: concurrent writers, and the reads a listing makes.

For each backend, in one session on this machine:

- ``--writers`` processes at once (and 1 alone, the baseline) each record ``--runs`` runs the way a job does:
  create the run, record an evaluation of 3 datasets, mark it finished (3 write transactions). Reported: wall
  time, runs recorded per second, the median and 95th percentile of one run's 3 writes, and that no row was lost;
- with ``--listing`` runs in the store: ``runs list --limit 50`` (rows + mean EM/F1) and the API's page sorted by
  mean F1, median of ``--repeat``.

PostgreSQL is the test server (``XLQA_TEST_PG_URL``, else what ``.ci/postgres`` makes); each backend run gets a
fresh schema, dropped afterwards.

    python benchmarks/bench_run_store.py --out benchmarks/results/run-store.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from run_index import PgSchemas, pg_problem
from xlqa.runs import listing
from xlqa.runs.store import RunStore

RESULTS = {
    "config": {"model": "m"},
    "datasets": [
        {"name": f"xquad.{lang}", "language": lang, "rules": "squad1", "metrics": {"exact_match": 40.0 + i, "f1": 50.0 + i}}
        for i, lang in enumerate(("en", "de", "ar"))
    ],
}  # fmt: skip


def writer(root: str, db: str | None, tag: str, n: int, go, out) -> None:
    store = RunStore(root, db=db)
    go.wait()
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        run = store.create_run("eval", model=f"{tag}-{i}", config={"i": i}, name=f"{tag}-{i}")
        store.record_evaluation(run.id, RESULTS)
        store.update_status(run.id, "finished")
        times.append(time.perf_counter() - t0)
    out.put(times)


def write_phase(root: Path, db: str | None, procs: int, n: int) -> dict:
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=writer, args=(str(root), db, f"w{procs}x{k}", n, go, out)) for k in range(procs)
    ]
    for w in workers:
        w.start()
    time.sleep(2.0)  # every process imported and waiting
    t0 = time.perf_counter()
    go.set()
    times = [t for _ in workers for t in out.get(timeout=600)]
    wall = time.perf_counter() - t0
    for w in workers:
        w.join()
        assert w.exitcode == 0, f"writer exited with {w.exitcode}"
    q = statistics.quantiles(times, n=20)
    return {"processes": procs, "runs": procs * n, "wall_s": round(wall, 3), "runs_per_s": round(procs * n / wall, 1),
            "run_median_ms": round(statistics.median(times) * 1000, 2), "run_p95_ms": round(q[18] * 1000, 2)}  # fmt: skip


def read_phase(store: RunStore, repeat: int) -> dict:
    def median_ms(fn) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1000, 2)

    def runs_list():
        runs = store.list_runs(50)
        store.metrics_summary([r.id for r in runs])

    def api_page():
        with store.connect() as con:
            listing.page_runs(con, listing.RunFilter(), "-best_f1", 50)

    return {"list_50_ms": median_ms(runs_list), "page_by_f1_ms": median_ms(api_page)}


def bench_backend(kind: str, args, tmp: Path, schemas: PgSchemas) -> dict:
    row: dict = {"backend": kind, "writes": []}
    for procs in (1, args.writers):
        db = schemas.new_url() if kind == "postgresql" else None
        root = tmp / f"{kind}-{procs}"
        row["writes"].append(write_phase(root, db, procs, args.runs))
        store = RunStore(root, db=db)
        with store.connect() as con:
            counts = {
                t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("runs", "evaluations", "metrics")
            }
        want = procs * args.runs
        assert counts == {"runs": want, "evaluations": want, "metrics": 3 * want}, counts  # no row lost
    db = schemas.new_url() if kind == "postgresql" else None
    store = RunStore(tmp / f"{kind}-listing", db=db)
    for i in range(args.listing):
        run = store.create_run("eval", model=f"m{i % 7}", config={}, status="finished")
        store.record_evaluation(run.id, RESULTS, results_path=None)
    row["reads"] = {"runs": args.listing, **read_phase(store, args.repeat)}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=25, help="runs each writer records")
    ap.add_argument("--listing", type=int, default=1000, help="runs in the store for the read phase")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    backends = ["sqlite"] + (["postgresql"] if pg_problem() is None else [])
    if pg_problem():
        print(f"PostgreSQL left out: {pg_problem()}", file=sys.stderr)
    schemas = PgSchemas()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [bench_backend(kind, args, Path(tmp), schemas) for kind in backends]
    finally:
        schemas.drop_all()
    print(
        f"{'backend':<11} {'writers':>7} {'runs':>5} {'wall s':>7} {'runs/s':>7} {'run ms p50':>10} {'p95':>7}"
    )
    for row in rows:
        for w in row["writes"]:
            print(f"{row['backend']:<11} {w['processes']:>7} {w['runs']:>5} {w['wall_s']:>7.2f} {w['runs_per_s']:>7.1f}"
                  f" {w['run_median_ms']:>10.2f} {w['run_p95_ms']:>7.2f}")  # fmt: skip
    print(f"\n{'backend':<11} {'runs':>5} {'list 50 ms':>10} {'page by F1 ms':>13}")
    for row in rows:
        r = row["reads"]
        print(f"{row['backend']:<11} {r['runs']:>5} {r['list_50_ms']:>10.2f} {r['page_by_f1_ms']:>13.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        facts = {
            "machine": platform.node(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        }
        args.out.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, **facts, "results": rows}, indent=2
            )
            + "\n"
        )


if __name__ == "__main__":
    main()

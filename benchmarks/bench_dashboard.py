"""The runs table with 1,000 runs in the store: the API's page time and the dashboard's load in Chromium.

Makes a store of ``--runs`` runs (a third training runs with 200 step events each, the rest evaluation runs
with 3 languages each), serves it on loopback, then measures:

- ``GET /v1/runs?limit=50`` (default sort, by best F1, a text filter, the last page): median of ``--repeat``;
- the dashboard's ``/`` in Debian's Chromium: from navigation to the first 50 rows drawn, and to the next page.

    python benchmarks/bench_dashboard.py --runs 1000 --out benchmarks/results/dashboard-1000-runs.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serving import start_server
from xlqa.config import ServeConfig
from xlqa.runs.store import RunStore
from xlqa.server.app import create_app

LANGS = ("en", "de", "ar")


def make_store(root: Path, n: int) -> RunStore:
    store = RunStore(root)
    for i in range(n):
        kind = "train" if i % 3 == 0 else "eval"
        run = store.create_run(
            kind, model=f"model-{i % 7}", config={"epochs": 2}, name=f"r{i}", status="finished"
        )
        if kind == "eval":
            datasets = [
                {"name": f"xquad.{lang}", "language": lang, "rules": "squad1", "n_questions": 1190,
                 "metrics": {"exact_match": (i + j) % 60, "f1": (i * 7 + j) % 90}}
                for j, lang in enumerate(LANGS)
            ]  # fmt: skip
            store.record_evaluation(run.id, {"config": {"model": run.model}, "datasets": datasets})
        else:
            steps = (
                json.dumps({"event": "step", "step": s, "epoch": s / 100, "loss": 1 / (s + 1)})
                for s in range(200)
            )
            (run.dir / "events.jsonl").write_text("\n".join(steps) + "\n")
    return store


def api_times(url: str, repeat: int) -> dict[str, float]:
    queries = {
        "default": {"limit": 50},
        "by_best_f1": {"limit": 50, "sort": "-best_f1"},
        "text_filter": {"limit": 50, "q": "r99"},
        "last_page": {"limit": 50, "offset": 950},
    }
    out = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        client.get("/v1/runs", params={"limit": 50})  # first request: caches warm
        for name, params in queries.items():
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                r = client.get("/v1/runs", params=params)
                times.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
            out[name] = round(statistics.median(times), 1)
    return out


def browser_times(url: str, n: int, chromium: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t = time.perf_counter()
        page.goto(f"{url}/")
        page.wait_for_selector("#runs tbody[data-loaded]")
        first = (time.perf_counter() - t) * 1000
        rows = page.locator("#runs tbody tr").count()
        t = time.perf_counter()
        page.click("#next")
        page.wait_for_function("document.getElementById('range').textContent.startsWith('51')")
        second = (time.perf_counter() - t) * 1000
        browser.close()
    return {"first_rows_ms": round(first), "rows_shown": rows, "next_page_ms": round(second)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--out", default="benchmarks/results/dashboard-1000-runs.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = make_store(Path(tmp) / "store", args.runs)
        made = time.perf_counter() - t
        with start_server(create_app(ServeConfig(runs=str(store.root)), store=store)) as url:
            api = api_times(url, args.repeat)
            page = browser_times(url, args.runs, args.chromium) if Path(args.chromium).exists() else None
    result = {"runs": args.runs, "store_seconds": round(made, 1), "api_ms_median": api, "browser": page,
              "machine": platform.processor() or platform.machine()}  # fmt: skip
    print(f"{args.runs} runs in the store (made in {made:.1f} s)")
    print(f"{'GET /v1/runs (limit 50)':<28} median ms")
    for name, ms in api.items():
        print(f"  {name:<26} {ms:>8.1f}")
    if page:
        print(
            f"dashboard /: first {page['rows_shown']} rows in {page['first_rows_ms']} ms, next page in {page['next_page_ms']} ms"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

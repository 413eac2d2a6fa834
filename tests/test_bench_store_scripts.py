"""The run store's, the dashboard's and the data loader's benchmarks, end to end at small sizes: what each
promises in its JSON (no row lost on either backend, the dashboard's rows and pages drawn in Chromium, the same
questions from every loader), and that each cleans up after itself (``run_benchmark``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchscript import benchmark_json
from run_index import need_pg, pg_problem

CHROMIUM = "/usr/bin/chromium"


def test_run_store_writers_and_listing_on_both_backends(tmp_path):
    need_pg()  # the PostgreSQL half is the point: skip (fail under CI=true) without the test server
    args = ["--writers", "2", "--runs", "3", "--listing", "20", "--repeat", "2"]
    report = benchmark_json("bench_run_store.py", args, tmp_path, timeout=300)
    rows = {r["backend"]: r for r in report["results"]}
    assert set(rows) == {"sqlite", "postgresql"} and pg_problem() is None
    for name, row in rows.items():
        # the script itself counts the rows after each write phase and fails when one is missing
        assert [(w["processes"], w["runs"]) for w in row["writes"]] == [(1, 3), (2, 6)], name
        for w in row["writes"]:
            assert w["runs_per_s"] > 0 and w["run_p95_ms"] >= w["run_median_ms"] > 0, name
        reads = row["reads"]
        assert reads["runs"] == 20 and reads["list_50_ms"] > 0 and reads["page_by_f1_ms"] > 0


def test_dashboard_pages_a_store_of_60_runs_in_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        msg = f"chromium not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {msg}")
        pytest.skip(msg)
    report = benchmark_json("bench_dashboard.py", ["--runs", "60", "--repeat", "2"], tmp_path)
    assert report["runs"] == 60 and len(report["api_ms_median"]) >= 4
    assert all(ms > 0 for ms in report["api_ms_median"].values())
    page = report["browser"]
    assert page["rows_shown"] == 50 and page["first_rows_ms"] > 0 and page["next_page_ms"] > 0


def test_loading_a_big_file_counts_the_same_questions_three_ways(tmp_path, shared_data):
    report = benchmark_json("bench_load.py", ["--size-mb", "2"], tmp_path, timeout=300)
    rows = report["rows"]
    assert [(r["mode"], Path(r["file"]).suffix) for r in rows] == [
        ("json.load", ".json"), ("load_squad", ".json"), ("load_squad", ".jsonl"),
    ]  # fmt: skip
    assert rows[0]["file_mb"] >= 1.5 and rows[0]["questions"] > 0
    # the same questions from the JSON file, loaded and as JSONL
    assert len({r["questions"] for r in rows}) == 1
    assert all(r["seconds"] > 0 and r["work_mb"] >= 0 for r in rows)

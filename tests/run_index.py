"""The run store's two index backends for tests: SQLite files, and PostgreSQL schemas made per test.

PostgreSQL comes from ``XLQA_TEST_PG_URL`` (what ``.ci/postgres`` prints), else the URL that script makes on
this machine. A test that needs it skips with the reason when no server answers, but fails when CI=true so it
never skips silently in CI. Each store gets a schema of its own (dropped after the test), so tests never see
each other's rows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from xlqa.runs.store import RunStore

DEFAULT_PG_URL = "postgresql://xlqa:xlqa@127.0.0.1:5432/xlqa_test"
BACKENDS = ("sqlite", "postgresql")


def pg_url() -> str:
    return os.environ.get("XLQA_TEST_PG_URL") or DEFAULT_PG_URL


@cache
def pg_problem() -> str | None:
    """Why the test server cannot be used (None: it can)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        with psycopg.connect(pg_url(), connect_timeout=3) as con:
            con.execute("SELECT 1")
    except psycopg.Error as err:
        return f"no PostgreSQL server at {pg_url()} ({str(err).strip().splitlines()[0]}); run .ci/postgres"
    return None


def need_pg() -> None:
    """Skip (fail when CI=true) unless the test server answers."""
    problem = pg_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {problem}")
    pytest.skip(problem)


class PgSchemas:
    """Fresh schemas in the test database, each a store of its own; :meth:`drop_all` removes them."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def new_url(self) -> str:
        import psycopg

        name = f"xlqa_test_{secrets.token_hex(6)}"
        with psycopg.connect(pg_url(), autocommit=True) as con:
            con.execute(f"CREATE SCHEMA {name}")
        self.made.append(name)
        sep = "&" if "?" in pg_url() else "?"
        return f"{pg_url()}{sep}options=-csearch_path%3D{name}"

    def drop_all(self) -> None:
        import psycopg

        if not self.made:
            return
        with psycopg.connect(pg_url(), autocommit=True) as con:
            for name in self.made:
                con.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        self.made.clear()


class Stores:
    """Empty stores on one backend; the first made with ``default=True`` is also ``$XLQA_RUNS_DB`` (so the CLI,
    ``RunStore(root)`` and child processes open the same index)."""

    def __init__(self, kind: str, monkeypatch) -> None:
        self.kind, self.monkeypatch, self.schemas = kind, monkeypatch, PgSchemas()
        monkeypatch.delenv("XLQA_RUNS_DB", raising=False)

    def new(self, root: Path, *, default: bool = False) -> RunStore:
        if self.kind == "sqlite":
            return RunStore(root)
        url = self.schemas.new_url()
        if default:
            self.monkeypatch.setenv("XLQA_RUNS_DB", url)
        return RunStore(root, db=url)


def stores_on(kind: str, monkeypatch) -> Iterator[Stores]:
    """The body of a test module's ``stores`` fixture (parametrized over :data:`BACKENDS`)."""
    if kind == "postgresql":
        need_pg()
    made = Stores(kind, monkeypatch)
    try:
        yield made
    finally:
        made.schemas.drop_all()

"""``xlqa runs``: list, show, compare, import, and follow, stop or resume training runs.

Each command resolves its run through :meth:`xlqa.runs.store.RunStore.resolve` (id, unique id prefix, name or
folder), calls one function of :mod:`xlqa.runs.store` or :mod:`xlqa.train.control`, and renders the result;
errors are :class:`xlqa.errors.XlqaError` and end in one line through the shared handler (:mod:`xlqa.cli.common`).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from xlqa.cli.common import XlqaGroup, console, fail, out_console
from xlqa.runs.liveness import live_status
from xlqa.runs.schema import Run
from xlqa.runs.store import RunStore

runs_app = typer.Typer(
    cls=XlqaGroup,
    help="Runs: folders of config, checkpoints, events, predictions and metrics, indexed in ROOT/index.sqlite"
    " (ROOT: --root, else $XLQA_RUNS, else ./runs) or in the SQLite file or postgresql:// URL of $XLQA_RUNS_DB."
    " A run is named by its id, a unique id prefix, its name (by default its folder's name) or its folder.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain click help, as the other xlqa commands: wraps cleanly at 80 columns
)

Root = Annotated[
    Path | None, typer.Option("--root", help="run store folder (default $XLQA_RUNS, else ./runs)")
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
RunRef = Annotated[str, typer.Argument(help="run id, unique id prefix, name, or folder holding run.json")]
# config keys worth a glance; the full config is in run.json
SUMMARY_KEYS = ("train", "dev", "data", "epochs", "max_steps", "lr", "batch_size", "grad_accum", "seed",
                "max_seq_length", "doc_stride", "max_train_examples", "max_examples", "precision")  # fmt: skip


def _when(iso: str | None) -> str:
    """An index timestamp (UTC) in local time, to the minute."""
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M") if iso else ""


def _num(x: float | None, sign: bool = False) -> str:
    return "" if x is None else f"{x:+.2f}" if sign else f"{x:.2f}"


def _metrics_table(run: Run, rows: list[dict]) -> Table:
    table = Table(title=f"{run.label}: latest evaluation of each dataset")
    for col in ("data", "lang", "rules", "questions", "EM", "F1", "xlqa-ext F1", "seconds", "evaluated"):
        table.add_column(col, justify="left" if col in ("data", "rules", "evaluated") else "right")
    for m in rows:
        ext = m["extended"].get("xlqa-ext") or {}
        table.add_row(
            m["dataset"], m["language"] or "?", m["rules"] or "", str(m["n_questions"] or ""),
            _num(m["exact_match"]), _num(m["f1"]), _num(ext.get("f1")), _num(m["seconds"]), _when(m["evaluated"]),
        )  # fmt: skip
    if len(rows) > 1:
        em, f1 = (sum(m[k] for m in rows) / len(rows) for k in ("exact_match", "f1"))
        table.add_row("average", "", "", "", _num(em), _num(f1), "", "", "", style="bold")
    return table


@runs_app.command("list")
def list_(
    root: Root = None, limit: Annotated[int | None, typer.Option(help="newest N runs only")] = None
) -> None:
    """List runs, newest first: id, name, kind, model, status, created, mean EM/F1 over their datasets.

    A running run whose process on this host is gone shows as dead, as in `xlqa runs status`.

    Example: xlqa runs list --root runs --limit 20
    """
    store = RunStore(root)
    runs = store.list_runs(limit)
    out_console.print(_runs_table(store, runs, store.metrics_summary([r.id for r in runs])), highlight=False)


def _runs_table(store: RunStore, runs: list[Run], summary: dict[str, dict]) -> Table | str:
    if not runs:
        return f"no runs in {store.root}"
    table = Table(title=f"runs in {store.root}")
    for col in ("id", "name", "kind", "model", "status", "created", "datasets", "mean EM", "mean F1"):
        table.add_column(col, justify="right" if col in ("datasets", "mean EM", "mean F1") else "left")
    for r in runs:
        s = summary[r.id]
        table.add_row(r.id, r.name or "", r.kind, r.model, live_status(r), _when(r.created), str(s["datasets"] or ""),
                      _num(s["exact_match"]), _num(s["f1"]))  # fmt: skip
    return table


@runs_app.command("show")
def show(run: RunRef, root: Root = None, as_json: AsJson = False) -> None:
    """Show one run: status, config summary, per-dataset EM/F1 of its latest evaluations, and its files.

    Example: xlqa runs show e5 --root runs
    """
    store = RunStore(root)
    r = store.resolve(run)
    rows = store.run_metrics(r.id)
    if as_json:
        print(json.dumps({"run": r.to_dict(), "metrics": rows}, indent=2, ensure_ascii=False))
    else:
        _print_run(r, rows)


def _print_run(r: Run, rows: list[dict]) -> None:
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    for key, value in (
        ("run", r.id), ("name", r.name or ""), ("kind", r.kind), ("model", r.model), ("status", r.status),
        ("created", _when(r.created)), ("updated", _when(r.updated)), ("host", f"{r.host or '?'} (pid {r.pid})"),
    ):  # fmt: skip
        info.add_row(key, value)
    config = ", ".join(f"{k}={r.config[k]}" for k in SUMMARY_KEYS if r.config.get(k) not in (None, "", []))
    info.add_row("config", config or "(none)")
    out_console.print(info, highlight=False)
    if rows:
        out_console.print(_metrics_table(r, rows))
    else:
        out_console.print("no evaluations recorded", highlight=False)
    paths = [("folder", r.dir), ("run.json", r.run_json)]
    paths += [("events", r.events_path), ("checkpoint", r.best_dir)]
    paths += [
        ("results", Path(p)) for p in dict.fromkeys(m["results_path"] for m in rows if m["results_path"])
    ]
    for what, p in paths:
        if p.exists() or what in ("folder", "run.json"):
            out_console.print(f"[bold]{what}:[/] {p}", highlight=False, soft_wrap=True)


@runs_app.command("compare")
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(help="two or more runs (id, unique prefix, name or folder); first = baseline"),
    ],
    root: Root = None,
    as_json: AsJson = False,
) -> None:
    """Compare runs dataset by dataset: EM and F1 of each, and each run's difference to the first.

    Example: xlqa runs compare baseline runs/e5 20261126-1512 --root runs
    """
    if len(runs) < 2:
        fail("compare needs at least two runs")
    cmp = RunStore(root).compare(runs)
    if as_json:
        print(json.dumps(cmp, indent=2, ensure_ascii=False))
    else:
        _print_comparison(cmp)


def _print_comparison(cmp: dict) -> None:
    ids = [r["id"] for r in cmp["runs"]]
    labels = {r["id"]: r["name"] or r["id"] for r in cmp["runs"]}
    table = Table(title=f"baseline: {labels[ids[0]]}")
    table.add_column("data")
    table.add_column("lang")
    for i, rid in enumerate(ids):
        table.add_column(f"{labels[rid]}\nEM / F1", justify="right")
        if i:
            table.add_column("Δ\nEM / F1", justify="right")

    def pair(v: dict | None, sign: bool = False) -> str:
        return f"{_num(v['exact_match'], sign)} / {_num(v['f1'], sign)}" if v else "-"

    def cells(row: dict) -> list[str]:
        out = []
        for i, rid in enumerate(ids):
            out += [pair(row["values"][rid])] + ([pair(row["delta"][rid], sign=True)] if i else [])
        return out

    for row in cmp["rows"]:
        name = row["dataset"] + ("" if row["same_data"] else " *")
        table.add_row(name, row["language"] or "?", *cells(row))
    if cmp["average"]:
        table.add_row(
            f"average ({cmp['average']['datasets']} shared)", "", *cells(cmp["average"]), style="bold"
        )
    out_console.print(table)
    if not all(row["same_data"] for row in cmp["rows"]):
        out_console.print("* the runs scored different files (sha256) under this name", highlight=False)


@runs_app.command("import")
def import_(
    results_json: Annotated[
        Path, typer.Argument(help="results.json written by xlqa evaluate (or its folder)")
    ],
    name: Annotated[
        str | None, typer.Option(help="readable name for the run (default: the folder's name)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="model, when results.json does not name it")] = None,
    root: Root = None,
) -> None:
    """Register an existing evaluation output folder (its results.json) as a finished eval run.

    Example: xlqa runs import runs/eval/results.json --name e5-baseline --root runs
    """
    store = RunStore(root)
    run = store.import_results(results_json, model=model, name=name)
    out_console.print(f"imported {results_json} as run [bold]{run.id}[/]", highlight=False, soft_wrap=True)
    out_console.print(_metrics_table(run, store.run_metrics(run.id)))


@runs_app.command("rebuild")
def rebuild(
    folders: Annotated[
        list[Path] | None,
        typer.Argument(help="more run folders, or folders of run folders, kept outside the store"),
    ] = None,
    root: Root = None,
    as_json: AsJson = False,
) -> None:
    """Rebuild the index from the run folders (run.json, results.json, evaluations/) after it was lost or corrupted.

    Runs already indexed stay as they are, so it can run any number of times; a corrupt SQLite index is moved
    aside first. Folders that cannot be read are named and skipped (exit code 1); the others are indexed.

    Example: xlqa runs rebuild --root runs
    """
    from xlqa.runs.rebuild import rebuild as rebuild_index

    report = rebuild_index(RunStore(root), folders or [])
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        if report.moved_aside:
            console.print(
                f"the index was not a readable database: moved to {report.moved_aside}", highlight=False
            )
        out_console.print(
            f"{report.index}: {report.folders} run folders, {len(report.added)} runs added,"
            f" {len(report.present)} already indexed, {report.evaluations} evaluations added",
            highlight=False,
            soft_wrap=True,
        )
        for _, problem in report.problems:
            console.print(f"skipped {problem}", highlight=False, soft_wrap=True)
    if report.problems:
        raise typer.Exit(1)


# -- run control (issue 5): status, stop, resume -----------------------------------------------------------------
def _dur(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@runs_app.command("status")
def status(
    run: Annotated[
        str | None, typer.Argument(help="run id, unique id prefix, name or folder (default: running runs)")
    ] = None,
    root: Root = None,
    as_json: AsJson = False,
) -> None:
    """Progress and health of training runs: step, epoch, loss, examples/s, elapsed, ETA, non-finite steps.

    Example: xlqa runs status e5 --root runs
    """
    from xlqa.train.control import runs_status

    store = RunStore(root)
    rows = runs_status(run, store=store)
    if as_json:
        print(json.dumps(rows if run is None else rows[0], indent=2, ensure_ascii=False))
    elif not rows:
        out_console.print(f"no training runs in {store.root}", highlight=False)
    else:
        out_console.print(_status_table(rows))


def _status_table(rows: list[dict]) -> Table:
    table = Table(title="training runs")
    for col in ("run", "status", "step", "epoch", "loss", "ex/s", "elapsed", "ETA", "health", "checkpoint"):
        table.add_column(col, justify="right" if col in ("step", "epoch", "loss", "ex/s") else "left")
    for s in rows:
        h = s["health"]
        health = "ok" if not h["nonfinite"] else f"{h['nonfinite']} non-finite, {h['rollbacks']} rollback(s)"
        if h["diagnosis"]:
            health += f"; diverged: {h['diagnosis']}"
        elif h.get("error"):
            health = f"failed: {h['error']}"
        step = f"{s['step']}/{s['total_steps']}" if s["step"] is not None else ""
        table.add_row(
            s["name"] or s["run"], s["status"] + (f" (pid {s['pid']})" if s["alive"] else ""), step,
            "" if s["epoch"] is None else f"{s['epoch']:.2f}", "" if s["loss"] is None else f"{s['loss']:.4f}",
            "" if s["examples_per_s"] is None else f"{s['examples_per_s']:.1f}", _dur(s["elapsed"]), _eta_cell(s),
            health, Path(s["checkpoint"]).name if s["checkpoint"] else "",
        )  # fmt: skip
    return table


def _eta_cell(s: dict) -> str:
    """The expected time left, and its range once the live ETA has fitted the run's own batches."""
    low, high = s.get("eta_range") or (None, None)
    if s["eta"] is None or low is None or high is None:
        return _dur(s["eta"])
    return f"{_dur(s['eta'])} ({_dur(low)}-{_dur(high)})"


@runs_app.command("stop")
def stop(
    run: RunRef,
    root: Root = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the checkpoint and exit")] = 120.0,
) -> None:
    """Stop a training run gracefully: it finishes its step, writes a checkpoint and exits (status stopped).

    Example: xlqa runs stop e5 --root runs
    """
    from xlqa.train.control import stop_run

    r = stop_run(run, store=RunStore(root), wait=wait)
    out_console.print(f"run {r.id}: {r.status}; continue with `xlqa runs resume {r.id}`", highlight=False)


@runs_app.command("resume")
def resume(
    run: RunRef,
    root: Root = None,
    foreground: Annotated[bool, typer.Option(help="train in this process instead of the background")] = False,
) -> None:
    """Continue a stopped or killed training run from its newest complete checkpoint (in the background).

    Example: xlqa runs resume runs/e5 --root runs
    """
    from xlqa.train.control import run_training, start_detached

    if foreground:
        r, result = run_training(resume=run, store=RunStore(root))
        out_console.print(
            f"run {r.id if r else run}: {result.status} at step {result.steps}", highlight=False
        )
        return
    r, pid = start_detached(resume=run, store=RunStore(root))
    print(f"{r.id}\t{r.dir}")
    console.print(f"resuming run {r.id} in the background (pid {pid}); log {r.dir / 'train.log'}")

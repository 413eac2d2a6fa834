"""``xlqa estimate``: candidates side by side (counts, predicted times, peak memory, risks), or JSON."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from xlqa import jobs
from xlqa.cli.common import out_console
from xlqa.cli.options import build_config, config_command, config_parameters, option
from xlqa.config import EstimateConfig

HELP = """Estimate training and evaluation before anything trains: exact counts, times measured on this hardware.

    Counts questions, training windows (the same windows training builds), steps per epoch and in total, and
    evaluation windows per file (--eval files at --eval-max-seq-length tokens, as xlqa evaluate windows them);
    times a few real training steps after a warm-up, a few evaluation batches and one write of a checkpoint, of
    the best model and of the guard's snapshot (by the training loop's own code), and predicts training (steps,
    dev evaluation each epoch, checkpoints, guard snapshots) and evaluation times as ranges, with the peak memory and known risks. Give several --model, --precision or --batch-size
    values (or --configs FILE with a JSON list of training configs) to compare candidates side by side.

    Example: xlqa estimate --model e5-small --model minilm-l6 --train train-v1.1.json --precision bf16,fp32
    --max-train-examples 2000 --eval xquad --mirror ../shared/data --json"""


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def span(r: dict[str, float]) -> str:
    """A range as ``low - high``."""
    return f"{duration(r['low'])} - {duration(r['high'])}"


def estimate_table(rows: list[dict[str, Any]]) -> Table:
    """Candidates as columns, what they cost as rows (``rows``: the JSON objects of the estimates)."""
    table = Table(title="xlqa estimate (times measured on this machine; ranges from the measured steps)")
    table.add_column("")
    for r in rows:
        table.add_column(r["name"], justify="right")
    step = [r["measured"]["step_seconds_median"] for r in rows]
    lines = [
        ("task / precision", [f"{r['task']} / {r['precision']}" for r in rows]),
        ("batch x accumulation", [f"{r['batch_size']} x {r['grad_accum']}" for r in rows]),
        ("questions", [f"{r['questions']:,}" for r in rows]),
        ("training windows", [f"{r['windows']:,}" for r in rows]),
        ("steps per epoch", [f"{r['steps_per_epoch']:,}" for r in rows]),
        ("epochs / total steps", [f"{r['epochs']} / {r['steps']:,}" for r in rows]),
        ("measured step (median)", [f"{s:.3f} s" if s is not None else "" for s in step]),
        ("training steps", [span(r["train_breakdown"]["steps"]) for r in rows]),
        ("dev evaluation (all epochs)", [span(r["train_breakdown"]["dev_eval"]) if r["dev"] else "no --dev" for r in rows]),
        (f"checkpoints ({'/'.join(str(r['checkpoints']) for r in rows)})",
         [span(r["train_breakdown"]["checkpoints"]) for r in rows]),
        (f"guard snapshots ({'/'.join(str(r['guard_snapshots']) for r in rows)})",
         [span(r["train_breakdown"]["guard_snapshots"]) for r in rows]),
        ("training total", [span(r["train_seconds"]) for r in rows]),
    ]  # fmt: skip
    names = list(dict.fromkeys(e["name"] for r in rows for e in r["eval"]))
    for n in names:
        cells = []
        for r in rows:
            e = next((e for e in r["eval"] if e["name"] == n), None)
            cells.append(f"{e['windows']:,} windows, {span(e['seconds'])}" if e else "")
        lines.append((f"eval {n} ({rows[0]['eval_max_seq_length']} tokens)", cells))
    if names:
        lines.append(("evaluation total", [span(r["eval_seconds"]) for r in rows]))
    lines.append(("peak memory", [f"{r['peak_memory_mb']:,.0f} MB" for r in rows]))
    lines.append(("risks", ["; ".join(r["risks"]) or "none known" for r in rows]))
    for label, cells in lines:
        table.add_row(label, *cells)
    return table


def _estimate(*, json_out: bool, **values: Any) -> None:
    rows = [e.to_json() for e in jobs.estimate(build_config(EstimateConfig, values))]
    if json_out:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        out_console.print(estimate_table(rows))


def add_estimate_command(app: typer.Typer) -> None:
    """Register ``xlqa estimate`` on ``app``."""
    config_command(
        app, "estimate", _estimate,
        [*config_parameters(EstimateConfig),
         option("json_out", bool, False, "print a JSON list, one object per candidate", "--json")],
        help=HELP,
    )  # fmt: skip

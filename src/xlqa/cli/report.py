"""``xlqa report``: compare evaluation runs in Markdown, standalone HTML, CSV and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _eval_folder(path: Path) -> Path:
    """An evaluation folder, or a run folder holding one in ``eval/``."""
    if not (path / "results.json").is_file() and (path / "eval" / "results.json").is_file():
        return path / "eval"
    return path


def report(
    runs: Annotated[
        list[Path], typer.Argument(help="evaluation folders (with results.json); the first is the reference")
    ],
    out: Annotated[Path, typer.Option(help="output folder")] = Path("report"),
    names: Annotated[str | None, typer.Option(help="comma-separated run labels, one per folder")] = None,
    data_dir: Annotated[
        list[Path] | None, typer.Option(help="folder holding the data files, if their recorded paths moved")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap and permutation tests")] = 0,
) -> None:
    """Write report.md, report.html (standalone), metrics.csv and figures for one or more evaluation runs.

    Per-language EM/F1 with 95% bootstrap CIs, transfer gap to English, paired significance against the first
    run, cross-lingual consistency on parallel XQuAD, breakdowns, and SQuAD v2 threshold curves.

    Example: xlqa report runs/a/eval runs/b/eval --out report
    """
    from xlqa.errors import XlqaError
    from xlqa.outputs import check_output_folder
    from xlqa.report.build import build_report

    labels = [n.strip() for n in names.split(",")] if names else None
    try:
        check_output_folder(out, "--out")  # a file or an unwritable folder: refused before anything is read
        written = build_report(
            [_eval_folder(p) for p in runs], out, names=labels, seed=seed, data_dirs=tuple(data_dir or ())
        )
    except XlqaError as err:  # what the user can fix: one line, exit code 2; anything else is a bug
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    for key, path in written.items():
        typer.echo(f"{key}: {path}")

"""What the ``xlqa`` command modules share: the consoles and the way an expected error ends a command."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

console = Console(stderr=True)
# piped output (files, CI logs, tests) gets wide tables instead of rich's 80-column default
out_console = Console(width=None if sys.stdout.isatty() else 160)


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


def _expected_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input or an unreachable source: printed in one line, exit code 2, no traceback."""
    from xlqa.errors import DataError, DownloadError, ModelLoadError

    return (DataError, DownloadError, ModelLoadError, ValueError, FileNotFoundError)

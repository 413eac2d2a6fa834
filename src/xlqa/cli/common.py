"""What the ``xlqa`` command modules share: the consoles, logging, and the one handler of errors.

A command never catches errors itself. :class:`XlqaGroup` (the class of every ``xlqa`` command group) turns an
:class:`xlqa.errors.XlqaError` (bad input, missing file, unreachable source, bad flag) into one line on stderr
and exit code 2; with ``--verbose`` it also prints the traceback. Any other exception is a bug: it propagates
with its full traceback (exit code 1).
"""

from __future__ import annotations

import logging
import sys
import traceback

import typer
from rich.console import Console
from rich.logging import RichHandler
from typer.core import TyperGroup

from xlqa.errors import XlqaError

console = Console(stderr=True)
# piped output (files, CI logs, tests) gets wide tables instead of rich's 80-column default
out_console = Console(width=None if sys.stdout.isatty() else 160)

EXIT_USER_ERROR = 2


class State:
    """Options of the top-level ``xlqa`` callback that every command may read."""

    verbose = False


def setup_logging(verbose: bool) -> None:
    """Log to stderr through rich; ``verbose`` shows debug messages (and tracebacks of user errors)."""
    State.verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def report_error(err: XlqaError) -> None:
    """Print a user error in one line (and its traceback with ``--verbose``)."""
    if State.verbose:
        console.print("".join(traceback.format_exception(err)), markup=False, highlight=False)
    console.print(f"[bold red]error:[/] {err}", highlight=False)


class XlqaGroup(TyperGroup):
    """A command group whose commands' user errors end in one line and exit code 2 (see the module docstring)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except XlqaError as err:
            report_error(err)
            raise typer.Exit(code=EXIT_USER_ERROR) from err


def fail(message: str) -> None:
    """End a command with a user error that has no exception behind it (exit code 2)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=EXIT_USER_ERROR)

"""What the ``xlqa`` command modules share: the consoles, logging, and the one handler of errors.

A command never catches errors itself. :class:`XlqaGroup` (the class of every ``xlqa`` command group) turns an
:class:`xlqa.errors.XlqaError` (bad input, missing file, unreachable source, bad flag) into one line on stderr
and the error's exit code: 2 for a usage error (what the command was given), 1 for work that failed. An
``OSError`` that names a file (a disk full, a folder that became unwritable) is a failure too: one line naming
the file, exit code 1. With ``--verbose`` the traceback is printed as well. Any other exception is a bug: it
propagates with its full traceback (exit code 1).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import traceback

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text
from typer.core import TyperGroup

from xlqa.errors import XlqaError

console = Console(stderr=True)
# piped output (files, CI logs, tests) gets wide tables instead of rich's 80-column default
out_console = Console(width=None if sys.stdout.isatty() else 160)

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


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


def report_error(err: Exception) -> None:
    """Print a user error in one line (and its traceback with ``--verbose``)."""
    if State.verbose:
        console.print("".join(traceback.format_exception(err)), markup=False, highlight=False)
    if isinstance(err, OSError) and not isinstance(err, XlqaError):
        where = f"{err.filename}: " if err.filename else ""
        message = f"{where}{err.strerror or err}"
    else:
        message = str(err)
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)


class XlqaGroup(TyperGroup):
    """A command group whose commands' user errors end in one line and their exit code (module docstring)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except XlqaError as err:
            report_error(err)
            raise typer.Exit(code=err.exit_code) from err
        except OSError as err:
            if not err.filename:  # no file to name: not something the user can act on from the message
                raise
            report_error(err)
            raise typer.Exit(code=EXIT_FAILURE) from err


def _finite(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def print_json(obj, indent: int | None = None) -> None:
    """Print ``obj`` as strict JSON on stdout (``-Infinity`` or ``NaN`` would break a JSON reader: null)."""
    print(json.dumps(_finite(obj), ensure_ascii=False, indent=indent, allow_nan=False))


def fail(message: str) -> None:
    """End a command with a user error that has no exception behind it (exit code 2)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=EXIT_USER_ERROR)

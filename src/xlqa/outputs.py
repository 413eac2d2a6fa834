"""Where a job may write, checked before it registers a run, loads a model or writes anything.

The rules (the README's "Errors and exit codes"): an output file never replaces an input of the same command,
and replaces any other existing file only when the user asked for it (``--overwrite``); an output folder must
be a folder (or not exist yet) under a folder this process can write in; a run's folder holds one kind of run,
so an evaluation never records another model's scores inside a training run's folder. Each refusal is a
:class:`~xlqa.errors.ConfigError` naming the flag and the path (exit code 2).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from xlqa.errors import ConfigError


def _writable_parent(path: Path, flag: str) -> None:
    """The nearest existing folder above ``path`` must be a folder this process may create entries in."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: cannot write in {parent} (permission denied)")


def check_output_folder(path: str | os.PathLike | None, flag: str = "--output") -> None:
    """``path`` can be (or become) a folder the job writes into."""
    if not path:
        return
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is a file; give a folder (the outputs are written inside it)")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {path}: cannot write in this folder (permission denied)")
        return
    _writable_parent(path, flag)


def check_run_folder(path: str | os.PathLike | None, kind: str, flag: str = "--output") -> None:
    """:func:`check_output_folder`, and a folder that already holds a run must hold a ``kind`` run.

    An evaluation into a training run's folder would be recorded as that run (another model's scores under
    it); a run's own evaluation goes in a folder of its own, e.g. ``RUN/eval``, which ``xlqa report`` finds.
    """
    check_output_folder(path, flag)
    if not path:
        return
    run_file = Path(path).expanduser() / "run.json"
    try:
        other = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    other_kind = other.get("kind") if isinstance(other, dict) else None
    if other_kind and other_kind != kind:
        raise ConfigError(
            f"{flag} {path} is the folder of {other_kind} run {other.get('id')}; a {kind} run needs a folder of "
            f"its own (e.g. {Path(path) / kind})"
        )


def check_output_file(
    path: str | os.PathLike | None,
    *,
    flag: str = "--output",
    inputs: Iterable[tuple[str, str | os.PathLike | None]] = (),
    overwrite: bool = False,
    overwrite_flag: str = "--overwrite",
) -> None:
    """``path`` can be written: not a folder, not one of ``inputs`` ((flag, path) pairs), not an existing file
    unless ``overwrite``, and under a writable folder."""
    if not path:
        return
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name")
    for in_flag, in_path in inputs:
        if in_path and path.exists() and Path(in_path).exists() and path.samefile(in_path):
            raise ConfigError(
                f"{flag} {path} is the file {in_flag} reads: refusing to overwrite an input; write elsewhere"
            )
    if path.exists() and not overwrite:
        raise ConfigError(f"{flag} {path}: the file exists; pass {overwrite_flag} to replace it")
    _writable_parent(path, flag)

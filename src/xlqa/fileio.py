"""Files that readers never see half-written, and the environment that every result file embeds.

Every file xlqa writes for someone else to read (results, configs, run records, caches) goes through
:func:`write_json_atomic` or :func:`atomic_open`: the data goes to a uniquely named temporary file in the
same folder, is flushed to disk, then moved into place with ``os.replace``, so a crash leaves either the old
file or the new one, and concurrent writers never share a temporary file.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import xlqa
from xlqa.allocator import active


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    xmode = mode.replace("w", "x")
    try:
        with open(tmp, xmode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (non-ASCII kept; anything else as its ``str``) atomically."""
    with atomic_open(path) as fh:
        fh.write(json.dumps(obj, indent=indent, ensure_ascii=False, default=str))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_open(path) as fh:
        fh.write(text)


def environment() -> dict[str, str]:
    """Versions of the packages that change results, Python and the platform, for result files and checkpoints;
    and the malloc the process runs with (:mod:`xlqa.allocator`: it changes the speed, never the results).

    Read from package metadata, so nothing heavy is imported for it.
    """
    env = {"xlqa": xlqa.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "malloc": active()}  # fmt: skip
    for pkg in ("torch", "transformers", "tokenizers", "accelerate", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            env[pkg] = importlib.metadata.version(pkg)
    return env

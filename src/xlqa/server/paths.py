"""Which files the API may read: model folders and data files only inside allowed folders.

The API takes model folders (``POST /v1/models``) and data files (``POST /v1/jobs/evaluate``) by path on the
server. Without a rule, anyone allowed to start a job could make the server open any file it can read
(``/etc/...``, ``../../``, a symlink out of the run store). Paths are resolved (``..`` and symlinks followed)
and must then lie inside the run store, the xlqa cache, the folder the server started in, or a folder given
with ``--allow-path``; anything else is a 403 naming the field, and nothing is opened. Hub ids and offline
source names are not paths and pass.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from xlqa.errors import XlqaError

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


class PathNotAllowed(XlqaError):
    """A path outside the folders the server may read (403)."""


def allowed_roots(store_root: Path, cache: Path, extra: list[str]) -> list[Path]:
    """The folders the API reads from, resolved once."""
    roots = [store_root, cache, Path.cwd(), *(Path(p).expanduser() for p in extra)]
    return list(dict.fromkeys(r.resolve() for r in roots))


def looks_like_path(value: str) -> bool:
    """True for anything that is not a plain hub id or source name: it would be opened as a file or folder."""
    if value.startswith(("/", "~", ".", "\\")) or "\\" in value or ".." in value.split("/"):
        return True
    return Path(value).exists() or not HUB_ID.fullmatch(value)


def check_path(value: str, roots: list[Path], field: str) -> None:
    """Raise :class:`PathNotAllowed` when ``value`` names a file or folder outside ``roots``.

    ``..`` and symlinks are resolved first, so a link inside the run store that points outside it is refused.
    """
    if not looks_like_path(value):
        return
    resolved = Path(os.path.expanduser(value)).resolve()
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        raise PathNotAllowed(
            f"{field}: {value!r} is outside the folders this server reads (the run store, the xlqa cache, "
            "the folder it started in and --allow-path)"
        )


def within(path: Path, folder: Path) -> bool:
    """Whether ``path``, with symlinks resolved, lies inside ``folder`` (a run's own files only)."""
    return path.resolve().is_relative_to(folder.resolve())

"""Is the process behind a ``running`` run still there? One rule for every listing and status.

The index says ``running`` from a run's start until its process records how it ended; a process killed
outright (SIGKILL, a crashed machine) records nothing. So every place that shows a run's status (``xlqa runs
list``, ``xlqa runs status``, the API and the dashboard) asks :func:`live_status`, which shows ``dead`` when
the process on this host is gone. A training process keeps ``RUN/train.pid`` while it runs, a detached
evaluation ``RUN/eval.pid``; a foreground evaluation is the process that registered the run.

Kept apart from :mod:`xlqa.train.control` and :mod:`xlqa.runs.launch` (which start those processes) so both
can use it without importing each other.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from xlqa.runs.schema import Run

PID_FILE = "train.pid"
EVAL_PID_FILE = "eval.pid"


def read_pid(run_dir: str | Path) -> dict | None:
    """``{"pid", "host", "started"}`` of the process training this run, or None."""
    try:
        return json.loads((Path(run_dir) / PID_FILE).read_text())
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie (and, where /proc exists, is a Python process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes().lower()
        except (OSError, IndexError):
            return False
    return True


def run_process(run_dir: str | Path) -> int | None:
    """The pid of the live process training this run on this host, else None."""
    info = read_pid(run_dir)
    if not info or info.get("host") != socket.gethostname():
        return None
    return info["pid"] if process_alive(int(info["pid"])) else None


def run_pid(run: Run) -> tuple[int | None, str | None]:
    """``(pid, host)`` of the process working on a run: ``train.pid`` / ``eval.pid`` in its folder, else the
    process that registered it (an ``xlqa evaluate`` in the foreground)."""
    for name in (PID_FILE, EVAL_PID_FILE):
        try:
            info = json.loads((run.dir / name).read_text())
            return int(info["pid"]), info.get("host")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if run.kind == "train":  # a training process writes train.pid until it ends; none left means none runs
        return None, None
    return run.pid, run.host


def live_status(run: Run) -> str:
    """The run's status, ``dead`` instead of ``running`` when its process on this host is gone.

    A run recorded by a process of another host stays ``running``: there is no way to tell from here. A
    training run just resumed is ``running`` as soon as its process is, before that process records it.
    """
    if run.status != "running":
        if run.kind == "train" and (run.dir / PID_FILE).exists() and run_process(run.dir):
            return "running"
        return run.status
    pid, host = run_pid(run)
    if host is not None and host != socket.gethostname():
        return "running"
    return "running" if pid is not None and process_alive(pid) else "dead"

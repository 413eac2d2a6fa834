"""A training run's ``events.jsonl`` as the API serves it: numbered events, read incrementally.

Every line of the file is an event; its sequence number (``seq``) is its 0-based line number, so a client
that has seen event ``n`` asks for those after ``n`` (``GET /v1/runs/R/events?after=n``, or the SSE stream's
``Last-Event-ID``). A line still being written (no newline yet) is left for the next read. :class:`Tail` reads
only what was appended since its last read, which is what both the live stream and the runs table need:
:func:`summary` keeps one tail per run, so listing a page of runs costs the bytes written since the last
listing, not whole event logs.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Tail:
    """Reads the events appended to ``path`` since the last :meth:`read` (a rewritten file starts over)."""

    path: Path
    offset: int = 0
    seq: int = -1  # seq of the last complete line read
    inode: int | None = None
    restarts: int = 0  # times the file was found rewritten

    def read(self) -> list[dict]:
        """The new complete events, each ``{"seq": n, "event": ..., ...}`` (malformed lines skipped)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset):
            self.offset, self.seq, self.restarts = 0, -1, self.restarts + 1
        self.inode = st.st_ino
        if st.st_size <= self.offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(st.st_size - self.offset)
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for line in data[:end].split(b"\n"):
            self.seq += 1
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append({**event, "seq": self.seq})
        return out


def events_after(events_path: Path, after: int = -1) -> tuple[list[dict], int]:
    """The events with ``seq > after`` and the ``seq`` to ask after next time."""
    tail = Tail(events_path)
    events = [e for e in tail.read() if e["seq"] > after]
    return events, max(after, tail.seq)


@dataclass
class Summary:
    """What the runs table shows of a training run, accumulated over its events."""

    start: dict = field(default_factory=dict)  # the last start or resume event
    step: dict = field(default_factory=dict)  # the last step event
    nonfinite: int = 0
    rollbacks: int = 0
    diverged: bool = False
    best_f1: float | None = None

    def add(self, event: dict) -> None:
        kind = event.get("event")
        if kind in ("start", "resume"):
            self.start = event
        elif kind == "step":
            self.step = event
        elif kind == "nonfinite":
            self.nonfinite += 1
        elif kind == "rollback":
            self.rollbacks += 1
        elif kind == "diagnosis":
            self.diverged = True
        elif kind in ("eval", "best") and isinstance(event.get("f1"), int | float):
            self.best_f1 = max(event["f1"], self.best_f1 if self.best_f1 is not None else event["f1"])

    def health(self, status: str) -> str:
        """``ok``, ``nonfinite N``, ``rolled back N``, ``diverged`` or ``dead`` (the worst that applies)."""
        if status == "dead":
            return "dead"
        if self.diverged:
            return "diverged"
        if self.rollbacks:
            return f"rolled back {self.rollbacks}"
        if self.nonfinite:
            return f"nonfinite {self.nonfinite}"
        return "ok"


_CACHE: dict[Path, tuple[Tail, Summary]] = {}
_LOCK = threading.Lock()
_MAX_CACHED = 4096


def summary(events_path: Path) -> Summary:
    """The summary of a run's events, brought up to date by reading only what was appended since last time."""
    with _LOCK:
        tail, acc = _CACHE.get(events_path) or (Tail(events_path), Summary())
        restarts = tail.restarts
        events = tail.read()
        if tail.restarts != restarts:  # the file was rewritten: start over
            acc = Summary()
        for event in events:
            acc.add(event)
        if len(_CACHE) >= _MAX_CACHED and events_path not in _CACHE:
            _CACHE.clear()
        _CACHE[events_path] = (tail, acc)
        return Summary(**vars(acc))

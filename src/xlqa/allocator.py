"""A faster malloc for the processes that train and evaluate: tcmalloc (or jemalloc) preloaded where installed.

A training step frees its activations and gradients and allocates them again in the next step. glibc's malloc
hands large freed blocks back to the kernel, and its aligned allocations (PyTorch asks for 64-byte alignment)
rarely fit the block just freed, so each step faults hundreds of MB of fresh pages in, every one zero-filled by
the kernel. tcmalloc keeps freed memory for the next step. Measured on a 2-core Xeon (AMX) with 38 of the demo's
E5-small training steps in fresh processes (``benchmarks/bench_allocator.py``, README "A faster malloc"), tcmalloc
ran them 1.22x faster than glibc (1.13x over the second half) with 28% less peak memory; glibc's own settings
gained less (trimming and mmap off 1.09x) or nothing (huge pages).

A process's malloc is chosen when it starts (``LD_PRELOAD``), so xlqa's command line starts its model commands
(``train``, ``evaluate``, ``estimate``, ``predict``, ``demo``, ``serve``) again with the library preloaded
(:func:`reexec_preloaded`: the same pid, arguments and environment), and gives the processes it launches (a
detached or multi-process run, a background evaluation) the same environment (:func:`preload_env`).

``XLQA_MALLOC`` picks it: ``auto`` (default: tcmalloc, else jemalloc, else glibc's), ``tcmalloc`` or ``jemalloc``
(an error where it is not installed), ``system`` (glibc's malloc, nothing preloaded). Debian and Ubuntu ship
tcmalloc as ``libtcmalloc-minimal4``. jemalloc runs with its purging of freed pages off
(``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``) unless ``MALLOC_CONF`` is set: with its defaults it took
1.6 times glibc's time in a first check. Linux only: elsewhere nothing is preloaded. A run records the malloc it
ran with (``environment.malloc`` in ``config.json`` and ``results.json``).
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

from xlqa.errors import ConfigError
from xlqa.settings import get_settings

log = logging.getLogger(__name__)

# each library's names, as -l takes them
LIBRARIES = {"tcmalloc": ("tcmalloc_minimal", "tcmalloc"), "jemalloc": ("jemalloc",)}
# each set where the environment has none of its own; tcmalloc's: no "large alloc" line on stderr per 1 GB block
LIBRARY_SETTINGS = {
    "tcmalloc": {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)},
    "jemalloc": {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"},
}
CHOICES = ("auto", "system", *LIBRARIES)
MARKER = "XLQA_MALLOC_PRELOADED"  # set in a re-executed process's environment: never re-executed twice
MODEL_COMMANDS = frozenset({"train", "evaluate", "estimate", "predict", "demo", "serve"})


def find_library(name: str) -> str | None:
    """Where ``name`` (``tcmalloc`` or ``jemalloc``) is installed: this environment's ``lib`` folder (a conda
    environment's gperftools), else the system's library search path; None where it is not."""
    for lib in LIBRARIES[name]:
        for folder in {Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"}:
            found = sorted(folder.glob(f"lib{lib}.so*"))
            if found:
                return str(found[0])
        found = ctypes.util.find_library(lib)
        if found:
            return found  # a soname (libtcmalloc_minimal.so.4): ld.so looks it up as it does a program's libraries
    return None


def chosen() -> tuple[str, str] | None:
    """``(name, library)`` that ``XLQA_MALLOC`` asks for and this machine has; None for glibc's malloc.

    Raises:
        ConfigError: ``XLQA_MALLOC`` is not one of :data:`CHOICES`, or names a library that is not installed.
    """
    want = (get_settings().malloc or "auto").lower()
    if want not in CHOICES:
        raise ConfigError(f"XLQA_MALLOC={want!r}: use one of {', '.join(CHOICES)}")
    if want == "system" or platform.system() != "Linux":
        return None
    for name in LIBRARIES if want == "auto" else (want,):
        lib = find_library(name)
        if lib:
            return name, lib
        if want != "auto":
            raise ConfigError(
                f"XLQA_MALLOC={want}: lib{LIBRARIES[want][0]} is not installed (Debian/Ubuntu: apt install "
                f"{'libtcmalloc-minimal4' if want == 'tcmalloc' else 'libjemalloc2'}); or set XLQA_MALLOC=auto"
            )
    return None


def preload_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a process that should run with the chosen malloc: its library first in ``LD_PRELOAD``, its
    settings (where ``env`` has none of its own) and the marker; ``env`` itself where glibc's is chosen."""
    out = dict(env)
    pick = chosen()
    if pick is None:
        return out
    name, lib = pick
    preloaded = [p for p in out.get("LD_PRELOAD", "").replace(":", " ").split() if p]
    if not any(_names(Path(p).name, name) for p in preloaded):
        out["LD_PRELOAD"] = " ".join([lib, *preloaded])
    for key, value in LIBRARY_SETTINGS.get(name, {}).items():
        out.setdefault(key, value)
    out[MARKER] = name
    return out


def _names(text: str, name: str) -> bool:
    """Whether ``text`` (a file name, or the process's memory map) names one of ``name``'s libraries."""
    return any(f"lib{lib}.so" in text for lib in LIBRARIES[name])


def active(pid: int | None = None) -> str:
    """The malloc this process (or process ``pid``) runs with: ``tcmalloc``, ``jemalloc`` or ``system`` (read from
    its mapped libraries, so a library preloaded by hand counts too)."""
    try:
        maps = Path(f"/proc/{pid or 'self'}/maps").read_text()
    except OSError:
        return "system"
    return next((name for name in LIBRARIES if _names(maps, name)), "system")


def reexec_preloaded(argv: list[str]) -> None:
    """Start this program again exactly as it was started (``os.execve`` of ``sys.orig_argv``: the same process)
    with the chosen malloc preloaded, where ``argv`` (xlqa's command line, without the program) is a model command
    that runs without it; else return.

    Never twice (:data:`MARKER`), never where the library is already in the process or glibc's is chosen.
    """
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in MODEL_COMMANDS or os.environ.get(MARKER) or platform.system() != "Linux":
        return
    env = preload_env(os.environ)
    if MARKER not in env or active() != "system":
        return
    log.debug("starting again with %s preloaded", env[MARKER])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)  # the interpreter's own flags too (-X, -W)

"""Detached evaluations (and, re-exported from :mod:`xlqa.runs.liveness`, the liveness of any run).

:func:`start_evaluation` registers an ``eval`` run first (so a caller, such as the HTTP API, has its id at
once), then starts ``python -m xlqa evaluate ... --output RUN_DIR`` in a new process session, logging to
``RUN/eval.log``. ``xlqa evaluate`` reuses the run whose folder already holds ``run.json`` and marks it
``finished`` or ``failed``; a watcher thread marks it ``failed`` if the process exits without doing so (it
failed before the run was tracked). A process killed outright cannot say anything: :func:`live_status`
then shows the run as ``dead``, as :func:`xlqa.train.control.run_status` does for training runs.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path

from xlqa.allocator import preload_env
from xlqa.config import EvalConfig
from xlqa.errors import ConfigError
from xlqa.fileio import write_json_atomic
from xlqa.runs.liveness import EVAL_PID_FILE
from xlqa.runs.liveness import live_status as live_status  # re-exported: the API and dashboard import it here
from xlqa.runs.liveness import run_pid as run_pid
from xlqa.runs.schema import NAME_RE, Run
from xlqa.runs.store import RunStore

log = logging.getLogger(__name__)

EVAL_LOG_FILE = "eval.log"


# -- detached evaluation -------------------------------------------------------------------------------------
def evaluate_args(cfg: EvalConfig) -> list[str]:
    """The ``xlqa evaluate`` flags that give ``cfg`` (fields left at their default are not written)."""
    args: list[str] = []
    defaults = EvalConfig()
    for f in fields(EvalConfig):
        value = getattr(cfg, f.name)
        if not f.metadata.get("cli", True) or value == getattr(defaults, f.name) or value is None:
            continue
        flag = "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def start_evaluation(
    cfg: EvalConfig, *, store: RunStore | None = None, name: str | None = None
) -> tuple[Run, int]:
    """Register an ``eval`` run and evaluate in a background process session; returns ``(run, pid)`` at once.

    Exactly ``xlqa evaluate`` (same flags, same run folder layout, recorded in the same store); follow it with
    ``xlqa runs show RUN`` or ``GET /v1/runs/RUN``. The log is ``RUN/eval.log``.

    Raises:
        ConfigError: a bad config or run name (before anything is registered).
    """
    cfg.validate()
    if name is not None and not NAME_RE.fullmatch(name):
        raise ConfigError(f"run name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    store = store or RunStore()
    cfg.progress = False  # a log file, not a terminal
    run = store.create_run("eval", model=cfg.model, config=asdict(cfg), name=name, dir=cfg.output or None)
    cfg.output = str(run.dir)
    # the same root and index; tcmalloc preloaded where installed (xlqa.allocator)
    env = preload_env({**os.environ, **store.child_env(), "PYTHONUNBUFFERED": "1"})
    with open(run.dir / EVAL_LOG_FILE, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xlqa", "evaluate", *evaluate_args(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    write_json_atomic(
        run.dir / EVAL_PID_FILE, {"pid": proc.pid, "host": socket.gethostname(), "started": time.time()}
    )
    threading.Thread(
        target=_watch, args=(proc, run.id, store), name=f"xlqa-eval-{proc.pid}", daemon=True
    ).start()
    log.info(
        "evaluation %s started in the background (pid %d), log %s", run.id, proc.pid, run.dir / EVAL_LOG_FILE
    )
    return run, proc.pid


def _watch(proc: subprocess.Popen, run_id: str, store: RunStore) -> None:
    """Wait for the evaluation process (reaping it) and mark its run failed if it ended without a status."""
    code = proc.wait()
    try:
        if store.get_run(run_id).status == "running":
            log.warning("evaluation %s exited with code %d before recording a status: failed", run_id, code)
            store.update_status(run_id, "failed")
    except Exception as err:  # the store may be gone (a test's folder, a shut-down server)
        log.warning("evaluation %s: could not record its end: %s", run_id, err)


def eval_log(run: Run) -> Path:
    """Where a detached evaluation logs."""
    return run.dir / EVAL_LOG_FILE


def check_evaluation(cfg: EvalConfig) -> list[tuple[str, str]]:
    """What is wrong with an evaluation request before anything starts, as ``(field, message)`` pairs.

    The model must be a model folder (``config.json``), an offline source name or a hub id already in the
    local Hugging Face cache (a background job must not hang on a download); benchmarks must be registered
    names or groups (:mod:`xlqa.sources.registry`); data files must exist.
    """
    from xlqa.sources import registry

    problems = []
    if not cfg.model:
        problems.append(("model", "required"))
    elif not _known_model(cfg.model):
        problems.append(
            (
                "model",
                f"{cfg.model!r} is not a model folder with config.json, an offline source"
                " or a cached hub model",
            )
        )
    if cfg.benchmarks:
        try:
            registry.expand(cfg.benchmarks)
        except ConfigError as err:
            problems.append(("benchmarks", str(err)))
    for i, path in enumerate(cfg.data):
        if not Path(path).expanduser().is_file():
            problems.append((f"data.{i}", f"no such file: {path}"))
    if cfg.doc_stride is not None and not 0 < cfg.doc_stride < cfg.max_seq_length:
        problems.append(
            ("doc_stride", f"must be between 1 and max_seq_length - 1 ({cfg.max_seq_length - 1})")
        )
    if not cfg.data and not cfg.benchmarks:
        problems.append(("benchmarks", "nothing to evaluate: give benchmarks or data files"))
    return problems


def _known_model(name: str) -> bool:
    from xlqa.sources import offline

    if offline.is_offline_source(name):
        return True
    path = Path(name).expanduser()
    if path.exists():
        return path.is_dir() and (path / "config.json").is_file()
    if name.startswith((".", "/", "~")):
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # not a valid repo id
        return False

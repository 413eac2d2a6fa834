"""Run control: train in the foreground or detached, follow a run's status, stop it gracefully, resume it.

A training process writes its pid to ``RUN/train.pid`` (with the host) while it runs. ``stop`` sends it SIGTERM:
the loop finishes its step, writes a checkpoint and exits with status ``stopped``; ``resume`` continues from the
newest complete checkpoint. A detached run is a new process session (it survives the terminal) logging to
``RUN/train.log``; it is ``accelerate launch [--multi_gpu --num_processes N] -m xlqa.train.control RUN_DIR
[--resume]``, so one or several processes start the same way a user would start them by hand.

Under a launcher (``accelerate launch``, ``torchrun``) every process runs :func:`run_training`; only rank 0
talks to the run store and writes the pid file, and a stop request reaches the others through the loop (it
asks every process whether a stop was requested at each step).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from xlqa.allocator import preload_env
from xlqa.config import TrainConfig
from xlqa.errors import ConfigError, RunNotFoundError, RunStoreError
from xlqa.fileio import write_json_atomic
from xlqa.runs.liveness import PID_FILE, live_status, process_alive, run_process
from xlqa.runs.liveness import read_pid as read_pid  # re-exported: its home before liveness had one
from xlqa.runs.schema import Run
from xlqa.runs.store import RunStore

log = logging.getLogger(__name__)

LOG_FILE = "train.log"
LAUNCH_FILE = "launch.json"  # the config of a detached run that has not written config.json yet


# -- the run's process ---------------------------------------------------------------------------------------
def _write_pid(run_dir: Path, pid: int) -> None:
    write_json_atomic(run_dir / PID_FILE, {"pid": pid, "host": socket.gethostname(), "started": time.time()})


def _record_trainer(run_dir: Path) -> None:
    """Rank 0's pid in the pid file: beside its launcher's (a detached start), else as the run's process.

    ``pid`` stays the launcher while it lives (it ends when every process has); ``train_pid`` is the process
    that ``stop`` signals, since a launcher that receives SIGTERM kills its processes before they checkpoint.
    """
    info = read_pid(run_dir)
    if info and info.get("host") == socket.gethostname() and info.get("pid") == os.getppid():
        write_json_atomic(run_dir / PID_FILE, {**info, "train_pid": os.getpid()})
    else:
        _write_pid(run_dir, os.getpid())


def main_rank() -> bool:
    """True in the process that talks to the run store: the only one, or rank 0 of a launcher's processes."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def launch_command(num_processes: int, module_args: list[str]) -> list[str]:
    """``accelerate launch`` of ``python -m MODULE ARGS`` with ``num_processes`` processes on this machine.

    Several processes get ``--multi_gpu`` (one per GPU; without a GPU the loop runs them on gloo) and a free
    port (``--main_process_port 0``), so two runs on one machine do not collide on the default port. Each
    process gets ``OMP_NUM_THREADS`` threads where it is set, else its share of the cores (Accelerate's own
    default is one thread, which would make a one-process detached run slower than the same run in the
    foreground, and numerically different from it).
    """
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // num_processes))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--num_cpu_threads_per_process", threads]  # fmt: skip
    if num_processes > 1:
        cmd += ["--multi_gpu", "--main_process_port", "0"]
    return [*cmd, "-m", *module_args]


def checkpoint_processes(run_dir: str | Path) -> int:
    """The number of processes the run's newest checkpoint was written by (1 without one)."""
    import torch

    from xlqa.train.checkpoint import STATE_FILE, latest_checkpoint

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return 1
    return int(torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True).get("num_processes", 1))


# -- configs and runs ------------------------------------------------------------------------------------------
def config_of_run(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run was started with (``config.json``, else the detached ``launch.json``)."""
    run_dir = Path(run_dir)
    for name, key in (("config.json", "config"), (LAUNCH_FILE, None)):
        p = run_dir / name
        if p.exists():
            d = json.loads(p.read_text())
            d = d[key] if key else d
            known = {f.name for f in fields(TrainConfig)}
            return TrainConfig(**{k: v for k, v in d.items() if k in known})
    raise RunNotFoundError(f"{run_dir}: no config.json: not a training run folder")


def run_training(
    cfg: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    store: RunStore | None = None,
    name: str | None = None,
    run_id: str | None = None,
):
    """Train (or resume) in this process and keep the run store's status in step.

    Args:
        cfg: a new run's config (ignored with ``resume``, whose config comes from the run folder).
        resume: the run to continue from its newest complete checkpoint (anything
            :meth:`~xlqa.runs.store.RunStore.resolve` takes; a training folder outside the store works too).
        store: the run store (default: ``$XLQA_RUNS`` or ./runs).
        name: a readable name for a new run (default: its output folder's name).
        run_id: an already registered run to attach to (a detached start).

    Returns:
        ``(run, TrainResult)``; status ``finished`` or ``stopped``. A diverged run raises
        :class:`xlqa.train.guard.TrainingDiverged` and is marked ``failed``.
    """
    from xlqa.train.loop import train

    store = store or RunStore()
    main = main_rank()
    run: Run | None = None
    if resume is not None:
        try:
            run = store.resolve(resume)
            out = run.dir
        except RunNotFoundError:
            out = Path(resume)
            if not (out / "config.json").exists():
                raise
            if main:
                log.warning("%s is not in the run store %s: resuming without tracking it", out, store.root)
        cfg = config_of_run(out)
        cfg.output = str(out)
    elif run_id is not None:
        run = store.get_run(run_id)
    else:
        cfg.validate()
        if main:  # the other processes of a launcher train into the same --output, untracked
            run = store.create_run("train", model=cfg.model, config=asdict(cfg), name=name, dir=cfg.output)
    if run is not None:
        cfg.output = str(run.dir)
        run = run if main else None
    if run is not None:
        store.update_status(run.id, "running")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        _record_trainer(out)
    # until the loop installs its graceful handler, SIGTERM stops the run as an interrupt would
    old = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    status = "failed"
    try:
        result = train(cfg, resume_from=out if resume is not None else None)
        status = result.status
    except KeyboardInterrupt:
        status = "stopped"
        raise
    except Exception as err:  # the reason goes where `runs status` and the dashboard read: the event log
        _record_failure(out, err)
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        if run is not None:
            store.update_status(run.id, status)
        if main:
            (out / PID_FILE).unlink(missing_ok=True)
    return run, result


def _record_failure(out: Path, err: Exception) -> None:
    """Append an ``error`` event naming why the run failed (a detached run has no terminal to say it on)."""
    from xlqa.errors import XlqaError
    from xlqa.train.events import EventLog

    message = str(err) if isinstance(err, XlqaError) else f"{type(err).__name__}: {err}"
    try:
        EventLog(out / "events.jsonl").write("error", message=message.splitlines()[0] if message else "")
    except OSError as write_err:  # the run is failing anyway; the log file still has the traceback
        log.warning("could not record the failure in %s: %s", out / "events.jsonl", write_err)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def start_detached(
    cfg: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    store: RunStore | None = None,
    name: str | None = None,
    num_processes: int = 1,
) -> tuple[Run, int]:
    """Start training (or resume) with ``accelerate launch`` in a new background process session.

    Returns ``(run, pid)`` (the launcher's pid) at once. The processes log to ``RUN/train.log``; follow them
    with ``xlqa runs status RUN``. A resumed run starts as many processes as its checkpoint was written by.
    """
    store = store or RunStore()
    if num_processes < 1:
        raise ConfigError(f"--num-processes must be at least 1, got {num_processes}")
    if resume is not None:
        run = store.resolve(resume)
        if run_process(run.dir):
            raise RunStoreError(f"run {run.id} is already running (pid {run_process(run.dir)})")
        args = [str(run.dir), "--resume"]
        num_processes = checkpoint_processes(run.dir)
    else:
        cfg.validate()
        cfg.progress = False  # a log file, not a terminal
        run = store.create_run("train", model=cfg.model, config=asdict(cfg), name=name, dir=cfg.output)
        write_json_atomic(run.dir / LAUNCH_FILE, asdict(cfg))
        args = [str(run.dir), "--run-id", run.id]
    # the same root and index; tcmalloc preloaded where installed (xlqa.allocator)
    env = preload_env({**os.environ, **store.child_env(), "PYTHONUNBUFFERED": "1"})
    with open(run.dir / LOG_FILE, "ab") as logf:
        proc = subprocess.Popen(
            launch_command(num_processes, ["xlqa.train.control", *args]),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    _write_pid(run.dir, proc.pid)  # at once, so that `stop` works before the process writes it itself
    log.info("run %s started in the background (pid %d, %d process(es)), log %s", run.id, proc.pid,
             num_processes, run.dir / LOG_FILE)  # fmt: skip
    return run, proc.pid


def stop_run(ref: str | Path, *, store: RunStore | None = None, wait: float = 120.0) -> Run:
    """Ask a run to stop gracefully (SIGTERM: finish the step, checkpoint, exit); wait up to ``wait`` seconds.

    Returns the run as recorded afterwards (status ``stopped`` once the process has exited).
    """
    store = store or RunStore()
    run = store.resolve(ref)
    pid = run_process(run.dir)
    if pid is None:
        raise RunStoreError(f"run {run.id} has no live training process on this host (status {run.status})")
    trainer = (read_pid(run.dir) or {}).get("train_pid")
    os.kill(trainer if trainer and process_alive(int(trainer)) else pid, signal.SIGTERM)
    deadline = time.time() + wait
    while time.time() < deadline and process_alive(pid):
        time.sleep(0.2)
    if process_alive(pid):
        log.warning("run %s (pid %d) is still finishing its step after %.0f s", run.id, pid, wait)
    return store.get_run(run.id)


# -- status ------------------------------------------------------------------------------------------------------
def read_events(run_dir: str | Path) -> list[dict]:
    """The run's events (a line being written is skipped)."""
    out = []
    try:
        lines = (Path(run_dir) / "events.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def run_status(ref: str | Path, *, store: RunStore | None = None) -> dict:
    """Progress and health of a training run from its events and the run store.

    Returns ``{"run", "status", "alive", "pid", "step", "total_steps", "epoch", "loss", "examples_per_s",
    "elapsed", "eta", "eta_range", "last_eval", "checkpoint", "health": {"nonfinite", "rollbacks", "diagnosis",
    "error"}}``; ``error`` is why a failed run failed (its last ``error`` event).
    """
    store = store or RunStore()
    run = store.resolve(ref)
    events = read_events(run.dir)
    pid = run_process(run.dir)
    last = {}
    for e in events:
        last.setdefault(e["event"], {})
        last[e["event"]] = e
    starts = [e for e in events if e["event"] in ("start", "resume")]
    step_ev = last.get("step", {})
    status = live_status(run)  # the rule `runs list`, the API and the dashboard use too
    diag = last.get("diagnosis")
    return {
        "run": run.id,
        "name": run.name,
        "dir": str(run.dir),
        "status": status,
        "alive": pid is not None,
        "pid": pid,
        "task": starts[-1].get("task") if starts else None,
        "precision": starts[-1].get("precision") if starts else None,
        "step": step_ev.get("step", starts[-1].get("step") if starts else None),
        "total_steps": starts[-1].get("total_steps") if starts else None,
        "epoch": step_ev.get("epoch"),
        "loss": step_ev.get("loss"),
        "examples_per_s": step_ev.get("examples_per_s"),
        "elapsed": step_ev.get("elapsed"),
        "eta": step_ev.get("eta") if status == "running" else None,
        "eta_range": [step_ev.get("eta_low"), step_ev.get("eta_high")] if status == "running" else None,
        "last_eval": last.get("eval"),
        "checkpoint": last.get("checkpoint", {}).get("path"),
        "health": {
            "nonfinite": sum(e["event"] == "nonfinite" for e in events),
            "rollbacks": sum(e["event"] == "rollback" for e in events),
            "diagnosis": diag.get("message") if diag else None,
            "error": last.get("error", {}).get("message") if status == "failed" else None,
        },
    }


def runs_status(ref: str | Path | None = None, *, store: RunStore | None = None) -> list[dict]:
    """:func:`run_status` of one run, or without ``ref`` of every running training run (else the newest one)."""
    store = store or RunStore()
    if ref is not None:
        return [run_status(ref, store=store)]
    train_runs = store.list_runs(kind="train")
    running = [r for r in train_runs if r.status == "running"] or train_runs[:1]
    return [run_status(r.id, store=store) for r in running]


def main(argv: list[str] | None = None) -> int:
    """Entry point of a detached run's processes: ``xlqa.train.control RUN_DIR [--resume | --run-id ID]``."""
    import argparse

    from xlqa.errors import TrainingDiverged

    ap = argparse.ArgumentParser(prog="python -m xlqa.train.control")
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--run-id")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    store = RunStore()
    try:
        if args.resume:
            _, result = run_training(resume=args.run_dir, store=store)
        else:
            _, result = run_training(config_of_run(args.run_dir), store=store, run_id=args.run_id)
    except TrainingDiverged as err:
        log.error("%s", err)
        return 3
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130
    log.info("run %s: %s after %d steps", args.run_dir, result.status, result.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())

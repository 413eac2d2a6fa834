"""Resumable training checkpoints through Accelerate's own state saving, written atomically.

Layout of ``RUN/checkpoints/step-0000120/``::

    config.json, model.safetensors, tokenizer files   the exported model (full weights, gathered from every
                                                       process): `xlqa evaluate --model` and serving take it
    state/                                             ``accelerator.save_state``: model, optimizer, scheduler
                                                       and RNG of every process in the backend's own layout
                                                       (sharded under FSDP and DeepSpeed ZeRO), and the
                                                       registered progress (data position, counters, guard)
    trainer_state.pt                                   written last: the marker of a complete checkpoint, with
                                                       the process count and backend it was written with
    xlqa.json                                          step, epoch, config, precision, environment

Accelerate saves what each process holds, so a sharded optimizer is saved by all of its owners, not by the
main process alone. A checkpoint is written into ``checkpoints/.tmp-step-0000120`` and renamed into place once
every file is on disk (fsync'ed), so a process killed while writing, or a write that fails (disk full, no
permission), leaves the previous checkpoints as they were; the failure is raised as a
:class:`~xlqa.errors.CheckpointError` in every process. Files and folders get the permissions the umask gives
(never the 0700/0600 of private temporary files), so colleagues can read a shared run folder.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from xlqa.errors import CheckpointError, ConfigError
from xlqa.fileio import environment, write_json_atomic
from xlqa.train.state import TrainState

if TYPE_CHECKING:
    from xlqa.train.state import TrainContext

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
STATE_DIR = "state"  # accelerator.save_state
FORMAT = 2  # 1: optimizer and scheduler in trainer_state.pt, written by the main process only
META_FILE = "xlqa.json"
_NAME = re.compile(r"step-(\d{7,})")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (folders named ``step-N`` holding a state and a model)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.fullmatch(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file() and (p / META_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


# -- RNG states -----------------------------------------------------------------------------------------------
def capture_rng() -> dict:
    """Python, numpy, torch and CUDA RNG states as tensors and plain containers (loadable with weights_only)."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Set every RNG back to a :func:`capture_rng` state."""
    random.setstate((3, tuple(int(x) for x in state["python"]), state["python_gauss"]))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- what Accelerate saves besides model, optimizer, scheduler and RNG --------------------------------------
class Progress:
    """The run's progress as an object Accelerate checkpoints (``accelerator.register_for_checkpointing``).

    Before a save the loop puts the current :func:`trainer_state` into :attr:`current`; a load leaves the saved
    one in :attr:`loaded`, and the caller decides what to take from it: a resume takes everything, the guard's
    rollback (which loads a snapshot of the same kind) takes nothing, since the data position moves on.
    """

    def __init__(self) -> None:
        self.current: dict = {}
        self.loaded: dict | None = None

    def state_dict(self) -> dict:
        return self.current

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state


def trainer_state(ctx: TrainContext, st: TrainState) -> dict:
    """What a checkpoint keeps besides optimizer and scheduler: the state, the run's seconds, the guard."""
    return {**st.to_dict(), "elapsed": ctx.seconds(st), "guard": ctx.guard.state_dict()}


# -- permissions and durability -------------------------------------------------------------------------------
def current_umask() -> int:
    """This process's umask (read from /proc where it can be, since setting it to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def share_as_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes a plain ``open``/``mkdir`` would under the umask.

    Libraries write through private temporary files and folders (``tempfile``: 0600/0700); a run folder on a
    shared disk should be readable by whoever the user's umask lets read it, like any other file they write.
    """
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _agree(acc, failure: BaseException | None, what: str) -> None:
    """Raise :class:`CheckpointError` in every process when any process failed (a collective).

    A process that failed alone and raised would leave the others waiting for it forever at the next
    collective; agreeing first lets every process stop together with the same message.
    """
    failed = failure is not None
    if acc.num_processes > 1:
        t = torch.tensor([1.0 if failed else 0.0], device=acc.device)
        failed = bool(acc.reduce(t, reduction="sum").item() > 0)
    if failed:
        detail = (
            f"{type(failure).__name__}: {failure}" if failure is not None else "failed in another process"
        )
        raise CheckpointError(f"{what}: {detail}") from failure


# -- writing ----------------------------------------------------------------------------------------------------
def export_model(ctx: TrainContext, folder: Path, state_dict: dict, extra: dict | None = None) -> None:
    """The main process's model folder from a gathered ``state_dict`` (what evaluation and serving load)."""
    from xlqa.modeling import hf_progress_bars_off

    folder.mkdir(parents=True, exist_ok=True)
    with hf_progress_bars_off():
        ctx.unwrapped.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
    ctx.tokenizer.save_pretrained(folder)
    if extra is not None:
        write_json_atomic(folder / META_FILE, extra)


def save_best(ctx: TrainContext, extra: dict) -> Path:
    """Export the model to ``RUN/best`` atomically (call it in every process: the weights are gathered)."""
    acc = ctx.accelerator
    sd = acc.get_state_dict(ctx.model)  # collective under DeepSpeed/FSDP: every process calls it
    final = ctx.out / "best"
    tmp, old = final.with_name(".tmp-best"), final.with_name(".old-best")
    failure = None
    if ctx.main:
        try:
            for stale in (tmp, old):
                shutil.rmtree(stale, ignore_errors=True)
            export_model(ctx, tmp, sd, extra)
            share_as_umask(tmp)
            _fsync_tree(tmp)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        except OSError as err:
            failure = err
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists() and not final.exists():
                os.replace(old, final)
    _agree(acc, failure, f"writing the best model to {final} failed; the previous one is kept")
    return final


def save_checkpoint(ctx: TrainContext, st: TrainState) -> Path:
    """Write the checkpoint of ``st.step`` atomically; every process calls it (each saves what it holds).

    A resumed run continues from ``st.epoch`` and ``st.batch_in_epoch``; ``ctx.cfg.keep_checkpoints`` complete
    checkpoints are kept afterwards (0 keeps all).

    Raises:
        CheckpointError: a write failed in some process (disk full, no permission); the half-written folder is
            removed and the previous checkpoints are untouched.
    """
    acc = ctx.accelerator
    root = ctx.out / CHECKPOINTS
    final = root / checkpoint_name(st.step)
    tmp = root / f".tmp-{final.name}"
    ctx.progress.current = trainer_state(ctx, st)
    sd = acc.get_state_dict(ctx.model)  # collective under DeepSpeed/FSDP: every process calls it
    failure = None
    if ctx.main:
        try:
            root.mkdir(parents=True, exist_ok=True)
            for stale in root.glob(".tmp-*"):  # left by a process killed while writing
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
        except OSError as err:
            failure = err
    _agree(acc, failure, f"cannot create {tmp}")
    try:
        acc.save_state(str(tmp / STATE_DIR))  # every process: its RNG, and its shards under FSDP/DeepSpeed
        if ctx.main:
            _write_files(ctx, st, tmp, sd)
    except OSError as err:
        failure = err
    acc.wait_for_everyone()
    if ctx.main and failure is None:
        try:
            _publish(ctx, tmp, final)
        except OSError as err:
            failure = err
    if ctx.main and failure is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    _agree(acc, failure, f"writing checkpoint {final} failed; the previous checkpoints are kept")
    if ctx.main:
        log.info("checkpoint %s", final)
    return final


def _write_files(ctx: TrainContext, st: TrainState, folder: Path, state_dict: dict) -> None:
    """The main process's files: the exported model, ``xlqa.json``, then the marker ``trainer_state.pt``."""
    export_model(ctx, folder, state_dict)
    if ctx.faults is not None:
        ctx.faults.delay_checkpoint(st.step)
        ctx.faults.fail_checkpoint(st.step)
    meta = {"step": st.step, **ctx.run_meta, "epoch": st.epoch, "environment": environment()}
    write_json_atomic(folder / META_FILE, meta)
    marker = {"format": FORMAT, "step": st.step, "num_processes": ctx.n_proc,
              "distributed_type": ctx.accelerator.distributed_type.value}  # fmt: skip
    torch.save(marker, folder / STATE_FILE)


def _publish(ctx: TrainContext, tmp: Path, final: Path) -> None:
    """Permissions, fsync, rename into place, then drop the checkpoints beyond ``keep_checkpoints``."""
    share_as_umask(tmp)
    _fsync_tree(tmp)
    if final.exists():  # the same step written again (e.g. a stop right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if ctx.cfg.keep_checkpoints > 0:
        for old in list_checkpoints(ctx.out)[: -ctx.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)


# -- the guard's snapshots ----------------------------------------------------------------------------------------
class StateSnapshots:
    """The guard's last good state, saved the way checkpoints are (each process its own shard, on disk).

    A copy of the full model and optimizer in one process's memory is wrong for a sharded model and costs
    gigabytes for a large one; ``accelerator.save_state`` writes what each process holds into
    ``RUN/checkpoints/.guard-snapshot`` (renamed into place when complete) and ``load_state`` restores it.
    The RNG states are kept as they are across a rollback: it rewinds the weights, not the run.
    """

    def __init__(self, accelerator, run_dir: str | Path):
        self.acc = accelerator
        self.folder = Path(run_dir) / CHECKPOINTS / ".guard-snapshot"
        self.on_save: Callable[[float], None] | None = None  # told each save's seconds (the live ETA)

    def save(self) -> None:
        """Write the snapshot next to the last one and swap it in; a failed write keeps the last one."""
        acc, tmp = self.acc, self.folder.with_name(".guard-snapshot.tmp")
        t0 = time.perf_counter()
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        failure = None
        try:
            acc.save_state(str(tmp))
        except OSError as err:
            failure = err
        acc.wait_for_everyone()
        if acc.is_main_process and failure is None:
            try:
                shutil.rmtree(self.folder, ignore_errors=True)
                os.replace(tmp, self.folder)
            except OSError as err:
                failure = err
        _agree(acc, failure, f"writing the guard's snapshot to {self.folder} failed")
        if self.on_save is not None:
            self.on_save(time.perf_counter() - t0)

    def restore(self) -> None:
        rng = capture_rng()
        self.acc.load_state(str(self.folder))
        restore_rng(rng)

    def discard(self) -> None:
        if self.acc.is_main_process:
            shutil.rmtree(self.folder, ignore_errors=True)


# -- reading ----------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, ctx: TrainContext) -> TrainState:
    """Load weights, optimizer, scheduler and guard state into ``ctx``; returns the trainer state.

    This process's RNG state (restored by ``load_state``) is also kept in ``ctx.pending_rng``: the trainer sets
    it again right before the first batch, after building the data loader.

    Raises:
        ConfigError: not a complete checkpoint, one from an older xlqa, or one written by another number of
            processes or another distributed backend.
    """
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"{path}: not a complete checkpoint (no {STATE_FILE})")
    marker = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    acc = ctx.accelerator
    if marker.get("format") != FORMAT or not (path / STATE_DIR).is_dir():
        raise ConfigError(
            f"{path}: a checkpoint of an older xlqa (optimizer saved by the main process only); its model "
            f"folder still evaluates, but resuming needs a checkpoint with a {STATE_DIR}/ folder"
        )
    if marker["num_processes"] != acc.num_processes:
        raise ConfigError(
            f"{path}: written by {marker['num_processes']} process(es), resumed with {acc.num_processes};"
            f" resume with {marker['num_processes']} (e.g. accelerate launch --num_processes"
            f" {marker['num_processes']}): the data order of each process and the sharded optimizer and RNG"
            " states depend on it"
        )
    backend = acc.distributed_type.value
    if marker["distributed_type"] != backend:
        raise ConfigError(
            f"{path}: written under {marker['distributed_type']}, resumed under {backend}; resume with the"
            " same Accelerate configuration (its state folder is in that backend's layout)"
        )
    ctx.progress.loaded = None
    acc.load_state(str(path / STATE_DIR))
    if ctx.progress.loaded is None:
        raise ConfigError(f"{path}: {STATE_DIR}/ holds no training progress")
    ctx.pending_rng = capture_rng()
    ctx.guard.load_state_dict(ctx.progress.loaded.get("guard", {}))
    st = TrainState.from_dict(ctx.progress.loaded)
    log.info("resumed from %s (step %s)", path, st.step)
    return st

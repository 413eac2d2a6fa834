"""Resumable training checkpoints, written atomically.

Layout of ``RUN/checkpoints/step-0000120/``::

    config.json, model.safetensors, tokenizer files   a Hugging Face model folder: `xlqa evaluate --model` takes it
    trainer_state.pt                                   optimizer, scheduler, guard, data position, counters
    rng-<rank>.pt                                      python, numpy, torch (and CUDA) RNG states of each process
    xlqa.json                                          step, epoch, config, precision, environment

A checkpoint is written into ``checkpoints/.tmp-step-0000120`` and renamed into place once every file is on
disk (fsync'ed), so a process killed while writing leaves only a ``.tmp-`` folder, which is ignored by
:func:`list_checkpoints` and removed by the next save. Resuming therefore always uses the last complete one.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from xlqa.errors import ConfigError, ModelLoadError
from xlqa.fileio import environment, write_json_atomic
from xlqa.train.state import TrainState

if TYPE_CHECKING:
    from xlqa.train.state import TrainContext

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
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


# -- writing --------------------------------------------------------------------------------------------------
def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def trainer_state(ctx: TrainContext, st: TrainState) -> dict:
    """What ``trainer_state.pt`` keeps besides optimizer and scheduler: the state, the run's seconds, the guard."""
    return {**st.to_dict(), "elapsed": ctx.seconds(st), "guard": ctx.guard.state_dict()}


def save_checkpoint(ctx: TrainContext, st: TrainState) -> Path:
    """Write the checkpoint of ``st.step`` atomically; call it in every process (each saves its RNG state).

    A resumed run continues from ``st.epoch`` and ``st.batch_in_epoch``; ``ctx.cfg.keep_checkpoints`` complete
    checkpoints are kept afterwards (0 keeps all). Under DeepSpeed or FSDP the full state dict is gathered with
    a collective, and the main process writes every file but the RNG states.
    """
    acc = ctx.accelerator
    root = ctx.out / CHECKPOINTS
    final = root / checkpoint_name(st.step)
    tmp = root / f".tmp-{final.name}"
    sd = acc.get_state_dict(ctx.model)  # collective under DeepSpeed/FSDP: every process calls it
    if ctx.main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):  # left by a process killed while writing
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    acc.wait_for_everyone()
    torch.save(capture_rng(), tmp / f"rng-{acc.process_index}.pt")
    if ctx.main:
        _write_files(ctx, st, tmp, sd)
    acc.wait_for_everyone()
    if ctx.main:
        _fsync_tree(tmp)
        if final.exists():  # the same step written again (e.g. a stop right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        if ctx.cfg.keep_checkpoints > 0:
            for old in list_checkpoints(ctx.out)[: -ctx.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s", final)
    acc.wait_for_everyone()
    return final


def _write_files(ctx: TrainContext, st: TrainState, folder: Path, state_dict: dict) -> None:
    """The main process's files: the model folder, then the trainer state, then ``xlqa.json``."""
    from xlqa.modeling import hf_progress_bars_off

    with hf_progress_bars_off():
        ctx.unwrapped.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
    ctx.tokenizer.save_pretrained(folder)
    if ctx.faults is not None:
        ctx.faults.delay_checkpoint(st.step)
    blob = {
        "optimizer": ctx.optimizer.state_dict(),
        "scheduler": ctx.scheduler.state_dict(),
        "trainer": trainer_state(ctx, st),
        "num_processes": ctx.n_proc,
    }
    torch.save(blob, folder / STATE_FILE)
    meta = {"step": st.step, **ctx.run_meta, "epoch": st.epoch, "environment": environment()}
    write_json_atomic(folder / META_FILE, meta)


# -- reading --------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, ctx: TrainContext) -> TrainState:
    """Load weights, optimizer, scheduler and guard state into ``ctx``; returns the trainer state.

    This process's RNG state goes to ``ctx.pending_rng`` rather than being applied: the trainer restores it right
    before the first batch, after building the data loader (which draws from the RNG).
    """
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"{path}: not a complete checkpoint (no {STATE_FILE})")
    blob = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    acc = ctx.accelerator
    if blob["num_processes"] != acc.num_processes:
        raise ConfigError(
            f"{path}: written by {blob['num_processes']} process(es), resumed with {acc.num_processes};"
            " resume with the same number of processes (the data order per process depends on it)"
        )
    _load_weights(path, ctx.unwrapped)
    ctx.optimizer.load_state_dict(blob["optimizer"])
    ctx.scheduler.load_state_dict(blob["scheduler"])
    ctx.guard.load_state_dict(blob["trainer"].get("guard", {}))
    rng_file = path / f"rng-{acc.process_index}.pt"
    ctx.pending_rng = torch.load(rng_file, weights_only=True) if rng_file.is_file() else None
    st = TrainState.from_dict(blob["trainer"])
    log.info("resumed from %s (step %s)", path, st.step)
    return st


def _load_weights(path: Path, model: torch.nn.Module) -> None:
    """The checkpoint's safetensors into ``model``; tied weights saved once count as loaded."""
    from safetensors.torch import load_file

    weights = {}
    for f in sorted(path.glob("model*.safetensors")):
        weights.update(load_file(f))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in weights}
    untied = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise ModelLoadError(
            f"{path}: weights do not match the model (missing {untied[:5]}, unexpected {unexpected[:5]})"
        )

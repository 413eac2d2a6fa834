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

import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
META_FILE = "xlqa.json"
_NAME = re.compile(r"step-(\d{7,})")
# test hook: "STEP:SECONDS" sleeps that long in the middle of writing the checkpoint of STEP (kill tests)
DELAY_ENV = "XLQA_TEST_CHECKPOINT_DELAY"


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
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _test_delay(step: int) -> None:
    spec = os.environ.get(DELAY_ENV, "")
    if spec:
        at, _, seconds = spec.partition(":")
        if int(at) == step:
            log.warning("%s: sleeping %s s inside the checkpoint of step %d", DELAY_ENV, seconds, step)
            time.sleep(float(seconds))


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    accelerator,
    model,
    tokenizer,
    optimizer,
    scheduler,
    state: dict,
    meta: dict,
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``step`` atomically; call it in every process (each saves its RNG state).

    Args:
        run_dir: the run folder (checkpoints go to ``run_dir/checkpoints``).
        step: the optimizer step just completed.
        accelerator: the ``Accelerator`` (main-process writes, barriers, full state dict under sharding).
        model: the prepared model.
        tokenizer: saved beside the weights so the folder is a complete model folder.
        optimizer: prepared optimizer.
        scheduler: prepared scheduler.
        state: trainer bookkeeping (data position, counters, guard state, history), plain containers.
        meta: written to ``xlqa.json`` (config, precision, environment).
        keep: complete checkpoints kept after this one is written (older ones are removed; 0 keeps all).
    """
    root = Path(run_dir) / CHECKPOINTS
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{final.name}"
    main = accelerator.is_main_process
    sd = accelerator.get_state_dict(model)  # collective under DeepSpeed/FSDP: every process calls it
    if main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):  # left by a process killed while writing
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    torch.save(capture_rng(), tmp / f"rng-{accelerator.process_index}.pt")
    if main:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=sd, safe_serialization=True)
        finally:
            hf_logging.enable_progress_bar()
        tokenizer.save_pretrained(tmp)
        _test_delay(step)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "trainer": state,
                "num_processes": accelerator.num_processes,
            },
            tmp / STATE_FILE,
        )
        (tmp / META_FILE).write_text(json.dumps({"step": step, **meta}, indent=2, ensure_ascii=False))
    accelerator.wait_for_everyone()
    if main:
        _fsync_tree(tmp)
        if final.exists():  # the same step written again (e.g. a stop right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if keep > 0:
            for old in list_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


# -- reading --------------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, *, accelerator, model, optimizer, scheduler) -> dict:
    """Load weights, optimizer, scheduler and this process's RNG state; returns the trainer state dict.

    The RNG state is returned under ``"rng"`` rather than applied: the trainer restores it right before the
    first batch, after building the data loader (which draws from the RNG).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no {STATE_FILE})")
    blob = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    if blob["num_processes"] != accelerator.num_processes:
        raise ValueError(
            f"{path}: written by {blob['num_processes']} process(es), resumed with {accelerator.num_processes};"
            " resume with the same number of processes (the data order per process depends on it)"
        )
    unwrapped = accelerator.unwrap_model(model)
    weights = {}
    for f in sorted(path.glob("model*.safetensors")):
        weights.update(load_file(f))
    missing, unexpected = unwrapped.load_state_dict(weights, strict=False)
    loaded = {t.data_ptr() for k, t in unwrapped.state_dict().items() if k in weights}
    untied = [k for k in missing if unwrapped.state_dict()[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise ValueError(
            f"{path}: weights do not match the model (missing {untied[:5]}, unexpected {unexpected[:5]})"
        )
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    rng_file = path / f"rng-{accelerator.process_index}.pt"
    state = dict(blob["trainer"])
    state["rng"] = torch.load(rng_file, weights_only=True) if rng_file.is_file() else None
    log.info("resumed from %s (step %s)", path, state.get("step"))
    return state

"""Loaded models of a server: loading (at start-up or on request), their metadata, lookup, and shutdown.

Every extractive model gets its own :class:`~xlqa.server.batching.Batcher`. Metadata for ``GET /v1/models``
comes from what training writes next to a checkpoint: ``xlqa.json`` in the model folder (task, step, epoch,
dev scores, the training config) and the run's ``config.json`` one or two folders up (the training file and
its language), so a served checkpoint says which languages it was trained on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi import HTTPException

from xlqa.errors import ModelLoadError
from xlqa.features import FeatureParams
from xlqa.modeling import is_seq2seq, load_qa_model, resolve_model
from xlqa.precision import choose_precision
from xlqa.server.batching import Batcher, BatchLimits
from xlqa.server.errors import NotReady
from xlqa.server.state import ServerState

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to answer, with what ``GET /v1/models`` tells about it."""

    name: str
    source: str
    task: str
    languages: list[str] | None
    checkpoint: dict[str, Any]
    batcher: Batcher
    device: str
    precision: str
    loaded_at: float = field(default_factory=time.time)

    def info(self) -> dict[str, Any]:
        """The model's entry in ``GET /v1/models``."""
        return {
            "name": self.name,
            "source": self.source,
            "task": self.task,
            "languages": self.languages,
            "checkpoint": self.checkpoint,
            "device": self.device,
            "precision": self.precision,
            "loaded_at": self.loaded_at,
        }


def loading(state: ServerState) -> list[str]:
    """Models named at start-up or requested that are neither loaded nor failed yet."""
    start = [m for m in state.cfg.model if m not in state.models and m not in state.load_errors]
    with state.loading_lock:
        extra = sorted(n for n in state.loading if n not in start)
    return start + extra


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def checkpoint_metadata(folder: str | Path) -> tuple[str | None, list[str] | None, dict[str, Any]]:
    """``(task, languages seen in training, checkpoint info)`` from the files training wrote.

    ``xlqa.json`` (in ``best/`` and in ``checkpoints/step-N/``) holds the task, step, epoch, dev record and
    the training config; the run's ``config.json`` (the folder above ``best/``, two above a step checkpoint)
    records the training file and its language. A plain Hugging Face folder has neither: ``(None, None, {})``.
    """
    folder = Path(folder)
    meta = _read_json(folder / "xlqa.json")
    run_dir = next(
        (d for d in (folder.parent, folder.parent.parent) if "data" in _read_json(d / "config.json")), None
    )
    if not meta and run_dir is None:
        return None, None, {}
    run_cfg = _read_json(run_dir / "config.json") if run_dir else {}
    train_cfg = meta.get("config") or run_cfg.get("config") or {}
    train_data = (run_cfg.get("data") or {}).get("train") or {}
    language = train_data.get("language")
    if language is None and train_cfg.get("train"):
        from xlqa.languages import guess_language

        language = guess_language(train_cfg["train"])
    info = {
        "path": str(folder),
        "run": str(run_dir) if run_dir else None,
        "step": meta.get("step"),
        "epoch": meta.get("epoch"),
        "dev": meta.get("dev"),
        "base_model": train_cfg.get("model"),
        "train_file": train_data.get("path") or train_cfg.get("train"),
        "precision": meta.get("precision") or run_cfg.get("precision"),
    }
    task = meta.get("task") or run_cfg.get("task")
    return task, [language] if language else None, {k: v for k, v in info.items() if v is not None}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_into(state: ServerState, name: str) -> LoadedModel:
    """Load ``name`` (folder, hub id or offline source), start its batcher and add it to ``state.models``.

    Loading a model that is already loaded returns it. Generative (encoder-decoder) models are refused with a
    :class:`~xlqa.errors.ModelLoadError` (400): the answer API serves extractive models.
    """
    if name in state.models:
        return state.models[name]
    with state.loading_lock:
        state.loading.add(name)
    try:
        loaded = _load(state, name)
    finally:
        with state.loading_lock:
            state.loading.discard(name)
    current = state.models.setdefault(name, loaded)
    if current is not loaded:  # loaded twice at once: keep the first, stop the other's worker
        loaded.batcher.stop()
    state.load_errors.pop(name, None)
    if not any(m not in state.models and m not in state.load_errors for m in state.cfg.model):
        state.ready.set()  # an on-demand load makes a server whose start-up models all failed ready
    return current


def batch_tokens(requested: int, device: torch.device) -> int:
    """``--batch-tokens``, or for 0 the budget that serves fastest where it runs.

    On CPU a bf16 forward pass costs least per window at about 8-16 windows (4,096 tokens): measured on 2 cores
    with MiniLM-L6 at 384 tokens, 14.5 ms per window at batch 8 against 17.4 ms at 32, and the load benchmark
    gave 1.96x batch-size-1 throughput at 4,096 tokens against 1.53x at 16,384. A GPU gains from wider batches.
    """
    if requested:
        return requested
    return 16384 if device.type == "cuda" else 4096


def _load(state: ServerState, name: str) -> LoadedModel:
    cfg = state.cfg
    source = resolve_model(name)
    if is_seq2seq(name):
        raise ModelLoadError(
            f"--model {name}: a generative (encoder-decoder) model; the answer API serves extractive QA "
            "models (evaluate generative ones with `xlqa evaluate`)"
        )
    device = _device()
    precision = choose_precision(cfg.precision, device)
    model, tokenizer = load_qa_model(name)
    model.to(device)
    task, languages, checkpoint = checkpoint_metadata(source) if Path(source).is_dir() else (None, None, {})
    batcher = Batcher(
        model,
        tokenizer,
        params=FeatureParams(max_seq_length=cfg.max_seq_length, doc_stride=cfg.doc_stride),
        limits=BatchLimits(
            cfg.batch_size, batch_tokens(cfg.batch_tokens, device), cfg.batch_wait_ms, cfg.queue_size
        ),
        metrics=state.metrics,
        precision=precision,
        name=Path(name).name or name,
    )
    log.info("serving %s on %s (%s, batch %d windows)", name, device, precision, cfg.batch_size)
    return LoadedModel(
        name=name,
        source=source,
        task=task or "extractive",
        languages=languages,
        checkpoint=checkpoint,
        batcher=batcher,
        device=str(device),
        precision=precision,
    )


def get_model(state: ServerState, name: str | None) -> LoadedModel:
    """The loaded model called ``name`` (or its folder's base name); the first loaded one when None.

    Raises:
        NotReady: no model is loaded yet (503).
        HTTPException: 404 naming the loaded models when ``name`` is not one of them.
    """
    models = dict(state.models)
    if not models:
        why = (
            f" ({'; '.join(f'{k}: {v}' for k, v in state.load_errors.items())})" if state.load_errors else ""
        )
        pending = loading(state)
        raise NotReady(
            f"no model is loaded yet{why}"
            + (f"; loading {', '.join(pending)}" if pending else "; load one with POST /v1/models")
        )
    if name is None:
        return next(iter(models.values()))
    if name in models:
        return models[name]
    by_base = [m for k, m in models.items() if Path(k).name == name]
    if len(by_base) == 1:
        return by_base[0]
    raise HTTPException(404, f"no loaded model named {name!r}; loaded: {', '.join(models)}")


async def shutdown(state: ServerState) -> None:
    """Stop every model's batcher (the batch in progress finishes; queued requests get 429)."""
    models = list(state.models.values())
    await asyncio.gather(*(asyncio.to_thread(m.batcher.stop) for m in models))

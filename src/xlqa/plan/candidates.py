"""The candidates of an estimate: models x precisions x batch sizes from the flags, or a list of configs.

Each candidate is a plain :class:`~xlqa.config.TrainConfig`, the config ``xlqa train`` would run; the files to
plan evaluation for are resolved once (named benchmarks through the registry and the mirror, files as given).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import fields
from pathlib import Path

from xlqa.config import EstimateConfig, TrainConfig
from xlqa.errors import ConfigError, XlqaError

PLACEHOLDER_OUTPUT = "(estimate)"  # a candidate writes nothing; TrainConfig.validate wants an output


def _label(model: str) -> str:
    """A short name of a model: the last part of a path or hub id."""
    return Path(model.rstrip("/")).name or model


def candidates(cfg: EstimateConfig) -> list[tuple[str, TrainConfig]]:
    """``(name, training config)`` of every candidate, each validated as ``xlqa train`` would validate it."""
    cfg.validate()
    train_names = {f.name for f in fields(TrainConfig)}
    base = {name: getattr(cfg, name) for name in train_names}
    base["output"] = PLACEHOLDER_OUTPUT
    out: list[tuple[str, TrainConfig]] = []
    combos = list(itertools.product(cfg.model, cfg.precision, cfg.batch_size))
    for model, precision, batch_size in combos:
        parts = [_label(model)]
        parts += [precision] if len(cfg.precision) > 1 else []
        parts += [f"batch {batch_size}"] if len(cfg.batch_size) > 1 else []
        out.append((" ".join(parts), TrainConfig(**{**base, "model": model, "precision": precision,
                                                     "batch_size": batch_size})))  # fmt: skip
    for i, entry in enumerate(_read_configs(cfg.configs) if cfg.configs else []):
        entry = dict(entry)
        name = str(entry.pop("name", "") or "")
        unknown = sorted(set(entry) - train_names)
        if unknown:
            raise ConfigError(f"--configs {cfg.configs}: entry {i}: unknown keys {unknown}")
        values = {**base, "model": cfg.model[0] if cfg.model else "", "precision": cfg.precision[0],
                  "batch_size": cfg.batch_size[0], **entry}  # fmt: skip
        if not values["model"]:
            raise ConfigError(f"--configs {cfg.configs}: entry {i} has no model (give it, or --model)")
        out.append((name or f"{_label(values['model'])} #{i + 1}", TrainConfig(**values)))
    for name, c in out:
        try:
            c.validate()
        except XlqaError as err:
            raise ConfigError(f"candidate {name!r}: {err}") from err
    return out


def _read_configs(path: str) -> list[dict]:
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"--configs {path}: {err}") from err
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"--configs {path}: expected a JSON list of objects (training configs)")
    return entries


def eval_files(cfg: EstimateConfig) -> tuple[list[str], list[tuple[str, str]]]:
    """The ``--eval`` files: paths as given, benchmark names fetched (mirror, cache); and skipped benchmarks."""
    from xlqa.sources.download import get_available

    files = [e for e in cfg.eval if Path(e).exists()]
    names = [e for e in cfg.eval if not Path(e).exists()]
    if not names:
        return files, []
    try:
        fetched, failed = get_available(",".join(names), mirror=cfg.mirror, progress=cfg.progress)
    except ConfigError as err:
        raise ConfigError(f"--eval: {err} (give a benchmark name or an existing file)") from err
    skipped = [(spec.name, str(err).splitlines()[0]) for spec, err in failed]
    return files + [str(path) for _, path in fetched], skipped

"""xlqa: zero-shot cross-lingual question answering.

Train a multilingual model on English SQuAD, evaluate it in every language with the official metrics.
The jobs (:mod:`xlqa.jobs`), their configs (:mod:`xlqa.config`) and typed results (:mod:`xlqa.results`) are
the public API; ``import xlqa`` stays light (nothing heavy is imported until a name is used)::

    import xlqa
    job = xlqa.evaluate(xlqa.EvalConfig(model="runs/e5/best", benchmarks="xquad", mirror="../shared/data"))
    print(job.result.average_f1)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "evaluate": "xlqa.jobs",
    "train": "xlqa.jobs",
    "predict": "xlqa.jobs",
    "score": "xlqa.jobs",
    "demo": "xlqa.jobs",
    "estimate": "xlqa.jobs",
    "EvalJob": "xlqa.jobs",
    "TrainJob": "xlqa.jobs",
    "Prediction": "xlqa.jobs",
    "EvalConfig": "xlqa.config",
    "TrainConfig": "xlqa.config",
    "PredictConfig": "xlqa.config",
    "ScoreConfig": "xlqa.config",
    "DemoConfig": "xlqa.config",
    "EstimateConfig": "xlqa.config",
    "ServeConfig": "xlqa.config",
    "create_app": "xlqa.server.app",
    "EvalResult": "xlqa.results",
    "DatasetResult": "xlqa.results",
    "NBestCandidate": "xlqa.results",
    "XlqaError": "xlqa.errors",
    "get_settings": "xlqa.settings",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xlqa' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

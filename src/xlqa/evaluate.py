"""Evaluation: predict on one or more SQuAD-format files and score each with its official rules.

The rule set follows the data: SQuAD v2.0-style files (with unanswerable questions) use the v2.0 rules, MLQA
files in a language the MLQA script supports use the MLQA rules, everything else (SQuAD v1.1, XQuAD, TyDi QA
GoldP, ...) the SQuAD v1.1 rules, as XTREME does. Where a language has no official rules of its own (Thai,
Japanese, Greek, ...), the documented ``xlqa-ext`` extension is reported beside the official-compatible number,
never in its place.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from xlqa import metrics
from xlqa.data import Example, SquadData, gold_texts, load_squad
from xlqa.features import FeatureParams
from xlqa.fileio import environment, write_json_atomic
from xlqa.metrics.bootstrap import bootstrap_ci
from xlqa.results import nbest_to_json

log = logging.getLogger(__name__)

MLQA_LANGS = ("en", "es", "de", "ar", "hi", "vi", "zh")


@dataclass
class EvalConfig:
    """Evaluating a model on SQuAD-format files."""

    model: str = ""
    data: list[str] = field(default_factory=list)
    output: str = "runs/eval"
    batch_size: int = 64
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 100
    n_best: int = 20
    null_threshold: float | None = None
    max_examples: int | None = None
    cache_dir: str | None = None
    progress: bool = True
    precision: str = "auto"  # auto: bf16 where the hardware computes it natively, else fp32


def is_mlqa_file(path: str | Path) -> bool:
    return re.search(r"context-[a-z]{2}-question-[a-z]{2}", Path(path).name) is not None


def rules_for(data: SquadData) -> str:
    """The official rule set for a loaded file (see the module docstring)."""
    if data.report.n_impossible > 0:
        return "squad2"
    if is_mlqa_file(data.path) and data.language in MLQA_LANGS:
        return "mlqa"
    return "squad1"


def score_examples(
    examples: list[Example],
    predictions: dict[str, str],
    *,
    rules: str,
    language: str | None = None,
    null_odds: dict[str, float] | None = None,
) -> dict:
    """Official metrics for ``predictions`` on ``examples``, plus ``xlqa-ext`` where it says more."""
    gold = gold_texts(examples)
    out = {
        "rules": rules,
        "metrics": metrics.score(gold, predictions, rules=rules, lang=language, na_probs=None),
    }
    if rules == "squad2" and null_odds is not None:
        # the official best-threshold sweep takes probabilities; any monotone score works the same
        out["metrics"] = metrics.score(gold, predictions, rules=rules, na_probs=null_odds)
    if language and rules != "mlqa" and language not in ("en",):
        try:
            out["extended"] = {"xlqa-ext": metrics.score(gold, predictions, rules="xlqa-ext", lang=language)}
        except ValueError as err:  # a language the extension does not know either
            log.debug("no xlqa-ext score for %s: %s", language, err)
    out["ci95"] = confidence_intervals(gold, predictions, rules=rules, language=language)
    return out


def confidence_intervals(
    gold: dict[str, list[str]], predictions: dict[str, str], *, rules: str, language: str | None = None
) -> dict[str, list[float]]:
    """95% percentile-bootstrap intervals of EM and F1 over questions (1000 resamples, seed 0)."""

    per_q = metrics.per_question(gold, predictions, rules=rules, lang=language)
    if not per_q:
        return {}
    scores = np.array(list(per_q.values()), dtype=np.float64)
    out = {}
    for key, col in (("exact_match", 0), ("f1", 1)):
        _, low, high = bootstrap_ci(scores[:, col], n_resamples=1000, seed=0)
        out[key] = [round(low, 2), round(high, 2)]
    return out


def f1_of(result: dict) -> float:
    return float(result["metrics"]["f1"])


def em_of(result: dict) -> float:
    m = result["metrics"]
    return float(m.get("exact_match", m.get("exact", 0.0)))


def dataset_name(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    return name


def score_and_write(
    cfg: EvalConfig,
    datasets: list[SquadData],
    predict,
    *,
    precision: str,
    config_extra: dict | None = None,
    label: str = "",
) -> dict:
    """The evaluation loop shared by the extractive and generative paths.

    For each dataset: ``predict(data, name, null_threshold) -> Decoded``, official scores (with confidence
    intervals), ``predictions.json``/``nbest_predictions.json``/``null_odds.json`` under ``<output>/<name>/``;
    then ``<output>/results.json`` embedding the config, precision, package versions and data checksums.
    """

    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {**asdict(cfg), **(config_extra or {})}
    results = {"config": config, "precision": precision, "environment": environment(), "datasets": []}
    for data in datasets:
        name = dataset_name(data.path)
        t0 = time.perf_counter()
        rules = rules_for(data)
        threshold = (
            cfg.null_threshold if cfg.null_threshold is not None else (0.0 if rules == "squad2" else None)
        )
        dec = predict(data, name, threshold)
        seconds = time.perf_counter() - t0
        scored = score_examples(
            data.examples,
            dec.predictions,
            rules=rules,
            language=data.language,
            null_odds=dec.null_odds if rules == "squad2" else None,
        )
        ddir = out_dir / name
        ddir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(ddir / "predictions.json", dec.predictions)
        write_json_atomic(ddir / "nbest_predictions.json", nbest_to_json(dec.nbest))
        write_json_atomic(ddir / "null_odds.json", dec.null_odds)
        entry = {
            "name": name,
            "path": str(Path(data.path).resolve()),
            "sha256": data.report.sha256,
            "language": data.language,
            "n_questions": len(data.examples),
            "seconds": round(seconds, 2),
            "null_threshold": threshold,
            **scored,
        }
        results["datasets"].append(entry)
        log.info("%s: EM %.2f F1 %.2f (%s%s, %.1fs)", name, em_of(entry), f1_of(entry), rules, label, seconds)
    write_json_atomic(out_dir / "results.json", results)
    return results


def evaluate_model(cfg: EvalConfig, *, model=None, tokenizer=None) -> dict:
    """Predict and score every file in ``cfg.data``; write predictions and a self-describing results.json.

    Returns the results dict (also written to ``<output>/results.json``).
    """
    from xlqa.modeling import choose_precision, load_qa_model
    from xlqa.predict import predict_examples

    if not cfg.data:
        raise ValueError("no data files to evaluate (--data FILE ...)")
    datasets = [load_squad(p, max_examples=cfg.max_examples) for p in cfg.data]  # fail early on bad input
    if model is None:
        model, tokenizer = load_qa_model(cfg.model)
    params = FeatureParams(cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length)
    precision = choose_precision(cfg.precision, next(model.parameters()).device)

    def predict(data: SquadData, name: str, threshold: float | None):
        return predict_examples(
            model,
            tokenizer,
            data.examples,
            params=params,
            batch_size=cfg.batch_size,
            n_best=cfg.n_best,
            max_answer_length=cfg.max_answer_length,
            null_threshold=threshold,
            cache_dir=cfg.cache_dir,
            progress=cfg.progress,
            desc=name,
            precision=precision,
        )

    return score_and_write(cfg, datasets, predict, precision=precision)

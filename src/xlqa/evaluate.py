"""Evaluation: predict on SQuAD-format files and score each with its official rules.

How a file is scored comes from the benchmark registry (:func:`xlqa.sources.registry.spec_for_file`): a
registered benchmark's language and rules, or for any other file a spec built from its content (SQuAD v2.0
rules when it has unanswerable questions, MLQA rules for MLQA files in a language the MLQA script supports,
else SQuAD v1.1 rules, as XTREME does). Where a language has no official rules of its own (Thai, Japanese,
Greek, ...), the documented ``xlqa-ext`` extension is reported beside the official-compatible number, never
in its place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from xlqa import metrics
from xlqa.config import EvalConfig
from xlqa.data import Example, SquadData, gold_texts, load_squad
from xlqa.distributed import is_distributed, is_main
from xlqa.errors import ConfigError
from xlqa.features import FeatureParams
from xlqa.fileio import environment, write_json_atomic
from xlqa.metrics.bootstrap import bootstrap_ci
from xlqa.results import DatasetResult, EvalResult, nbest_to_json
from xlqa.runs.liveness import process_alive
from xlqa.sources.registry import BenchmarkSpec, file_stem, spec_for_file

log = logging.getLogger(__name__)

Target = tuple[BenchmarkSpec, SquadData]
"""A file to evaluate: how to score it, and its validated questions."""
Predict = Callable[[SquadData, str, "float | None"], object]
"""``predict(data, name, null_threshold) -> Decoded`` (predictions, n-best lists, null odds)."""


def load_targets(paths: list[str], max_examples: int | None = None) -> list[Target]:
    """Load and validate every file first (a bad file fails before any model work), each with its spec."""
    if not paths:
        raise ConfigError("no data files to evaluate: give --data FILE or --benchmarks NAMES")
    targets = []
    for path in paths:
        data = load_squad(path, max_examples=max_examples)
        targets.append((spec_for_file(data), data))
    return targets


def score_examples(
    examples: list[Example],
    predictions: dict[str, str],
    *,
    rules: str,
    language: str | None = None,
    null_odds: dict[str, float] | None = None,
) -> DatasetResult:
    """Official metrics for ``predictions`` on ``examples``, ``xlqa-ext`` where it says more, 95% intervals.

    ``null_odds`` (SQuAD v2.0 only) feeds the official best-threshold sweep: it takes probabilities, and any
    monotone score gives the same thresholds' order.
    """
    gold = gold_texts(examples)
    na_probs = null_odds if rules == "squad2" else None
    out = DatasetResult(
        rules=rules,
        metrics=metrics.score(gold, predictions, rules=rules, lang=language, na_probs=na_probs),
        ci95=confidence_intervals(gold, predictions, rules=rules, language=language),
    )
    if language and rules != "mlqa" and language != "en":
        try:
            out.extended = {"xlqa-ext": metrics.score(gold, predictions, rules="xlqa-ext", lang=language)}
        except ValueError as err:  # a language code the extension does not know either: no extra score
            log.info("no xlqa-ext score for language %r: %s", language, err)
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


def evaluate_targets(
    cfg: EvalConfig,
    targets: list[Target],
    predict: Predict,
    *,
    precision: str,
    extra: dict | None = None,
    state=None,
) -> EvalResult:
    """The evaluation loop shared by the extractive and generative paths.

    For each file: ``predict``, official scores with confidence intervals, and ``predictions.json``,
    ``nbest_predictions.json``, ``null_odds.json`` under ``<output>/<name>/``; then ``<output>/results.json``
    embedding the config, precision, package versions and data checksums. Every file is written atomically,
    so a killed evaluation leaves complete files or none; temporary files a killed writer left are removed.

    ``state`` (Accelerate's, several processes): every process predicts its share and scores the gathered
    answers; only the main process writes.
    """
    out_dir = Path(cfg.output)
    writer = is_main(state)
    if is_distributed(state):  # provenance: how many processes shared the work
        extra = {**(extra or {}), "processes": state.num_processes}
    if writer:
        remove_stale_temporaries(out_dir)
    result = EvalResult(
        config={**asdict(cfg), **(extra or {})}, precision=precision, environment=environment(), datasets=[]
    )
    for spec, data in targets:
        name = file_stem(data.path)
        t0 = time.perf_counter()
        default = 0.0 if spec.rules == "squad2" else None
        threshold = cfg.null_threshold if cfg.null_threshold is not None else default
        dec = predict(data, name, threshold)
        seconds = time.perf_counter() - t0
        language = spec.language or None
        entry = score_examples(
            data.examples, dec.predictions, rules=spec.rules, language=language, null_odds=dec.null_odds
        )
        entry = entry.model_copy(update=dict(
            name=name, path=str(Path(data.path).resolve()), sha256=data.report.sha256, language=language,
            n_questions=len(data.examples), seconds=round(seconds, 2), null_threshold=threshold,
        ))  # fmt: skip
        if writer:
            ddir = out_dir / name
            write_json_atomic(ddir / "predictions.json", dec.predictions)
            write_json_atomic(ddir / "nbest_predictions.json", nbest_to_json(dec.nbest))
            write_json_atomic(ddir / "null_odds.json", dec.null_odds)
            log.info("%s: EM %.2f F1 %.2f (%s, %.1fs)", name, entry.em, entry.f1, spec.rules, seconds)
        result.datasets.append(entry)
    if writer:
        result.write(out_dir / "results.json")
    return result


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files (:func:`xlqa.fileio.atomic_open`) of writers that no longer run.

    A writer killed with SIGKILL cannot clean up; its ``.<name>.<pid>.<hex>.tmp`` would stay beside the
    results forever. Files of a live process are left alone.
    """
    removed = []
    for tmp in folder.rglob(".*.tmp") if folder.is_dir() else []:
        parts = tmp.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is None or process_alive(pid):  # the run store's one liveness rule
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    if removed:
        log.info("removed %d temporary file(s) left by a killed evaluation in %s", len(removed), folder)
    return removed


def eval_batch_size(requested: int, device) -> int:
    """``--batch-size``, where 0 means 16 on a CPU and 64 on a GPU.

    On a CPU a window costs least in small batches (XQuAD, E5-small, 2 cores: batch 16 1.54x faster than 64,
    less padding per batch and a working set that stays in cache); a GPU needs large batches to fill it.
    """
    if requested:
        return requested
    return 64 if device.type == "cuda" else 16


def evaluate_model(
    cfg: EvalConfig, *, model=None, tokenizer=None, targets: list[Target] | None = None, state=None
) -> EvalResult:
    """Extractive evaluation of every file in ``cfg.data`` into ``cfg.output`` (see :func:`evaluate_targets`).

    ``model``/``tokenizer``: an already loaded model; ``targets``: the files already loaded by `load_targets`;
    ``state``: Accelerate's state when several processes share the evaluation (each on its own device).
    """
    import torch

    from xlqa.modeling import load_qa_model
    from xlqa.precision import choose_precision
    from xlqa.predict import predict_examples

    targets = targets if targets is not None else load_targets(cfg.data, cfg.max_examples)  # fail early
    forward = None  # the forward pass's precision, where it differs from the run's
    if model is None:
        device = state.device if is_distributed(state) else torch.device("cpu")
        precision = choose_precision(cfg.precision, device)
        # bf16 weights once instead of autocast casting them at every batch: on a CPU the forward pass of the
        # 12 XQuAD languages was 1.26x faster (1.54x with batches of 16) in half the memory, F1 within 0.6
        # per language (README, "Evaluation of all 12 XQuAD languages"); the logits come back as float32
        model, tokenizer = load_qa_model(cfg.model, dtype=torch.bfloat16 if precision == "bf16" else None)
        forward = "fp32" if precision == "bf16" else None  # autocast would only add casts to bf16 weights
    if is_distributed(state):
        model.to(state.device)  # each process its own GPU (or the CPU under gloo)
    params = FeatureParams(cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length)
    device = next(model.parameters()).device
    precision = choose_precision(cfg.precision, device)
    batch_size = eval_batch_size(cfg.batch_size, device)

    def predict(data: SquadData, name: str, threshold: float | None):
        return predict_examples(
            model, tokenizer, data.examples, params=params, batch_size=batch_size, n_best=cfg.n_best,
            max_answer_length=cfg.max_answer_length, null_threshold=threshold, cache_dir=cfg.cache_dir,
            progress=cfg.progress, desc=name, precision=forward or precision, accelerator=state,
        )  # fmt: skip

    return evaluate_targets(cfg, targets, predict, precision=precision, state=state)

"""Whole jobs, each a typed config in and a typed result out: what the CLI, the HTTP API and the tests call.

=========== ============================ ===========================================================
job         config                       result
=========== ============================ ===========================================================
`evaluate`  :class:`~xlqa.config.EvalConfig`     :class:`EvalJob`: the run, its :class:`~xlqa.results.EvalResult`, skipped benchmarks
`train`     :class:`~xlqa.config.TrainConfig`    :class:`TrainJob`: the run and its ``TrainResult`` (or the pid, detached)
`predict`   :class:`~xlqa.config.PredictConfig`  :class:`Prediction`: one answer, or every question of a file
`score`     :class:`~xlqa.config.ScoreConfig`    the official scores, with the official keys
`demo`      :class:`~xlqa.config.DemoConfig`     the report's path (:func:`xlqa.demo.run_demo`)
`estimate`  :class:`~xlqa.config.EstimateConfig` one :class:`~xlqa.plan.estimate.Estimate` per candidate
=========== ============================ ===========================================================

Nothing here prints or exits: errors a user can fix are :class:`xlqa.errors.XlqaError`; progress goes to
``logging`` and progress bars.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xlqa.config import DemoConfig, EstimateConfig, EvalConfig, PredictConfig, ScoreConfig, TrainConfig
from xlqa.errors import ConfigError, DataError
from xlqa.outputs import check_output_file, check_output_folder, check_run_folder
from xlqa.results import EvalResult
from xlqa.runs.schema import Run
from xlqa.runs.store import RunStore

log = logging.getLogger(__name__)


@dataclass
class EvalJob:
    """What :func:`evaluate` did: the run (folder and id), the results, and benchmarks it had to skip."""

    run: Run
    result: EvalResult
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (benchmark name, reason)
    main: bool = True  # False on the other processes of a distributed evaluation (they print nothing)


def resolve_files(cfg: EvalConfig) -> tuple[list[str], list[tuple[str, str]]]:
    """``cfg.data`` plus the files of ``cfg.benchmarks`` (fetched from the mirror or downloaded).

    Returns the files and the benchmarks that could not be fetched, with the reason. Fails when nothing is left.
    """
    from xlqa.sources.download import get_available

    files = list(cfg.data)
    skipped: list[tuple[str, str]] = []
    if cfg.benchmarks:
        fetched, failed = get_available(cfg.benchmarks, mirror=cfg.mirror)
        skipped = [(spec.name, str(err).splitlines()[0]) for spec, err in failed]
        files += [str(path) for _, path in fetched]
    if not files:
        raise ConfigError(
            f"nothing to evaluate: none of the benchmarks {cfg.benchmarks!r} could be fetched: {skipped}"
        )
    return files, skipped


def evaluate(cfg: EvalConfig, *, name: str | None = None, store: RunStore | None = None) -> EvalJob:
    """Evaluate ``cfg.model`` on files and/or named benchmarks, as a run of the run store.

    The run folder is ``cfg.output`` (a folder evaluated before stays the same run) or a new folder in the
    store. Encoder-decoder models are evaluated generatively, others extractively; both write the same files.
    Under ``accelerate launch`` or ``torchrun`` every process evaluates a share of the windows
    (:mod:`xlqa.distributed`); only the main process registers the run and writes, the others wait for it.
    """
    from xlqa.distributed import broadcast, is_main, main_first, process_state, wait_for_everyone
    from xlqa.evaluate import evaluate_model, load_targets
    from xlqa.modeling import is_seq2seq, resolve_model

    cfg.validate()
    check_run_folder(cfg.output, "eval")  # never another kind of run's folder (a training run's)
    state = process_state()
    main = is_main(state)
    with main_first(state):  # benchmarks are fetched once, by the main process
        files, skipped = resolve_files(cfg)
    cfg.data = files
    targets = load_targets(files, cfg.max_examples)  # a bad file fails before any run or model exists
    resolve_model(cfg.model)  # so does a wrong model or an unreachable hub, in seconds
    run = None
    if main:  # the other processes never touch the store
        store = store or RunStore()
        if cfg.output and (Path(cfg.output) / "run.json").exists():  # evaluated before: the same run again
            run = store.resolve(cfg.output)
        else:
            run = store.create_run(
                "eval", model=cfg.model, config=asdict(cfg), name=name, dir=cfg.output or None
            )
    run = broadcast(state, run)
    cfg.output = str(run.dir)
    with store.tracking(run.id) if main else contextlib.nullcontext():
        if is_seq2seq(cfg.model):
            from xlqa.generative import evaluate_generative

            result = evaluate_generative(cfg, targets=targets, state=state)
        else:
            result = evaluate_model(cfg, targets=targets, state=state)
        if main:
            store.record_evaluation(run.id, result.to_json(), results_path=run.dir / "results.json")
    wait_for_everyone(state)  # no process reports done before the results are written and indexed
    return EvalJob(run, result, skipped, main=main)


@dataclass
class TrainJob:
    """What :func:`train` did: the run, and the training result (None for a detached start: see ``pid``)."""

    run: Run | None
    result: Any = None  # xlqa.train.state.TrainResult
    pid: int | None = None


def train(
    cfg: TrainConfig | None = None,
    *,
    resume: str | None = None,
    name: str | None = None,
    detach: bool = False,
    store: RunStore | None = None,
    num_processes: int = 1,
) -> TrainJob:
    """Fine-tune as a run of the run store, in this process or detached; or resume a run (id, name or folder).

    Raises:
        TrainingDiverged: the guard gave up (a resumable checkpoint of the last good state was written).
    """
    from xlqa.train import control

    if cfg is None and resume is None:
        raise ConfigError("give a training config, or a run to resume")
    if cfg is not None and resume is None:
        from xlqa.modeling import resolve_model

        cfg.validate()
        check_run_folder(cfg.output, "train")
        resolve_model(cfg.model)  # before a run is registered or detached: a bad model leaves nothing behind
    if detach:
        run, pid = control.start_detached(
            cfg, resume=resume, store=store, name=name, num_processes=num_processes
        )
        return TrainJob(run, None, pid)
    if num_processes != 1:  # in the foreground the launcher starts the processes, not xlqa
        raise ConfigError(
            f"--num-processes {num_processes} starts processes with --detach only; in the foreground run under"
            f" a launcher: accelerate launch --multi_gpu --num_processes {num_processes} -m xlqa.cli.main train ..."
        )
    run, result = control.run_training(cfg, resume=resume, store=store, name=name)
    return TrainJob(run, result)


@dataclass
class Prediction:
    """One answer (``answer``: text, score, probability, character ``start``/``end``), or a file's answers."""

    answer: dict[str, Any] | None = None
    predictions: dict[str, str] | None = None
    output: str | None = None


def predict(cfg: PredictConfig) -> Prediction:
    """Answer one question from a context, or every question of a file (written to ``cfg.output`` if set)."""
    from xlqa.data import load_squad
    from xlqa.features import FeatureParams
    from xlqa.fileio import write_json_atomic
    from xlqa.modeling import load_qa_model, resolve_model
    from xlqa.precision import choose_precision
    from xlqa.predict import answer, predict_examples

    cfg.validate()
    check_output_file(cfg.output, inputs=[("--file", cfg.file)], overwrite=cfg.overwrite)
    data = load_squad(cfg.file) if cfg.file is not None else None  # a bad file fails before the model loads
    resolve_model(cfg.model)  # a wrong model or an unreachable hub: one message, in seconds
    model, tok = load_qa_model(cfg.model)
    kw = dict(
        params=FeatureParams(cfg.max_seq_length, cfg.doc_stride),
        max_answer_length=cfg.max_answer_length,
        batch_size=cfg.batch_size,
        precision=choose_precision(cfg.precision, next(model.parameters()).device),
    )
    if data is None:
        return Prediction(answer=answer(model, tok, cfg.question, cfg.context, **kw))
    dec = predict_examples(model, tok, data.examples, **kw)
    if cfg.output:
        write_json_atomic(cfg.output, dec.predictions)
    return Prediction(predictions=dec.predictions, output=cfg.output)


def score(cfg: ScoreConfig) -> dict[str, Any]:
    """Official scores of a predictions file against a data file, with the official metric keys."""
    from xlqa import metrics

    cfg.validate()
    gold = _read(cfg.data, lambda p: metrics.read_gold(metrics.load_json(p)))
    preds = _read(cfg.predictions, metrics.load_json)
    probs = _read(cfg.na_probs, metrics.load_json) if cfg.na_probs else None
    if probs is not None:
        try:
            probs = metrics.check_na_probs(probs, probabilities=True)
        except ValueError as err:
            raise DataError(f"--na-probs: {err}", path=cfg.na_probs) from err
    try:
        return metrics.score(gold, preds, rules=cfg.rules, lang=cfg.lang, na_probs=probs)
    except (TypeError, ValueError) as err:  # a prediction of the wrong type, an unsupported language
        raise DataError(str(err), path=cfg.predictions) from err


def _read(path: str, reader: Callable[[str], Any]) -> Any:
    """``reader(path)``, with a missing or malformed file as a :class:`DataError` naming it."""
    try:
        return reader(path)
    except FileNotFoundError as err:
        raise DataError("no such file", path=path) from err
    except (OSError, UnicodeDecodeError, ValueError) as err:
        message = str(err)
        raise DataError(message, path=None if path in message else path) from err


def demo(cfg: DemoConfig) -> Path:
    """The main job (``make demo``): train on English SQuAD, evaluate on every XQuAD language, report."""
    from xlqa.demo import run_demo
    from xlqa.modeling import resolve_model

    cfg.validate()
    check_output_folder(cfg.output)
    resolve_model(cfg.model)  # an offline source by default: converted once, before the data is fetched
    return run_demo(cfg)


def estimate(cfg: EstimateConfig) -> list[Any]:
    """Plan training and evaluation before anything trains: one ``Estimate`` per candidate.

    Exact counts (questions, windows, steps, evaluation windows) and times and peak memory predicted from real
    steps measured on this hardware (:mod:`xlqa.plan`). Nothing is written besides the feature cache.
    """
    from xlqa.plan.estimate import run_estimate

    return run_estimate(cfg)

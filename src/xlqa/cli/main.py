"""The ``xlqa`` command line: each command parses its flags into a config and calls one job of :mod:`xlqa.jobs`.

Options come from the config dataclasses (:mod:`xlqa.cli.options`), so defaults and help live in one place.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

import xlqa
from xlqa import jobs
from xlqa.allocator import reexec_preloaded
from xlqa.cli.common import XlqaGroup, console, out_console, print_json, report_error, setup_logging
from xlqa.cli.data import data_app
from xlqa.cli.estimate import add_estimate_command
from xlqa.cli.options import build_config, config_command, config_parameters, option
from xlqa.cli.report import report as report_command
from xlqa.cli.runs import runs_app
from xlqa.cli.serve import serve as _serve
from xlqa.config import DemoConfig, EvalConfig, PredictConfig, ScoreConfig, ServeConfig, TrainConfig
from xlqa.errors import XlqaError
from xlqa.results import EvalResult

app = typer.Typer(
    cls=XlqaGroup,
    help="Zero-shot cross-lingual question answering: train on English SQuAD, evaluate in every language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: wraps cleanly at 80 columns, defaults and choices never cut
)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")
app.command("report")(report_command)
add_estimate_command(app)


def _version(value: bool) -> None:
    if value:
        print(f"xlqa {xlqa.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="debug logging; tracebacks of errors")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    setup_logging(verbose)


# -- score --------------------------------------------------------------------------------------------------
def _score(**values: Any) -> None:
    print_json(jobs.score(build_config(ScoreConfig, values)))


config_command(
    app, "score", _score, config_parameters(ScoreConfig, arguments=("data", "predictions")),
    help="""Score predictions with the official rules; prints JSON with the official keys.

    Example: xlqa score dev-v1.1.json predictions.json --rules squad1""",
)  # fmt: skip


# -- train --------------------------------------------------------------------------------------------------
def _train(
    *,
    ctx: typer.Context,
    config: str | None,
    resume: str | None,
    detach: bool,
    num_processes: int,
    name: str | None,
    **values: Any,
) -> None:
    from xlqa.train.control import main_rank

    cfg = None if resume is not None else build_config(TrainConfig, values, config, ctx)
    job = jobs.train(cfg, resume=resume, name=name, detach=detach, num_processes=num_processes)
    run, result = job.run, job.result
    if not main_rank():  # another process of `accelerate launch`/`torchrun`: the main one reports
        return
    if job.pid is not None:
        print(f"{run.id}\t{run.dir}")
        console.print(f"run {run.id} started in the background (pid {job.pid}); log {run.dir / 'train.log'}")
        return
    if result.best_f1 is not None:
        console.print(f"best dev F1 {result.best_f1:.2f}, EM {result.best_em:.2f}")
    label = run.id if run is not None else result.output
    if result.status == "stopped":
        console.print(
            f"run {label}: stopped at step {result.steps}; continue with `xlqa train --resume {label}`"
        )
    else:
        console.print(f"run {label}: model saved in {result.best_dir}")


config_command(
    app, "train", _train,
    [
        *config_parameters(TrainConfig),
        option("config", str | None, None, "JSON config file; flags typed here override it"),
        option("resume", str | None, None, "continue a run (id, name or folder) from its newest checkpoint"),
        option("detach", bool, False, "run in the background; log in OUTPUT/train.log", "--detach"),
        option("num_processes", int, 1, "with --detach: processes `accelerate launch` starts (one per GPU)"),
        option("name", str | None, None, "a readable name for the run (default: the output folder's name)"),
    ],
    help="""Fine-tune an extractive or generative (mT5) QA model; keeps the best checkpoint by dev F1 in OUTPUT/best.

    --model, --train and --output are required, unless --config gives them or --resume continues a run.
    Resumable checkpoints go to OUTPUT/checkpoints/step-N (each a model folder `xlqa evaluate --model` takes);
    `--resume RUN` continues where a run stopped; `--detach` returns at once (see `xlqa runs status`);
    `--detach --num-processes N` trains on N processes started by `accelerate launch`. Several GPUs or
    machines in the foreground: accelerate launch [--config_file FILE] -m xlqa.cli.main train ...

    Example: xlqa train --model minilm-l6 --train train-v1.1.json --dev dev-v1.1.json --output runs/minilm
    --max-train-examples 2000 --epochs 1""",
)  # fmt: skip


# -- evaluate -----------------------------------------------------------------------------------------------
def results_table(result: EvalResult) -> Table:
    """Per-file EM/F1 with 95% intervals and xlqa-ext beside the official numbers; the average last."""
    table = Table(title="xlqa evaluation (95% bootstrap confidence intervals)")
    for col in ("data", "lang", "questions", "rules", "EM", "F1", "F1 95% CI", "xlqa-ext F1", "seconds"):
        table.add_column(col, justify="right" if col not in ("data", "rules") else "left")
    for d in result.datasets:
        ci, ext = d.ci95.get("f1"), d.ext_f1
        table.add_row(
            d.name, d.language or "?", str(d.n_questions), d.rules or "", f"{d.em:.2f}", f"{d.f1:.2f}",
            f"{ci[0]:.1f}-{ci[1]:.1f}" if ci else "", f"{ext:.2f}" if ext is not None else "", f"{d.seconds:.1f}",
        )  # fmt: skip
    if len(result.datasets) > 1:
        table.add_row(
            "average", "", "", "", f"{result.average_em:.2f}", f"{result.average_f1:.2f}", "", "", ""
        )
    return table


def _evaluate(*, name: str | None, **values: Any) -> None:
    job = jobs.evaluate(build_config(EvalConfig, values), name=name)
    if not job.main:  # another process of `accelerate launch`/`torchrun`: the main one reports
        return
    for bench, reason in job.skipped:
        console.print(f"[yellow]skipped[/] {bench}: {reason}")
    out_console.print(results_table(job.result))
    console.print(f"run {job.run.id}: {job.run.dir / 'results.json'}")


config_command(
    app, "evaluate", _evaluate,
    [
        *config_parameters(EvalConfig, required=("model",)),
        option("name", str | None, None, "a readable name for the run (default: the output folder's name)"),
    ],
    help="""Evaluate a model on files or named benchmarks: per-language EM/F1 table, results in the run store.

    Languages and rule sets come from the benchmark registry (for other files, from their content: MLQA
    files get MLQA rules, SQuAD v2-style files v2 rules, others v1.1). Each evaluation is a run of the run
    store ($XLQA_RUNS, default ./runs): see `xlqa runs list`.

    Example: xlqa evaluate --model runs/minilm/best --benchmarks xquad,mlqa,tydiqa --mirror ../shared/data""",
)  # fmt: skip


# -- predict ------------------------------------------------------------------------------------------------
def _predict(**values: Any) -> None:
    out = jobs.predict(build_config(PredictConfig, values))
    if out.answer is not None:
        print_json(out.answer)
    elif out.output:
        console.print(f"{len(out.predictions)} predictions written to {out.output}")
    else:
        print_json(out.predictions, indent=2)


config_command(
    app, "predict", _predict, config_parameters(PredictConfig, required=("model",)),
    help="""Answer a question from a context (or every question of a file).

    --output never replaces the --file it reads, and replaces another existing file only with --overwrite.

    Example: xlqa predict --model runs/minilm/best --question "Where is the tower?" --context "The tower is in Paris." """,
)  # fmt: skip


# -- demo ---------------------------------------------------------------------------------------------------
def _demo(*, langs: list[str] | None, **values: Any) -> None:
    from xlqa.demo import default_data_dir

    cfg = build_config(DemoConfig, values)
    cfg.data_dir = cfg.data_dir or default_data_dir()
    if langs:
        cfg.langs = [x.strip() for item in langs for x in item.split(",") if x.strip()]
    report = jobs.demo(cfg)
    out_console.print(report.read_text(), highlight=False)
    console.print(f"[bold]report:[/] {report}")


config_command(
    app, "demo", _demo, config_parameters(DemoConfig),
    help="""The main job: fine-tune on English SQuAD, evaluate zero-shot on every XQuAD language, write a report.

    Example: xlqa demo --data-dir ../shared/data --output demo-output --langs en,de,zh""",
)  # fmt: skip


# -- serve --------------------------------------------------------------------------------------------------
config_command(
    app, "serve", _serve, config_parameters(ServeConfig),
    help="""Serve the answer API and the dashboard (FastAPI on uvicorn): ask models, watch and compare runs, start and stop work.

    Opens http://HOST:PORT/ (dashboard) and /docs (OpenAPI). State-changing requests need
    `Authorization: Bearer $XLQA_API_KEY` when XLQA_API_KEY is set, else come from loopback only.

    Example: xlqa serve --model runs/minilm/best --model e5-small --port 8000""",
)  # fmt: skip


def main() -> None:  # console-script entry point (and ``python -m xlqa``)
    try:  # model commands start again with tcmalloc preloaded where it is installed (xlqa.allocator)
        reexec_preloaded(sys.argv[1:])
    except XlqaError as err:
        report_error(err)
        raise SystemExit(err.exit_code) from None
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        console.print("interrupted")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()

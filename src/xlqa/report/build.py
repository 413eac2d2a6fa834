"""Reports over one or more evaluation folders: Markdown, one standalone HTML page, CSV and PNG figures.

The report is built once as a list of blocks (headings, paragraphs, tables, figures) and rendered to both
Markdown and HTML, so the two always say the same. Output is deterministic: same inputs and seed give
byte-identical files (seeded resampling, sorted orders, PNGs without a software/date stamp, no timestamps).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlqa import metrics
from xlqa.data import Example, gold_texts
from xlqa.evaluate import em_of, f1_of
from xlqa.report import stats as analysis
from xlqa.report.figures import (
    BREAKDOWN_TITLES,
    breakdown_figure,
    consistency_figure,
    score_figures,
    squad2_figure,
)

# re-exported under their old names: the report's palette and style now live in xlqa.report.figures
from xlqa.report.figures import COLORS as COLORS
from xlqa.report.figures import RC as RC
from xlqa.report.render import render_html, render_markdown, write_csv

log = logging.getLogger(__name__)

N_BOOTSTRAP = 1000  # resamples for per-dataset confidence intervals
N_PAIRED = 10000  # resamples / sign flips for paired run comparisons


@dataclass
class Scored:
    """One dataset of one run, with per-question scores and bootstrap intervals (points)."""

    name: str
    language: str
    rules: str
    entry: dict
    examples: list[Example]
    scores: dict[str, tuple[float, float]]
    em_ci: tuple[float, float, float]
    f1_ci: tuple[float, float, float]

    @property
    def family(self) -> str:
        head, _, tail = self.name.rpartition(".")
        return head if head and tail == self.language else self.name


@dataclass
class Run:
    name: str
    eval_dir: Path
    results: dict
    datasets: dict[str, Scored]


def _run_names(eval_dirs: list[Path], names: list[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(eval_dirs) or len(set(names)) != len(names):
            raise ValueError(f"names must be {len(eval_dirs)} distinct labels, one per run, got {names}")
        return list(names)
    out: list[str] = []
    for d in eval_dirs:
        d = d.resolve()
        base = d.parent.name if d.name == "eval" and d.parent.name else d.name
        out.append(base if base not in out else f"{base}-{len(out) + 1}")
    return out


def load_runs(
    eval_dirs: list[Path], names: list[str] | None = None, *, seed: int = 0, data_dirs: tuple = ()
) -> list[Run]:
    """Read every evaluation folder and score its datasets per question (data files are read once)."""
    cache: dict[tuple, list[Example]] = {}
    runs = []
    for name, eval_dir in zip(_run_names(eval_dirs, names), eval_dirs):
        results = analysis.read_results(eval_dir)
        scored: dict[str, Scored] = {}
        for entry in results["datasets"]:
            path = analysis.resolve_data_path(entry, eval_dir, data_dirs)
            key = (str(path.resolve()), entry.get("n_questions"), entry.get("sha256"))
            if key not in cache:
                cache[key] = analysis.load_examples(entry, eval_dir, data_dirs)
            scores = analysis.per_question_scores(entry, eval_dir=eval_dir, examples=cache[key])
            em, f1 = (np.array([s[i] for s in scores.values()]) for i in (0, 1))
            ci = {k: analysis.bootstrap_ci(v, N_BOOTSTRAP, seed=seed) for k, v in (("em", em), ("f1", f1))}
            lang = entry.get("language") or "?"
            scored[entry["name"]] = Scored(
                entry["name"], lang, entry["rules"], entry, cache[key], scores, ci["em"], ci["f1"]
            )
        runs.append(Run(name, Path(eval_dir), results, scored))
    return runs


# -- ordering and labels ------------------------------------------------------------------------------------
def _datasets(runs: list[Run]) -> list[Scored]:
    """One representative per dataset name in report order: family, then English first, then by language."""
    seen: dict[str, Scored] = {}
    for run in runs:
        for name, ds in run.datasets.items():
            seen.setdefault(name, ds)
    size = {f: sum(d.family == f for d in seen.values()) for f in {d.family for d in seen.values()}}
    return sorted(
        seen.values(),
        key=lambda d: (-size[d.family], d.family, d.language != analysis.PIVOT, d.language, d.name),
    )


def _gaps(run: Run) -> dict[str, float]:
    """Transfer gap (F1 points) of each dataset against the English member of its family in the same run."""
    out = {}
    for family in sorted({d.family for d in run.datasets.values()}):
        members = {d.language: d.f1_ci[0] for d in run.datasets.values() if d.family == family}
        pivot = next((d for d in run.datasets.values() if d.family == family and d.language == "en"), None)
        if pivot is not None and len(members) > 1:
            by_name = {d.language: d.name for d in run.datasets.values() if d.family == family}
            out.update({by_name[lang]: gap for lang, gap in analysis.transfer_gap(members).items()})
    return out


def _parallel_family(run: Run) -> list[Scored]:
    """The largest family of the run whose datasets share question ids (parallel XQuAD), if any."""
    families: dict[str, list[Scored]] = {}
    for d in run.datasets.values():
        families.setdefault(d.family, []).append(d)
    best: list[Scored] = []
    for members in families.values():
        ids = [set(d.scores) for d in members]
        shared = len(set.intersection(*ids))
        parallel = len({d.language for d in members}) == len(members) and shared >= 0.9 * max(map(len, ids))
        if len(members) >= 2 and parallel and len(members) > len(best):
            best = members
    return sorted(best, key=lambda d: (d.language != analysis.PIVOT, d.language))


# -- sections -------------------------------------------------------------------------------------------------
def _f(v: float, digits: int = 1) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _score_section(runs: list[Run], datasets: list[Scored]) -> list[tuple]:
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
        ("h2", "Scores"),
        ("table", header, rows),
        ("fig", "f1_by_language", f"F1 per {what} with 95% CI"),
        ("fig", "f1_heatmap", f"F1 by run and {what}"),
    ]
    rows = []
    for d in datasets:
        ext = [
            r.datasets[d.name].entry.get("extended", {}).get("xlqa-ext") if d.name in r.datasets else None
            for r in runs
        ]
        if any(ext):
            rows.append(
                [d.name]
                + [f"{_f(em_of({'metrics': m}))} / {_f(f1_of({'metrics': m}))}" if m else "–" for m in ext]
            )
    if rows:
        note = (
            "xlqa-ext EM / F1: this project's extension of the MLQA rules to languages without official rules "
            "(Unicode punctuation, one token per character in scripts without spaces). Not an official metric; "
            "shown beside the official-compatible numbers above, never instead of them."
        )
        blocks += [("p", note), ("table", ["dataset", *(f"{r.name} EM / F1" for r in runs)], rows)]
    return blocks


def _gap_section(runs: list[Run], datasets: list[Scored]) -> list[tuple]:
    gaps = {r.name: _gaps(r) for r in runs}
    rows = [
        [d.name] + [_f(gaps[r.name].get(d.name, float("nan"))) for r in runs]
        for d in datasets
        if any(d.name in g for g in gaps.values())
    ]
    if not rows:
        return []
    mean = ["average"] + [_f(np.mean(list(g.values()))) if g else "–" for g in gaps.values()]
    return [
        ("h2", "Transfer gap"),
        ("p", "English F1 minus F1 in each language of the same benchmark (points; lower is better)."),
        ("table", ["dataset", *gaps], [*rows, mean]),
        ("fig", "transfer_gap", "Transfer gap per language"),
    ]


def _paired_section(runs: list[Run], datasets: list[Scored], seed: int) -> list[tuple]:
    blocks = [
        ("h2", "Paired significance"),
        (
            "p",
            f"F1 difference of each run minus {runs[0].name}, paired over the same questions: 95% CI from a paired bootstrap, two-sided p from a paired sign-flip "
            f"permutation test ({N_PAIRED} resamples each, seed {seed}); significant: p < 0.05. "
            "p (Holm) corrects for testing every language of a run.",
        ),
    ]
    base = runs[0]
    for other in runs[1:]:
        rows, ps = [], []
        for d in datasets:
            a, b = base.datasets.get(d.name), other.datasets.get(d.name)
            if a is None or b is None or a.entry.get("sha256") != b.entry.get("sha256"):
                continue
            qids = sorted(set(a.scores) & set(b.scores))
            t = analysis.paired_test(
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
                    "yes" if t["p_value"] < 0.05 else "no",
                ]
            )
        for row, p_holm in zip(rows, analysis.holm(ps)):
            row.insert(5, _p(p_holm))
        blocks += [
            ("h3", f"{other.name} vs {base.name}"),
            ("table", ["dataset", "n", "ΔF1", "95% CI", "p", "p (Holm)", "significant"], rows)
            if rows
            else ("p", "No dataset evaluated by both on the same data."),
        ]
    return blocks


def _consistency_section(run: Run, out: Path, figs: dict[str, Path]) -> list[tuple]:
    members = _parallel_family(run)
    if not members:
        return []
    cons = analysis.consistency({d.language: {q: s[0] for q, s in d.scores.items()} for d in members})
    figs["consistency"] = consistency_figure(cons, run.name, out)
    n, langs = cons["n_questions"], cons["languages"]
    kappa = cons["kappa"][~np.eye(len(langs), dtype=bool)]
    text = (
        f"{run.name}: {n} questions shared by {len(langs)} parallel languages ({', '.join(langs)}); "
        f"mean pairwise agreement {_f(cons['agreement'][~np.eye(len(langs), dtype=bool)].mean(), 3)}, "
        f"mean Cohen's kappa {_f(np.nanmean(kappa) if np.isfinite(kappa).any() else np.nan, 3)} (EM)."
    )
    rows = [[str(k), str(c), _f(100 * c / n)] for k, c in enumerate(cons["counts"])]
    return [
        ("h2", "Cross-lingual consistency"),
        ("p", text),
        ("table", ["languages answered exactly", "questions", "%"], rows),
        ("fig", "consistency", "Agreement between languages and questions by number of languages right"),
    ]


def _breakdown_section(
    runs: list[Run], datasets: list[Scored], out: Path, figs: dict[str, Path]
) -> list[tuple]:
    pooled: dict[str, dict[str, dict]] = {}
    first: dict[str, dict] = {}
    common = {d.name for d in datasets if all(d.name in r.datasets for r in runs)}
    for run in runs:
        en = {d.family: d.examples for d in run.datasets.values() if d.language == analysis.PIVOT}
        acc: dict[str, dict[str, list[float]]] = {
            k: {} for k in ("question", "answer_length", "context_length")
        }
        for d in run.datasets.values():
            b = analysis.breakdowns(d.examples, d.scores, language=d.language, reference=en.get(d.family))
            if run is runs[0]:
                first[d.name] = b
            for kind, buckets in b.items() if d.name in common else ():
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
        ("h2", "Breakdowns"),
        (
            "p",
            "F1 by question type, gold answer length and context length. For a parallel benchmark the "
            "buckets come from the English question, so they mean the same in every language; "
            f"the tables are for {runs[0].name} (F1 and number of questions), the figure pools the datasets "
            "that every run has.",
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
        blocks += [("h3", f"F1 by {title} (questions)"), ("table", [title.split(" (")[0], *names], rows)]
    fig = [("fig", "breakdowns", "F1 by question type, answer length and context length")] if common else []
    return blocks + fig


def _squad2_section(runs: list[Run], out: Path, figs: dict[str, Path]) -> list[tuple]:
    curves, rows = {}, []
    for run in runs:
        for d in run.datasets.values():
            if d.rules != "squad2":
                continue
            ddir = run.eval_dir / d.name
            nbest = analysis.read_json_file(ddir / "nbest_predictions.json")
            odds = analysis.read_json_file(ddir / "null_odds.json")
            span = {q: next((e["text"] for e in v if e.get("start", 0) >= 0), "") for q, v in nbest.items()}
            gold = gold_texts(d.examples)
            raw = metrics.per_question(gold, span, "squad2")
            c = analysis.squad2_curves(
                odds, gold, {q: s[1] for q, s in raw.items()}, {q: s[0] for q, s in raw.items()}
            )
            curves[f"{run.name} {d.name}"] = {**c, "used": d.entry.get("null_threshold")}
            rows.append(
                [
                    run.name,
                    d.name,
                    _f(d.f1_ci[0]),
                    str(d.entry.get("null_threshold")),
                    _f(c["best_f1"]),
                    "-inf" if np.isneginf(c["best_threshold"]) else _f(c["best_threshold"], 3),
                    _f(c["average_precision"], 3),
                ]
            )
    if not curves:
        return []
    figs["squad2_threshold"] = squad2_figure(curves, out)
    return [
        ("h2", "SQuAD v2 no-answer threshold"),
        (
            "p",
            "A question gets its best span when null odds <= threshold, else no answer (-inf: none answered).",
        ),
        ("table", ["run", "dataset", "F1", "threshold used", "best F1", "best threshold", "AP"], rows),
        ("fig", "squad2_threshold", "Precision-recall and F1 as the no-answer threshold moves"),
    ]


def _runs_section(runs: list[Run], seed: int) -> list[tuple]:
    rows = [
        [
            r.name,
            str(r.eval_dir),
            str(r.results.get("config", {}).get("model", "")),
            str(r.results.get("precision", "")),
            str(r.results.get("environment", {}).get("xlqa", "")),
            str(len(r.datasets)),
        ]
        for r in runs
    ]
    return [
        ("h1", "xlqa evaluation report"),
        (
            "p",
            f"Scores follow each dataset's official rules; 95% confidence intervals are percentile "
            f"bootstraps over questions ({N_BOOTSTRAP} resamples, seed {seed}).",
        ),
        ("h2", "Runs"),
        ("table", ["run", "evaluation folder", "model", "precision", "xlqa", "datasets"], rows),
    ]


def build_report(
    eval_dirs: list[Path], out: Path, *, names: list[str] | None = None, seed: int = 0, data_dirs: tuple = ()
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
    """
    if not eval_dirs:
        raise ValueError("build_report needs at least one evaluation folder")
    runs = load_runs([Path(d) for d in eval_dirs], names, seed=seed, data_dirs=data_dirs)
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    datasets = _datasets(runs)
    figs = score_figures(runs, datasets, {r.name: _gaps(r) for r in runs}, fig_dir)
    blocks = _runs_section(runs, seed) + _score_section(runs, datasets) + _gap_section(runs, datasets)
    if len(runs) > 1:
        blocks += _paired_section(runs, datasets, seed)
    blocks += _consistency_section(runs[0], fig_dir, figs) + _breakdown_section(runs, datasets, fig_dir, figs)
    blocks += _squad2_section(runs, fig_dir, figs)
    written = {"markdown": out / "report.md", "html": out / "report.html", "csv": out / "metrics.csv"}
    written["markdown"].write_text(render_markdown(blocks), encoding="utf-8")
    written["html"].write_text(render_html(blocks, figs), encoding="utf-8")
    write_csv(runs, datasets, written["csv"])
    log.info("report written to %s", out)
    return {**written, **figs}

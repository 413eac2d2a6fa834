"""Matplotlib figures of the evaluation report (PNG files, deterministic: no software/date stamp).

:mod:`xlqa.report.build` computes the numbers; the functions here draw them and return the path of each PNG
written. They take the report's types from :mod:`xlqa.report.model`, so they never import the builder.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xlqa.report.model import Run, Scored

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
RC = {"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 11, "legend.fontsize": 10, "figure.dpi": 100}
BREAKDOWN_TITLES = {
    "question": "question type",
    "answer_length": "gold answer length (characters)",
    "context_length": "context length (characters)",
}


def _labels(datasets: list[Scored]) -> dict[str, str]:
    one_family = len({d.family for d in datasets}) == 1 and len({d.language for d in datasets}) == len(
        datasets
    )
    return {d.name: d.language if one_family else d.name for d in datasets}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.15)
    return path


# Scripts of the benchmarks' languages that DejaVu Sans (matplotlib's default) lacks: question words, labels and
# titles in Chinese, Thai, Arabic or Hindi would be empty boxes. Debian's fonts-noto-core and fonts-noto-cjk
# provide these families; matplotlib falls back through the list glyph by glyph.
FALLBACK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans Thai",
    "Noto Sans Arabic",
    "Noto Sans Devanagari",
    "Noto Sans Hebrew",
    "Noto Sans Bengali",
    "Noto Sans Tamil",
    "Noto Sans Telugu",
    "Noto Sans Georgian",
    "Noto Sans Armenian",
    "Noto Sans Ethiopic",
)


@functools.cache
def font_families() -> list[str]:
    """DejaVu Sans, then each installed fallback family (only installed ones: a missing name would warn)."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    known = {f.fname for f in manager.ttflist}
    # matplotlib's font list is cached from its first run: fonts installed later (e.g. by CI after the
    # package) are added here from the system's font folders
    for path in font_manager.findSystemFonts():
        if "Noto" in Path(path).name and path not in known:
            try:
                manager.addfont(path)
            except (OSError, RuntimeError, ValueError):  # an unreadable font file: skip it
                continue
    installed = {f.name for f in manager.ttflist}
    return ["DejaVu Sans", *(name for name in FALLBACK_FONTS if name in installed)]


def _new(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw):
    import matplotlib

    with matplotlib.rc_context({**RC, "font.family": font_families()}):
        fig = Figure(figsize=(width, height), layout="constrained")
        return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _grouped_bars(ax, labels, series, *, err=None, ylabel="", legend=True):
    """Bars per label, one colour per series (run)."""
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        yerr = None if err is None else err[name]
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            values,
            width,
            label=name,
            color=COLORS[i % 8],
            yerr=yerr,
            capsize=3 if yerr is not None else 0,
            error_kw={"elinewidth": 1, "ecolor": "#333"},
        )
    crowded = max(map(len, labels), default=0) * len(labels) > 60
    ax.set_xticks(x, labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if len(series) > 1 and legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)


def _heat(ax, matrix, rows, cols, *, fmt, vmin, vmax, cmap="viridis", size=10):
    im = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30 if max(map(len, cols)) > 4 else 0)
    ax.set_yticks(range(len(rows)), rows)
    mid = vmin + 0.55 * (vmax - vmin)
    for (i, j), v in np.ndenumerate(matrix):
        text = "–" if np.isnan(v) else format(v, fmt)
        color = "black" if np.isnan(v) or v > mid else "white"
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=size)
    return im


def score_figures(
    runs: list[Run], datasets: list[Scored], gaps: dict[str, dict[str, float]], out: Path
) -> dict[str, Path]:
    """F1 bars with CIs, the run x dataset F1 heat map and (when any) the transfer-gap bars.

    Args:
        runs: the runs, reference first.
        datasets: one representative per dataset, in report order.
        gaps: per run name, the transfer gap (F1 points) of each dataset that has one.
        out: folder for the PNGs.

    Returns:
        figure stem -> path written.
    """
    labels = _labels(datasets)
    names = [d.name for d in datasets]
    xt = [labels[n] for n in names]
    figs: dict[str, Path] = {}
    nan = float("nan")

    def val(run, name, i):
        d = run.datasets.get(name)
        return d.f1_ci[i] if d else nan

    w = max(7.0, 0.45 * len(names) * max(1, len(runs)) ** 0.5 + 2.5)
    fig, ax = _new(w, 4.6)
    f1 = {r.name: [val(r, n, 0) for n in names] for r in runs}
    err = {
        r.name: np.array(
            [[val(r, n, 0) - val(r, n, 1) for n in names], [val(r, n, 2) - val(r, n, 0) for n in names]]
        )
        for r in runs
    }
    _grouped_bars(ax[0, 0], xt, f1, err=err, ylabel="F1")
    what = "language" if len({d.family for d in datasets}) == 1 else "dataset"
    ax[0, 0].set_title(f"F1 per {what} (95% bootstrap CI)")
    ax[0, 0].set_ylim(0, 100)
    figs["f1_by_language"] = _save(fig, out / "f1_by_language.png")

    fig, ax = _new(max(6.0, 0.75 * len(names) + 2.5), 1.2 + 0.55 * len(runs))
    im = _heat(
        ax[0, 0],
        np.array([f1[r.name] for r in runs]),
        [r.name for r in runs],
        xt,
        fmt=".1f",
        vmin=0,
        vmax=100,
    )
    fig.colorbar(im, ax=ax[0, 0], label="F1", shrink=0.9)
    ax[0, 0].set_title(f"F1 by run and {what}")
    figs["f1_heatmap"] = _save(fig, out / "f1_heatmap.png")

    gap_names = [n for n in names if any(n in g for g in gaps.values())]
    if gap_names:
        fig, ax = _new(max(6.5, 0.45 * len(gap_names) * max(1, len(runs)) ** 0.5 + 2.5), 4.2)
        _grouped_bars(
            ax[0, 0],
            [_labels([d for d in datasets if d.name in gap_names])[n] for n in gap_names],
            {r: [g.get(n, nan) for n in gap_names] for r, g in gaps.items()},
            ylabel="F1 gap to English",
        )
        ax[0, 0].axhline(0, color="black", linewidth=0.8)
        ax[0, 0].set_title("Transfer gap: English F1 minus F1 in the language (lower is better)")
        figs["transfer_gap"] = _save(fig, out / "transfer_gap.png")
    return figs


def consistency_figure(cons: dict, run: str, out: Path) -> Path:
    """Pairwise agreement heat map and questions by number of languages right (``consistency.png``)."""
    langs, n = cons["languages"], len(cons["languages"])
    fig, ax = _new(6.0 + 0.5 * n, 0.42 * n + 2.2, 1, 2, width_ratios=[1.4, 1])
    fig.get_layout_engine().set(wspace=0.06)
    agree = np.where(np.eye(n, dtype=bool), np.nan, cons["agreement"])  # the diagonal is 1 by definition
    high = min(1.0, np.ceil(np.nanmax(agree) * 20) / 20)
    low = min(np.floor(np.nanmin(agree) * 20) / 20, high - 0.1)
    im = _heat(
        ax[0, 0],
        agree,
        langs,
        langs,
        fmt=".2f",
        vmin=low,
        vmax=high,
        size=8 if n > 8 else 10,
    )
    ax[0, 0].set_aspect("equal")
    fig.colorbar(im, ax=ax[0, 0], shrink=0.8, pad=0.02)
    ax[0, 0].set_title("Pairwise agreement\n(share of questions both right or both wrong, EM)")
    counts = np.array(cons["counts"])
    bars = ax[0, 1].bar(range(n + 1), counts, color=COLORS[0])
    ax[0, 1].bar_label(bars, fontsize=8 if n > 8 else 10, padding=2)
    ax[0, 1].set_xticks(range(n + 1))
    ax[0, 1].set_xlabel("languages answered exactly")
    ax[0, 1].set_ylabel("questions")
    ax[0, 1].set_title(f"Questions by number of languages\nanswered exactly ({run})")
    ax[0, 1].margins(y=0.12)
    return _save(fig, out / "consistency.png")


def breakdown_figure(pooled: dict[str, dict[str, dict]], out: Path) -> Path:
    """F1 by question type, answer length and context length, one bar per run (``breakdowns.png``)."""
    titles = BREAKDOWN_TITLES
    fig, ax = _new(9.5, 10.0, 3, 1)
    for axis, kind in zip(ax[:, 0], titles):
        buckets = list(dict.fromkeys(b for per_run in pooled.values() for b in per_run[kind]))
        if not buckets:  # question types of datasets without an English reference are not pooled
            axis.text(
                0.5, 0.5, "no dataset with English question words", ha="center", transform=axis.transAxes
            )
            axis.set_axis_off()
            continue
        series = {
            r: [per_run[kind].get(b, {}).get("f1", float("nan")) for b in buckets]
            for r, per_run in pooled.items()
        }
        _grouped_bars(axis, buckets, series, ylabel="F1", legend=axis is ax[0, 0])
        axis.set_title(f"F1 by {titles[kind]}")
        axis.set_ylim(0, 100)
    return _save(fig, out / "breakdowns.png")


def squad2_figure(curves: dict[str, dict], out: Path) -> Path:
    """Precision-recall and F1 against the no-answer threshold (``squad2_threshold.png``)."""
    fig, ax = _new(11.0, 4.5, 1, 2)
    for i, (label, c) in enumerate(curves.items()):
        color = COLORS[i % 8]
        ax[0, 0].plot(
            c["recall"], c["precision"], color=color, label=f"{label} (AP {c['average_precision']:.2f})"
        )
        fin = np.abs(c["thresholds"]) < 1e8  # -inf (answer nothing) and the +-1e9 stand-ins are off the axis
        ax[0, 1].plot(c["thresholds"][fin], c["f1"][fin], color=color, label=label)
        if c.get("used") is not None:  # the threshold the evaluation applied
            ax[0, 1].axvline(c["used"], color=color, linestyle="--", linewidth=1)
    ax[0, 0].set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall (F1-weighted)",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax[0, 1].set(
        xlabel="no-answer threshold on null odds",
        ylabel="F1",
        title="F1 vs threshold (dashed: threshold used)",
    )
    for axis in ax[0]:
        axis.grid(alpha=0.3)
        axis.legend(frameon=False)
    return _save(fig, out / "squad2_threshold.png")

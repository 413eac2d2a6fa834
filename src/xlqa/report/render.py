"""Rendering of a report's blocks (:mod:`xlqa.report.model`): Markdown, one standalone HTML page (figures
inlined), and the metrics CSV.

Both renderers walk the same blocks, so Markdown and HTML always say the same. The HTML comes from the
Jinja2 templates in :mod:`xlqa.web` (shared with the dashboard), with the CSS inlined and every figure a
``data:`` URI, so the page is one file that needs nothing else.
"""

from __future__ import annotations

import base64
import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from markupsafe import Markup

from xlqa.fileio import atomic_open
from xlqa.report.model import Block, Figure, Heading, Paragraph, Run, Scored, Table
from xlqa.web import static_text, templates

TITLE = "xlqa evaluation report"


def _md_cell(value: str) -> str:
    return str(value).replace("|", "\\|")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The report as Markdown; figures link to ``figures/<stem>.png`` next to the file."""
    lines: list[str] = []
    for block in blocks:
        match block:
            case Heading(level, text):
                lines += ["#" * level + " " + text, ""]
            case Paragraph(text):
                lines += [text, ""]
            case Table(header, rows):
                lines += ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows] + [""]
            case Figure(stem, caption):
                lines += [f"![{caption}](figures/{stem}.png)", ""]
    return "\n".join(lines)


def render_html(blocks: Sequence[Block], figs: Mapping[str, Path], *, title: str = TITLE) -> str:
    """The report as one standalone HTML page (template ``report.html``): CSS inlined, PNGs as data URIs."""
    figure_src = {
        stem: "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
        for stem, path in figs.items()
    }
    css = Markup(static_text("xlqa.css").strip())  # trusted: our own file, and <style> content is not escaped
    return (
        templates()
        .get_template("report.html")
        .render(title=title, css=css, blocks=blocks, figure_src=figure_src)
    )


def write_csv(runs: Sequence[Run], datasets: Sequence[Scored], path: Path) -> Path:
    """One row per run and dataset (in report order): EM, F1 and their 95% intervals, 4 decimals."""
    with atomic_open(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(
            [
                "run",
                "dataset",
                "language",
                "rules",
                "n",
                "em",
                "f1",
                "em_ci_low",
                "em_ci_high",
                "f1_ci_low",
                "f1_ci_high",
            ]
        )
        for r in runs:
            for d in (r.datasets[x.name] for x in datasets if x.name in r.datasets):
                w.writerow(
                    [
                        r.name,
                        d.name,
                        d.language,
                        d.rules,
                        len(d.scores),
                        *(f"{v:.4f}" for v in (d.em_ci[0], d.f1_ci[0], *d.em_ci[1:], *d.f1_ci[1:])),
                    ]
                )
    return path

"""The report's data: the runs it compares, their scored datasets, and the blocks a report is made of.

A report is built once as a list of blocks (:class:`Heading`, :class:`Paragraph`, :class:`Table`,
:class:`Figure`) and then rendered, to Markdown by :mod:`xlqa.report.render` and to HTML by the templates in
:mod:`xlqa.web`, so every output says the same. The types live here, below the modules that fill and draw them
(statistics and figures <- build <- render), so that no two of those import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from xlqa.data import Example
from xlqa.results import DatasetResult, EvalResult


@dataclass(frozen=True)
class Heading:
    """A section title; ``level`` 1 is the page title, 2 a section, 3 a subsection."""

    level: int
    text: str
    kind: ClassVar[str] = "heading"  # what the templates dispatch on


@dataclass(frozen=True)
class Paragraph:
    """Plain text (escaped in HTML, written as is in Markdown)."""

    text: str
    kind: ClassVar[str] = "paragraph"


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells; the first column is a label, the others numbers."""

    header: list[str]
    rows: list[list[str]]
    kind: ClassVar[str] = "table"


@dataclass(frozen=True)
class Figure:
    """A figure by its stem (``figures/<stem>.png``) with its caption (also the image's alt text)."""

    stem: str
    caption: str
    kind: ClassVar[str] = "figure"


Block = Heading | Paragraph | Table | Figure


@dataclass
class Scored:
    """One dataset of one run, with per-question scores and bootstrap intervals (points)."""

    name: str
    language: str
    rules: str
    entry: DatasetResult
    examples: list[Example]
    scores: dict[str, tuple[float, float]]
    em_ci: tuple[float, float, float]
    f1_ci: tuple[float, float, float]

    @property
    def family(self) -> str:
        """The benchmark a per-language file belongs to (``xquad`` for ``xquad.de``), else its own name."""
        head, _, tail = self.name.rpartition(".")
        return head if head and tail == self.language else self.name


@dataclass
class Run:
    """One evaluation folder as the report sees it: its label, its results and its scored datasets."""

    name: str
    eval_dir: Path
    results: EvalResult
    datasets: dict[str, Scored]

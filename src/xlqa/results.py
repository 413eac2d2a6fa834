"""Typed results: what an evaluation or a training run produces, with one reader and one writer each.

``results.json`` keeps the official metric keys of each rule set (``exact_match``/``f1`` for SQuAD v1.1 and
MLQA, ``exact``/``f1``/``HasAns_*``/``best_*`` for SQuAD v2.0) under ``metrics``; :attr:`DatasetResult.em`
and :attr:`DatasetResult.f1` read either form, so no caller needs to know which rule set produced them.
Unknown keys are kept, so files written by newer versions read and write back unchanged. The models are
pydantic models, which the HTTP API reuses as its response schemas.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xlqa.errors import DataError
from xlqa.fileio import write_json_atomic

RESULTS_FILE = "results.json"


class DatasetResult(BaseModel):
    """One evaluated file: where it came from, its rule set, the official metrics and their 95% intervals."""

    model_config = ConfigDict(extra="allow")

    name: str = Field("", description="file name without .json/.gz, also the folder of its predictions")
    path: str | None = Field(None, description="absolute path of the evaluated file")
    sha256: str | None = Field(None, description="sha256 of the evaluated file")
    language: str | None = Field(None, description="language code of the questions, if known")
    n_questions: int | None = Field(None, description="questions scored")
    seconds: float | None = Field(None, description="prediction time")
    null_threshold: float | None = Field(None, description="SQuAD v2: null-odds threshold used")
    rules: str | None = Field(None, description="official rule set: squad1 | squad2 | mlqa")
    metrics: dict[str, Any] = Field(description="official metric keys and values (0-100)")
    extended: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="xlqa-ext scores where the official rules do not cover the language"
    )
    ci95: dict[str, list[float]] = Field(
        default_factory=dict, description="95% bootstrap intervals: exact_match and f1 -> [low, high]"
    )

    @property
    def em(self) -> float:
        """Exact match, whichever key the rule set uses (``exact_match``, or ``exact`` for SQuAD v2.0)."""
        m = self.metrics
        return float(m.get("exact_match", m.get("exact", 0.0)))

    @property
    def f1(self) -> float:
        return float(self.metrics["f1"])

    @property
    def ext_f1(self) -> float | None:
        ext = self.extended.get("xlqa-ext")
        return None if ext is None else float(ext["f1"])


class EvalResult(BaseModel):
    """An evaluation: the config it ran with, precision, package versions and one entry per file."""

    model_config = ConfigDict(extra="allow")

    config: dict[str, Any] = Field(default_factory=dict)
    precision: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    datasets: list[DatasetResult] = Field(default_factory=list)

    def by_language(self) -> dict[str | None, DatasetResult]:
        return {d.language: d for d in self.datasets}

    @property
    def average_f1(self) -> float | None:
        return sum(d.f1 for d in self.datasets) / len(self.datasets) if self.datasets else None

    @property
    def average_em(self) -> float | None:
        return sum(d.em for d in self.datasets) / len(self.datasets) if self.datasets else None

    def to_json(self) -> dict[str, Any]:
        """The dict written to ``results.json`` (official metric keys kept, None fields kept)."""
        return self.model_dump(mode="json")

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically; ``path`` is a file or a folder (then ``<folder>/results.json``)."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / RESULTS_FILE
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> EvalResult:
        """Read ``results.json`` (or a folder holding one); bad files raise :class:`DataError` naming the field."""
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise DataError("no such results file", path=str(path)) from err
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"not a readable JSON file: {err}", path=str(path)) from err
        return cls.parse(raw, source=str(path))

    @classmethod
    def parse(cls, raw: Any, *, source: str = "results") -> EvalResult:
        """Validate a results dict; the error names the first bad field (``datasets[2].metrics``, ...)."""
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "(top level)"
            raise DataError(first["msg"], path=source, field=where) from err


@dataclass(slots=True)
class NBestCandidate:
    """One candidate answer of a question's n-best list (extractive: a span; generative: a generated text).

    A slots dataclass rather than a pydantic model: decoding builds one per kept span (about 20 per question,
    hundreds of thousands for MLQA), and validating each costs about four times as much as building it
    (measured on XQuAD de: +45 ms on a 145 ms decode). Pydantic models still take it as a field type.
    """

    text: str
    score: float  # start + end logit (extractive) or mean token log-probability (generative)
    start: int | None = None  # character offset of the answer in the context (extractive; -1: no answer)
    end: int | None = None  # character offset just past the answer (extractive; -1: no answer)
    probability: float | None = None  # softmax over the question's n-best scores
    window: int | None = None  # the window that generated the text (generative)

    def to_json(self) -> dict[str, Any]:
        """The entry of ``nbest_predictions.json``: the fields that are set, in declaration order."""
        return {f: v for f in _NBEST_FIELDS if (v := getattr(self, f)) is not None}


_NBEST_FIELDS = tuple(f.name for f in fields(NBestCandidate))


def nbest_to_json(nbest: dict[str, list[NBestCandidate]]) -> dict[str, list[dict[str, Any]]]:
    """Question id -> n-best list as written to ``nbest_predictions.json`` (the one writer of that format)."""
    return {qid: [c.to_json() for c in cands] for qid, cands in nbest.items()}

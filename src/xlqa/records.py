"""What loading a QA data file gives: examples, answers, and the report of what was found and repaired.

Kept apart from the loader (:mod:`xlqa.data`, which re-exports them) so the report's shape can be read without
the parsing code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from xlqa.errors import DataError


@dataclass(frozen=True, slots=True)
class Answer:
    """A gold answer; ``start`` is its character offset in the context after repair, -1 if not found."""

    text: str
    start: int


@dataclass(slots=True)
class Example:
    """One question with its context and all gold answers, in file order."""

    id: str
    question: str
    context: str
    answers: list[Answer]
    is_impossible: bool = False
    title: str = ""

    @property
    def train_answer(self) -> Answer | None:
        """The first answer located in the context (the training span), or None."""
        return next((a for a in self.answers if a.start >= 0), None)


class RepairedAnswer(NamedTuple):
    qid: str
    text: str
    old_start: int
    new_start: int


class UnlocatableAnswer(NamedTuple):
    qid: str
    text: str
    old_start: int


class WhitespaceRepair(NamedTuple):
    """An answer whose text is in the context but for its whitespace: it takes the context's characters."""

    qid: str
    text: str
    new_text: str
    new_start: int


class RenamedId(NamedTuple):
    """A repeated question id renamed on load (``dedupe_ids``): where it was and its new id."""

    qid: str
    new_id: str
    where: str
    first_seen: str


@dataclass
class LoadReport:
    """What loading a file found: counts, repaired and unusable answers, warnings."""

    path: str
    version: str = ""
    sha256: str = ""
    n_articles: int = 0
    n_paragraphs: int = 0
    n_questions: int = 0
    n_answers: int = 0
    n_impossible: int = 0
    repaired: list[RepairedAnswer] = field(default_factory=list)
    unlocatable: list[UnlocatableAnswer] = field(default_factory=list)
    untrainable: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    empty_answers: list[str] = field(default_factory=list)  # qid per empty-text answer (start -1)
    impossible_with_answers: list[str] = field(default_factory=list)  # answers ignored
    unmarked_no_answer: list[str] = field(default_factory=list)  # treated as unanswerable
    language: str | None = None
    truncated: bool = False  # stopped at max_examples
    format: str = "squad-json"  # squad-json, squad-jsonl, mrqa-jsonl, parquet, hf-datasets
    language_source: str = ""  # "given", "file name", "text, THAI script", "text, py3langid 0.98", ...
    whitespace_repaired: list[WhitespaceRepair] = field(default_factory=list)
    renamed_ids: list[RenamedId] = field(default_factory=list)

    @property
    def n_trainable(self) -> int:
        """Answerable questions with a located answer."""
        return self.n_questions - self.n_impossible - len(self.untrainable)


@dataclass
class SquadData:
    """The examples of one file, its load report and its (guessed) language."""

    path: str
    examples: list[Example]
    report: LoadReport
    language: str | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)


DEDUPE_HINT = "load with --dedupe-ids (any command: XLQA_DEDUPE_IDS=1) to rename the later ones id#2, id#3"


class DataProblems(DataError):
    """Several problems in one file: ``problems`` holds each (a :class:`DataError` naming its question)."""

    def __init__(self, message: str, *, path: str | None = None, problems: list[DataError] | None = None):
        super().__init__(message, path=path)
        self.problems = problems or []

    @classmethod
    def of(cls, path: str, problems: list[DataError], duplicates: list[str]) -> DataProblems:
        """One error for all of ``problems``: counts by kind and the first of each; duplicated ids listed."""
        parts = []
        if duplicates:
            uses = Counter(duplicates)
            shown = ", ".join(f"{q!r} x{n + 1}" for q, n in list(uses.items())[:10])
            more = f" and {len(uses) - 10} more" if len(uses) > 10 else ""
            parts.append(f"{len(uses)} question ids used more than once ({shown}{more}): {DEDUPE_HINT}")
        others = [p for p in problems if p.field != "id" or "duplicate" not in p.message]
        kinds = Counter(f"field {p.field!r}" if p.field else "structure" for p in others)
        if others:
            counts = ", ".join(f"{n} in {kind}" for kind, n in kinds.items())
            first = str(others[0]).removeprefix(f"{path}: ")
            parts.append(f"{len(others)} other problems ({counts}); first: {first}")
        return cls(f"{len(problems)} problems: " + "; ".join(parts), path=path, problems=problems)

"""Read SQuAD-format JSON (plain or gzip) into validated examples, repairing answer offsets.

Policy, applied to every question (counts and examples end up in the :class:`LoadReport`):

* Structure errors raise :class:`DataError` naming the file, the question id and the field: not JSON,
  not an object, no ``data`` list, missing or wrong-typed ``paragraphs``/``context``/``qas``/``id``/
  ``question``/``answers``/``text``/``answer_start``/``is_impossible``, an empty question, duplicate ids.
* Answer offsets: the text found at ``answer_start`` is kept; otherwise, if the text occurs in the context,
  the answer moves to the nearest occurrence (``repaired``); otherwise it is kept for scoring with
  ``start=-1`` (``unlocatable``) and is never trained on. An out-of-range ``answer_start`` is one more wrong
  offset, not an error. An answerable question without any usable answer is listed in ``untrainable``.
* Empty answer texts (SQuAD-es and SQuAD-it use them where translation lost the answer) are kept, as the
  official scorers see them, with ``start=-1`` (``empty_answers``); they are never a training span.
* ``is_impossible: true`` with answers: the flag wins, the answers are ignored like ``plausible_answers``
  (warning, ``impossible_with_answers``); training on them would teach answering the unanswerable.
* ``answers: []`` and not marked impossible: treated as unanswerable, as the official SQuAD v2.0
  scorer and the usual training code do (warning, ``unmarked_no_answer``). ``answers`` may be absent only
  when ``is_impossible`` is true.
* Contexts are never stripped or normalized, so offsets index the exact context string.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from xlqa.errors import ConfigError, DataError
from xlqa.languages import guess_language

logger = logging.getLogger(__name__)


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


def _locate(context: str, text: str, start: int) -> int:
    """Offset of ``text`` in ``context``: ``start`` if it is there, else the nearest occurrence, else -1."""
    if start >= 0 and context.startswith(text, start):
        return start
    best = -1
    pos = context.find(text)
    while pos != -1:
        if best == -1 or abs(pos - start) < abs(best - start):
            best = pos
        if pos > start:  # later occurrences are only farther away
            break
        pos = context.find(text, pos + 1)
    return best


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Full(Exception):
    """Raised when max_examples questions have been read and another one follows."""


class _Parser:
    """Walks data -> articles -> paragraphs -> qas, validating and collecting examples."""

    def __init__(self, path: str, report: LoadReport, max_examples: int | None) -> None:
        self.path, self.report, self.limit = path, report, max_examples
        self.examples: list[Example] = []
        self.seen: dict[str, str] = {}  # qid -> where first seen

    def check_limit(self) -> None:
        """Stop (raise _Full) before reading more once max_examples questions are kept."""
        if self.limit is not None and len(self.examples) >= self.limit:
            raise _Full

    def error(self, msg: str, where: str, *, qid: str | None = None, field: str | None = None) -> DataError:
        return DataError(f"{msg} (at {where})", path=self.path, qid=qid, field=field)

    def need(self, obj: dict, key: str, kind: type | tuple[type, ...], where: str, qid: str | None = None):
        """``obj[key]`` checked to be of ``kind`` (bool never passes for int), else a DataError."""
        if key not in obj:
            raise self.error(f"missing {key!r}", where, qid=qid, field=key)
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            got = f"{type(value).__name__} {_short(value)}"
            raise self.error(f"expected {names}, got {got}", where, qid=qid, field=key)
        return value

    def run(self, data: list) -> None:
        for a_idx, article in enumerate(data):
            self.check_limit()
            where = f"data[{a_idx}]"
            if not isinstance(article, dict):
                raise self.error(f"article must be an object, got {type(article).__name__}", where)
            title = article.get("title")
            title = "" if title is None else title if isinstance(title, str) else str(title)
            self.report.n_articles += 1
            for p_idx, par in enumerate(self.need(article, "paragraphs", list, where)):
                self.paragraph(par, f"{where}.paragraphs[{p_idx}]", title)

    def paragraph(self, par: Any, where: str, title: str) -> None:
        self.check_limit()
        if not isinstance(par, dict):
            raise self.error(f"paragraph must be an object, got {type(par).__name__}", where)
        context = self.need(par, "context", str, where)
        qas = self.need(par, "qas", list, where)
        self.report.n_paragraphs += 1
        for q_idx, qa in enumerate(qas):
            self.check_limit()
            self.examples.append(self.question(qa, f"{where}.qas[{q_idx}]", context, title))

    def question(self, qa: Any, where: str, context: str, title: str) -> Example:
        if not isinstance(qa, dict):
            raise self.error(f"question must be an object, got {type(qa).__name__}", where)
        qid = str(self.need(qa, "id", (str, int), where))
        if qid in self.seen:
            raise self.error(
                f"duplicate question id, first seen at {self.seen[qid]}", where, qid=qid, field="id"
            )
        self.seen[qid] = where
        question = self.need(qa, "question", str, where, qid)
        if not question.strip():
            raise self.error("empty question", where, qid=qid, field="question")
        impossible = qa.get("is_impossible", False)
        if not isinstance(impossible, bool):
            raise self.error(
                f"expected bool, got {_short(impossible)}", where, qid=qid, field="is_impossible"
            )
        raw = [] if impossible and "answers" not in qa else self.need(qa, "answers", list, where, qid)
        pairs = [self.answer(ans, f"{where}.answers[{k}]", qid) for k, ans in enumerate(raw)]
        report = self.report
        answers: list[Answer] = []
        if impossible:
            if any(text for text, _ in pairs):
                report.impossible_with_answers.append(qid)
        elif not pairs:
            report.unmarked_no_answer.append(qid)
            impossible = True
        else:
            answers = [self.place(qid, context, text, start) for text, start in pairs]
            report.empty_answers += [qid for a in answers if not a.text]
            if all(a.start < 0 for a in answers):
                report.untrainable.append(qid)
        report.n_questions += 1
        report.n_answers += len(answers)
        report.n_impossible += impossible
        return Example(qid, question, context, answers, impossible, title)

    def answer(self, ans: Any, where: str, qid: str) -> tuple[str, int]:
        if not isinstance(ans, dict):
            raise self.error(
                f"answer must be an object with 'text' and 'answer_start', got {type(ans).__name__}",
                where,
                qid=qid,
                field="answers",
            )
        return self.need(ans, "text", str, where, qid), self.need(ans, "answer_start", int, where, qid)

    def place(self, qid: str, context: str, text: str, start: int) -> Answer:
        if not text:  # an empty gold answer: scored as the file says, never a training span
            return Answer(text, -1)
        found = _locate(context, text, start)
        if found == -1:
            self.report.unlocatable.append(UnlocatableAnswer(qid, text, start))
        elif found != start:
            self.report.repaired.append(RepairedAnswer(qid, text, start, found))
        return Answer(text, found)


def _read_json(path: Path) -> tuple[Any, str]:
    """Parse a plain or gzip-compressed JSON file; returns (object, sha256 of the raw bytes)."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path=name) from exc
    sha256 = hashlib.sha256(raw).hexdigest()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"corrupt gzip data: {exc}", path=name) from exc
    try:
        return json.loads(raw), sha256
    except json.JSONDecodeError as exc:
        raise DataError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", path=name
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", path=name) from exc


def _summarize(report: LoadReport) -> None:
    """Turn the lists in the report into one warning line each."""

    def line(items: list, what: str) -> None:
        if items:
            first = items[0] if isinstance(items[0], str) else items[0][0]
            report.warnings.append(f"{len(items)} {what} (first: question id {first!r})")

    line(report.repaired, "answers with a wrong answer_start moved to the nearest occurrence of their text")
    line(report.unlocatable, "answers whose text is not in the context: kept for scoring, not trained on")
    line(report.untrainable, "answerable questions without a usable answer: dropped from training")
    line(report.empty_answers, "empty answer texts: kept for scoring with start -1, not trained on")
    line(report.impossible_with_answers, "questions marked is_impossible with answers: answers ignored")
    line(report.unmarked_no_answer, "questions with answers [] not marked is_impossible: unanswerable")


def load_squad(
    path: str | Path, *, language: str | None = None, max_examples: int | None = None
) -> SquadData:
    """Load a SQuAD-format file (v1.1 or v2.0, plain or .gz) into validated examples.

    Args:
        path: the JSON file; gzip is detected from the content, not the name.
        language: language code of the contexts; guessed from the file name when None.
        max_examples: keep only the first N questions in file order (the rest of the file is not validated).

    Raises:
        DataError: unreadable file or invalid structure; the message names file, question id and field.
    """
    if max_examples is not None and max_examples < 0:
        raise ConfigError(f"--max-examples must be >= 0, got {max_examples}")
    path = Path(path)
    name = str(path)
    obj, sha256 = _read_json(path)
    if not isinstance(obj, dict):
        raise DataError(
            f"top level must be a JSON object with a 'data' list, got {type(obj).__name__}", path=name
        )
    parser = _Parser(name, LoadReport(name, sha256=sha256), max_examples)
    data = parser.need(obj, "data", list, "top level")
    version = obj.get("version")
    language = language if language is not None else guess_language(path)
    report = parser.report
    report.version, report.language = "" if version is None else str(version), language
    try:
        parser.run(data)
    except _Full:
        report.truncated = True
    _summarize(report)
    logger.info("loaded %d questions from %s", report.n_questions, name)
    for warning in report.warnings:
        logger.warning("%s: %s", name, warning)
    return SquadData(name, parser.examples, report, language)


def _trim(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def format_report(report: LoadReport, max_items: int = 5) -> str:
    """A one-screen summary: counts, repaired and unusable answers with a few examples, warnings."""
    lines = [
        f"{report.path}  version={report.version!r} language={report.language or '?'} "
        f"sha256={report.sha256[:12]}",
        f"  {report.n_articles:,} articles, {report.n_paragraphs:,} paragraphs, {report.n_questions:,} "
        f"questions ({report.n_impossible:,} unanswerable, {report.n_trainable:,} trainable), "
        f"{report.n_answers:,} answers" + ("  [truncated at max_examples]" if report.truncated else ""),
    ]
    if report.repaired:
        lines.append(f"  repaired: {len(report.repaired):,} answers moved to the nearest occurrence")
        lines += [
            f"    {r.qid}: {_trim(r.text)} {r.old_start} -> {r.new_start}"
            for r in report.repaired[:max_items]
        ]
    if report.unlocatable:
        lines.append(f"  unlocatable: {len(report.unlocatable):,} answers not in their context (scored only)")
        lines += [f"    {u.qid}: {_trim(u.text)} at {u.old_start}" for u in report.unlocatable[:max_items]]
    if report.untrainable:
        shown = ", ".join(report.untrainable[:max_items])
        more = " ..." if len(report.untrainable) > max_items else ""
        lines.append(f"  untrainable: {len(report.untrainable):,} questions ({shown}{more})")
    if report.warnings:
        lines.append("  warnings:")
        lines += [f"    - {w}" for w in report.warnings[:max_items]]
        if len(report.warnings) > max_items:
            lines.append(f"    ... and {len(report.warnings) - max_items} more")
    return "\n".join(lines)


def check_files(paths: Iterable[str | Path]) -> list[LoadReport | DataError]:
    """Load each file (folders: every ``*.json``/``*.json.gz`` below them, sorted) and report on it.

    Never raises on a bad file: its :class:`DataError` takes its place in the returned list.
    """
    results: list[LoadReport | DataError] = []
    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.name.lower().endswith((".json", ".json.gz")))
        else:
            files.append(item)
    for path in files:
        try:
            results.append(load_squad(path).report)
        except DataError as exc:
            results.append(exc)
    return results


def gold_texts(examples: list[Example]) -> dict[str, list[str]]:
    """Question id -> gold answer texts, as the official scripts read them (empty for unanswerable)."""
    return {ex.id: [] if ex.is_impossible else [a.text for a in ex.answers] for ex in examples}

"""Read QA data (SQuAD JSON, SQuAD-style or MRQA JSONL, Parquet, datasets folders) into validated examples.

The formats are read by :mod:`xlqa.formats` into the SQuAD shape; the policy below applies to all of them,
for every question (counts and examples end up in the :class:`LoadReport`):

* Structure errors raise :class:`DataError` naming the file, the question id and the field: not JSON,
  not an object, no ``data`` list, missing or wrong-typed ``paragraphs``/``context``/``qas``/``id``/
  ``question``/``answers``/``text``/``answer_start``/``is_impossible``, an empty question, duplicate ids.
  The whole file is read first: with more than one problem, :class:`DataProblems` counts them and keeps each.
* Duplicate question ids are refused (every one named) unless ``dedupe_ids`` (``XLQA_DEDUPE_IDS=1``): then
  the second use of ``a`` becomes ``a#2``, the third ``a#3``, in file order, with a warning naming each.
* Answer offsets: the text found at ``answer_start`` is kept; otherwise, if the text occurs in the context,
  the answer moves to the nearest occurrence (``repaired``); otherwise, if it occurs but for its whitespace
  (double or non-breaking spaces), it takes the context's characters at the nearest such place
  (``whitespace_repaired``: the official scorers split on any whitespace, so its score is unchanged);
  otherwise it is kept for scoring with ``start=-1`` (``unlocatable``) and is never trained on. An out-of-range ``answer_start`` is one more wrong
  offset, not an error. An answerable question without any usable answer is listed in ``untrainable``.
* Empty answer texts (SQuAD-es and SQuAD-it use them where translation lost the answer) are kept, as the
  official scorers see them, with ``start=-1`` (``empty_answers``); they are never a training span.
* ``is_impossible: true`` with answers: the flag wins, the answers are ignored like ``plausible_answers``
  (warning, ``impossible_with_answers``); training on them would teach answering the unanswerable.
* ``answers: []`` and not marked impossible: treated as unanswerable, as the official SQuAD v2.0
  scorer and the usual training code do (warning, ``unmarked_no_answer``). ``answers`` may be absent only
  when ``is_impossible`` is true.
* Contexts are never stripped or normalized, so offsets index the exact context string.
* The language is the caller's, else the file name's, else the text's (:func:`xlqa.languages.resolve_language`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xlqa.errors import ConfigError, DataError
from xlqa.formats import DATA_SUFFIXES, SOURCE_KEY, hf_splits, is_hf_dataset, read_source
from xlqa.languages import resolve_language
from xlqa.records import (
    Answer,
    DataProblems,
    Example,
    LoadReport,
    RenamedId,
    RepairedAnswer,
    SquadData,
    UnlocatableAnswer,
    WhitespaceRepair,
)
from xlqa.settings import get_settings

__all__ = [
    "Answer",
    "DataError",
    "DataProblems",
    "Example",
    "LoadReport",
    "RepairedAnswer",
    "SquadData",
    "UnlocatableAnswer",
    "WhitespaceRepair",
    "check_files",
    "data_files",
    "format_report",
    "gold_texts",
    "load_squad",
]
logger = logging.getLogger(__name__)


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


def _locate_loose(context: str, text: str, start: int) -> tuple[int, str]:
    """The nearest place where ``text`` occurs but for its whitespace (any run of it matches any other)."""
    words = text.split()
    if not words:
        return -1, text
    best: re.Match | None = None
    for match in re.finditer(r"\s+".join(map(re.escape, words)), context):
        if best is None or abs(match.start() - start) < abs(best.start() - start):
            best = match
        if match.start() > start:
            break
    return (-1, text) if best is None else (best.start(), best.group())


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Full(Exception):
    """Raised when max_examples questions have been read and another one follows."""


class _Parser:
    """Walks data -> articles -> paragraphs -> qas, validating and collecting examples and problems."""

    def __init__(self, path: str, report: LoadReport, max_examples: int | None, dedupe: bool) -> None:
        self.path, self.report, self.limit, self.dedupe = path, report, max_examples, dedupe
        self.examples: list[Example] = []
        self.seen: dict[str, str] = {}  # qid -> where first seen
        self.problems: list[DataError] = []
        self.duplicates: list[str] = []  # a qid per repeated use

    def check_limit(self) -> None:
        """Stop (raise _Full) before reading more once max_examples questions are kept."""
        if self.limit is not None and len(self.examples) >= self.limit:
            raise _Full

    def attempt(self, step, *args) -> None:
        """Run one article's, paragraph's or question's step; a problem is kept and the walk goes on."""
        try:
            step(*args)
        except DataError as exc:
            self.problems.append(exc)

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
            self.attempt(self.article, article, f"data[{a_idx}]")

    def article(self, article: Any, where: str) -> None:
        if not isinstance(article, dict):
            raise self.error(f"article must be an object, got {type(article).__name__}", where)
        title = article.get("title")
        title = "" if title is None else title if isinstance(title, str) else str(title)
        self.report.n_articles += 1
        for p_idx, par in enumerate(self.need(article, "paragraphs", list, where)):
            self.check_limit()
            self.attempt(self.paragraph, par, f"{where}.paragraphs[{p_idx}]", title)

    def paragraph(self, par: Any, where: str, title: str) -> None:
        if not isinstance(par, dict):
            raise self.error(f"paragraph must be an object, got {type(par).__name__}", where)
        where = par.get(SOURCE_KEY, where)
        context = self.need(par, "context", str, where)
        qas = self.need(par, "qas", list, where)
        self.report.n_paragraphs += 1
        for q_idx, qa in enumerate(qas):
            self.check_limit()
            at = (
                qa.get(SOURCE_KEY, f"{where}.qas[{q_idx}]")
                if isinstance(qa, dict)
                else f"{where}.qas[{q_idx}]"
            )
            self.attempt(self.question, qa, at, context, title)

    def unique_id(self, qid: str, where: str) -> str:
        """``qid``, or when seen before a problem, or with ``dedupe`` the next free ``qid#2``, ``qid#3``."""
        if qid not in self.seen:
            self.seen[qid] = where
            return qid
        self.duplicates.append(qid)
        if not self.dedupe:
            raise self.error(
                f"duplicate question id, first seen at {self.seen[qid]}", where, qid=qid, field="id"
            )
        number = 2
        while f"{qid}#{number}" in self.seen:
            number += 1
        new_id = f"{qid}#{number}"
        self.seen[new_id] = where
        self.report.renamed_ids.append(RenamedId(qid, new_id, where, self.seen[qid]))
        return new_id

    def question(self, qa: Any, where: str, context: str, title: str) -> None:
        if not isinstance(qa, dict):
            raise self.error(f"question must be an object, got {type(qa).__name__}", where)
        qid = self.unique_id(str(self.need(qa, "id", (str, int), where)), where)
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
        self.examples.append(Example(qid, question, context, answers, impossible, title))

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
            found, span = _locate_loose(context, text, start)
            if found != -1:
                self.report.whitespace_repaired.append(WhitespaceRepair(qid, text, span, found))
                return Answer(span, found)
            self.report.unlocatable.append(UnlocatableAnswer(qid, text, start))
        elif found != start:
            self.report.repaired.append(RepairedAnswer(qid, text, start, found))
        return Answer(text, found)


def _summarize(report: LoadReport) -> None:
    """Turn the lists in the report into one warning line each."""

    def line(items: list, what: str) -> None:
        if items:
            first = items[0] if isinstance(items[0], str) else items[0][0]
            report.warnings.append(f"{len(items)} {what} (first: question id {first!r})")

    if report.renamed_ids:
        named = ", ".join(f"{r.qid!r} at {r.where} -> {r.new_id!r}" for r in report.renamed_ids[:20])
        more = f" and {len(report.renamed_ids) - 20} more" if len(report.renamed_ids) > 20 else ""
        report.warnings.append(f"{len(report.renamed_ids)} repeated question ids renamed: {named}{more}")
    line(report.repaired, "answers with a wrong answer_start moved to the nearest occurrence of their text")
    line(report.whitespace_repaired, "answers that differ from the context only in whitespace: placed there")
    line(report.unlocatable, "answers whose text is not in the context: kept for scoring, not trained on")
    line(report.untrainable, "answerable questions without a usable answer: dropped from training")
    line(report.empty_answers, "empty answer texts: kept for scoring with start -1, not trained on")
    line(report.impossible_with_answers, "questions marked is_impossible with answers: answers ignored")
    line(report.unmarked_no_answer, "questions with answers [] not marked is_impossible: unanswerable")


def load_squad(
    path: str | Path,
    *,
    language: str | None = None,
    max_examples: int | None = None,
    dedupe_ids: bool | None = None,
) -> SquadData:
    """Load a QA data file (SQuAD v1.1/v2.0 JSON or .gz, JSONL, MRQA, Parquet, datasets folder) into examples.

    Args:
        path: the file (or ``save_to_disk`` folder); its format is read from the content, not the name.
        language: language code of the contexts; when None, the file name's, else detected from the text.
        max_examples: keep only the first N questions in file order (the rest of the file is not validated).
        dedupe_ids: rename repeated question ids (``a#2``) instead of refusing the file; None: ``XLQA_DEDUPE_IDS``.

    Raises:
        DataError: unreadable file or invalid structure; the message names file, question id and field
            (:class:`DataProblems` when there is more than one problem).
    """
    if max_examples is not None and max_examples < 0:
        raise ConfigError(f"--max-examples must be >= 0, got {max_examples}")
    path = Path(path)
    name = str(path)
    source = read_source(path)
    obj = source.obj
    if not isinstance(obj, dict):
        raise DataError(
            f"top level must be a JSON object with a 'data' list, got {type(obj).__name__}", path=name
        )
    dedupe = get_settings().dedupe_ids if dedupe_ids is None else dedupe_ids
    parser = _Parser(name, LoadReport(name, sha256=source.sha256, format=source.format), max_examples, dedupe)
    data = parser.need(obj, "data", list, "top level")
    version = obj.get("version")
    report = parser.report
    report.version = "" if version is None else str(version)
    try:
        parser.run(data)
    except _Full:
        report.truncated = True
    if len(parser.problems) == 1:
        raise parser.problems[0]
    if parser.problems:
        raise DataProblems.of(name, parser.problems, parser.duplicates)
    if language is not None:
        report.language, report.language_source = language, "given"
    else:
        found = resolve_language(path, (ex.context for ex in parser.examples))
        report.language, report.language_source = found.language, found.source
        if found.warning:
            report.warnings.append(found.warning)
    _summarize(report)
    logger.info("loaded %d questions from %s (%s)", report.n_questions, name, report.format)
    for warning in report.warnings:
        logger.warning("%s: %s", name, warning)
    return SquadData(name, parser.examples, report, report.language)


def _trim(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def format_report(report: LoadReport, max_items: int = 5) -> str:
    """A one-screen summary: counts, repaired and unusable answers with a few examples, warnings."""
    lines = [
        f"{report.path}  format={report.format} version={report.version!r} sha256={report.sha256[:12]}",
        f"  language={report.language} (from {report.language_source})"
        if report.language
        else f"  language=? ({report.language_source or 'unknown'}; give --lang)",
        f"  {report.n_articles:,} articles, {report.n_paragraphs:,} paragraphs, {report.n_questions:,} "
        f"questions ({report.n_impossible:,} unanswerable, {report.n_trainable:,} trainable), "
        f"{report.n_answers:,} answers" + ("  [truncated at max_examples]" if report.truncated else ""),
    ]
    if report.renamed_ids:
        lines.append(f"  renamed ids: {len(report.renamed_ids):,} repeated question ids")
        lines += [f"    {r.qid} at {r.where} -> {r.new_id}" for r in report.renamed_ids[:max_items]]
    if report.repaired:
        lines.append(f"  repaired: {len(report.repaired):,} answers moved to the nearest occurrence")
        lines += [
            f"    {r.qid}: {_trim(r.text)} {r.old_start} -> {r.new_start}"
            for r in report.repaired[:max_items]
        ]
    if report.whitespace_repaired:
        lines.append(f"  whitespace: {len(report.whitespace_repaired):,} answers matched but for whitespace")
        lines += [
            f"    {w.qid}: {_trim(w.text)} -> {_trim(w.new_text)} at {w.new_start}"
            for w in report.whitespace_repaired[:max_items]
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


def data_files(paths: Iterable[str | Path]) -> list[Path | DataError]:
    """The files to check: each file as given; folders expanded to their data files and datasets folders.

    A folder without any takes a :class:`DataError` in their place, so it is never passed over in silence.
    """
    files: list[Path | DataError] = []
    for item in map(Path, paths):
        if is_hf_dataset(item):
            files += hf_splits(item)
        elif item.is_dir():
            found = []
            for p in item.rglob("*"):
                if p.is_dir() and (p / "state.json").is_file():
                    found.append(p)  # one split of a datasets folder; its own .json files are metadata
                elif p.is_file() and p.name.lower().endswith(DATA_SUFFIXES) and not is_hf_dataset(p.parent):
                    found.append(p)
            files += sorted(found) or [
                DataError(f"no data files in this folder ({NO_FILES_HINT})", path=str(item))
            ]
        else:
            files.append(item)
    return files


NO_FILES_HINT = "looked for *.json, *.json.gz, *.jsonl, *.jsonl.gz, *.parquet and datasets folders"


def check_files(
    paths: Iterable[str | Path], *, language: str | None = None, dedupe_ids: bool | None = None
) -> list[LoadReport | DataError]:
    """Load each file (folders: every data file below them, sorted; see :func:`data_files`) and report on it.

    Never raises on a bad file: its :class:`DataError` takes its place in the returned list.
    """
    results: list[LoadReport | DataError] = []
    for path in data_files(paths):
        if isinstance(path, DataError):
            results.append(path)
            continue
        try:
            results.append(load_squad(path, language=language, dedupe_ids=dedupe_ids).report)
        except DataError as exc:
            results.append(exc)
    return results


def gold_texts(examples: list[Example]) -> dict[str, list[str]]:
    """Question id -> gold answer texts, as the official scripts read them (empty for unanswerable)."""
    return {ex.id: [] if ex.is_impossible else [a.text for a in ex.answers] for ex in examples}

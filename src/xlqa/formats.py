"""The file formats QA data ships in, each read into the SQuAD JSON shape that :mod:`xlqa.data` validates.

* SQuAD JSON, plain or gzip: ``{"version": ..., "data": [articles]}``.
* SQuAD-style JSONL (plain or gzip), one question per line: ``id``, ``title``, ``context``, ``question`` and
  ``answers``, either ``[{"text", "answer_start"}]`` or Hugging Face's ``{"text": [...], "answer_start": [...]}``
  (where empty lists mark an unanswerable question, as in ``squad_v2``).
* MRQA JSONL (plain or gzip): a ``{"header": ...}`` line, then one context per line with its ``qas``
  (``qid``, ``question``, ``answers``: the raw accepted texts, ``detected_answers``: inclusive ``char_spans``).
* Parquet files, and Hugging Face ``datasets`` folders written by ``save_to_disk`` (Arrow files listed in
  ``state.json``), with the SQuAD columns above.

The format is read from the content (gzip and Parquet by their magic bytes, JSONL by a second JSON value
after the first), so names do not matter. Rows become questions in file order; consecutive rows on the same
context share a paragraph and consecutive paragraphs with the same title an article, so counts read as in the
JSON a converter would write. Every converted question and paragraph carries where it came from (``line 12``,
``row 7``) under :data:`SOURCE_KEY`, so an error names the line rather than a made-up JSON path.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import logging
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xlqa.errors import DataError

logger = logging.getLogger(__name__)

SOURCE_KEY = "xlqa:source"
"""Key of a converted question or paragraph holding its place in the original file (``line 3``, ``row 0``)."""
PROGRESS_BYTES = 64 << 20
"""Files at least this large show a progress bar while they are read (on a terminal)."""
DATA_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".parquet")
"""File names that ``data check`` picks up when it is given a folder."""


@dataclass
class Source:
    """A data file read into SQuAD shape: the object, the sha256 of the bytes read, and the format's name."""

    obj: Any
    sha256: str
    format: str


def is_hf_dataset(path: Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk``: one split (``state.json``) or several."""
    return path.is_dir() and any((path / n).is_file() for n in ("state.json", "dataset_dict.json"))


def hf_splits(path: Path) -> list[Path]:
    """The split folders of a ``DatasetDict`` folder (``dataset_dict.json``), or the folder itself."""
    meta = path / "dataset_dict.json"
    if not meta.is_file():
        return [path]
    splits = _json_file(meta).get("splits") or []
    return [path / s for s in splits if isinstance(s, str)]


def read_source(path: Path) -> Source:
    """Read ``path`` in whichever supported format it is in (see the module docstring)."""
    name = str(path)
    if path.is_dir():
        if is_hf_dataset(path):
            return _read_hf_folder(path)
        raise DataError(
            "is a folder, not a data file (a Hugging Face datasets folder has state.json)", path=name
        )
    magic = _magic(path)
    if magic == b"PAR1":
        return Source(_rows_to_squad(_parquet_rows(path), name), _sha256(path), "parquet")
    packed = magic[:2] == b"\x1f\x8b"
    encoding = _jsonl_encoding(path, packed)
    if encoding:  # JSON Lines: read a line at a time, so memory holds only what the rows become
        return _stream_jsonl(path, packed, encoding, _sha256(path))
    raw, sha256 = _read_bytes(path)
    if packed:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"corrupt gzip data: {exc}", path=name) from exc
    encoding, text = _decode(raw, name)
    del raw  # the text alone from here: the bytes would add their size to the peak while JSON is parsed
    if not text or text.isspace():
        raise DataError("empty file: expected SQuAD JSON, JSONL, Parquet or a datasets folder", path=name)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":  # else a second JSON value follows the first: JSON Lines
            raise DataError(
                f"not valid JSON: {exc.msg.removesuffix(' at')} at line {exc.lineno} column {exc.colno}",
                path=name,
            ) from exc
    else:
        if isinstance(obj, dict) and "data" not in obj and {"context", "qas"} & obj.keys():
            return _read_jsonl([(1, text)], sha256, name)  # JSON Lines of a single row
        return Source(obj, sha256, "squad-json")
    del text  # JSON Lines after all (a first line too long to sniff): read again a line at a time
    return _stream_jsonl(path, packed, encoding, sha256)


def _jsonl_encoding(path: Path, packed: bool, sniff: int = 1 << 16) -> str | None:
    """The text encoding when the file's first line is a whole JSON object and more follows, else None."""
    try:
        with gzip.open(path, "rb") if packed else open(path, "rb") as fh:
            head = fh.read(sniff)
    except (OSError, EOFError, zlib.error):
        return None  # the full read reports it
    end = head.find(b"\n")
    if end == -1 or not head[end:].strip():
        return None
    try:
        encoding = json.detect_encoding(head)
        first = json.loads(head[:end].decode(encoding))
    except (ValueError, UnicodeDecodeError):
        return None
    return encoding if isinstance(first, dict) else None


def _stream_jsonl(path: Path, packed: bool, encoding: str, sha256: str) -> Source:
    opener = gzip.open if packed else open
    try:
        with opener(path, "rt", encoding=encoding, errors="surrogatepass") as fh:
            return _read_jsonl(enumerate(fh, 1), sha256, str(path))
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read: {exc}", path=str(path)) from exc


def _decode(raw: bytes | bytearray, name: str) -> tuple[str, str]:
    """(encoding, text) of JSON bytes: UTF-8 (a BOM is dropped), or UTF-16/32 recognized as ``json.loads`` does."""
    encoding = json.detect_encoding(raw)
    try:
        return encoding, raw.decode(encoding, "surrogatepass")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", path=name) from exc


def _magic(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(4)
    except IsADirectoryError as exc:
        raise DataError("is a folder, not a data file", path=str(path)) from exc
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path=str(path)) from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_bytes(path: Path) -> tuple[bytearray, str]:
    """The file's bytes (read once into one buffer, with a progress bar for big files) and their sha256."""
    name = str(path)
    try:
        with open(path, "rb") as fh:
            size = path.stat().st_size
            if size >= PROGRESS_BYTES:
                logger.info("reading %s (%.0f MB)", name, size / 2**20)
            buf = bytearray(size)
            view, digest, done = memoryview(buf), hashlib.sha256(), 0
            with tqdm(
                total=size, unit="B", unit_scale=True, desc=f"reading {path.name}", leave=False,
                disable=None if size >= PROGRESS_BYTES else True,
            ) as bar:  # fmt: skip
                while done < size:
                    got = fh.readinto(view[done : done + (16 << 20)])
                    if not got:
                        break
                    digest.update(view[done : done + got])
                    done += got
                    bar.update(got)
            del view
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path=name) from exc
    if done < size:
        del buf[done:]
    return buf, digest.hexdigest()


def _json_file(path: Path) -> dict:
    try:
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read: {exc}", path=str(path)) from exc
    if not isinstance(obj, dict):
        raise DataError("expected a JSON object", path=str(path))
    return obj


# ---------------------------------------------------------------------------------------------- JSON Lines
def _parsed_lines(lines: Iterable[tuple[int, str]], name: str) -> Iterator[tuple[str, Any]]:
    """(``line N``, parsed value) per non-blank line, one at a time (rows on one context share it at once)."""
    for number, line in lines:
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"line {number}: not valid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}",
                path=name,
            ) from exc


def _read_jsonl(lines: Iterable[tuple[int, str]], sha256: str, name: str) -> Source:
    rows = _parsed_lines(lines, name)
    first = next(rows, None)
    value = first[1] if first else None
    if isinstance(value, dict) and "header" in value:
        header = value["header"] if isinstance(value["header"], dict) else {}
        return Source(_mrqa_to_squad(rows, str(header.get("dataset") or ""), name), sha256, "mrqa-jsonl")
    rows = itertools.chain([first] if first else [], rows)
    if isinstance(value, dict) and "qas" in value:
        return Source(_mrqa_to_squad(rows, "", name), sha256, "mrqa-jsonl")
    return Source(_rows_to_squad(rows, name), sha256, "squad-jsonl")


# ---------------------------------------------------------------------------------------------- rows -> SQuAD
class _Builder:
    """Appends questions to the last paragraph while the context stays the same, and so on up."""

    def __init__(self) -> None:
        self.data: list[dict] = []

    def add(self, title: Any, context: Any, qa: dict, where: str) -> None:
        if not self.data or self.data[-1]["title"] != title:
            self.data.append({"title": title, "paragraphs": []})
        paragraphs = self.data[-1]["paragraphs"]
        last = paragraphs[-1]["context"] if paragraphs else None
        if not paragraphs or not (last is context or last == context):
            paragraphs.append({"context": context, "qas": [], SOURCE_KEY: where})
        paragraphs[-1]["qas"].append(qa)


def _columns_answers(answers: dict, where: str) -> list:
    """Hugging Face's ``{"text": [...], "answer_start": [...]}`` as a SQuAD answer list."""
    texts, starts = answers.get("text"), answers.get("answer_start")
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        raise ValueError(f"{where}: 'answers' must hold lists 'text' and 'answer_start' of the same length")
    return [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]


def _rows_to_squad(rows: Iterable[tuple[str, Any]], name: str) -> dict:
    """One question per row (JSONL line, Parquet or Arrow row) into SQuAD JSON."""
    built = _Builder()
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(
                f"{where}: expected an object for a question, got {type(row).__name__}", path=name
            )
        qa = {k: row[k] for k in ("id", "question", "answers", "is_impossible") if k in row}
        if "id" not in qa and "qid" in row:
            qa["id"] = row["qid"]
        qa[SOURCE_KEY] = where
        if isinstance(qa.get("answers"), dict):
            try:
                qa["answers"] = _columns_answers(qa["answers"], where)
            except ValueError as exc:
                raise DataError(str(exc), path=name, qid=str(qa.get("id")), field="answers") from exc
            if not qa["answers"] and "is_impossible" not in qa:
                qa["is_impossible"] = True  # how the columnar format (squad_v2) marks unanswerable questions
        built.add(row.get("title") or "", row.get("context"), qa, where)
    return {"version": "", "data": built.data}


def _mrqa_to_squad(rows: Iterable[tuple[str, Any]], title: str, name: str) -> dict:
    """MRQA: gold texts are the raw ``answers`` (as its official script scores), placed at a detected span.

    Where no raw answer occurs in the context, the detected spans' own text stands in, so the question can
    still be trained on.
    """
    built = _Builder()
    for where, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("qas"), list):
            raise DataError(f"{where}: expected an MRQA context object with a 'qas' list", path=name)
        context = row.get("context")
        for k, qa in enumerate(row["qas"]):
            at = f"{where} qas[{k}]"
            if not isinstance(qa, dict):
                raise DataError(f"{at}: expected an object", path=name)
            spans = _mrqa_spans(qa, context) if isinstance(context, str) else {}
            raw = qa.get("answers", [])
            texts = [t for t in raw if isinstance(t, str)] if isinstance(raw, list) else []
            answers = [{"text": t, "answer_start": spans.get(t, -1)} for t in texts]
            if spans and not any(t in spans for t in texts):
                answers += [{"text": t, "answer_start": s} for t, s in spans.items()]
            out = {"id": qa.get("qid", qa.get("id")), "question": qa.get("question"), "answers": answers}
            out = {k: v for k, v in out.items() if v is not None}
            out["is_impossible"] = bool(qa.get("is_impossible")) or not answers
            out[SOURCE_KEY] = at
            built.add(title, context, out, where)
    return {"version": "mrqa", "data": built.data}


def _mrqa_spans(qa: dict, context: str) -> dict[str, int]:
    """Context text -> start of each detected answer's first inclusive character span."""
    spans: dict[str, int] = {}
    for found in qa.get("detected_answers") or []:
        for span in found.get("char_spans") or [] if isinstance(found, dict) else []:
            if isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span):
                start, end = span
                if 0 <= start <= end < len(context):
                    spans.setdefault(context[start : end + 1], start)
                    break
    return spans


# ---------------------------------------------------------------------------------------------- Arrow, Parquet
def _batches_rows(batches: Iterable, prefix: str = "") -> Iterator[tuple[str, dict]]:
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            yield f"{prefix}row {number}", row
            number += 1


def _check_columns(names: list[str], path: str) -> None:
    missing = [c for c in ("id", "context", "question", "answers") if c not in names]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)}; the file has: {', '.join(names) or 'none'}",
            path=path,
            field=missing[0],
        )


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", path=str(path)) from exc
    _check_columns(pfile.schema_arrow.names, str(path))
    return _batches_rows(pfile.iter_batches(batch_size=4096))


def _read_hf_folder(path: Path) -> Source:
    """A ``save_to_disk`` folder: its Arrow files (IPC streams) in ``state.json``'s order."""
    import pyarrow as pa

    name = str(path)
    if (path / "dataset_dict.json").is_file():
        splits = hf_splits(path)
        example = f", e.g. {splits[0]}" if splits else ""
        raise DataError(
            f"a DatasetDict with splits {', '.join(p.name for p in splits) or 'none'}: give one split's "
            f"folder{example}",
            path=name,
        )
    state = _json_file(path / "state.json")
    files = [
        path / f["filename"] for f in state.get("_data_files", []) if isinstance(f, dict) and "filename" in f
    ]
    files = files or sorted(path.glob("*.arrow"))
    if not files:
        raise DataError("a datasets folder without Arrow files", path=name)
    digest = hashlib.sha256()
    rows: list[tuple[str, dict]] = []
    for file in files:
        try:
            with pa.memory_map(str(file)) as source:
                digest.update(source.read_buffer())
                source.seek(0)
                try:
                    reader = pa.ipc.open_stream(source)
                except pa.ArrowInvalid:
                    source.seek(0)
                    reader = pa.ipc.open_file(source)
                    reader = (reader.get_batch(i) for i in range(reader.num_record_batches))
                table_batches = list(reader)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"not a readable Arrow file: {exc}", path=str(file)) from exc
        if table_batches:
            _check_columns(table_batches[0].schema.names, str(file))
        rows += _batches_rows(table_batches, f"{file.name} " if len(files) > 1 else "")
    return Source(_rows_to_squad(rows, name), digest.hexdigest(), "hf-datasets")

"""What a report reads: evaluation folders (``results.json`` through :class:`xlqa.results.EvalResult`), the
data files their datasets were scored on, and per-question scores under each dataset's official rules.

Errors a user can fix (a folder without ``results.json``, a data file that moved or changed, an unknown
dataset name) are :class:`xlqa.errors.DataError` or :class:`xlqa.errors.ConfigError` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xlqa import metrics
from xlqa.data import Example, gold_texts, load_squad
from xlqa.errors import ConfigError, DataError
from xlqa.metrics.bootstrap import bootstrap_ci
from xlqa.report.model import Run, Scored
from xlqa.results import RESULTS_FILE, DatasetResult, EvalResult

N_BOOTSTRAP = 1000  # resamples for per-dataset confidence intervals


def read_results(eval_dir: str | Path) -> EvalResult:
    """The ``results.json`` of an evaluation folder, with the fields a report needs checked.

    Raises:
        DataError: no ``results.json`` in the folder, a file that does not validate, or a dataset without the
            ``path`` of its data file or its ``rules`` (names the file and the field).
    """
    path = Path(eval_dir) / RESULTS_FILE
    if not path.is_file():
        raise DataError(
            f"no {RESULTS_FILE} (expected an evaluation folder from xlqa evaluate)", path=str(path)
        )
    results = EvalResult.read(path)
    if not results.datasets:
        raise DataError("no datasets evaluated", path=str(path), field="datasets")
    for i, entry in enumerate(results.datasets):
        for key in ("path", "rules"):
            if getattr(entry, key) is None:
                raise DataError("missing field", path=str(path), field=f"datasets[{i}].{key}")
    return results


def resolve_data_path(
    entry: DatasetResult, eval_dir: str | Path, data_dirs: Sequence[str | Path] = ()
) -> Path:
    """The data file of a results entry.

    Older evaluations stored the path as given on the command line, often relative, so the candidates are:
    the path as written (relative to the working directory), relative to the evaluation folder and its
    parents, then its file name inside each of ``data_dirs`` or their direct subfolders. :func:`load_examples`
    checks the sha256, so a same-named but different file is never used.

    Raises:
        DataError: none of the candidates exists (lists them).
    """
    raw = Path(entry.path or "")
    base = Path(eval_dir).resolve()
    candidates = [raw] if raw.is_absolute() else [raw, *(p / raw for p in [base, *base.parents][:4])]
    for folder in map(Path, data_dirs):
        candidates += [folder / raw.name, *sorted(folder.glob(f"*/{raw.name}"))]
    for cand in candidates:
        if cand.is_file():
            return cand
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"data file of {entry.name!r} not found (tried {tried}); pass its folder as a data dir",
        path=str(base / RESULTS_FILE),
    )


def load_examples(
    entry: DatasetResult, eval_dir: str | Path, data_dirs: Sequence[str | Path] = ()
) -> list[Example]:
    """The examples a results entry was scored on (the first ``n_questions`` of its file, as evaluated).

    Args:
        entry: one dataset of ``results.json``.
        eval_dir: the evaluation folder.
        data_dirs: extra folders to look for the data file in (see :func:`resolve_data_path`).

    Raises:
        DataError: the file's sha256 differs from the one recorded at evaluation time.
    """
    path = resolve_data_path(entry, eval_dir, data_dirs)
    # repeated ids are renamed as the evaluation may have (deterministic; a clean file is unchanged)
    data = load_squad(path, language=entry.language, max_examples=entry.n_questions, dedupe_ids=True)
    want = entry.sha256
    if want and data.report.sha256 != want:
        raise DataError(
            f"sha256 {data.report.sha256[:12]}... differs from {want[:12]}... recorded for {entry.name!r} in "
            f"{Path(eval_dir) / RESULTS_FILE}: the data changed since evaluation",
            path=str(path),
        )
    return data.examples


def read_json_file(path: Path) -> dict:
    """A JSON object written by ``xlqa evaluate`` (predictions, n-best lists, null odds); errors name the file."""
    if not path.is_file():
        raise DataError("missing (expected from xlqa evaluate)", path=str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON: {err}", path=str(path)) from err


def _entry_of(eval_dir: Path, dataset: str | None) -> DatasetResult:
    entries = read_results(eval_dir).datasets
    names = [e.name for e in entries]
    if dataset is None and len(entries) == 1:
        return entries[0]
    if dataset is None or dataset not in names:
        raise ConfigError(
            f"{eval_dir}: choose a dataset with dataset=...; this folder has: {', '.join(names)}"
        )
    return entries[names.index(dataset)]


def per_question_scores(
    source: str | Path | DatasetResult,
    dataset: str | None = None,
    *,
    eval_dir: str | Path | None = None,
    examples: list[Example] | None = None,
    data_dirs: Sequence[str | Path] = (),
) -> dict[str, tuple[float, float]]:
    """Question id -> (em 0/1, f1 0..1) of one evaluated dataset under the rules it was scored with.

    The mean x 100 equals the official ``exact_match``/``exact`` and ``f1`` in ``results.json`` (for
    ``squad2``, the predictions already carry the no-answer threshold applied at evaluation).

    Args:
        source: an evaluation folder, or one dataset of its ``results.json``.
        dataset: the dataset name when ``source`` is a folder holding more than one.
        eval_dir: the evaluation folder, required when ``source`` is a dataset (for its predictions).
        examples: the scored examples if already loaded (else read from the entry's data file).
        data_dirs: extra folders to look for the data file in (see :func:`resolve_data_path`).
    """
    if isinstance(source, DatasetResult):
        if eval_dir is None:
            raise ValueError(f"per_question_scores: entry {source.name!r} needs eval_dir=")
        entry, folder = source, Path(eval_dir)
    else:
        folder = Path(source)
        entry = _entry_of(folder, dataset)
    if examples is None:
        examples = load_examples(entry, folder, data_dirs)
    predictions = read_json_file(folder / entry.name / "predictions.json")
    lang = entry.language if entry.rules in ("mlqa", "xlqa-ext") else None
    return metrics.per_question(gold_texts(examples), predictions, entry.rules, lang)


def _run_names(eval_dirs: list[Path], names: list[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(eval_dirs) or len(set(names)) != len(names):
            raise ConfigError(f"names must be {len(eval_dirs)} distinct labels, one per run, got {names}")
        return list(names)
    out: list[str] = []
    for d in eval_dirs:
        d = d.resolve()
        base = d.parent.name if d.name == "eval" and d.parent.name else d.name
        out.append(base if base not in out else f"{base}-{len(out) + 1}")
    return out


def load_runs(
    eval_dirs: list[Path],
    names: list[str] | None = None,
    *,
    seed: int = 0,
    data_dirs: Sequence[str | Path] = (),
) -> list[Run]:
    """Read every evaluation folder and score its datasets per question, with bootstrap intervals.

    Args:
        eval_dirs: evaluation folders (each with ``results.json``).
        names: one label per run (default: the folder name, or its parent's when it is called ``eval``).
        seed: seed of the bootstrap intervals.
        data_dirs: extra folders holding the data files (see :func:`resolve_data_path`).

    A data file shared by several runs is read once.
    """
    cache: dict[tuple, list[Example]] = {}
    runs = []
    for name, eval_dir in zip(_run_names(eval_dirs, names), eval_dirs):
        results = read_results(eval_dir)
        scored: dict[str, Scored] = {}
        for entry in results.datasets:
            path = resolve_data_path(entry, eval_dir, data_dirs)
            key = (str(path.resolve()), entry.n_questions, entry.sha256)
            if key not in cache:
                cache[key] = load_examples(entry, eval_dir, data_dirs)
            scores = per_question_scores(entry, eval_dir=eval_dir, examples=cache[key])
            em, f1 = (np.array([s[i] for s in scores.values()]) for i in (0, 1))
            ci = {k: bootstrap_ci(v, N_BOOTSTRAP, seed=seed) for k, v in (("em", em), ("f1", f1))}
            scored[entry.name] = Scored(
                entry.name,
                entry.language or "?",
                entry.rules or "",
                entry,
                cache[key],
                scores,
                ci["em"],
                ci["f1"],
            )
        runs.append(Run(name, Path(eval_dir), results, scored))
    return runs

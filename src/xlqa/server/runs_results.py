"""Results of a run and comparisons of runs for the API: what ``xlqa runs show`` and ``xlqa report`` say.

Scores and their 95% intervals come from the index and the run's ``results.json`` (as evaluated, never
recomputed); the transfer gap, paired significance with Holm's correction and the consistency matrix are the
report's own functions (:mod:`xlqa.report.stats`, :mod:`xlqa.report.loading`, :mod:`xlqa.report.grouping`)
over the per-question scores of the runs' latest evaluations.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from xlqa.errors import ConfigError, DataError, RunNotFoundError, RunStoreError
from xlqa.report import stats
from xlqa.report.build import N_PAIRED
from xlqa.report.grouping import parallel_family
from xlqa.report.loading import load_runs
from xlqa.results import RESULTS_FILE, EvalResult
from xlqa.runs.schema import Run
from xlqa.runs.store import RunStore
from xlqa.server.paths import within

log = logging.getLogger(__name__)

MAX_COMPARED = 12


def family(dataset: str, language: str | None) -> str:
    """The benchmark a per-language file belongs to (``xquad`` for ``xquad.de``), else the dataset itself."""
    head, _, tail = dataset.rpartition(".")
    return head if head and tail == language else dataset


def _gaps(rows: list[dict]) -> dict[str, float]:
    """Dataset -> transfer gap: the English F1 of its family in the same run minus its F1 (positive: worse than
    English), the sign :func:`xlqa.report.stats.transfer_gap`, the report and the demo use."""
    out = {}
    fams: dict[str, dict[str, dict]] = {}
    for r in rows:
        if r["language"]:
            fams.setdefault(family(r["dataset"], r["language"]), {})[r["language"]] = r
    for members in fams.values():
        if stats.PIVOT in members and len(members) > 1:
            gap = stats.transfer_gap({lang: r["f1"] for lang, r in members.items()})
            out.update({members[lang]["dataset"]: g for lang, g in gap.items()})
            out[members[stats.PIVOT]["dataset"]] = 0.0
    return out


def _intervals(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """(results file, dataset) -> the 95% intervals recorded in that ``results.json``."""
    out = {}
    for path in {r["results_path"] for r in rows if r["results_path"]}:
        try:
            res = EvalResult.read(path)
        except DataError as err:
            log.warning("results %s: %s", path, err)
            continue
        for d in res.datasets:
            out[(path, d.name)] = d.ci95
    return out


def predictions_file(store: RunStore, run: Run, dataset: str) -> Path:
    """The ``predictions.json`` of one evaluated dataset of a run (the newest evaluation of it)."""
    for m in store.run_metrics(run.id):
        if m["dataset"] == dataset and m["results_path"]:
            folder = Path(m["results_path"]).parent
            path = folder / dataset / "predictions.json"
            if path.is_file() and within(path, folder):  # never a link out of the evaluation's folder
                return path
            raise RunNotFoundError(f"run {run.id}: no predictions file for {dataset!r} ({path})")
    names = ", ".join(m["dataset"] for m in store.run_metrics(run.id)) or "none"
    raise RunNotFoundError(f"run {run.id} has no evaluated dataset {dataset!r} (datasets: {names})")


def run_results(store: RunStore, run: Run) -> dict:
    """Per dataset: EM/F1 with 95% intervals, xlqa-ext beside them, the transfer gap, a predictions link."""
    rows = store.run_metrics(run.id)
    ci = _intervals(rows)
    gaps = _gaps(rows)
    datasets = []
    for r in rows:
        interval = ci.get((r["results_path"], r["dataset"]), {})
        ext = r["extended"].get("xlqa-ext") or {}
        pred = Path(r["results_path"] or ".").parent / r["dataset"] / "predictions.json"
        datasets.append({
            "name": r["dataset"], "language": r["language"], "rules": r["rules"],
            "n_questions": r["n_questions"], "em": r["exact_match"], "f1": r["f1"],
            "ci95": {"em": interval.get("exact_match"), "f1": interval.get("f1")},
            "ext_em": ext.get("exact_match"), "ext_f1": ext.get("f1"), "gap_f1": gaps.get(r["dataset"]),
            "predictions_url": f"/v1/runs/{run.id}/predictions/{r['dataset']}" if pred.is_file() else None,
            "evaluated": r["evaluated"], "seconds": r["seconds"],
        })  # fmt: skip
    n = len(rows)
    return {
        "run": {"id": run.id, "name": run.name, "model": run.model, "kind": run.kind, "status": run.status},
        "datasets": datasets,
        "average_em": sum(r["exact_match"] for r in rows) / n if n else None,
        "average_f1": sum(r["f1"] for r in rows) / n if n else None,
    }


def _finite(x):
    """Nested lists of floats with NaN/inf as None (JSON has no NaN)."""
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _eval_dir(rows: list[dict]) -> Path | None:
    """The folder of the run's newest evaluation when it is an ``xlqa evaluate`` folder (``results.json``)."""
    newest = max(rows, key=lambda r: r["evaluation_id"], default=None)
    if newest is None or not newest["results_path"]:
        return None
    path = Path(newest["results_path"])
    return path.parent if path.name == RESULTS_FILE else None


def _keys(latest: dict[str, list[dict]]) -> dict[tuple[str, str], str]:
    """(run, dataset) -> its column: the language, or the dataset where a run has a language twice."""
    out = {}
    for rid, rows in latest.items():
        langs = [r["language"] for r in rows]
        for r in rows:
            lang = r["language"]
            out[(rid, r["dataset"])] = lang if lang and langs.count(lang) == 1 else r["dataset"]
    return out


def _paired(scored: list, keys: dict, seed: int) -> list[dict]:
    """Each run against the first, paired over the same questions, Holm-corrected over that run's datasets."""
    base, out = scored[0], []
    for other in scored[1:]:
        tests = []
        for name, a in base.datasets.items():
            b = other.datasets.get(name)
            if b is None or a.entry.sha256 != b.entry.sha256:
                continue
            qids = sorted(set(a.scores) & set(b.scores))
            t = stats.paired_test([a.scores[q][1] for q in qids], [b.scores[q][1] for q in qids],
                                  method="permutation", n=N_PAIRED, seed=seed)  # fmt: skip
            tests.append({"language": keys.get((base.name, name), name), "dataset": name, "a": base.name,
                          "b": other.name, "n": len(qids), "diff": t["diff"],
                          "ci95": [t["ci_low"], t["ci_high"]], "p": t["p_value"]})  # fmt: skip
        for t, p in zip(tests, stats.holm([t["p"] for t in tests])):
            t.update(p_holm=p, significant=p < 0.05)
        out += tests
    return out


def _consistency(run) -> dict | None:
    members = parallel_family(run)
    if not members:
        return None
    c = stats.consistency({d.language: {q: s[0] for q, s in d.scores.items()} for d in members})
    return {"languages": c["languages"], "n_questions": c["n_questions"], "counts": c["counts"],
            "matrix": _finite(c["agreement"].tolist()), "kappa": _finite(c["kappa"].tolist())}  # fmt: skip


def compare_runs(store: RunStore, refs: list[str], *, seed: int = 0) -> dict:
    """F1 per language and run, each run against the first with paired tests (Holm), consistency per run.

    Paired tests and consistency need per-question scores: the runs' latest ``xlqa evaluate`` folders and the
    data files they were scored on. When those cannot be read, ``notes`` says why and those parts stay empty.
    """
    if not refs:
        raise ConfigError("runs: name at least one run to compare")
    if len(refs) > MAX_COMPARED:
        raise ConfigError(f"runs: at most {MAX_COMPARED} runs at once, got {len(refs)}")
    runs = [store.get_run(r) for r in refs]
    ids = [r.id for r in runs]
    if len(set(ids)) < len(ids):
        raise RunStoreError(f"runs: run {next(i for i in ids if ids.count(i) > 1)} is given twice")
    latest = {r.id: store.run_metrics(r.id) for r in runs}
    keys = _keys(latest)
    f1 = {rid: {keys[(rid, m["dataset"])]: m["f1"] for m in rows} for rid, rows in latest.items()}
    columns = list(dict.fromkeys(k for row in f1.values() for k in row))
    languages = stats.language_order([c for c in columns if "." not in c]) + [c for c in columns if "." in c]
    out = {"runs": [{"id": r.id, "name": r.name, "model": r.model} for r in runs], "languages": languages,
           "f1": f1, "paired": [], "consistency": {}, "notes": []}  # fmt: skip
    dirs = {rid: _eval_dir(rows) for rid, rows in latest.items()}
    missing = [rid for rid, d in dirs.items() if d is None]
    if missing:
        out["notes"].append(f"no evaluation folder with per-question predictions for {', '.join(missing)}")
        ids = [rid for rid in ids if rid not in missing]
    if not ids:
        return out
    try:
        scored = load_runs([dirs[rid] for rid in ids], names=ids, seed=seed)
    except (DataError, ConfigError) as err:
        out["notes"].append(f"per-question scores unavailable: {err}")
        return out
    if len(scored) > 1 and scored[0].name == runs[0].id:
        out["paired"] = _paired(scored, keys, seed)
    for run in scored:
        cons = _consistency(run)
        if cons is not None:
            out["consistency"][run.name] = cons
    return out

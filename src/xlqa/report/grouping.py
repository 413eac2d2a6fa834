"""Which datasets a report shows, in which order, and how they group into benchmarks (families).

A family is the per-language files of one benchmark (``xquad.en``, ``xquad.de``, ...; see
:attr:`xlqa.report.model.Scored.family`): the transfer gap is measured inside a family, and a family whose
files share question ids (parallel XQuAD) is what cross-lingual consistency is computed on.
"""

from __future__ import annotations

from xlqa.report import stats
from xlqa.report.model import Run, Scored


def report_datasets(runs: list[Run]) -> list[Scored]:
    """One representative per dataset name in report order: family, then English first, then by language."""
    seen: dict[str, Scored] = {}
    for run in runs:
        for name, ds in run.datasets.items():
            seen.setdefault(name, ds)
    size = {f: sum(d.family == f for d in seen.values()) for f in {d.family for d in seen.values()}}
    return sorted(
        seen.values(),
        key=lambda d: (-size[d.family], d.family, d.language != stats.PIVOT, d.language, d.name),
    )


def transfer_gaps(run: Run) -> dict[str, float]:
    """Transfer gap (F1 points) of each dataset against the English member of its family in the same run."""
    out = {}
    for family in sorted({d.family for d in run.datasets.values()}):
        members = {d.language: d.f1_ci[0] for d in run.datasets.values() if d.family == family}
        pivot = next((d for d in run.datasets.values() if d.family == family and d.language == "en"), None)
        if pivot is not None and len(members) > 1:
            by_name = {d.language: d.name for d in run.datasets.values() if d.family == family}
            out.update({by_name[lang]: gap for lang, gap in stats.transfer_gap(members).items()})
    return out


def parallel_family(run: Run) -> list[Scored]:
    """The largest family of the run whose datasets share question ids (parallel XQuAD), if any."""
    families: dict[str, list[Scored]] = {}
    for d in run.datasets.values():
        families.setdefault(d.family, []).append(d)
    best: list[Scored] = []
    for members in families.values():
        ids = [set(d.scores) for d in members]
        shared = len(set.intersection(*ids))
        parallel = len({d.language for d in members}) == len(members) and shared >= 0.9 * max(map(len, ids))
        if len(members) >= 2 and parallel and len(members) > len(best):
            best = members
    return sorted(best, key=lambda d: (d.language != stats.PIVOT, d.language))

"""Registry of named QA benchmarks: name -> official URL, sha256, language, metric rules, mirror path.

Benchmarks and languages are data: every spec below is built from a few tables, and `expand` turns names and
group names ("xquad", "mlqa", "all", comma-separated lists) into specs, failing with the list of valid names.
The official benchmarks' facts (URLs, checksums) are in :mod:`xlqa.sources.benchmarks`, the spec type in
:mod:`xlqa.sources.spec`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from pathlib import Path

from xlqa.errors import ConfigError
from xlqa.sources.benchmarks import official_groups, official_specs
from xlqa.sources.spec import LOCAL_FAMILY, MLQA_LANGS, RULES, TYDIQA_LANGS, XQUAD_LANGS, BenchmarkSpec

__all__ = [
    "GROUPS",
    "MLQA_LANGS",
    "RULES",
    "TYDIQA_LANGS",
    "XQUAD_LANGS",
    "BenchmarkSpec",
    "expand",
    "format_table",
    "get_spec",
    "list_benchmarks",
    "register",
    "spec_for_file",
    "unregister",
]

_MLQA_FILE = re.compile(r"context-[a-z]{2}-question-[a-z]{2}")

_REGISTRY: dict[str, BenchmarkSpec] = {}
GROUPS: dict[str, tuple[str, ...]] = {}
"""Group name -> member benchmark names (in a stable, documented order)."""


def register(spec: BenchmarkSpec, *, replace: bool = False) -> BenchmarkSpec:
    """Add a spec to the registry (also used by tests for temporary specs).

    Args:
        spec: the spec to add.
        replace: allow replacing an existing spec of the same name.
    """
    if spec.name in GROUPS:
        raise ValueError(f"benchmark name {spec.name!r} is already a group name")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"benchmark {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a spec registered with `register` (no error when absent)."""
    _REGISTRY.pop(name, None)


for _spec in official_specs():
    register(_spec)
GROUPS.update(official_groups())


# ---------------------------------------------------------------- look-ups
def list_benchmarks() -> list[BenchmarkSpec]:
    """All registered specs, in registration order."""
    return list(_REGISTRY.values())


def _valid_names() -> list[str]:
    return [*GROUPS, "all", *_REGISTRY]


def _valid_text() -> str:
    groups = ", ".join([*GROUPS, "all"])
    singles = ", ".join(n for n in _REGISTRY if not n.startswith("mlqa."))
    return (
        f"Groups: {groups}. Benchmarks: {singles}, and mlqa.<dev|test>.<context>.<question> "
        f"for context/question in {' '.join(MLQA_LANGS)}."
    )


def _unknown(name: str) -> ConfigError:
    close = difflib.get_close_matches(name, _valid_names(), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"unknown benchmark {name!r}.{hint} {_valid_text()}")


def get_spec(name: str) -> BenchmarkSpec:
    """The spec of one benchmark name (not a group); ConfigError listing valid names when unknown."""
    try:
        return _REGISTRY[name.strip()]
    except KeyError:
        raise _unknown(name.strip()) from None


def expand(names: str | list[str] | tuple[str, ...]) -> list[BenchmarkSpec]:
    """Turn benchmark and group names into specs, in order, without duplicates.

    Args:
        names: one name, a comma-separated string ("xquad,mlqa.dev.de.en"), or a list of such strings.
            Groups: see `GROUPS`, plus "all" (every registered benchmark).

    Raises:
        ConfigError: for an unknown name, listing the valid names and groups and suggesting close matches.
    """
    items = [names] if isinstance(names, str) else list(names)
    tokens = [t.strip() for item in items for t in item.split(",") if t.strip()]
    if not tokens:
        raise ConfigError(f"no benchmark name given. {_valid_text()}")
    out: dict[str, BenchmarkSpec] = {}
    for token in tokens:
        if token == "all":
            members = list(_REGISTRY)
        elif token in GROUPS:
            members = list(GROUPS[token])
        else:
            members = [get_spec(token).name]
        for member in members:
            out.setdefault(member, get_spec(member))
    return list(out.values())


def _human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def format_table(specs: list[BenchmarkSpec], cached: set[str] | None = None) -> str:
    """A plain-text table of specs for `xlqa data list`.

    Args:
        specs: the specs to show (e.g. `list_benchmarks()` or `expand("xquad")`).
        cached: names already present in the cache; adds a "cached" column when given.
    """
    header = ["name", "lang", "q-lang", "rules", "split", "download", "sha256", "mirror path"]
    if cached is not None:
        header.append("cached")
    rows = [header]
    for s in specs:
        host = s.url.split("/")[2]
        download = f"{_human_size(s.size)} {host}" + (" (archive)" if s.is_archive else "")
        row = [
            s.name,
            s.language,
            s.question_language or s.language,
            s.rules,
            s.split,
            download,
            (s.sha256 or "unknown")[:12],
            s.mirror_path,
        ]
        if cached is not None:
            row.append("yes" if s.name in cached else "")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def file_stem(path: str | Path) -> str:
    """A data file's name without ``.json``/``.jsonl``/``.parquet``/``.gz``: its evaluation entry's name."""
    name = Path(path).name
    for suffix in (".gz", ".json", ".jsonl", ".parquet"):
        name = name.removesuffix(suffix)
    return name


def spec_for_file(data) -> BenchmarkSpec:
    """The spec that says how a loaded data file is scored: its language and official rule set.

    A file whose path ends in a registered benchmark's ``mirror_path`` (``.../xquad/xquad.de.json``) takes that
    benchmark's language and rules. Any other file gets a spec built from its content and name: SQuAD v2.0 rules
    when it has unanswerable questions, MLQA rules for an MLQA file (``*-context-xx-question-yy*``) whose context
    language the MLQA script supports, else SQuAD v1.1 rules (as XTREME scores XQuAD and TyDi QA); its language
    is the one the loader resolved (``--lang``, else the file name, else the text: `xlqa.languages.resolve_language`). Unanswerable questions always mean SQuAD v2.0 rules.

    Args:
        data: a loaded file (:class:`xlqa.data.SquadData`: ``path``, ``language``, ``report.n_impossible``).
    """
    from xlqa.metrics.mlqa import LANGUAGES as MLQA_RULE_LANGS

    path = Path(data.path).resolve()
    tail = path.as_posix()
    spec = next((s for s in _REGISTRY.values() if tail.endswith("/" + s.mirror_path)), None)
    has_unanswerable = data.report.n_impossible > 0
    if spec is None:
        language = data.language
        if has_unanswerable:
            rules = "squad2"
        elif _MLQA_FILE.search(path.name) and language in MLQA_RULE_LANGS:
            rules = "mlqa"
        else:
            rules = "squad1"
        return BenchmarkSpec(
            name=file_stem(path), language=language or "", rules=rules, split="", url="", sha256=None,
            mirror_path=path.name, family=LOCAL_FAMILY,
        )  # fmt: skip
    if has_unanswerable and spec.rules != "squad2":
        spec = replace(spec, rules="squad2")
    return spec

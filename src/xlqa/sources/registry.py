"""Registry of named QA benchmarks: name -> official URL, sha256, language, metric rules, mirror path.

Benchmarks and languages are data: every spec below is built from a few tables, and `expand` turns names and
group names ("xquad", "mlqa", "all", comma-separated lists) into specs, failing with the list of valid names.

Checksums are facts copied from public sources, not computed from downloads here:
- SQuAD v1.1/v2.0 and XQuAD (11 languages): tensorflow_datasets `url_checksums/xquad.txt` and
  `question_answering/squad/checksums.tsv` (URL, size, sha256).
- XQuAD Romanian: huggingface/datasets `datasets/xquad/dataset_infos.json` (download_checksums; it also lists
  the other 11 files with the same values as tensorflow_datasets).
- MLQA: tensorflow_datasets `url_checksums/mlqa.txt` (the official MLQA_V1.zip, members
  `MLQA_V1/{dev,test}/{split}-context-{c}-question-{q}.json` as read by huggingface/datasets `mlqa.py`).
- TyDi QA GoldP dev: tensorflow_datasets `url_checksums/tydi_qa.txt` (the official tydiqa-goldp-v1.1-dev.tgz,
  members `tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{language}.json` as unpacked by XTREME's download_data.sh).
The XQuAD files and squad/dev-v1.1.json of the reference mirror (../shared/data) hash to these same values.

Two checksums per spec (see `BenchmarkSpec`): `sha256` of the official download (the file, or the archive that
holds it) and `mirror_sha256` of the file at `mirror_path` in the xlqa reference mirror where that file is not
the official one (rebuilt SQuAD files, MLQA/TyDi files extracted from other copies).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from pathlib import Path

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

RULES = ("squad1", "squad2", "mlqa", "xlqa-ext")
"""Metric rule sets: SQuAD v1.1 / v2.0 scripts, the MLQA script, xlqa's extension to other languages."""

XQUAD_LANGS = ("en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi", "ro")
"""XQuAD languages, in the order of the XQuAD paper's tables (English first)."""
MLQA_LANGS = ("en", "es", "de", "ar", "hi", "vi", "zh")
TYDIQA_LANGS = {
    "ar": "arabic",
    "bn": "bengali",
    "en": "english",
    "fi": "finnish",
    "id": "indonesian",
    "ko": "korean",
    "ru": "russian",
    "sw": "swahili",
    "te": "telugu",
}
"""TyDi QA GoldP dev languages (ISO code -> the name used in the official file names)."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MLQA_FILE = re.compile(r"context-[a-z]{2}-question-[a-z]{2}")
LOCAL_FAMILY = "file"
"""`BenchmarkSpec.family` of a spec built for a plain file (no URL, not registered)."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """One named evaluation or training set.

    Attributes:
        name: registry name, e.g. "xquad.de" or "mlqa.dev.de.en".
        language: ISO 639-1 code of the context (for MLQA the context language, which selects the rules).
        rules: which official metric rules apply, one of `RULES`.
        split: "train", "dev" or "test".
        url: official download URL (of the file, or of the archive that holds it).
        sha256: sha256 of the official download (the archive when `member` is set); None if unknown, then the
            download is checked only by `size` and a JSON parse.
        mirror_path: path relative to a mirror folder laid out like the reference mirror, e.g.
            "xquad/xquad.de.json"; also the path of the file in the cache.
        member: path of the file inside the archive at `url`, or None when `url` is the file itself.
        size: size in bytes of the official download, when known.
        mirror_sha256: sha256 of the file at `mirror_path` in the xlqa reference mirror when that file is
            NOT byte-identical to the official one (rebuilt or re-extracted). A mirror file is accepted when
            it matches `mirror_sha256`, or `sha256` for single-file specs (a mirror holding the official
            file). Where neither is known (archive members outside the reference mirror) a mirror file is
            checked by a JSON parse only.
        question_language: language of the questions when it differs from `language` (MLQA G-XLT pairs).
        family: benchmark family ("squad", "xquad", "mlqa", "tydiqa").
        license: license of the data.
        note: free text shown by `format_table`, e.g. how the reference-mirror copy was made.
    """

    name: str
    language: str
    rules: str
    split: str
    url: str
    sha256: str | None
    mirror_path: str
    member: str | None = None
    size: int | None = None
    mirror_sha256: str | None = None
    question_language: str | None = None
    family: str = ""
    license: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.rules not in RULES:
            raise ValueError(
                f"benchmark {self.name!r}: rules {self.rules!r} is not one of {', '.join(RULES)}"
            )
        for field in ("sha256", "mirror_sha256"):
            value = getattr(self, field)
            if value is not None and not _HEX64.match(value):
                raise ValueError(
                    f"benchmark {self.name!r}: {field} must be 64 lowercase hex digits, got {value!r}"
                )
        parts = self.mirror_path.split("/")
        if self.mirror_path.startswith("/") or ".." in parts or not self.mirror_path:
            raise ValueError(f"benchmark {self.name!r}: mirror_path {self.mirror_path!r} must be relative")
        if self.family != LOCAL_FAMILY and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"benchmark {self.name!r}: url {self.url!r} is not http(s)")

    @property
    def is_archive(self) -> bool:
        """True when the official download is an archive (zip/tar.gz) holding `member`."""
        return self.member is not None

    @property
    def mirror_checksums(self) -> tuple[str, ...]:
        """The sha256 values accepted for the file at `mirror_path` (empty: no checksum known)."""
        accepted = [self.mirror_sha256] if self.mirror_sha256 else []
        if not self.is_archive and self.sha256 and self.sha256 not in accepted:
            accepted.append(self.sha256)
        return tuple(accepted)


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


# ------------------------------------------------------------ the official benchmarks (facts, see module doc)
_SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
_SQUAD = {  # name: (file, size, sha256 of the official file)
    "squad1.train": (
        "train-v1.1.json",
        30288272,
        "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
    ),
    "squad1.dev": (
        "dev-v1.1.json",
        4854279,
        "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    ),
    "squad2.train": (
        "train-v2.0.json",
        42123633,
        "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
    ),
    "squad2.dev": (
        "dev-v2.0.json",
        4370528,
        "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
    ),
}
_SQUAD_MIRROR = {  # name: (sha256 of the reference-mirror copy, how it differs from the official file)
    "squad1.train": (
        "fbdc2838e0cc3beee039a8fe6a26d341e6c557526a6f2a0d262873a92d26b764",
        "reference-mirror copy rebuilt from the explorer pages (synthetic ids, first-occurrence offsets)",
    ),
    "squad2.dev": (
        "6c63ec620666dc7229c17d7744506b3de5532340949a9075d66a3ee936b76ea5",
        "reference-mirror copy rebuilt from the explorer pages (no plausible_answers)",
    ),
}

_XQUAD_URL = "https://github.com/deepmind/xquad/raw/master/xquad.{lang}.json"
_XQUAD = {  # lang: (size, sha256)
    "ar": (1582988, "abdabd7afed5c635d99cca0f3f0d0c9d9ed0bc77451e963c2e4e0638c29e486d"),
    "de": (669810, "990b5d746746ed65ed4702ea5f35f99ffa4e2f1c390c07d003642acd937916f9"),
    "el": (1918889, "821cf0f88e73fa258fd2f548b19b6ec39f7025059e16f6f9fc8cd797c9c3663e"),
    "en": (609383, "e4c57d1c9143aaa1c5d265ba5987a65f4e69528d2a98f29d6e75019b10344f29"),
    "es": (684322, "dcbae93ec3a9f4b9e78fd834a171d6f96c1a875e10e15b7530b7e4ef4971e37e"),
    "hi": (1680538, "df2cce3532b37e9beb8979704b5c9a4bf874358f105395a298b89427b43b9d24"),
    "ro": (661158, "94f8d54e93ad2b7dd2e76dd921a666b5b8eff2d4379df9f179c42b445f09643f"),
    "ru": (1896368, "208d5b1aa154c52b1b5c5eda16281e455e8fd198cdb9af3f469f0d6037d973bf"),
    "th": (1809143, "5cdda11d0e1e075f7872abf4e6ae830388ce7f617964d542308e9ae4257e0f43"),
    "tr": (729506, "92179a564774b7696100d144c1e10870d0a966b6fccbdd254a65b9d2ab1971cc"),
    "vi": (911401, "f619a1eb11fb42d3ab0834259e488a65f585447ef6154437bfb7199d85161a04"),
    "zh": (808652, "691d0b3359bc6b8faa8de931dfdfe21d50a65861ae348e32a0d1a0190b0c8835"),
}

_MLQA_URL = "https://dl.fbaipublicfiles.com/MLQA/MLQA_V1.zip"
_MLQA_SIZE = 75719050
_MLQA_SHA256 = "246e8089933d13007fe80684d5c5c0713d6834cf8b3b4a0ec7c66f0a0d2baac8"
_MLQA_MIRROR = {  # (split, context, question): sha256 of the reference-mirror copy (not the official bytes)
    ("dev", "de", "de"): "3adf0d32c6f7cb3e6aab2f8e151836f1633b06aec1411d633a5ca22f0ad6d739",
    ("dev", "ar", "ar"): "804d8e1a5355486d837432af08c68e33cf4ea16361142775f0ba700bcde91b40",
}

_TYDI_URL = "https://storage.googleapis.com/tydiqa/v1.1/tydiqa-goldp-v1.1-dev.tgz"
_TYDI_SIZE = 1725055
_TYDI_SHA256 = "5a415d019a345794c8a83191ecfe4a761eaab69dab79c3c9813d4379e1cc5519"
_TYDI_MIRROR = {"ar": "ae2ea23122ffda312a6548d4f8624fa4cbf4321751bbaadacf1dc4946ec5600b"}


def _build() -> None:
    """Register the official benchmarks (SQuAD, XQuAD, MLQA, TyDi QA GoldP, in that order) and their groups."""
    for spec in (*_squad_specs(), *_xquad_specs(), *_mlqa_specs(), *_tydi_specs()):
        register(spec)
    GROUPS.update(_groups())


def _squad_specs() -> list[BenchmarkSpec]:
    specs = []
    for name, (file, size, sha) in _SQUAD.items():
        mirror_sha, note = _SQUAD_MIRROR.get(name, (None, ""))
        specs.append(
            BenchmarkSpec(
                name=name,
                language="en",
                rules="squad2" if name.startswith("squad2") else "squad1",
                split=name.split(".")[1],
                url=_SQUAD_URL + file,
                sha256=sha,
                size=size,
                mirror_path=f"squad/{file}",
                mirror_sha256=mirror_sha,
                family="squad",
                license="CC BY-SA 4.0",
                note=note,
            )
        )
    return specs


def _xquad_specs() -> list[BenchmarkSpec]:
    return [
        BenchmarkSpec(
            name=f"xquad.{lang}",
            language=lang,
            rules="squad1",
            split="test",
            url=_XQUAD_URL.format(lang=lang),
            sha256=_XQUAD[lang][1],
            size=_XQUAD[lang][0],
            mirror_path=f"xquad/xquad.{lang}.json",
            family="xquad",
            license="CC BY-SA 4.0",
        )
        for lang in XQUAD_LANGS
    ]


def _mlqa_specs() -> list[BenchmarkSpec]:
    """Every (context, question) language pair of MLQA dev and test, all members of the one official zip."""
    specs = []
    for split in ("dev", "test"):
        for c in MLQA_LANGS:
            for q in MLQA_LANGS:
                file = f"{split}-context-{c}-question-{q}.json"
                mirror_sha = _MLQA_MIRROR.get((split, c, q))
                specs.append(
                    BenchmarkSpec(
                        name=f"mlqa.{split}.{c}.{q}",
                        language=c,
                        question_language=q,
                        rules="mlqa",
                        split=split,
                        url=_MLQA_URL,
                        sha256=_MLQA_SHA256,
                        size=_MLQA_SIZE,
                        member=f"MLQA_V1/{split}/{file}",
                        mirror_path=f"mlqa/{file}",
                        mirror_sha256=mirror_sha,
                        family="mlqa",
                        license="CC BY-SA 3.0",
                        note="reference-mirror copy converted from another copy" if mirror_sha else "",
                    )
                )
    return specs


def _tydi_specs() -> list[BenchmarkSpec]:
    return [
        BenchmarkSpec(
            name=f"tydiqa.{lang}",
            language=lang,
            rules="squad1",
            split="dev",
            url=_TYDI_URL,
            sha256=_TYDI_SHA256,
            size=_TYDI_SIZE,
            member=f"tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{lang_name}.json",
            mirror_path=f"tydiqa/tydiqa-goldp-dev-{lang_name}.json",
            mirror_sha256=_TYDI_MIRROR.get(lang),
            family="tydiqa",
            license="Apache-2.0",
        )
        for lang, lang_name in TYDIQA_LANGS.items()
    ]


def _groups() -> dict[str, tuple[str, ...]]:
    same = {split: tuple(f"mlqa.{split}.{x}.{x}" for x in MLQA_LANGS) for split in ("dev", "test")}
    pairs = {
        split: tuple(f"mlqa.{split}.{c}.{q}" for c in MLQA_LANGS for q in MLQA_LANGS)
        for split in ("dev", "test")
    }
    return {
        "squad1": ("squad1.train", "squad1.dev"),
        "squad2": ("squad2.train", "squad2.dev"),
        "xquad": tuple(f"xquad.{x}" for x in XQUAD_LANGS),
        "mlqa": same["dev"],
        "mlqa.dev": same["dev"],
        "mlqa.test": same["test"],
        "mlqa.dev.pairs": pairs["dev"],
        "mlqa.test.pairs": pairs["test"],
        "tydiqa": tuple(f"tydiqa.{x}" for x in TYDIQA_LANGS),
    }


_build()


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


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, _valid_names(), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown benchmark {name!r}.{hint} {_valid_text()}")


def get_spec(name: str) -> BenchmarkSpec:
    """The spec of one benchmark name (not a group); ValueError listing valid names when unknown."""
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
        ValueError: for an unknown name, listing the valid names and groups and suggesting close matches.
    """
    items = [names] if isinstance(names, str) else list(names)
    tokens = [t.strip() for item in items for t in item.split(",") if t.strip()]
    if not tokens:
        raise ValueError(f"no benchmark name given. {_valid_text()}")
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
    """A data file's name without ``.json``/``.gz``: the name of its evaluation entry and predictions folder."""
    name = Path(path).name
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    return name


def spec_for_file(data) -> BenchmarkSpec:
    """The spec that says how a loaded data file is scored: its language and official rule set.

    A file whose path ends in a registered benchmark's ``mirror_path`` (``.../xquad/xquad.de.json``) takes that
    benchmark's language and rules. Any other file gets a spec built from its content and name: SQuAD v2.0 rules
    when it has unanswerable questions, MLQA rules for an MLQA file (``*-context-xx-question-yy*``) whose context
    language the MLQA script supports, else SQuAD v1.1 rules (as XTREME scores XQuAD and TyDi QA); its language
    is the one `xlqa.data.guess_language` read from the name. Unanswerable questions always mean SQuAD v2.0 rules.

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

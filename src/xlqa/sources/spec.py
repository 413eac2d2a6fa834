"""What a named benchmark is: :class:`BenchmarkSpec`, the metric rule sets and the benchmark languages."""

from __future__ import annotations

import re
from dataclasses import dataclass

from xlqa.metrics import RULES  # the rule sets a spec may name are the ones the metrics implement

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

"""The language of a data file: the context language, which selects the metric rules (and ``xlqa-ext``).

Registered benchmarks carry their language in the registry (:mod:`xlqa.sources.registry`). Any other file is
read by :func:`resolve_language`: its name first, from common naming conventions (ISO codes, language names,
known data sets), else its text: the Unicode script where one language writes it (Thai, Japanese kana, Hangul,
Greek, ...), else py3langid (a small model shipped inside the package, no download) for shared scripts such as
Latin, Cyrillic, Arabic or Devanagari.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

_LANGUAGE_NAMES = {
    "arabic": "ar", "bengali": "bn", "chinese": "zh", "english": "en", "finnish": "fi", "french": "fr",
    "german": "de", "greek": "el", "hindi": "hi", "indonesian": "id", "italian": "it", "japanese": "ja",
    "korean": "ko", "romanian": "ro", "russian": "ru", "spanish": "es", "swahili": "sw", "telugu": "te",
    "thai": "th", "turkish": "tr", "vietnamese": "vi",
}  # fmt: skip
_DATASET_LANGUAGES = {
    "cmrc2018": "zh", "cmrc": "zh", "drcd": "zh", "jaquad": "ja", "korquad": "ko", "sberquad": "ru",
    "fquad": "fr", "piaf": "fr", "germanquad": "de", "arcd": "ar",
}  # fmt: skip
# Two-letter tokens taken as language codes ("id" is left out: too often an identifier).
_CODES = frozenset(set(_LANGUAGE_NAMES.values()) - {"id"} | {"pt", "nl", "pl", "cs", "sv", "fa", "he", "uk"})
_ENGLISH_SQUAD = re.compile(r"(train|dev)-v[12]\.[01]")
_CONTEXT_LANG = re.compile(r"context-([a-z]{2})-question-[a-z]{2}")


def _guess_from_name(name: str) -> str | None:
    name = name.lower()
    for suffix in (".gz", ".json", ".jsonl", ".parquet", ".arrow"):
        name = name.removesuffix(suffix)
    match = _CONTEXT_LANG.search(name)
    if match:
        return match.group(1)
    tokens = [t for t in re.split(r"[^a-z0-9]+", name) if t]
    for table in (_DATASET_LANGUAGES, _LANGUAGE_NAMES):
        hit = next((table[t] for t in tokens if t in table), None)
        if hit:
            return hit
    hit = next((t for t in tokens if t in _CODES), None)
    if hit:
        return hit
    if _ENGLISH_SQUAD.fullmatch(name) or (tokens and tokens[0] == "squad"):
        return "en"
    return None


def guess_language(path: str | Path) -> str | None:
    """Guess the context language from a file name, then its folder name; None if unknown.

    ``xquad.de.json`` -> de; ``dev-context-de-question-de.json`` -> de (the context language);
    ``tydiqa-goldp-dev-arabic.json`` -> ar; ``squad/dev-v1.1.json`` -> en; ``SQuAD_it-test.json`` -> it;
    ``cmrc2018_dev.json`` -> zh; ``jaquad_dev_0000.json`` -> ja; ``dev-v1.1-es_small.json`` -> es.
    """
    path = Path(path)
    return _guess_from_name(path.name) or _guess_from_name(path.parent.name)


# ---------------------------------------------------------------------------------------------- from content
# Scripts written by (almost) one language: the script alone names it. Han without kana is Chinese.
_SCRIPT_LANGUAGES = {
    "THAI": "th", "HANGUL": "ko", "HIRAGANA": "ja", "KATAKANA": "ja", "CJK": "zh", "GREEK": "el",
    "HEBREW": "he", "BENGALI": "bn", "TELUGU": "te", "TAMIL": "ta", "GEORGIAN": "ka", "ARMENIAN": "hy",
    "GUJARATI": "gu", "GURMUKHI": "pa", "KANNADA": "kn", "MALAYALAM": "ml", "SINHALA": "si", "KHMER": "km",
    "LAO": "lo", "MYANMAR": "my", "ETHIOPIC": "am", "ORIYA": "or", "TIBETAN": "bo",
}  # fmt: skip
SAMPLE_CHARS = 20_000
"""Characters of a file's contexts that language detection reads (taken from across the file)."""
MIN_CONFIDENCE = 0.5
"""py3langid's normalized probability below which no language is claimed."""


class Detection(NamedTuple):
    """A language read from text: its code (None if undecided), the dominant script, how it was decided."""

    language: str | None
    script: str | None
    how: str  # "script", "py3langid 0.98", or why nothing was decided


def _script(char: str) -> str:
    """The script of a letter: the first word of its Unicode name (LATIN, CYRILLIC, CJK, HIRAGANA, ...)."""
    return unicodedata.name(char, "?").split(" ", 1)[0]


def sample_text(texts: Iterable[str], limit: int = SAMPLE_CHARS) -> str:
    """Up to ``limit`` characters of distinct texts, taken from across the whole list rather than its head."""
    unique = list(dict.fromkeys(texts))
    out: list[str] = []
    size = 0
    for text in unique[:: max(1, len(unique) // 50)]:
        out.append(text[: limit - size])
        size += len(out[-1])
        if size >= limit:
            break
    return "\n".join(out)


def script_language(text: str) -> Detection:
    """The language named by the script of ``text`` alone, where one language writes that script.

    Japanese is told from Chinese by its kana: 5% of the letters suffice (Japanese prose has far more).
    Shared scripts (Latin, Cyrillic, Arabic, Devanagari, ...) give ``language=None`` with the script named.
    """
    counts = Counter(_script(ch) for ch in text if ch.isalpha())
    letters = sum(counts.values())
    if not letters:
        return Detection(None, None, "no letters")
    script = counts.most_common(1)[0][0]
    if counts["HIRAGANA"] + counts["KATAKANA"] >= 0.05 * letters:
        return Detection("ja", script, "script")
    if script in _SCRIPT_LANGUAGES:
        return Detection(_SCRIPT_LANGUAGES[script], script, "script")
    return Detection(None, script, "shared script")


@functools.lru_cache(maxsize=1)
def _identifier():
    """py3langid's model, shipped inside the package (loaded once, about half a second)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> Detection:
    """The language of ``text``: the Unicode script where it names one language, else py3langid."""
    found = script_language(text)
    if found.language is not None or found.script is None:
        return found
    language, probability = _identifier().classify(text)
    if probability < MIN_CONFIDENCE:
        return Detection(None, found.script, f"py3langid unsure: {language} {probability:.2f}")
    return Detection(language, found.script, f"py3langid {probability:.2f}")


class Resolved(NamedTuple):
    """A file's language, where it came from, and a warning when the name and the text disagree."""

    language: str | None
    source: str
    warning: str | None = None


def resolve_language(path: str | Path, texts: Iterable[str]) -> Resolved:
    """The context language of a file from its name, else from ``texts`` (its contexts).

    The name wins where it names a language (a convention someone chose), except when the text is in a script
    that one other language writes (a Thai file named ``squad_dev.json``): then the text wins, with a warning.
    """
    named = guess_language(path)
    if named is not None:
        seen = script_language(sample_text(texts, 4_000))
        if seen.language is not None and seen.language != named:
            why = f"the file name says {named!r} but the text is in {seen.script} script: taken as {seen.language!r}"
            return Resolved(seen.language, f"text, {seen.script} script", why)
        return Resolved(named, "file name")
    found = detect_language(sample_text(texts))
    if found.language is None:
        return Resolved(None, f"name says nothing, text: {found.how}")
    return Resolved(
        found.language, f"text, {found.script} script" if found.how == "script" else f"text, {found.how}"
    )

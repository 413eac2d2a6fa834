"""The language of a data file, read from its name: the context language, which selects the metric rules.

Registered benchmarks carry their language in the registry (:mod:`xlqa.sources.registry`); this guess is for
any other SQuAD-format file, from common naming conventions (ISO codes, language names, known data sets).
"""

from __future__ import annotations

import re
from pathlib import Path

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
    for suffix in (".gz", ".json"):
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

"""MLQA scoring, equal to the official ``mlqa_evaluation_v1.py`` (facebookresearch/MLQA, Lewis et al., 2020).

Rules, as in the official script, for the answer languages en, es, de, vi, ar, hi, zh only:

- lower-case (``str.lower``);
- remove punctuation: every character whose Unicode category starts with ``P`` plus ``string.punctuation``
  (so ASCII symbols such as ``$ + < = > ^ ` | ~`` go too, other symbols such as ``€`` stay);
- remove articles, replacing each match by a space: en ``\\b(a|an|the)\\b``;
  es ``\\b(un|una|unos|unas|el|la|los|las)\\b``;
  de ``\\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\\b``;
  vi ``\\b(của|là|cái|chiếc|những)\\b``; ar: every occurrence of ``ال`` anywhere, also inside words (the
  official pattern ``\\sال^|ال``, whose first branch can never match); hi and zh: none;
- tokens: whitespace split, except zh where each character in U+4E00..U+9FA5 (and each punctuation
  character, none left by then) is a token of its own and the text between is whitespace-split;
- EM on the normalized token sequence, token F1 as SQuAD v1.1, maximum over gold answers;
- a question without a prediction scores 0 and counts; means x 100 under ``exact_match`` and ``f1``.

Python's ``unicodedata`` gives the categories, so the punctuation set follows the running Python's Unicode
version, exactly as the official script does.
"""

from __future__ import annotations

import functools
import re
import string
import sys
import unicodedata
from collections.abc import Mapping, Sequence

from xlqa.metrics.squad_v1 import aggregate, score_questions, token_scorer

__all__ = ["LANGUAGES", "evaluate", "is_punct", "normalize_answer", "per_question", "remove_punct", "tokens"]

LANGUAGES: tuple[str, ...] = ("en", "es", "de", "vi", "ar", "hi", "zh")

ARTICLE_PATTERNS: dict[str, re.Pattern[str] | None] = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "ar": re.compile("ال"),
    "hi": None,
    "zh": None,
}

_ASCII_PUNCT = frozenset(string.punctuation)


def is_punct(ch: str) -> bool:
    """True for the official MLQA ``PUNCT`` set: Unicode category P* (below sys.maxunicode) or ASCII punct."""
    return ch in _ASCII_PUNCT or (unicodedata.category(ch)[0] == "P" and ord(ch) < sys.maxunicode)


class _PunctTable(dict):
    """``str.translate`` table deleting MLQA punctuation, filled lazily per code point."""

    def __missing__(self, code: int) -> int | None:
        value = None if is_punct(chr(code)) else code
        self[code] = value
        return value


_PUNCT_TABLE = _PunctTable()


def remove_punct(text: str) -> str:
    """Delete every MLQA punctuation character (see :func:`is_punct`)."""
    return text.translate(_PUNCT_TABLE)


def _check_lang(lang: str | None) -> str:
    if lang not in ARTICLE_PATTERNS:
        raise ValueError(
            f"MLQA rules support the answer languages {', '.join(LANGUAGES)}; got {lang!r} "
            "(use rules 'xlqa-ext' for other languages)"
        )
    return lang


def _zh_tokens(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        if "\u4e00" <= ch <= "\u9fa5" or is_punct(ch):
            out.extend(text[start:i].split())
            out.append(ch)
            start = i + 1
    out.extend(text[start:].split())
    return out


def _tokens(text: str, lang: str) -> list[str]:
    text = remove_punct(text.lower())
    pattern = ARTICLE_PATTERNS[lang]
    if pattern is not None:
        text = pattern.sub(" ", text)
    return _zh_tokens(text) if lang == "zh" else text.split()


def tokens(text: str, lang: str) -> list[str]:
    """Normalized tokens of ``text`` under the MLQA rules for ``lang``."""
    return _tokens(text, _check_lang(lang))


def normalize_answer(text: str, lang: str) -> str:
    """The official MLQA ``normalize_answer``: normalized tokens joined by single spaces."""
    return " ".join(tokens(text, lang))


def per_question(
    gold: Mapping[str, Sequence[str]], predictions: Mapping[object, object], lang: str
) -> dict[str, tuple[float, float]]:
    """Question id -> (em 0/1, f1 0..1) under MLQA rules for ``lang``; missing predictions give (0.0, 0.0)."""
    scorer = token_scorer(functools.partial(_tokens, lang=_check_lang(lang)))
    return score_questions(gold, predictions, scorer, f"mlqa[{lang}]")


def evaluate(
    gold: Mapping[str, Sequence[str]], predictions: Mapping[object, object], lang: str
) -> dict[str, float]:
    """Score predictions as the official MLQA script does for the answer language ``lang``.

    Args:
        gold: question id -> gold answer texts (see :func:`xlqa.metrics.read_gold`).
        predictions: question id -> predicted text; ids absent here score 0 and count.
        lang: one of :data:`LANGUAGES`.

    Raises:
        ValueError: ``lang`` is not an MLQA answer language.
    """
    return aggregate(per_question(gold, predictions, lang))

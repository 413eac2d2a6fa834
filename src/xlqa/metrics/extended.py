"""xlqa-ext: an MLQA-style metric for any language. NOT an official metric; report it as "xlqa-ext".

The official scripts either ignore non-ASCII punctuation and treat a whole unspaced Thai/Japanese/Chinese
answer as one token (SQuAD v1.1, as XTREME does for XQuAD), or refuse languages other than en, es, de, vi,
ar, hi, zh (MLQA). This extension applies the MLQA ideas to every language:

1. lower-case (``str.lower``); no other Unicode normalization (no NFC/NFKC, as in MLQA);
2. remove the MLQA punctuation set: every character whose Unicode category starts with ``P`` plus
   ``string.punctuation`` (:func:`xlqa.metrics.mlqa.is_punct`);
3. remove articles only for the languages that MLQA defines them for (en, es, de, vi, ar; same patterns,
   see :mod:`xlqa.metrics.mlqa`); no article removal for any other language (el, ru, tr, th, ro, ja, it,
   ko, ...), because no official script defines article lists for them;
4. tokens: every character of a script written without spaces between words is a token of its own
   (:data:`CHAR_TOKEN_RANGES`, independent of ``lang`` so mixed-script answers are handled the same way in
   every language); the text between such characters is split on whitespace;
5. EM on the token sequence, token F1 as SQuAD v1.1 (0 when nothing overlaps), maximum over gold answers;
   a missing prediction scores 0 and counts; means x 100 under ``exact_match`` and ``f1``.

Character-token ranges (inclusive):

- CJK ideographs: U+3400..U+4DBF (Ext. A), U+4E00..U+9FFF (Unified), U+F900..U+FAFF (Compatibility),
  U+20000..U+323AF (Ext. B..H and Compatibility Supplement), plus U+3005..U+3007 (々 〆 〇) and
  U+2E80..U+2FDF (radicals);
- Japanese kana: U+3040..U+309F (Hiragana), U+30A0..U+30FF (Katakana), U+31F0..U+31FF (Katakana phonetic
  extensions), U+FF66..U+FF9F (half-width Katakana); Bopomofo U+3100..U+312F and U+31A0..U+31BF;
- South-East Asian scripts without spaces: U+0E00..U+0E7F (Thai), U+0E80..U+0EFF (Lao), U+1000..U+109F
  (Myanmar), U+1780..U+17FF (Khmer).

Each code point is its own token, including Thai combining vowels and tone marks. Korean Hangul is NOT
in the list: Korean separates words by spaces, so it is whitespace-tokenized.
For zh this differs from MLQA only for characters outside U+4E00..U+9FA5 (for example U+9FA6..U+9FFF,
extension ideographs, kana), which MLQA leaves inside whitespace tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from xlqa.metrics.mlqa import ARTICLE_PATTERNS, remove_punct
from xlqa.metrics.squad_v1 import aggregate, score_questions, token_scorer

__all__ = ["CHAR_TOKEN_RANGES", "RULES_NAME", "evaluate", "is_char_token", "per_question", "tokens"]

RULES_NAME = "xlqa-ext"

CHAR_TOKEN_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0E00, 0x0E7F, "Thai"),
    (0x0E80, 0x0EFF, "Lao"),
    (0x1000, 0x109F, "Myanmar"),
    (0x1780, 0x17FF, "Khmer"),
    (0x2E80, 0x2FDF, "CJK and Kangxi radicals"),
    (0x3005, 0x3007, "CJK iteration/closing marks, ideographic zero"),
    (0x3040, 0x309F, "Hiragana"),
    (0x30A0, 0x30FF, "Katakana"),
    (0x3100, 0x312F, "Bopomofo"),
    (0x31A0, 0x31BF, "Bopomofo extended"),
    (0x31F0, 0x31FF, "Katakana phonetic extensions"),
    (0x3400, 0x4DBF, "CJK Extension A"),
    (0x4E00, 0x9FFF, "CJK Unified Ideographs"),
    (0xF900, 0xFAFF, "CJK Compatibility Ideographs"),
    (0xFF66, 0xFF9F, "Half-width Katakana"),
    (0x20000, 0x323AF, "CJK Extensions B-H, Compatibility Supplement"),
)


def is_char_token(ch: str) -> bool:
    """True when ``ch`` belongs to a script without spaces (:data:`CHAR_TOKEN_RANGES`)."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi, _ in CHAR_TOKEN_RANGES)


def _check_lang(lang: str | None) -> str:
    if not isinstance(lang, str) or not lang.strip():
        raise ValueError(f"{RULES_NAME} rules need a language code such as 'th' or 'ja', got {lang!r}")
    return lang.strip().lower()


def _tokens(text: str, lang: str) -> list[str]:
    text = remove_punct(text.lower())
    pattern = ARTICLE_PATTERNS.get(lang)
    if pattern is not None:
        text = pattern.sub(" ", text)
    out: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        if ch > "\u0dff" and is_char_token(ch):
            out.extend(text[start:i].split())
            out.append(ch)
            start = i + 1
    out.extend(text[start:].split())
    return out


def tokens(text: str, lang: str) -> list[str]:
    """Normalized tokens of ``text`` under the xlqa-ext rules for ``lang``."""
    return _tokens(text, _check_lang(lang))


def per_question(
    gold: Mapping[str, Sequence[str]], predictions: Mapping[object, object], lang: str
) -> dict[str, tuple[float, float]]:
    """Question id -> (em 0/1, f1 0..1) under xlqa-ext rules; missing predictions give (0.0, 0.0)."""
    lang = _check_lang(lang)
    scorer = token_scorer(functools.partial(_tokens, lang=lang))
    return score_questions(gold, predictions, scorer, f"{RULES_NAME}[{lang}]")


def evaluate(
    gold: Mapping[str, Sequence[str]], predictions: Mapping[object, object], lang: str
) -> dict[str, float]:
    """Score predictions under the xlqa-ext rules (see the module docstring); not an official number.

    Args:
        gold: question id -> gold answer texts (see :func:`xlqa.metrics.read_gold`).
        predictions: question id -> predicted text; ids absent here score 0 and count.
        lang: language code of the answers (articles are removed only for en, es, de, vi, ar).
    """
    return aggregate(per_question(gold, predictions, lang))

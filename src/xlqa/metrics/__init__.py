"""QA metrics equal to the official evaluation scripts, plus one documented extension.

Rule sets (:data:`RULES`):

- ``squad1``: official SQuAD v1.1 script (:mod:`xlqa.metrics.squad_v1`), also used for XQuAD and TyDi QA;
- ``squad2``: official SQuAD v2.0 script (:mod:`xlqa.metrics.squad_v2`);
- ``mlqa``: official MLQA script (:mod:`xlqa.metrics.mlqa`), answer languages en es de vi ar hi zh;
- ``xlqa-ext``: this project's MLQA-style extension for any language (:mod:`xlqa.metrics.extended`).
  It is not an official metric: always report it under the name "xlqa-ext".

Example:
    >>> from xlqa import metrics
    >>> dataset = {"data": [{"paragraphs": [{"qas": [{"id": "q1", "answers": [{"text": "the cat"}]}]}]}]}
    >>> metrics.score(dataset, {"q1": "Cat!"}, rules="squad1")
    {'exact_match': 100.0, 'f1': 100.0}
"""

from __future__ import annotations

import gzip
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence

from xlqa.metrics import extended, mlqa, squad_v1, squad_v2

__all__ = [
    "ISO_639_1",
    "RULES",
    "check_language",
    "check_na_probs",
    "extended",
    "load_json",
    "mlqa",
    "per_question",
    "read_gold",
    "score",
    "squad_v1",
    "squad_v2",
]

RULES: tuple[str, ...] = ("squad1", "squad2", "mlqa", "xlqa-ext")

Gold = dict[str, list[str]]

_ISO_CODES = """
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el
en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu
ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na
nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so
sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
"""
ISO_639_1 = frozenset(_ISO_CODES.split())
"""The two-letter ISO 639-1 language codes: what ``lang`` may be (a region after ``-`` or ``_`` is allowed)."""


def check_language(lang: object) -> str:
    """``lang`` lower-cased, when it is an ISO 639-1 code (``de``, ``zh-CN``); else ``ValueError`` naming it.

    A typo such as ``dee`` or ``zz`` would otherwise score silently under rules meant for no language.
    """
    code = lang.strip().lower() if isinstance(lang, str) else ""
    if code.replace("_", "-").split("-")[0] not in ISO_639_1:
        raise ValueError(f"{lang!r} is not an ISO 639-1 language code (such as en, de, zh, th)")
    return code


def check_na_probs(na_probs: object, *, probabilities: bool = False) -> dict[str, float]:
    """``na_probs`` keyed by ``str`` question id, when every value is a number (not NaN); else ``ValueError``.

    With ``probabilities`` every value must also lie in [0, 1] (the official ``--na-prob-file``); without, an
    infinite score is allowed (xlqa's null odds of a question with no valid span). The message names the first
    bad question id and its value.
    """
    if not isinstance(na_probs, Mapping):
        raise ValueError(
            f"no-answer probabilities must be a JSON object of question id -> number, got {type(na_probs).__name__}"
        )
    out: dict[str, float] = {}
    for qid, p in na_probs.items():
        ok = isinstance(p, numbers.Real) and not isinstance(p, bool) and not math.isnan(p)
        if not ok or (probabilities and not 0.0 <= p <= 1.0):
            want = "a probability in [0, 1]" if probabilities else "a number"
            raise ValueError(f"no-answer probability of question id {qid!r} must be {want}, got {p!r}")
        out[qid if isinstance(qid, str) else str(qid)] = float(p)
    return out


def load_json(path: str | os.PathLike[str]) -> dict:
    """Read a JSON file, gzip-compressed when its name ends in ``.gz``.

    Raises:
        ValueError: the file is not valid JSON (names the file).
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON: {err}") from err


def read_gold(dataset: Mapping) -> Gold:
    """Question id -> gold answer texts from a SQuAD-format file object, in file order.

    Iterates ``data -> paragraphs -> qas`` and takes ``answers[*].text`` as the official scripts do
    (``is_impossible`` and ``plausible_answers`` are ignored; an unanswerable question gets ``[]``).
    Integer ids become strings, since prediction files are JSON objects with string keys.

    Args:
        dataset: the whole parsed file, with its ``"data"`` list.

    Raises:
        ValueError: a missing field (named with its position) or a question id seen twice (the official v1.1
            script would count it twice, v2.0 once, so no single score exists).
    """
    if not isinstance(dataset, Mapping) or "data" not in dataset:
        raise ValueError("dataset must be a parsed SQuAD-format file: a JSON object with a 'data' list")
    gold: Gold = {}
    for i, article in enumerate(dataset["data"]):
        for j, paragraph in enumerate(_field(article, "paragraphs", f"data[{i}]")):
            for k, qa in enumerate(_field(paragraph, "qas", f"data[{i}].paragraphs[{j}]")):
                where = f"data[{i}].paragraphs[{j}].qas[{k}]"
                qid = _field(qa, "id", where)
                qid = qid if isinstance(qid, str) else str(qid)
                if qid in gold:
                    raise ValueError(f"{where}: question id {qid!r} appears more than once")
                answers = _field(qa, "answers", where)
                ctx = f"(question id {qid!r})"
                gold[qid] = [_field(a, "text", f"{where}.answers[{n}] {ctx}") for n, a in enumerate(answers)]
    return gold


def _field(obj: object, key: str, where: str):
    if not isinstance(obj, Mapping) or key not in obj:
        raise ValueError(f"{where}: missing field {key!r}")
    return obj[key]


def _as_gold(gold_or_dataset: Mapping) -> Mapping[str, Sequence[str]]:
    """A parsed file (its "data" is a list of article objects) becomes a gold mapping; gold stays as is."""
    data = gold_or_dataset.get("data") if isinstance(gold_or_dataset, Mapping) else None
    if isinstance(data, list) and all(isinstance(article, Mapping) for article in data):
        return read_gold(gold_or_dataset)
    return gold_or_dataset


def _check_rules(rules: str, lang: str | None) -> None:
    if rules not in RULES:
        raise ValueError(f"unknown metric rules {rules!r}; valid rules: {', '.join(RULES)}")
    if rules in ("mlqa", "xlqa-ext") and lang is None:
        langs = ", ".join(mlqa.LANGUAGES) if rules == "mlqa" else "any language code"
        raise ValueError(f"rules {rules!r} need the answer language: pass lang= ({langs})")
    if rules == "xlqa-ext":
        check_language(lang)


def score(
    gold_or_dataset: Mapping,
    predictions: Mapping[object, object],
    rules: str = "squad1",
    lang: str | None = None,
    na_probs: Mapping[object, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """Score predictions under one rule set.

    Args:
        gold_or_dataset: a gold mapping (question id -> answer texts) or a parsed SQuAD-format file.
        predictions: question id -> predicted answer text.
        rules: one of :data:`RULES`.
        lang: answer language, required for ``mlqa`` and ``xlqa-ext``, ignored by ``squad1``/``squad2``.
        na_probs: no-answer probabilities, used by ``squad2`` only (best-threshold keys).
        na_prob_thresh: ``squad2`` only: predict no answer above this probability (official default 1.0).

    Returns:
        The official keys of the rule set (``exact_match``/``f1``, or the SQuAD v2.0 keys).

    Raises:
        ValueError: unknown rules, a missing or unsupported language, a no-answer probability that is not a
            number.
        TypeError: ``predictions`` is not a mapping, or a prediction is not a string (names the question id).
    """
    _check_rules(rules, lang)
    if na_probs is not None and rules != "squad2":
        raise ValueError(f"na_probs are used only by the 'squad2' rules, not {rules!r}")
    if na_probs is not None:
        na_probs = check_na_probs(na_probs)
    gold = _as_gold(gold_or_dataset)
    if rules == "squad1":
        return squad_v1.evaluate(gold, predictions)
    if rules == "squad2":
        return squad_v2.evaluate(gold, predictions, na_probs=na_probs, na_prob_thresh=na_prob_thresh)
    if rules == "mlqa":
        return mlqa.evaluate(gold, predictions, lang)
    return extended.evaluate(gold, predictions, lang)


def per_question(
    gold: Mapping,
    predictions: Mapping[object, object],
    rules: str,
    lang: str | None = None,
    *,
    na_probs: Mapping[object, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, tuple[float, float]]:
    """Question id -> (em 0/1, f1 0..1) under ``rules``, for bootstrap confidence intervals.

    For ``squad1``, ``mlqa`` and ``xlqa-ext`` every gold question is present (a missing prediction gives
    ``(0.0, 0.0)``), so the mean x 100 equals :func:`score`. For ``squad2`` only the predicted questions are
    present, after the no-answer threshold, so the mean x 100 equals ``exact``/``f1``.

    Args:
        gold: a gold mapping or a parsed SQuAD-format file.
        predictions: question id -> predicted answer text.
        rules: one of :data:`RULES`.
        lang: answer language for ``mlqa`` and ``xlqa-ext``.
        na_probs: ``squad2`` only: no-answer probabilities.
        na_prob_thresh: ``squad2`` only: the no-answer threshold.
    """
    _check_rules(rules, lang)
    gold = _as_gold(gold)
    if rules == "squad1":
        return squad_v1.per_question(gold, predictions)
    if rules == "squad2":
        return squad_v2.per_question(gold, predictions, na_probs, na_prob_thresh)
    if rules == "mlqa":
        return mlqa.per_question(gold, predictions, lang)
    return extended.per_question(gold, predictions, lang)

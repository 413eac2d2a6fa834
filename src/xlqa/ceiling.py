"""Answer-recoverability ceiling: how much EM/F1 a perfect model could reach through xlqa's own pipeline.

Each gold answer is turned into token labels exactly as for training, the labels become one-hot logits, and
those logits go through the same span decoding as real predictions. What comes out is scored with the
official rules. Anything below 100 is lost to the tokenizer (an answer boundary inside a token), to windowing
(an answer cut by every window) or to ``max_answer_length``; a much lower figure means a bug in offsets,
windowing or decoding - the kind that makes a run report 0.03% EM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xlqa.data import SquadData, gold_texts
from xlqa.features import FeatureParams, build_features
from xlqa.metrics import per_question
from xlqa.postprocess import MAX_ANSWER_LENGTH, decode, pad_ragged
from xlqa.sources.registry import file_stem, spec_for_file


@dataclass
class Ceiling:
    name: str
    language: str | None
    rules: str
    questions: int
    exact_match: float
    f1: float
    not_in_window: int  # answerable, but no window holds the whole answer
    too_long: int  # longer than max_answer_length tokens
    inexact: int  # decoded text differs from every gold answer after normalization
    examples: list[tuple[str, str, str]]  # (qid, gold, decoded) for a few inexact ones


def answer_ceiling(
    data: SquadData,
    tokenizer,
    params: FeatureParams | None = None,
    *,
    max_answer_length: int = MAX_ANSWER_LENGTH,
    rules: str | None = None,
    show: int = 5,
) -> Ceiling:
    """The best EM/F1 reachable on ``data`` when the model predicts exactly the labelled tokens.

    ``rules`` defaults to the data's official rule set (MLQA rules for MLQA files, SQuAD v1.1 otherwise).
    """
    rules = rules or spec_for_file(data).rules
    if rules == "squad2":
        rules = "squad1"  # unanswerable questions are left out below; the answerable ones score alike
    examples = [ex for ex in data.examples if not ex.is_impossible]
    feats = build_features(examples, tokenizer, params or FeatureParams(), training=False)
    n = len(feats)
    labelled = feats.start_positions != feats.cls_index
    rows = [np.full(int(L), -np.inf) for L in feats.lengths]
    start = pad_ragged(rows, -np.inf, dtype=np.float64)
    end = start.copy()
    idx = np.flatnonzero(labelled)
    start[idx, feats.start_positions[idx]] = 0.0
    end[idx, feats.end_positions[idx]] = 0.0
    offsets = pad_ragged([feats.window(i)["offsets"] for i in range(n)], -1, dtype=np.int64)
    ids = [ex.id for ex in examples]
    dec = decode(
        start,
        end,
        offsets,
        feats.example_index,
        feats.cls_index,
        ids,
        [ex.context for ex in examples],
        n_best=1,
        top_k=1,
        max_answer_length=max_answer_length,
    )
    gold = gold_texts(examples)
    scores = per_question(gold, dec.predictions, rules=rules, lang=data.language)
    has_label = np.zeros(len(examples), dtype=bool)
    has_label[feats.example_index[labelled]] = True
    span_len = feats.end_positions - feats.start_positions + 1
    fits = np.zeros(len(examples), dtype=bool)
    fits[feats.example_index[labelled & (span_len <= max_answer_length)]] = True
    inexact = [(q, gold[q][0] if gold[q] else "", dec.predictions[q]) for q in ids if scores[q][0] < 1]
    em = 100.0 * np.mean([scores[q][0] for q in ids]) if ids else 0.0
    f1 = 100.0 * np.mean([scores[q][1] for q in ids]) if ids else 0.0
    name = file_stem(data.path)
    return Ceiling(
        name=name,
        language=data.language,
        rules=rules,
        questions=len(examples),
        exact_match=round(float(em), 2),
        f1=round(float(f1), 2),
        not_in_window=int((~has_label).sum()),
        too_long=int((has_label & ~fits).sum()),
        inexact=len(inexact),
        examples=inexact[:show],
    )

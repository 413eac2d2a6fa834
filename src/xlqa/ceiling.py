"""Answer-recoverability ceiling: how much EM/F1 a perfect model could reach through xlqa's own pipeline.

Each gold answer is turned into token labels exactly as for training, the labels become one-hot logits, and
those logits go through the same span decoding as real predictions. What comes out is scored with the
official rules. Anything below 100 is lost either to the tokenizer (an answer boundary inside a token, or a gold
answer cut mid-word in the data) or to the pipeline: windowing (an answer cut by every window),
``max_answer_length``, or edge trimming (punctuation the rules keep). Each loss is counted under its cause by
decoding again without the length limit and without trimming; a much lower figure means a bug in offsets,
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
    not_in_window: int  # pipeline: answerable, but no window holds the whole answer
    too_long: int  # pipeline: exact without max_answer_length, lost with it
    trimmed: int  # pipeline: exact before edge trimming, lost by it
    tokenizer: int  # inexact however decoded: the tokenizer's (or the data's) loss
    trim_gained: int  # inexact before edge trimming, exact after it
    examples: list[tuple[str, str, str]]  # (qid, gold, decoded) for a few lost ones, pipeline losses first

    @property
    def inexact(self) -> int:
        """Decoded text that differs from every gold answer although a window held it within the limit."""
        return self.trimmed + self.tokenizer

    @property
    def pipeline(self) -> int:
        return self.not_in_window + self.too_long + self.trimmed


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
    labelled = feats.start_positions != feats.cls_index
    ids = [ex.id for ex in examples]
    gold = gold_texts(examples)
    inputs = _one_hot_inputs(feats, labelled, examples)
    seq_len = inputs[0].shape[1] if len(feats) else 1

    def exact(limit: int, trim: bool) -> tuple[dict[str, str], dict[str, tuple[float, float]]]:
        dec = decode(*inputs, n_best=1, top_k=1, max_answer_length=limit, trim=trim)
        return dec.predictions, per_question(gold, dec.predictions, rules=rules, lang=data.language)

    predictions, scores = exact(max_answer_length, True)  # the pipeline as it runs
    _, untrimmed = exact(max_answer_length, False)
    _, unlimited = exact(seq_len, False)
    in_window = np.zeros(len(examples), dtype=bool)
    in_window[feats.example_index[labelled]] = True
    lost = {q: "" for q in ids if scores[q][0] < 1}
    for q, held in zip(ids, in_window.tolist()):
        if q in lost:
            lost[q] = (
                "window" if not held
                else "tokenizer" if unlimited[q][0] < 1
                else "length" if untrimmed[q][0] < 1
                else "trim"
            )  # fmt: skip
    counts = {cause: sum(1 for c in lost.values() if c == cause) for cause in ("window", "length", "trim")}
    order = sorted(lost, key=lambda q: lost[q] == "tokenizer")  # pipeline losses first
    em = 100.0 * np.mean([scores[q][0] for q in ids]) if ids else 0.0
    f1 = 100.0 * np.mean([scores[q][1] for q in ids]) if ids else 0.0
    return Ceiling(
        name=file_stem(data.path),
        language=data.language,
        rules=rules,
        questions=len(examples),
        exact_match=round(float(em), 2),
        f1=round(float(f1), 2),
        not_in_window=counts["window"],
        too_long=counts["length"],
        trimmed=counts["trim"],
        tokenizer=len(lost) - sum(counts.values()),
        trim_gained=sum(1 for q in ids if untrimmed[q][0] < 1 and scores[q][0] == 1),
        examples=[(q, gold[q][0] if gold[q] else "", predictions[q]) for q in order[:show]],
    )


def _one_hot_inputs(feats, labelled: np.ndarray, examples: list):
    """The arguments of :func:`xlqa.postprocess.decode` for a model sure of exactly the labelled tokens."""
    n = len(feats)
    rows = [np.full(int(L), -np.inf) for L in feats.lengths]
    start = pad_ragged(rows, -np.inf, dtype=np.float64)
    end = start.copy()
    idx = np.flatnonzero(labelled)
    start[idx, feats.start_positions[idx]] = 0.0
    end[idx, feats.end_positions[idx]] = 0.0
    offsets = pad_ragged([feats.window(i)["offsets"] for i in range(n)], -1, dtype=np.int64)
    contexts = [ex.context for ex in examples]
    return start, end, offsets, feats.example_index, feats.cls_index, [ex.id for ex in examples], contexts

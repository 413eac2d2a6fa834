"""Batched inference for extractive QA: windows -> logits -> answers.

Windows are sorted by length and padded per batch; logits come back in window order, padded with -inf past
each window's end, ready for :func:`xlqa.postprocess.decode`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xlqa.batching import Collator, WindowDataset, sorted_batches
from xlqa.data import Example
from xlqa.distributed import gather_windows, is_main, main_first, shard_batches
from xlqa.features import FeatureParams, Features, cached_features
from xlqa.postprocess import MAX_ANSWER_LENGTH, Decoded, decode, pad_ragged
from xlqa.precision import autocast
from xlqa.results import NBestCandidate

log = logging.getLogger(__name__)


def model_inputs(batch: dict, model) -> dict:
    """The tensors of ``batch`` that the model's forward takes (no labels, no bookkeeping)."""
    keys = ["input_ids", "attention_mask"]
    if "token_type_ids" in batch and getattr(model.config, "type_vocab_size", 0) > 1:
        keys.append("token_type_ids")
    return {k: batch[k] for k in keys}


@torch.inference_mode()
def predict_logits(
    model,
    features: Features,
    *,
    pad_token_id: int,
    pad_left: bool = False,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str = "predict",
    precision: str = "fp32",
    accelerator=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits for every window: two ``[n_windows, max_len]`` float32 arrays (-inf padded).

    ``precision`` bf16/fp16 runs the forward pass under autocast (logits are returned as float32).
    ``accelerator`` (an ``Accelerator`` or ``PartialState`` of several processes): each process computes its
    share of the batches and every process gets all windows' logits (:mod:`xlqa.distributed`); a collective,
    so every process must call it with the same features.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    batches = shard_batches(sorted_batches(features.lengths, batch_size), accelerator)
    loader = DataLoader(
        WindowDataset(features, with_labels=False),
        batch_sampler=batches,
        collate_fn=Collator(pad_token_id, pad_left=pad_left),
    )
    starts: list[np.ndarray | None] = [None] * len(features)
    ends: list[np.ndarray | None] = [None] * len(features)
    lengths = features.lengths
    show = progress and is_main(accelerator)
    bar = tqdm(loader, total=len(batches), desc=desc, unit="batch", disable=not show, dynamic_ncols=True)
    for batch in bar:
        with autocast(precision, device):
            out = model(**{k: v.to(device) for k, v in model_inputs(batch, model).items()})
        rows, index = gather_windows(
            accelerator, torch.stack([out.start_logits, out.end_logits], dim=1), batch["index"].to(device),
            pad_first=pad_left,
        )  # fmt: skip
        width = rows.shape[2]
        for r, i in enumerate(index.tolist()):
            if (
                i < 0 or starts[i] is not None
            ):  # padding, or a copy from the processes' topped-up last batches
                continue
            L = int(lengths[i])
            # a window's tokens are the first L of its row, or the last L with left padding
            cols = slice(width - L, width) if pad_left else slice(0, L)
            starts[i], ends[i] = rows[r, 0, cols], rows[r, 1, cols]
    missing = sum(s is None for s in starts)
    if missing:  # a sharding bug must never pass as a silently empty answer
        raise RuntimeError(f"{missing} of {len(starts)} windows got no logits")
    return pad_ragged(starts, -np.inf), pad_ragged(ends, -np.inf)


def padded_offsets(features: Features) -> np.ndarray:
    """``[n_windows, max_len, 2]`` offsets, -1 for non-context tokens and padding."""
    rows = [features.offsets[features.bounds[i] : features.bounds[i + 1]] for i in range(len(features))]
    return pad_ragged(rows, -1, dtype=np.int64)


def predict_examples(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    params: FeatureParams | None = None,
    batch_size: int = 32,
    n_best: int = 20,
    max_answer_length: int = MAX_ANSWER_LENGTH,
    null_threshold: float | None = None,
    cache_dir=None,
    progress: bool = True,
    desc: str = "predict",
    device=None,
    precision: str = "fp32",
    accelerator=None,
) -> Decoded:
    """Answers for ``examples``: features (cached), batched logits, vectorized decoding.

    ``accelerator`` (an ``Accelerator`` or ``PartialState``): with several processes this is a collective
    (every process calls it with the same examples); each computes a share of the windows and every process
    returns the full, identical answers. The feature cache is filled by the main process first.
    """
    with main_first(accelerator):
        feats = cached_features(examples, tokenizer, params, training=False, cache_dir=cache_dir)
    start, end = predict_logits(
        model,
        feats,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        pad_left=tokenizer.padding_side == "left",
        batch_size=batch_size,
        progress=progress,
        desc=desc,
        device=device,
        precision=precision,
        accelerator=accelerator,
    )
    return decode(
        start,
        end,
        padded_offsets(feats),
        feats.example_index,
        feats.cls_index,
        [ex.id for ex in examples],
        [ex.context for ex in examples],
        n_best=n_best,
        max_answer_length=max_answer_length,
        null_threshold=null_threshold,
    )


def answer(model, tokenizer, question: str, context: str, **kw) -> dict:
    """One question: ``{"answer": text, "score": float, "start": int, "end": int}``."""
    ex = Example(id="q", question=question, context=context, answers=[])
    dec = predict_examples(model, tokenizer, [ex], progress=False, cache_dir="", **kw)
    best = (
        dec.nbest["q"][0]
        if dec.nbest["q"]
        else NBestCandidate(text="", score=float("-inf"), start=-1, end=-1)
    )
    return {
        "answer": dec.predictions["q"],
        "score": best.score,
        "probability": best.probability or 0.0,
        "start": best.start,
        "end": best.end,
    }

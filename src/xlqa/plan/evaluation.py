"""Planning evaluations: exact windows per file, and seconds from real batches on the real windows.

Extractive: the windows come from :func:`xlqa.features.cached_features` as evaluation builds them (so the
evaluation that follows finds them in the cache, and the time to load them from there is measured), forward
passes are timed on batches of :func:`xlqa.batching.sorted_batches` (each twice: the fastest run is the batch,
and the first run's extra time, a new shape's kernels, is added once per batch shape that no earlier file of the
same evaluation met), and decoding is timed once at the file's full size. Generative: the windows come from
:func:`xlqa.generative.build_windows` (rebuilt by every evaluation, so that time counts), and generation is
timed on real batches as :mod:`xlqa.generative` runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xlqa.batching import Collator, WindowDataset, sorted_batches
from xlqa.config import TrainConfig
from xlqa.data import SquadData
from xlqa.plan import measure
from xlqa.plan.counts import batch_tokens
from xlqa.plan.measure import Range, Samples
from xlqa.sources.registry import file_stem, spec_for_file


@dataclass
class EvalPlan:
    """One file: exact questions, windows and batches; predicted seconds; the fixed costs measured for it."""

    name: str
    path: str
    questions: int
    windows: int
    tokens: int
    batches: int
    seconds: Range
    prepare_seconds: float  # loading the cached windows (extractive) or building them (generative)
    decode_seconds: float
    new_shapes: int = 0  # batch shapes no earlier file of the same evaluation met (each pays its first call)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "questions": self.questions,
            "windows": self.windows,
            "tokens": self.tokens,
            "batches": self.batches,
            "seconds": self.seconds.to_json(),
            "prepare_seconds": round(self.prepare_seconds, 4),
            "decode_seconds": round(self.decode_seconds, 4),
            "new_shapes": self.new_shapes,
        }


@dataclass
class Prepared:
    """One file made ready to time: its windows' lengths, one batch through the model, the fixed costs."""

    lengths: np.ndarray
    run: Callable[[list[int]], None]  # one batch of window indices through the model
    multiple: int
    prepare_seconds: float
    decode_seconds: float


def plan_eval(model, tok, task: str, cfg: TrainConfig, precision: str, device: torch.device,
              datasets: list[SquadData], n_batches: int) -> tuple[list[EvalPlan], Samples, Samples]:  # fmt: skip
    """A plan per dataset, from evaluation batches timed across all of them (one warm-up batch first); the timed
    batches' fastest runs and their first runs."""
    prepared = [prepare(model, tok, task, data, cfg, precision, device) for data in datasets]
    pool: list[tuple[int, list[int]]] = []
    per_file: list[np.ndarray] = []
    for d, p in enumerate(prepared):
        batches = sorted_batches(p.lengths, cfg.eval_batch_size)
        per_file.append(batch_tokens(p.lengths, batches, p.multiple))
        pool += [(d, b) for b in batches]
    tokens = np.concatenate(per_file) if per_file else np.zeros(0, np.int64)
    first = Samples()
    samples = measure.time_batches(
        lambda e: prepared[e[0]].run(e[1]), pool, tokens, n_batches, device, repeats=2, first=first
    )
    plans = []
    # batch shapes met by an earlier file: one process builds their kernels once
    seen: set[int] = set()
    for data, p, tk in zip(datasets, prepared, per_file, strict=True):
        fixed = p.prepare_seconds + p.decode_seconds
        new_shapes = set(tk.tolist()) - seen
        seen |= new_shapes
        seconds = measure.predict(samples, tk) + Range(fixed, fixed, fixed)
        seconds += measure.first_call_extra(first, samples, len(new_shapes))
        plans.append(EvalPlan(
            file_stem(data.path), str(data.path), len(data.examples), len(p.lengths), int(tk.sum()), len(tk),
            seconds, p.prepare_seconds, p.decode_seconds, len(new_shapes),
        ))  # fmt: skip
    return plans, samples, first


def plan_dev(model, tok, task: str, cfg: TrainConfig, precision: str, device: torch.device, dev_set: SquadData,
             n_batches: int) -> tuple[EvalPlan, Samples, Samples]:  # fmt: skip
    """The dev evaluation as the training loop runs it after each epoch: the training windows, and
    ``--eval-batch-size`` resolved for ``device`` as ``xlqa evaluate`` resolves it (0: 16 on a CPU, 64 on a GPU).
    ``model`` and ``precision`` are the ones it runs with (the bf16 copy and "fp32" with ``--bf16-weights``)."""
    from dataclasses import replace

    from xlqa.evaluate import eval_batch_size

    cfg = replace(cfg, eval_batch_size=eval_batch_size(cfg.eval_batch_size, device))
    (plan,), samples, first = plan_eval(model, tok, task, cfg, precision, device, [dev_set], n_batches)
    return plan, samples, first


def prepare(model, tok, task: str, data: SquadData, cfg: TrainConfig, precision: str, device) -> Prepared:
    """``data``'s windows as the evaluation builds them, and a function that runs one batch of them."""
    return (_extractive if task == "extractive" else _generative)(model, tok, data, cfg, precision, device)


def _extractive(model, tok, data: SquadData, cfg: TrainConfig, precision: str, device) -> Prepared:
    from xlqa.features import FeatureParams, cached_features
    from xlqa.postprocess import decode
    from xlqa.precision import autocast
    from xlqa.predict import model_inputs, padded_offsets

    params = FeatureParams(cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length)
    feats = cached_features(data.examples, tok, params, training=False, cache_dir=cfg.cache_dir)
    load_s = measure.time_call(
        lambda: cached_features(data.examples, tok, params, training=False, cache_dir=cfg.cache_dir)
    )
    # decoding at the file's full size (its cost depends on the shapes, not on the logits' values)
    rng = np.random.default_rng(0)
    shape = (len(feats), int(feats.lengths.max()) if len(feats) else 0)
    start, end = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    threshold = 0.0 if spec_for_file(data).rules == "squad2" else None
    decode_s = measure.time_call(lambda: decode(
        start, end, padded_offsets(feats), feats.example_index, feats.cls_index,
        [ex.id for ex in data.examples], [ex.context for ex in data.examples],
        max_answer_length=cfg.max_answer_length, null_threshold=threshold,
    ))  # fmt: skip
    dataset = WindowDataset(feats, with_labels=False)
    collate = Collator(
        tok.pad_token_id if tok.pad_token_id is not None else 0, pad_left=tok.padding_side == "left"
    )

    @torch.inference_mode()
    def run(idx: list[int]) -> None:
        batch = collate([dataset[i] for i in idx])
        with autocast(precision, device):
            out = model(**{k: v.to(device) for k, v in model_inputs(batch, model).items()})
        out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()

    return Prepared(feats.lengths, run, collate.multiple, load_s, decode_s)


def _generative(model, tok, data: SquadData, cfg: TrainConfig, precision: str, device) -> Prepared:
    from xlqa.generative import Seq2SeqCollator, Seq2SeqDataset, build_windows
    from xlqa.precision import autocast

    def build():
        return build_windows(data.examples, tok, max_seq_length=cfg.max_seq_length, doc_stride=cfg.doc_stride,
                             max_query_length=cfg.max_query_length, training=False)  # fmt: skip

    build_s = measure.time_call(build)
    windows = build()
    dataset = Seq2SeqDataset(windows)
    eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else 0
    collate = Seq2SeqCollator(pad)

    @torch.inference_mode()
    def run(idx: list[int]) -> None:
        batch = collate([dataset[i] for i in idx])
        with autocast(precision, device):
            out = model.generate(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=cfg.max_answer_length, num_beams=cfg.num_beams, do_sample=False, eos_token_id=eos,
                pad_token_id=pad, output_scores=True, return_dict_in_generate=True,
            )  # fmt: skip
        tok.batch_decode(out.sequences, skip_special_tokens=True)

    return Prepared(windows.lengths, run, 1, build_s, 0.0)

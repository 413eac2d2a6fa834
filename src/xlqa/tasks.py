"""Extractive and generative QA as training tasks: what differs between them, behind one interface.

The training loop (:mod:`xlqa.train.loop`) is the same for both; a :class:`Task` supplies what is not:

============  ==========================================  ================================================
              extractive (:class:`ExtractiveTask`)        generative (:class:`GenerativeTask`)
============  ==========================================  ================================================
model         encoder + start/end span head               encoder-decoder (mT5, T5, ByT5, mBART-style)
windows       token windows with start/end labels         ``question: ... context: ...`` windows, text target
loss          cross-entropy on start and end positions    cross-entropy on the answer's tokens
dev answers   best span of the windows (postprocess)      best-scoring generated text of the windows
optimizer     AdamW                                       Adafactor for the T5 family (the T5 recipe)
============  ==========================================  ================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from xlqa.batching import Collator, WindowDataset
from xlqa.config import TrainConfig
from xlqa.data import Example, SquadData
from xlqa.errors import ConfigError
from xlqa.evaluate import eval_batch_size
from xlqa.features import FeatureParams, cached_features
from xlqa.generative import Seq2SeqCollator, Seq2SeqDataset, build_windows, generate_answers
from xlqa.modeling import is_seq2seq, load_qa_model, load_seq2seq_model
from xlqa.precision import is_t5_family
from xlqa.predict import predict_examples
from xlqa.sources.registry import spec_for_file


@dataclass
class TrainData:
    """Training windows: a dataset, each window's length (for length-bucketed batches) and their collator."""

    dataset: torch.utils.data.Dataset
    lengths: np.ndarray
    collate: Any


class Task(Protocol):
    """What the training loop asks of a QA task."""

    name: str

    def load(self, cfg: TrainConfig) -> tuple[torch.nn.Module, Any]:
        """The model to fine-tune and its tokenizer."""
        ...

    def train_data(self, examples: list[Example], tok, cfg: TrainConfig) -> TrainData:
        """The training windows of ``examples``."""
        ...

    def loss(self, model: torch.nn.Module, batch: dict, config) -> torch.Tensor:
        """The loss of one batch (``config``: the unwrapped model's config)."""
        ...

    def predict(
        self, model, tok, data: SquadData, cfg: TrainConfig, precision: str, desc: str, accelerator=None
    ) -> dict[str, str]:
        """Answers to the dev questions, by question id.

        With an ``accelerator`` of several processes this is a collective: every process calls it, and every
        process gets all the answers.
        """
        ...


class ExtractiveTask:
    """Start/end span prediction (``AutoModelForQuestionAnswering``) over token windows."""

    name = "extractive"

    def load(self, cfg: TrainConfig) -> tuple[torch.nn.Module, Any]:
        return load_qa_model(
            cfg.model,
            attention_dropout=cfg.attention_dropout,
            hidden_dropout=cfg.hidden_dropout,
            attention=cfg.attention,
        )

    def train_data(self, examples: list[Example], tok, cfg: TrainConfig) -> TrainData:
        params = FeatureParams(cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length)
        feats = cached_features(examples, tok, params, training=True, cache_dir=cfg.cache_dir)
        collate = Collator(tok.pad_token_id or 0, pad_left=tok.padding_side == "left")
        return TrainData(WindowDataset(feats), feats.lengths, collate)

    def loss(self, model: torch.nn.Module, batch: dict, config) -> torch.Tensor:
        keys = ["input_ids", "attention_mask"]
        if "token_type_ids" in batch and getattr(config, "type_vocab_size", 0) > 1:
            keys.append("token_type_ids")
        out = model(**{k: batch[k] for k in keys})
        # transformers' QA loss, in fp32 whatever the logits' dtype (bf16 weights: --bf16-weights): the mean
        # of the start and end cross-entropies, a position outside the window ignored
        width = out.start_logits.size(1)
        losses = [
            torch.nn.functional.cross_entropy(logits.float(), batch[key].clamp(0, width), ignore_index=width)
            for logits, key in ((out.start_logits, "start_positions"), (out.end_logits, "end_positions"))
        ]
        return (losses[0] + losses[1]) / 2

    def predict(
        self, model, tok, data: SquadData, cfg: TrainConfig, precision: str, desc: str, accelerator=None
    ) -> dict[str, str]:
        threshold = 0.0 if spec_for_file(data).rules == "squad2" else None
        dec = predict_examples(
            model, tok, data.examples,
            params=FeatureParams(cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length),
            batch_size=_batch_size(cfg, model, accelerator), max_answer_length=cfg.max_answer_length, cache_dir=cfg.cache_dir,
            progress=cfg.progress, null_threshold=threshold, desc=desc, precision=precision,
            accelerator=accelerator,
        )  # fmt: skip
        return dec.predictions


class GenerativeTask:
    """Answers generated as text by a seq2seq model (windows and decoding: :mod:`xlqa.generative`)."""

    name = "generative"

    def load(self, cfg: TrainConfig) -> tuple[torch.nn.Module, Any]:
        for flag, value in (
            ("--attention-dropout", cfg.attention_dropout),
            ("--hidden-dropout", cfg.hidden_dropout),
        ):
            if value is not None:
                raise ConfigError(
                    f"{flag} is for extractive encoders; T5-family models have one dropout_rate for all layers"
                )
        if cfg.attention != "auto":
            raise ConfigError(
                "--attention is for extractive encoders; generative models keep transformers' default"
            )
        return load_seq2seq_model(cfg.model)

    def train_data(self, examples: list[Example], tok, cfg: TrainConfig) -> TrainData:
        windows = build_windows(examples, tok, max_seq_length=cfg.max_seq_length, doc_stride=cfg.doc_stride,
                                max_query_length=cfg.max_query_length, max_answer_length=cfg.max_answer_length,
                                training=True)  # fmt: skip
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        return TrainData(Seq2SeqDataset(windows), windows.lengths, Seq2SeqCollator(pad))

    def loss(self, model: torch.nn.Module, batch: dict, config) -> torch.Tensor:
        return model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        ).loss

    def predict(
        self, model, tok, data: SquadData, cfg: TrainConfig, precision: str, desc: str, accelerator=None
    ) -> dict[str, str]:
        return generate_answers(
            model, tok, data.examples, max_seq_length=cfg.max_seq_length, doc_stride=cfg.doc_stride,
            max_query_length=cfg.max_query_length, max_answer_length=cfg.max_answer_length,
            num_beams=cfg.num_beams, batch_size=_batch_size(cfg, model, accelerator), precision=precision, progress=cfg.progress,
            desc=desc, accelerator=accelerator,
        ).predictions  # fmt: skip


def make_task(cfg: TrainConfig) -> Task:
    """The task object for ``cfg.task`` (``auto``: generative for encoder-decoder models)."""
    task = cfg.task
    if task == "auto":
        task = "generative" if is_seq2seq(cfg.model) else "extractive"
    return GenerativeTask() if task == "generative" else ExtractiveTask()


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or Adafactor (the default for the T5 family); no weight decay on biases and norms."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kind = cfg.optimizer if cfg.optimizer != "auto" else ("adafactor" if is_t5_family(model) else "adamw")
    if kind == "adafactor":
        from transformers.optimization import Adafactor

        # a fixed learning rate (the T5 fine-tuning recipe), so the schedule and the guard can scale it
        return Adafactor(groups, lr=cfg.lr, scale_parameter=False, relative_step=False, warmup_init=False)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _batch_size(cfg: TrainConfig, model, accelerator) -> int:
    """``--eval-batch-size``, 0 resolved as ``xlqa evaluate`` resolves it for the device the model is on."""
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    return eval_batch_size(cfg.eval_batch_size, device)

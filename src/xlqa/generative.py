"""Generative QA with sequence-to-sequence models (mT5, T5, ByT5, mBART-style): the answer is generated as text.

Input of a window: ``question: <question> context: <piece of the context>`` followed by the end-of-sequence
token; target: the answer text. A long context is cut into windows of ``max_seq_length`` tokens overlapping by
``doc_stride`` context tokens, each repeating the question, so every window reads as one well-formed input.

* Training: windows of answerable questions that do not contain the whole answer are **dropped** (a target ""
  there would teach the model to give up on SQuAD v1-style data, where every question has an answer); windows
  of unanswerable questions (SQuAD v2) get the empty target, i.e. just the end-of-sequence token.
* Evaluation: every window is decoded (greedy or beam search) and scored by its length-normalized sequence
  log-probability; the answer is the best-scoring window's text, never merely the last window's.

Predictions, n-best lists and metrics come out in the same files and format as the extractive path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from xlqa.batching import sorted_batches
from xlqa.data import Example
from xlqa.errors import ConfigError, ModelLoadError
from xlqa.postprocess import MAX_ANSWER_LENGTH
from xlqa.results import NBestCandidate

log = logging.getLogger(__name__)

QUESTION_PREFIX = "question: "
CONTEXT_PREFIX = " context:"


@dataclass
class Seq2SeqWindows:
    """Token windows of a list of examples: encoder ids, targets (training) and the example of each window."""

    input_ids: list[np.ndarray]
    labels: list[np.ndarray] | None
    example_index: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids], dtype=np.int64)


def _target(ex: Example, training: bool):
    """The answer a training window is built for (None when evaluating, or for an unanswerable question)."""
    return ex.train_answer if training and not ex.is_impossible else None


def build_windows(
    examples: Sequence[Example],
    tokenizer,
    *,
    max_seq_length: int = 384,
    doc_stride: int | None = None,
    max_query_length: int = 64,
    max_answer_length: int = MAX_ANSWER_LENGTH,
    training: bool = False,
) -> Seq2SeqWindows:
    """Cut examples into ``question: ... context: ...`` windows (see the module docstring for the targets).

    Args:
        examples: validated examples.
        tokenizer: a fast tokenizer with an end-of-sequence token.
        max_seq_length: encoder tokens per window, end-of-sequence included.
        doc_stride: context tokens shared by consecutive windows (None: 128, at most half the window).
        max_query_length: question tokens kept (at most half the window).
        max_answer_length: target tokens, end-of-sequence included.
        training: build targets (and drop windows without the answer).
    """
    from xlqa.features import default_stride, tokenized_or_named, truncate_questions

    if doc_stride is None:
        doc_stride = default_stride(max_seq_length)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ModelLoadError(
            f"{type(tokenizer).__name__} has no end-of-sequence token; generative QA needs one"
        )

    def encode(exs: Sequence[Example]) -> tuple:
        questions = truncate_questions(
            [ex.question for ex in exs], tokenizer, min(max_query_length, max_seq_length // 2)
        )
        prefixes = tokenizer(
            [f"{QUESTION_PREFIX}{q}{CONTEXT_PREFIX}" for q in questions], add_special_tokens=False
        )
        contexts = tokenizer(
            [ex.context for ex in exs], add_special_tokens=False, return_offsets_mapping=True
        )
        texts = [a.text.strip() if (a := _target(ex, training)) else "" for ex in exs]
        return prefixes, contexts, tokenizer(texts, add_special_tokens=False)["input_ids"]

    prefixes, contexts, targets = tokenized_or_named(examples, encode)
    ids_out, labels_out, owner = [], [], []
    dropped = 0
    for i, ex in enumerate(examples):
        prefix = prefixes["input_ids"][i]
        ctx_ids = contexts["input_ids"][i]
        offs = contexts["offset_mapping"][i]
        room = max_seq_length - len(prefix) - 1
        if room < 1:
            raise ConfigError(
                f"question {ex.id}: --max-seq-length {max_seq_length} leaves no room for the context"
            )
        label = np.asarray([*targets[i][: max_answer_length - 1], eos], dtype=np.int64)
        start = 0
        while True:
            end = min(start + room, len(ctx_ids))
            keep = True
            if training and not ex.is_impossible:
                a = _target(ex, training)
                lead = len(a.text) - len(a.text.lstrip())
                a_start, a_end = a.start + lead, a.start + lead + len(a.text.strip())
                keep = end > start and offs[start][0] <= a_start and a_end <= offs[end - 1][1]
            if keep:
                ids_out.append(np.asarray([*prefix, *ctx_ids[start:end], eos], dtype=np.int64))
                labels_out.append(label)
                owner.append(i)
            else:
                dropped += 1
            if end >= len(ctx_ids):
                break
            start = max(start + 1, end - doc_stride)
    if dropped:
        log.info("dropped %d training windows that do not contain their answer", dropped)
    return Seq2SeqWindows(ids_out, labels_out if training else None, np.asarray(owner, dtype=np.int64))


class Seq2SeqDataset(Dataset):
    def __init__(self, windows: Seq2SeqWindows):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        item = {"index": i, "input_ids": self.windows.input_ids[i]}
        if self.windows.labels is not None:
            item["labels"] = self.windows.labels[i]
        return item


class Seq2SeqCollator:
    """Right-pads encoder ids with the pad token and targets with -100 (ignored by the loss)."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        n, width = len(items), max(len(it["input_ids"]) for it in items)
        ids = np.full((n, width), self.pad, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for r, it in enumerate(items):
            ids[r, : len(it["input_ids"])] = it["input_ids"]
            mask[r, : len(it["input_ids"])] = 1
        batch = {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "index": torch.tensor([it["index"] for it in items]),
        }
        if "labels" in items[0]:
            lw = max(len(it["labels"]) for it in items)
            labels = np.full((n, lw), -100, dtype=np.int64)
            for r, it in enumerate(items):
                labels[r, : len(it["labels"])] = it["labels"]
            batch["labels"] = torch.from_numpy(labels)
        return batch


# -- decoding ------------------------------------------------------------------------------------------------------
@dataclass
class GenDecoded:
    """Per question id: the answer, every window's candidate (best first) and the best score."""

    predictions: dict[str, str]
    nbest: dict[str, list[NBestCandidate]]
    null_odds: dict[str, float]


def _sequence_scores(model, out, eos: int, num_beams: int) -> torch.Tensor:
    """Length-normalized log-probability of each generated sequence (up to and including its first eos)."""
    if num_beams > 1:
        return out.sequences_scores.float()  # beam search: sum of log-probs / length (length_penalty 1)
    steps = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).float()
    gen = out.sequences[:, -steps.shape[1] :]
    before_eos = (gen == eos).long().cumsum(1)
    mask = (before_eos == 0) | ((before_eos == 1) & (gen == eos))
    return (steps * mask).sum(1) / mask.sum(1).clamp(min=1)


@torch.inference_mode()
def generate_answers(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    max_seq_length: int = 384,
    doc_stride: int | None = None,
    max_query_length: int = 64,
    max_answer_length: int = MAX_ANSWER_LENGTH,
    num_beams: int = 1,
    batch_size: int = 32,
    precision: str = "fp32",
    progress: bool = True,
    desc: str = "generate",
    accelerator=None,
) -> GenDecoded:
    """Answers for ``examples``: every window decoded, the best-scoring window's text kept per question.

    ``accelerator`` (an ``Accelerator`` or ``PartialState`` of several processes): a collective; each process
    generates its share of the batches (:mod:`xlqa.distributed`) and every process returns all the answers.
    """
    from xlqa.distributed import gather_generated, is_main, shard_batches
    from xlqa.precision import autocast

    windows = build_windows(examples, tokenizer, max_seq_length=max_seq_length, doc_stride=doc_stride,
                            max_query_length=max_query_length, training=False)  # fmt: skip
    device = next(model.parameters()).device
    model.eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = shard_batches(sorted_batches(windows.lengths, batch_size), accelerator)
    loader = DataLoader(Seq2SeqDataset(windows), batch_sampler=batches, collate_fn=Seq2SeqCollator(pad))
    mine: list[tuple[int, str, float]] = []  # (window, text, score) of the windows this process generated
    show = progress and is_main(accelerator)
    for batch in tqdm(
        loader, total=len(batches), desc=desc, unit="batch", disable=not show, dynamic_ncols=True
    ):
        with autocast(precision, device):
            out = model.generate(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=max_answer_length, num_beams=num_beams, do_sample=False, eos_token_id=eos,
                pad_token_id=pad, output_scores=True, return_dict_in_generate=True,
            )  # fmt: skip
        s = _sequence_scores(model, out, eos, num_beams).cpu().numpy()
        decoded = tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
        mine.extend((i, decoded[r].strip(), float(s[r])) for r, i in enumerate(batch["index"].tolist()))
    texts: list[str | None] = [None] * len(windows)
    scores = np.full(len(windows), -np.inf, dtype=np.float64)
    for i, text, score in gather_generated(accelerator, mine):
        if texts[i] is None:  # the top-up copies of the first batches come again: kept once
            texts[i], scores[i] = text, score
    if any(t is None for t in texts):  # a sharding bug must never pass as a silently empty answer
        raise RuntimeError(f"{sum(t is None for t in texts)} of {len(texts)} windows got no generated answer")
    return pick_answers([ex.id for ex in examples], windows.example_index, texts, scores)


def pick_answers(
    example_ids: list[str], window_example: np.ndarray, texts: list[str], scores: np.ndarray
) -> GenDecoded:
    """Per question, the text of its best-scoring window (ties: the first); every window's candidate in nbest.

    Args:
        example_ids: question ids, in example order.
        window_example: ``[n_windows]`` index of each window's example.
        texts: the generated text of each window.
        scores: ``[n_windows]`` sequence scores (higher is better).
    """
    nbest: dict[str, list[NBestCandidate]] = {qid: [] for qid in example_ids}
    for w, i in enumerate(np.asarray(window_example).tolist()):
        nbest[example_ids[i]].append(NBestCandidate(text=texts[w], score=float(scores[w]), window=w))
    predictions = {}
    for qid, cands in nbest.items():
        cands.sort(key=lambda c: -c.score)  # stable: equal scores keep window order
        predictions[qid] = cands[0].text if cands else ""
    return GenDecoded(predictions, nbest, {})


# -- evaluation ----------------------------------------------------------------------------------------------------
def evaluate_generative(cfg, *, model=None, tokenizer=None, targets=None, state=None):
    """:func:`xlqa.evaluate.evaluate_model` for a seq2seq model: same files, same results format.

    Args:
        cfg: an :class:`xlqa.config.EvalConfig` (``max_answer_length`` bounds the generated tokens,
            ``num_beams`` sets the beams: 1 = greedy).
        model: an already loaded model (else ``cfg.model`` is loaded).
        tokenizer: its tokenizer.
        targets: the files already loaded by :func:`xlqa.evaluate.load_targets`.
        state: Accelerate's state under ``accelerate launch``/``torchrun``: every process generates a share of
            the windows, all get every answer, only the main process writes.

    Returns:
        the :class:`xlqa.results.EvalResult`, also written to ``<output>/results.json``.
    """
    from xlqa.distributed import is_distributed
    from xlqa.evaluate import eval_batch_size, evaluate_targets, load_targets
    from xlqa.modeling import load_seq2seq_model
    from xlqa.precision import apply_precision_policy, choose_precision

    targets = targets if targets is not None else load_targets(cfg.data, cfg.max_examples)  # fail early
    if model is None:
        model, tokenizer = load_seq2seq_model(cfg.model)
    if is_distributed(state):
        model.to(state.device)
    precision = choose_precision(cfg.precision, next(model.parameters()).device)
    if precision == "fp16":
        apply_precision_policy(model, precision)  # refuses fp16 for the T5 family

    def predict(data, name: str, threshold: float | None):
        return generate_answers(
            model, tokenizer, data.examples, max_seq_length=cfg.max_seq_length, doc_stride=cfg.doc_stride,
            max_query_length=cfg.max_query_length, max_answer_length=cfg.max_answer_length,
            num_beams=cfg.num_beams, batch_size=eval_batch_size(cfg.batch_size, model.device), precision=precision, progress=cfg.progress,
            desc=name, accelerator=state,
        )  # fmt: skip

    return evaluate_targets(
        cfg, targets, predict, precision=precision, extra={"task": "generative"}, state=state
    )

"""Token windows, offsets and start/end labels for extractive QA, with an on-disk cache.

The contract follows the transformers question-answering examples: a long context is cut into windows of
``max_seq_length`` tokens that overlap by ``doc_stride``; every window keeps the index of its example and an
offset mapping in which tokens outside the context are marked -1, so that post-processing can only pick spans
inside the context. Features are stored ragged (no padding): padding happens per batch in :func:`collate`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from xlqa.data import Example
from xlqa.errors import ConfigError, DataError, ModelLoadError
from xlqa.fileio import atomic_open

log = logging.getLogger(__name__)

T = TypeVar("T")
FEATURES_VERSION = 1  # bump when the layout or the labelling rules change: old cache entries are then ignored


def default_stride(max_seq_length: int) -> int:
    """``--doc-stride`` left unset: 128 tokens of overlap (the usual recipe's), at most half the window, so that
    ``--max-seq-length 128`` or less works without a stride of its own."""
    return min(128, max_seq_length // 2)


@dataclass(frozen=True)
class FeatureParams:
    """How examples become token windows (the question is capped at half the window)."""

    max_seq_length: int = 384
    doc_stride: int | None = None  # None: default_stride(max_seq_length)
    max_query_length: int = 64

    def __post_init__(self) -> None:
        if self.max_seq_length < 16:
            raise ConfigError(f"--max-seq-length must be at least 16, got {self.max_seq_length}")
        if self.doc_stride is None:
            object.__setattr__(self, "doc_stride", default_stride(self.max_seq_length))
        if not 0 < self.doc_stride < self.max_seq_length:
            raise ConfigError(
                f"--doc-stride must be between 1 and --max-seq-length minus 1, got {self.doc_stride} "
                f"(max_seq_length {self.max_seq_length})"
            )
        if self.max_query_length < 1:
            raise ConfigError(f"--max-query-length must be >= 1, got {self.max_query_length}")
        # the question may take at most half the window, so that every window keeps room for context
        object.__setattr__(self, "max_query_length", min(self.max_query_length, self.max_seq_length // 2))


@dataclass
class Features:
    """Ragged token windows for a list of examples.

    ``input_ids`` (and ``token_type_ids``, ``offsets``) hold all windows back to back; window ``i`` is
    ``input_ids[bounds[i]:bounds[i+1]]``. ``offsets`` is ``[n_tokens, 2]`` character spans into the example's
    context, -1 for tokens that are not context. ``start_positions``/``end_positions`` are the labels
    (``cls_index`` when the answer is not inside the window or the question is unanswerable).
    """

    input_ids: np.ndarray
    bounds: np.ndarray
    example_index: np.ndarray
    offsets: np.ndarray
    cls_index: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    token_type_ids: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.example_index)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.bounds)

    def window(self, i: int) -> dict[str, np.ndarray]:
        """Window ``i`` as arrays (unpadded)."""
        a, b = int(self.bounds[i]), int(self.bounds[i + 1])
        out = {"input_ids": self.input_ids[a:b], "offsets": self.offsets[a:b]}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids[a:b]
        return out

    # -- disk format: one .npz, written to a temporary name and renamed, so a crash never leaves half a file
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "input_ids": self.input_ids,
            "bounds": self.bounds,
            "example_index": self.example_index,
            "offsets": self.offsets,
            "cls_index": self.cls_index,
            "start_positions": self.start_positions,
            "end_positions": self.end_positions,
            "meta": np.array(json.dumps(self.meta)),
        }
        if self.token_type_ids is not None:
            arrays["token_type_ids"] = self.token_type_ids
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: Path) -> Features:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                input_ids=z["input_ids"],
                bounds=z["bounds"],
                example_index=z["example_index"],
                offsets=z["offsets"],
                cls_index=z["cls_index"],
                start_positions=z["start_positions"],
                end_positions=z["end_positions"],
                token_type_ids=z["token_type_ids"] if "token_type_ids" in z.files else None,
                meta=json.loads(str(z["meta"])),
            )


def truncate_questions(questions: list[str], tokenizer, max_query_length: int) -> list[str]:
    """Cut each question to at most ``max_query_length`` tokens (on a character boundary of the tokenizer)."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offs in zip(questions, enc["offset_mapping"]):
        if len(offs) > max_query_length:
            q = q[: offs[max_query_length - 1][1]]
        out.append(q.lstrip())  # leading spaces make some tokenizers emit an empty first token
    return out


def _label(
    offs: np.ndarray, ctx_mask: np.ndarray, start_char: int, end_char: int, cls: int
) -> tuple[int, int]:
    """Token span ``(start, end)`` covering characters ``[start_char, end_char)``, or ``(cls, cls)``.

    Start: the last context token that starts at or before ``start_char`` (XLM-R's lone "▁" token carries the
    offset of the next character, so "the first" would pick it and lose the answer's first word). End: the first
    context token, at or after the start, that ends at or after ``end_char``.
    """
    ctx = np.flatnonzero(ctx_mask)
    if len(ctx) == 0:
        return cls, cls
    starts, ends = offs[ctx, 0], offs[ctx, 1]
    if starts[0] > start_char or ends[-1] < end_char:
        return cls, cls  # the answer is not fully inside this window
    s = int(np.searchsorted(starts, start_char, side="right")) - 1
    e_rel = s + int(np.searchsorted(ends[s:], end_char, side="left"))
    e_rel = min(max(e_rel, s), len(ctx) - 1)
    return int(ctx[s]), int(ctx[e_rel])


def build_features(
    examples: Sequence[Example],
    tokenizer,
    params: FeatureParams | None = None,
    *,
    training: bool = False,
) -> Features:
    """Tokenize examples into overlapping windows with offsets and labels.

    Args:
        examples: validated examples (see :mod:`xlqa.data`).
        tokenizer: a fast Hugging Face tokenizer (offsets are required).
        params: window sizes; defaults 384/128/64.
        training: when True, windows of answerable questions whose answer cannot be located are skipped
            (they would teach the model a wrong span); labels are computed in both modes.

    Returns:
        Features, ragged, one row per window.
    """
    params = params or FeatureParams()
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: offsets are required for QA"
        )
    enc, context_seq = tokenized_or_named(examples, lambda exs: _encode(exs, tokenizer, params))
    mapping = enc["overflow_to_sample_mapping"]
    has_tt = "token_type_ids" in enc and "token_type_ids" in tokenizer.model_input_names
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    parts = _WindowParts()
    skipped = 0
    for i, ids in enumerate(enc["input_ids"]):
        ex = examples[mapping[i]]
        if training and not ex.is_impossible and ex.train_answer is None:
            skipped += 1
            continue
        seq_ids = enc.sequence_ids(i)
        ctx_mask = np.fromiter((s == context_seq for s in seq_ids), dtype=bool, count=len(seq_ids))
        offs = np.asarray(enc["offset_mapping"][i], dtype=np.int32).reshape(-1, 2)
        offs[~ctx_mask] = -1
        cls = ids.index(cls_id) if cls_id in ids else 0
        start, end = _answer_labels(ex, offs, ctx_mask, cls)
        tt = np.asarray(enc["token_type_ids"][i], dtype=np.int8) if has_tt else None
        parts.add(np.asarray(ids, dtype=np.int32), offs, tt, mapping[i], cls, start, end)
    if skipped:
        log.info("skipped %d training windows of questions with no locatable answer", skipped)
    return parts.features({"n_examples": len(examples), "params": params.__dict__, "training": training})


def _encode(examples: Sequence[Example], tokenizer, params: FeatureParams):
    """The tokenizer's overflowing windows of (question, context) pairs, and which sequence is the context.

    Tokenizers that pad on the left (XLNet-style) take the context first and truncate it instead.
    """
    pad_right = tokenizer.padding_side == "right"
    questions = truncate_questions(
        [ex.question for ex in examples], tokenizer, question_room(params, tokenizer)
    )
    contexts = [ex.context for ex in examples]
    first, second = (questions, contexts) if pad_right else (contexts, questions)
    enc = tokenizer(
        first,
        second,
        truncation="only_second" if pad_right else "only_first",
        max_length=params.max_seq_length,
        stride=params.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    return enc, 1 if pad_right else 0


def tokenized_or_named(examples: Sequence[Example], call: Callable[[Sequence[Example]], T]) -> T:
    """``call(examples)``, where a tokenizer panic becomes a :class:`DataError` naming the first question it
    fails on alone (a panic of the Rust tokenizers is pyo3's ``PanicException``, a ``BaseException`` that
    ``except Exception`` misses, with no word of which input caused it). Each question is tried again on its own
    only after such a failure."""
    try:
        return call(examples)
    except BaseException as err:
        if type(err).__name__ != "PanicException":
            raise
        first = err
    for ex in examples:
        try:
            call([ex])
        except BaseException as err:
            if type(err).__name__ != "PanicException":
                raise
            raise DataError(f"the tokenizer failed on this question: {err}", qid=ex.id) from None
    raise DataError(f"the tokenizer failed on these {len(examples)} questions together: {first}") from None


def question_room(params: FeatureParams, tokenizer) -> int:
    """Question tokens a window can hold: ``max_query_length`` (at most half the window), and fewer where the
    context part would otherwise not be longer than ``doc_stride`` (the tokenizer refuses such a stride, and a
    window must advance past its overlap). Only questions that would not fit are cut further."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    room = params.max_seq_length - params.doc_stride - special - 1
    if room < 1:
        raise ConfigError(
            f"--doc-stride {params.doc_stride} leaves no room for a question in windows of --max-seq-length "
            f"{params.max_seq_length} ({special} special tokens): use a stride of at most "
            f"{params.max_seq_length - special - 2}, or longer windows"
        )
    return min(params.max_query_length, room)


def _answer_labels(ex: Example, offs: np.ndarray, ctx_mask: np.ndarray, cls: int) -> tuple[int, int]:
    """Start/end token labels of one window: the answer's tokens, or ``(cls, cls)`` when it has none here."""
    answer = None if ex.is_impossible else ex.train_answer
    if answer is None:
        return cls, cls
    # label the answer without surrounding white space, which no token covers
    lead = len(answer.text) - len(answer.text.lstrip())
    core = len(answer.text.strip()) or len(answer.text)
    return _label(offs, ctx_mask, answer.start + lead, answer.start + lead + core, cls)


@dataclass
class _WindowParts:
    """Per-window arrays collected while tokenizing, concatenated into :class:`Features` at the end."""

    ids: list[np.ndarray] = field(default_factory=list)
    offsets: list[np.ndarray] = field(default_factory=list)
    token_types: list[np.ndarray] = field(default_factory=list)
    example_index: list[int] = field(default_factory=list)
    cls_index: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def add(self, ids, offsets, token_types, example: int, cls: int, start: int, end: int) -> None:
        self.ids.append(ids)
        self.offsets.append(offsets)
        if token_types is not None:
            self.token_types.append(token_types)
        self.example_index.append(example)
        self.cls_index.append(cls)
        self.starts.append(start)
        self.ends.append(end)

    def features(self, meta: dict) -> Features:
        lengths = np.array([len(p) for p in self.ids], dtype=np.int64)
        return Features(
            input_ids=np.concatenate(self.ids) if self.ids else np.zeros(0, np.int32),
            bounds=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            example_index=np.asarray(self.example_index, dtype=np.int64),
            offsets=np.concatenate(self.offsets) if self.offsets else np.zeros((0, 2), np.int32),
            cls_index=np.asarray(self.cls_index, dtype=np.int64),
            start_positions=np.asarray(self.starts, dtype=np.int64),
            end_positions=np.asarray(self.ends, dtype=np.int64),
            token_type_ids=np.concatenate(self.token_types) if self.token_types else None,
            meta=meta,
        )


# -- cache -------------------------------------------------------------------------------------------------
# tokenizer -> (padding side, fingerprint): entries go when their tokenizer is garbage-collected
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything in the tokenizer that changes ids or offsets (vocabulary, normalizer, padding side).

    Serializing a 250k-piece tokenizer takes a noticeable fraction of a second, so the hash is computed once
    per tokenizer object and padding side (the one setting callers change after loading) and kept in a side
    table that does not keep the tokenizer alive.
    """
    try:
        memo = _FINGERPRINTS.get(tokenizer)
    except TypeError:  # not weakly referenceable: hashed every time
        memo = None
    if memo is not None and memo[0] == tokenizer.padding_side:
        return memo[1]
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(tokenizer.get_vocab()).encode())
    h.update(f"{type(tokenizer).__name__}|{tokenizer.padding_side}|{tokenizer.model_input_names}".encode())
    digest = h.hexdigest()
    with contextlib.suppress(TypeError):
        _FINGERPRINTS[tokenizer] = (tokenizer.padding_side, digest)
    return digest


def examples_fingerprint(examples: Sequence[Example]) -> str:
    """A hash of the example contents that features depend on (ids, texts, answers)."""
    h = hashlib.sha256()
    for ex in examples:
        ans = ex.train_answer
        h.update(
            json.dumps(
                [
                    ex.id,
                    ex.question,
                    ex.context,
                    ex.is_impossible,
                    None if ans is None else [ans.text, ans.start],
                ],
                ensure_ascii=False,
            ).encode()
        )
    return h.hexdigest()


def default_cache_dir() -> Path:
    """Where token windows are cached: ``$XLQA_CACHE/features`` (see :mod:`xlqa.settings`)."""
    from xlqa.settings import get_settings

    return get_settings().features_dir


def cached_features(
    examples: Sequence[Example],
    tokenizer,
    params: FeatureParams | None = None,
    *,
    training: bool = False,
    cache_dir: str | Path | None = None,
    tokenizer_hash: str | None = None,
) -> Features:
    """:func:`build_features`, cached on disk by a hash of the data, the tokenizer and the parameters.

    ``cache_dir=False``-like values (empty string) disable the cache.
    """
    params = params or FeatureParams()
    if cache_dir == "":
        return build_features(examples, tokenizer, params, training=training)
    key = hashlib.sha256(
        json.dumps(
            [
                FEATURES_VERSION,
                examples_fingerprint(examples),
                tokenizer_hash or tokenizer_fingerprint(tokenizer),
                params.__dict__,
                training,
            ]
        ).encode()
    ).hexdigest()[:32]
    path = Path(cache_dir or default_cache_dir()) / f"{key}.npz"
    if path.exists():
        try:
            feats = Features.load(path)
            # said to the user: a repeated evaluation or training skips tokenization, and should say so
            log.info("%d windows of %d questions from the feature cache (tokenization skipped): %s",
                     len(feats), len(examples), path)  # fmt: skip
            feats.meta["cache"] = "hit"
            return feats
        except (OSError, ValueError, KeyError) as err:  # a damaged entry is rebuilt, never trusted
            log.warning("ignoring unreadable feature cache %s: %s", path, err)
    t0 = time.perf_counter()
    feats = build_features(examples, tokenizer, params, training=training)
    log.info("tokenized %d questions into %d windows in %.1f s (cached for the next run)",
             len(examples), len(feats), time.perf_counter() - t0)  # fmt: skip
    try:
        feats.save(path)
    except OSError as err:
        log.warning("could not write feature cache %s: %s", path, err)
    feats.meta["cache"] = "miss"
    return feats

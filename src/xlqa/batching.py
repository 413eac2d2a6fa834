"""Batches of token windows: dynamic padding and length-aware ordering.

Padding happens per batch, to the longest window in it, never to ``max_seq_length``. Evaluation batches are
sorted by length so that windows of similar size travel together; training batches are shuffled, then sorted by
length inside "mega-batches" of ``50 x batch_size`` windows, which keeps most of the randomness and most of the
speed (the idea of transformers' LengthGroupedSampler).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from xlqa.features import Features


class WindowDataset(Dataset):
    """A torch view of :class:`~xlqa.features.Features`: item ``i`` is window ``i`` as unpadded arrays."""

    def __init__(self, features: Features, *, with_labels: bool = True):
        self.features = features
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        f = self.features
        a, b = int(f.bounds[i]), int(f.bounds[i + 1])
        item = {"index": i, "input_ids": f.input_ids[a:b]}
        if f.token_type_ids is not None:
            item["token_type_ids"] = f.token_type_ids[a:b]
        if self.with_labels:
            item["start_positions"] = int(f.start_positions[i])
            item["end_positions"] = int(f.end_positions[i])
        return item


def default_pad_multiple() -> int:
    """Batch widths are rounded up to this: 8 on CPU, 64 where CUDA is available.

    On an H100 a bert-base step is bound by kernel launches more than by tokens, and every new batch width
    costs kernel selection: with widths rounded to 64, length-sorted evaluation ran 1.53x faster than
    padding to 384, with 8 it ran 0.93x (benchmarks/results/batching-h100-*.json). On CPU, cost follows tokens.
    """
    return 64 if torch.cuda.is_available() else 8


class Collator:
    """Pads a list of windows to the longest one (rounded up), on the tokenizer's padding side.

    Labels are token positions, so they shift with left padding.
    """

    def __init__(self, pad_token_id: int, *, pad_left: bool = False, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_left = pad_left
        self.multiple = max(1, pad_to_multiple_of or default_pad_multiple())

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        width = -(-width // self.multiple) * self.multiple
        n = len(items)
        ids = np.full((n, width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        has_tt = "token_type_ids" in items[0]
        tt = np.zeros((n, width), dtype=np.int64) if has_tt else None
        shift = np.zeros(n, dtype=np.int64)
        for r, it in enumerate(items):
            L = len(it["input_ids"])
            sl = slice(width - L, width) if self.pad_left else slice(0, L)
            shift[r] = width - L if self.pad_left else 0
            ids[r, sl] = it["input_ids"]
            mask[r, sl] = 1
            if has_tt:
                tt[r, sl] = it["token_type_ids"]
        batch = {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
            "shift": torch.from_numpy(shift),
        }
        if has_tt:
            batch["token_type_ids"] = torch.from_numpy(tt)
        if "start_positions" in items[0]:
            batch["start_positions"] = torch.tensor([it["start_positions"] for it in items]) + batch["shift"]
            batch["end_positions"] = torch.tensor([it["end_positions"] for it in items]) + batch["shift"]
        return batch


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Evaluation order: windows sorted by length (longest first, so memory peaks show at once), then chunked."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def shuffled_batches(lengths: np.ndarray, batch_size: int, seed: int, mega: int = 50) -> list[list[int]]:
    """Training order for one epoch: a seeded shuffle, length-sorted inside mega-batches, batches shuffled.

    Deterministic for a given ``seed`` (pass ``base_seed + epoch``), so a resumed run sees the same batches.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    batches: list[list[int]] = []
    chunk = batch_size * mega
    for i in range(0, len(perm), chunk):
        part = perm[i : i + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches.extend(part[j : j + batch_size].tolist() for j in range(0, len(part), batch_size))
    order = rng.permutation(len(batches))
    return [batches[k] for k in order]

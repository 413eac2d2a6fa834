"""Shared fixtures: the real data in ../shared/data and the offline models in ../shared/models.

Tests that need that folder skip with a reason in a user's checkout, but fail when CI=true so they never
skip silently in CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XLQA_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"


def _need(path: Path, what: str) -> Path:
    if path.exists():
        return path
    msg = f"{what} not found at {path} (set XLQA_SHARED to the folder holding data/ and models/)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real SQuAD-format data sets (../shared/data)."""
    return _need(SHARED_DATA, "shared data")


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """The folder of offline tokenizers (../shared/models)."""
    return _need(SHARED_MODELS, "shared models")


@pytest.fixture(scope="session")
def mbert_tokenizer(shared_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(shared_models / "mbert-cased-tokenizer"))


@pytest.fixture(scope="session")
def xlmr_tokenizer(shared_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(shared_models / "xlm-r-tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, shared_models) -> Path:
    """A tiny random-weight BERT QA model with the real mBERT tokenizer (for speed where learning is not the point)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(str(shared_models / "mbert-cased-tokenizer"))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertForQuestionAnswering(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture()
def xlqa_cache(tmp_path, monkeypatch) -> Path:
    """A private XLQA_CACHE for one test (feature cache, converted models)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XLQA_CACHE", str(cache))
    return cache


def write_squad(path: Path, examples: list[dict], version: str = "1.1") -> Path:
    """Write a small SQuAD-format file; each example: {id, question, context, answers: [(text, start)]}."""
    import json

    paragraphs = [
        {
            "context": ex["context"],
            "qas": [
                {
                    "id": ex["id"],
                    "question": ex["question"],
                    "answers": [{"text": t, "answer_start": s} for t, s in ex["answers"]],
                    **({"is_impossible": True} if ex.get("impossible") else {}),
                }
            ],
        }
        for ex in examples
    ]
    path.write_text(json.dumps({"version": version, "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path

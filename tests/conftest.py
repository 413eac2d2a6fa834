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

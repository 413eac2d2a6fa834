"""``--freeze-layers N``: the embeddings and the bottom N layers do not train, and backward stops above them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_guard import tiny_config
from xlqa.errors import ConfigError
from xlqa.modeling import freeze, load_qa_model


def test_the_bottom_layers_and_the_embeddings_stop_training(tiny_model_dir):
    model, _ = load_qa_model(str(tiny_model_dir))
    layers = model.bert.encoder.layer
    freeze(model, layers=1)
    assert not any(p.requires_grad for p in model.bert.embeddings.parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for layer in layers[1:] for p in layer.parameters())
    assert all(p.requires_grad for p in model.qa_outputs.parameters())


def test_more_layers_than_the_model_has_names_the_flag(tiny_model_dir):
    model, _ = load_qa_model(str(tiny_model_dir))
    n = len(model.bert.encoder.layer)
    with pytest.raises(ConfigError, match=f"--freeze-layers {n + 1}: .* has {n} layers"):
        freeze(model, layers=n + 1)


def test_a_run_leaves_frozen_weights_as_they_were(tmp_path, tiny_model_dir):
    from xlqa.train.loop import train

    before, _ = load_qa_model(str(tiny_model_dir))
    result = train(tiny_config(tmp_path, tiny_model_dir, max_steps=3, freeze_layers=1))
    after, _ = load_qa_model(str(Path(result.best_dir)))
    old, new = before.state_dict(), after.state_dict()
    frozen = [k for k in old if k.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    trained = [k for k in old if k.startswith("bert.encoder.layer.1.") and k.endswith("weight")]
    assert frozen and trained
    assert all(torch.equal(old[k], new[k]) for k in frozen)
    assert any(not torch.equal(old[k], new[k]) for k in trained)

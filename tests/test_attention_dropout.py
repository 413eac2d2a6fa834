"""``--attention-dropout`` and ``--hidden-dropout``: the dropouts a model trains with (attention dropout 0 lets
PyTorch's fused CPU attention kernel run, which refuses dropout; hidden dropout 0 skips drawing its masks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_guard import tiny_config
from xlqa.config import TrainConfig
from xlqa.errors import ConfigError, ModelLoadError
from xlqa.modeling import load_qa_model


def _attention_dropouts(model) -> set[float]:
    return {layer.attention.self.dropout.p for layer in model.bert.encoder.layer}


def test_the_override_reaches_every_attention_layer(tiny_model_dir):
    default, _ = load_qa_model(str(tiny_model_dir))
    assert _attention_dropouts(default) == {0.1}  # the config's own
    model, _ = load_qa_model(str(tiny_model_dir), attention_dropout=0.0)
    assert _attention_dropouts(model) == {0.0} and model.config.attention_probs_dropout_prob == 0.0
    # hidden dropout is left as it was
    assert (
        model.bert.encoder.layer[0].output.dropout.p == default.bert.encoder.layer[0].output.dropout.p == 0.1
    )


def test_a_run_trained_without_attention_dropout_records_it(tmp_path, tiny_model_dir):
    from xlqa.train.loop import train

    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=3, attention_dropout=0.0)
    result = train(cfg)
    saved = json.loads((Path(result.best_dir) / "config.json").read_text())
    assert saved["attention_probs_dropout_prob"] == 0.0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["attention_dropout"] == 0.0


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_out_of_range_values_name_the_flag(value):
    cfg = TrainConfig(model="m", train="t.json", output="o", attention_dropout=value)
    with pytest.raises(ConfigError, match="--attention-dropout"):
        cfg.validate()


def test_a_model_without_the_setting_is_refused(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(
        T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8, vocab_size=64)
    ).save_pretrained(tmp_path / "t5")
    with pytest.raises(ModelLoadError, match="--attention-dropout"):
        load_qa_model(str(tmp_path / "t5"), attention_dropout=0.0)


def test_hidden_dropout_reaches_every_dropout_but_attention(tiny_model_dir):
    model, _ = load_qa_model(str(tiny_model_dir), hidden_dropout=0.0)
    layer = model.bert.encoder.layer[0]
    assert model.config.hidden_dropout_prob == 0.0
    assert (
        layer.output.dropout.p == layer.attention.output.dropout.p == model.bert.embeddings.dropout.p == 0.0
    )
    assert _attention_dropouts(model) == {0.1}  # left as it was
    both, _ = load_qa_model(str(tiny_model_dir), hidden_dropout=0.0, attention_dropout=0.0)
    assert {m.p for m in both.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}


def test_a_run_trained_without_any_dropout_records_it(tmp_path, tiny_model_dir):
    from xlqa.train.loop import train

    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=3, attention_dropout=0.0, hidden_dropout=0.0)
    saved = json.loads((Path(train(cfg).best_dir) / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.0


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_out_of_range_hidden_dropout_names_the_flag(value):
    with pytest.raises(ConfigError, match="--hidden-dropout"):
        TrainConfig(model="m", train="t.json", output="o", hidden_dropout=value).validate()


def test_the_attention_implementation_is_chosen_and_trains(tmp_path, tiny_model_dir):
    from xlqa.train.loop import train

    default, _ = load_qa_model(str(tiny_model_dir))
    eager, _ = load_qa_model(str(tiny_model_dir), attention="eager")
    assert default.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with torch.no_grad():  # the same function either way
        torch.testing.assert_close(
            eager.eval()(input_ids=ids).start_logits, default.eval()(input_ids=ids).start_logits
        )
    result = train(
        tiny_config(tmp_path, tiny_model_dir, max_steps=2, attention="eager", attention_dropout=0.0)
    )
    assert result.steps == 2
    with pytest.raises(ConfigError, match="--attention"):
        TrainConfig(model="m", train="t.json", output="o", attention="flash").validate()

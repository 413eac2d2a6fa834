"""``--bf16-weights``: forward and backward on a bf16 copy, AdamW on fp32 master weights (xlqa.train.bf16)."""

from __future__ import annotations

import json
import shutil

import torch
from safetensors.torch import load_file

from test_guard import events_of, tiny_config
from xlqa.train.bf16 import Bf16Weights


def _pair():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    model[0].requires_grad_(False)
    return model, Bf16Weights(model)


def test_gradients_reach_the_fp32_weights_and_accumulate_in_fp32():
    model, bf16 = _pair()
    assert all(p.dtype == torch.bfloat16 for p in bf16.module.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.randn(4, 8)
    bf16.module(x.bfloat16()).float().pow(2).sum().backward()
    first = [c.grad.float().clone() for _, c in bf16.pairs]
    bf16.push_grads()
    assert all(c.grad is None for _, c in bf16.pairs)  # freed: the next batch starts from zero
    assert model[0].weight.grad is None  # frozen: no gradient anywhere
    for (m, _), g in zip(bf16.pairs, first, strict=True):
        assert m.grad.dtype == torch.float32 and torch.equal(m.grad, g)
    bf16.module(x.bfloat16()).float().pow(2).sum().backward()  # a second batch, accumulated
    bf16.push_grads()
    for (m, _), g in zip(bf16.pairs, first, strict=True):
        torch.testing.assert_close(m.grad, 2 * g)


def test_pull_copies_the_trained_weights_and_sync_every_weight():
    model, bf16 = _pair()
    with torch.no_grad():
        model[2].weight.add_(1.0)
        model[0].weight.add_(1.0)  # frozen weights change only by a load (resume, rollback)
    bf16.pull()
    assert torch.equal(bf16.module[2].weight, model[2].weight.bfloat16())
    assert not torch.equal(bf16.module[0].weight, model[0].weight.bfloat16())
    bf16.sync()
    assert torch.equal(bf16.module[0].weight, model[0].weight.bfloat16())


def test_a_copy_only_where_wanted_and_the_step_runs_in_bf16():
    model, _ = _pair()
    copy = Bf16Weights.when(model, True, "bf16")
    assert isinstance(copy, Bf16Weights) and copy.master is model
    assert Bf16Weights.when(model, False, "bf16") is None
    assert Bf16Weights.when(model, True, "fp32") is None and Bf16Weights.when(model, True, "fp16") is None


def test_a_run_learns_on_the_bf16_copy_and_keeps_fp32_weights(tmp_path, tiny_model_dir, xlqa_cache):
    from xlqa.train.loop import train

    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=30, precision="bf16", bf16_weights=True, lr=3e-3)
    result = train(cfg)
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["bf16_weights"] is True
    losses = [e["loss"] for e in events_of(run) if e["event"] == "step"]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert result.best_f1 > 50
    # the exported weights are the fp32 masters: updates below bf16's resolution were kept, not rounded away
    weights = load_file(run / "best" / "model.safetensors")
    trained = weights["bert.encoder.layer.1.output.dense.weight"]
    assert trained.dtype == torch.float32
    assert not torch.equal(trained, trained.bfloat16().float())


def test_without_bf16_precision_the_flag_changes_nothing(tmp_path, tiny_model_dir, xlqa_cache):
    from xlqa.train.loop import train

    train(tiny_config(tmp_path, tiny_model_dir, max_steps=2, precision="fp32", bf16_weights=True))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["bf16_weights"] is False


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_model_dir, xlqa_cache):
    from xlqa.train.loop import train

    kw = dict(max_steps=8, save_every=4, keep_checkpoints=0, precision="bf16", bf16_weights=True)
    train(tiny_config(tmp_path, tiny_model_dir, **kw))
    first = tmp_path / "run"
    resumed_out = tmp_path / "resumed"
    cfg = tiny_config(tmp_path, tiny_model_dir, **kw, output=str(resumed_out))
    train(cfg, resume_from=first / "checkpoints" / "step-0000004")
    a = load_file(first / "checkpoints" / "step-0000008" / "model.safetensors")
    b = load_file(resumed_out / "checkpoints" / "step-0000008" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    shutil.rmtree(resumed_out)


def test_the_planner_times_the_steps_the_loop_takes(tmp_path, tiny_model_dir, xlqa_cache):
    from xlqa import jobs
    from xlqa.config import EstimateConfig
    from xlqa.train.loop import train

    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=4, precision="bf16", bf16_weights=True)
    opts = EstimateConfig(model=[cfg.model], train=cfg.train, dev=cfg.dev, precision=["bf16"], batch_size=[4],
                          max_steps=4, bf16_weights=True, max_seq_length=64, max_query_length=32, doc_stride=32,
                          measure_steps=2, measure_batches=1, progress=False)  # fmt: skip
    est = jobs.estimate(opts)[0]
    assert est.steps == train(cfg).steps == 4
    assert est.steps_seconds.expected > 0 and len(est.measured["step_seconds"]) >= 1


def test_the_flag_is_on_the_command_line():
    from typer.testing import CliRunner

    from xlqa.cli.main import app

    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "--bf16-weights" in out.output

"""The non-finite guard: skip, roll back with a lower learning rate, stop with a diagnosis and a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import write_squad
from xlqa.config import TrainConfig
from xlqa.errors import TrainingDiverged
from xlqa.train.guard import NonFiniteGuard, describe, find_overflow

CITIES = ["Paris", "Berlin", "Rome", "Madrid", "Lisbon", "Vienna", "Prague", "Warsaw"]


def tiny_squad(path: Path, n: int = 40, offset: int = 0) -> Path:
    """``n`` short questions whose answer is a city named in a one-sentence context."""
    exs = []
    for i in range(offset, offset + n):
        city = CITIES[i % len(CITIES)]
        prefix = f"Person {i} lives in "
        exs.append({"id": f"q{i}", "question": f"Where does person {i} live?",
                    "context": f"{prefix}{city}. The weather there is fine today.", "answers": [(city, len(prefix))]})  # fmt: skip
    return write_squad(path, exs)


def tiny_config(tmp_path: Path, model_dir: Path, **kw) -> TrainConfig:
    train = tiny_squad(tmp_path / "train.json")
    dev = tiny_squad(tmp_path / "dev.json", n=16, offset=100)
    base = dict(model=str(model_dir), train=str(train), dev=str(dev), output=str(tmp_path / "run"), max_steps=10,
                batch_size=4, lr=1e-3, progress=False, log_every=1, save_every=100,
                max_seq_length=64, max_query_length=32,
                doc_stride=32, cache_dir="", precision="fp32", warmup_ratio=0.0)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def events_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


# -- the guard's decisions, on a plain linear model ---------------------------------------------------------------
def _linear():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / 100)
    return model, opt, sched


def _good_update(model, opt, sched):
    model(torch.ones(3, 4)).sum().backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_skip_then_rollback_restores_state_and_lowers_lr_cumulatively():
    model, opt, sched = _linear()
    guard = NonFiniteGuard(
        model, opt, sched, max_consecutive=2, snapshot_every=2, lr_factor=0.5, max_rollbacks=2
    )
    guard.take_snapshot(0)
    for step in (1, 2):
        _good_update(model, opt, sched)
        guard.good_step(step)
    assert guard.snapshot_step == 2  # refreshed after 2 good steps
    good_w = model.weight.detach().clone()
    good_lr = opt.param_groups[0]["lr"]
    good_adam = opt.state_dict()["state"][0]["exp_avg"].clone()
    assert guard.bad_step() == "skip"
    _good_update(
        model, opt, sched
    )  # state moves on (as if something went wrong), then the rollback undoes it
    assert guard.bad_step() == "rollback"
    info = guard.rollback()
    assert info == {"to_step": 2, "rollbacks": 1, "lr_scale": 0.5, "lr": pytest.approx(good_lr * 0.5)}
    assert torch.equal(model.weight, good_w)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], good_adam)
    assert sched.last_epoch == 2 and sched.base_lrs == [pytest.approx(5e-3)]
    # a second rollback to the same snapshot halves again (0.25 overall), not back to 0.5
    guard.bad_step()
    assert guard.bad_step() == "rollback"
    assert guard.rollback()["lr"] == pytest.approx(good_lr * 0.25)
    sched.step()  # the schedule keeps its shape at the lowered scale
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25 * (1 - 3 / 100))
    guard.bad_step()
    assert guard.bad_step() == "diverged"
    assert guard.state_dict() == {"skipped": 6, "rollbacks": 2, "lr_scale": 0.25}


def test_a_resumed_guard_gets_a_fresh_rollback_allowance():
    model, opt, sched = _linear()
    guard = NonFiniteGuard(model, opt, sched, max_consecutive=1, max_rollbacks=1)
    guard.load_state_dict({"skipped": 5, "rollbacks": 3, "lr_scale": 0.125})
    guard.take_snapshot(10)
    assert guard.bad_step() == "rollback"
    assert guard.rollback()["lr_scale"] == 0.0625
    assert guard.bad_step() == "diverged"


def test_find_overflow_names_the_first_module_in_both_directions():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)
    )
    with torch.no_grad():
        model[2].weight.fill_(1e38)  # finite weights, overflowing outputs
    diag = find_overflow(model, lambda: model(torch.full((2, 4), 10.0)).sum())
    assert diag["forward"] == "2" and diag["forward_type"] == "Linear"
    assert diag["reproduced"] and diag["nonfinite_grads"] == ["3.weight"]  # its input overflowed
    assert all(p.grad is None for p in model.parameters())  # cleared after the diagnosis
    assert "activations first overflowed in 2 (Linear)" in describe({**diag, "step": 7, "precision": "fp32"})
    # finite forward, overflowing backward: the gradient reaching module 0's output is 10 x 1e38
    grad_only = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    with torch.no_grad():
        grad_only[1].weight.fill_(10.0)
        grad_only[0].weight.fill_(1e-4)
    diag = find_overflow(
        grad_only, lambda: (grad_only(torch.full((1, 4), 1e-3)) - grad_only[1].bias).sum() * 1e38
    )
    assert diag["forward"] is None and diag["backward"] == "0" and diag["backward_type"] == "Linear"
    assert "gradients first overflowed in 0 (Linear)" in describe(diag)
    healthy = find_overflow(model[:2], lambda: model[:2](torch.ones(2, 4)).sum())
    assert healthy["forward"] is None and not healthy["reproduced"]
    assert "finite activations" in describe(healthy)


# -- the guard inside the training loop (tiny random BERT) ---------------------------------------------------------
@pytest.mark.parametrize("where", ["loss", "grad"])
def test_injected_nonfinite_steps_are_skipped_and_rolled_back(tmp_path, tiny_model_dir, where):
    from xlqa.train.faults import Faults
    from xlqa.train.loop import train

    cfg = tiny_config(tmp_path, tiny_model_dir, guard_max_consecutive=3, guard_snapshot_every=2)
    result = train(cfg, faults=Faults(nonfinite_steps={3, 5, 6, 7}, poison=where))
    assert result.status == "finished" and result.steps == 10
    assert result.health == {"skipped": 4, "rollbacks": 1, "lr_scale": 0.5}
    ev = events_of(Path(cfg.output))
    bad = [e for e in ev if e["event"] == "nonfinite"]
    assert [e["step"] for e in bad] == [3, 5, 6, 7]
    assert [e["action"] for e in bad] == ["skip", "skip", "skip", "rollback"]
    assert all(isinstance(e["grad_norm"], str) for e in bad)  # "nan"/"inf": the log stays strict JSON
    (rb,) = [e for e in ev if e["event"] == "rollback"]
    assert (
        rb["step"] == 7 and rb["to_step"] == 2 and rb["lr_scale"] == 0.5
    )  # snapshots at 0, 2 (every 2 good)
    steps = {e["step"]: e for e in ev if e["event"] == "step"}
    assert steps[10]["loss"] is not None and steps[10]["nonfinite"] == 4 and steps[10]["rollbacks"] == 1
    assert steps[8]["lr"] < steps[4]["lr"] * 0.6  # lowered by the rollback
    from safetensors.torch import load_file

    weights = load_file(Path(result.best_dir) / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert [e["event"] for e in ev][-1] == "end"


def test_persistent_faults_stop_with_a_diagnosis_and_a_resumable_checkpoint(tmp_path, tiny_model_dir):
    from xlqa.train.checkpoint import latest_checkpoint
    from xlqa.train.faults import Faults
    from xlqa.train.loop import train

    cfg = tiny_config(tmp_path, tiny_model_dir, guard_max_consecutive=2, guard_max_rollbacks=1)
    with pytest.raises(TrainingDiverged, match="injected or nondeterministic") as info:
        train(cfg, faults=Faults(nonfinite_steps=set(range(3, 11))))
    diag = info.value.diagnosis
    assert diag["step"] == 6 and diag["precision"] == "fp32" and diag["lr"] > 0 and not diag["reproduced"]
    ev = events_of(Path(cfg.output))
    assert [e["event"] for e in ev].count("rollback") == 1
    assert ev[-1]["event"] == "diagnosis" and ev[-1]["checkpoint"] == str(latest_checkpoint(cfg.output))
    # the checkpoint is the last good state, and training resumes from it: without the faults, to the end
    meta = json.loads((latest_checkpoint(cfg.output) / "xlqa.json").read_text())
    assert meta["step"] == 6
    resumed = train(cfg, resume_from=cfg.output)
    assert resumed.status == "finished" and resumed.steps == 10 and resumed.health["rollbacks"] == 2


def test_real_overflow_is_diagnosed_at_its_module(tmp_path, tiny_model_dir):
    """Weights scaled past fp32's range in one feed-forward layer: every step overflows; the diagnosis names it."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from xlqa.train.loop import train

    model = AutoModelForQuestionAnswering.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        w = model.bert.encoder.layer[1].intermediate.dense.weight
        w.copy_(torch.sign(torch.randn_like(w)) * 1e38)  # finite weights whose outputs exceed fp32's range
    broken = tmp_path / "broken"
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(broken)
    cfg = tiny_config(tmp_path, broken, guard_max_consecutive=2, guard_max_rollbacks=1)
    with pytest.raises(TrainingDiverged) as info:
        train(cfg)
    diag = info.value.diagnosis
    assert diag["forward"] == "bert.encoder.layer.1.intermediate.dense" and diag["reproduced"]
    assert diag["step"] == 4 and "bert.encoder.layer.1.intermediate.dense (Linear)" in str(info.value)

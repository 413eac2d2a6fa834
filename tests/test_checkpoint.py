"""Checkpoints: atomic writes, RNG round trips, SIGKILL (mid-write) then --resume ends where an uninterrupted run does."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
from safetensors.torch import load_file

from test_guard import tiny_squad
from xlqa.train.checkpoint import capture_rng, latest_checkpoint, list_checkpoints, restore_rng

XLQA = [sys.executable, "-m", "xlqa.cli.main"]
# a run registered in the store, whose checkpoint of step 6 sleeps half-written (argv: its config as JSON)
SLOW_CHECKPOINT_RUN = """
import json, sys
from dataclasses import asdict
from xlqa.config import TrainConfig
from xlqa.runs.store import RunStore
from xlqa.train.faults import Faults
from xlqa.train.loop import train

cfg = TrainConfig(**json.loads(sys.argv[1]))
RunStore().create_run("train", model=cfg.model, config=asdict(cfg), dir=cfg.output)
train(cfg, faults=Faults(checkpoint_delay=(6, 120.0)))
"""


def test_rng_round_trip_covers_python_numpy_torch():
    state = capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_only_complete_checkpoints_count(tmp_path):
    ck = tmp_path / "checkpoints"
    for name, files in {
        "step-0000002": ["trainer_state.pt", "xlqa.json", "model.safetensors"],
        "step-0000010": ["trainer_state.pt", "xlqa.json"],
        "step-0000004": ["model.safetensors"],  # no state: not complete
        ".tmp-step-0000006": ["trainer_state.pt", "xlqa.json"],  # killed before the rename
        "best": ["trainer_state.pt", "xlqa.json"],
    }.items():
        (ck / name).mkdir(parents=True)
        for f in files:
            (ck / name / f).write_text("x")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000002", "step-0000010"]
    assert latest_checkpoint(tmp_path).name == "step-0000010"
    assert latest_checkpoint(tmp_path / "nothing") is None


def _wait_for(cond, timeout: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_while_writing_a_checkpoint_then_resume_matches_an_uninterrupted_run(
    tmp_path, tiny_model_dir, xlqa_cache
):
    from xlqa.config import TrainConfig
    from xlqa.train.control import config_of_run
    from xlqa.train.loop import train

    train_file = tiny_squad(tmp_path / "train.json")
    dev_file = tiny_squad(tmp_path / "dev.json", n=16, offset=100)
    out = tmp_path / "B"
    env = {**os.environ, "XLQA_RUNS": str(tmp_path / "store"), "COLUMNS": "200"}
    cfg = TrainConfig(model=str(tiny_model_dir), train=str(train_file), dev=str(dev_file), output=str(out),
                      max_steps=14, batch_size=4, lr=1e-3, save_every=3,
                      max_seq_length=64, max_query_length=32, doc_stride=32,
                      precision="fp32", progress=False)  # fmt: skip
    # the checkpoint of step 6 sleeps half-written: SIGKILL lands mid-run and mid-write
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CHECKPOINT_RUN, json.dumps(asdict(cfg))], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    tmp_ckpt = out / "checkpoints" / ".tmp-step-0000006"
    _wait_for(lambda: (tmp_ckpt / "model.safetensors").exists(), 240, proc, "the step-6 checkpoint write")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(out)] == ["step-0000003"] and tmp_ckpt.exists()

    resumed = subprocess.run([*XLQA, "train", "--resume", str(out)], env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not tmp_ckpt.exists()  # the half-written folder was cleaned up by the next save
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    (res,) = [e for e in events if e["event"] == "resume"]
    assert res["step"] == 3 and events[-1]["event"] == "end"
    store_run = json.loads((out / "run.json").read_text())
    assert store_run["status"] == "finished"

    # the same config, uninterrupted, in this process
    cfg = config_of_run(out)
    cfg.output = str(tmp_path / "A")
    uninterrupted = train(cfg)
    wa = load_file(tmp_path / "A" / "checkpoints" / "step-0000014" / "model.safetensors")
    wb = load_file(out / "checkpoints" / "step-0000014" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    results_b = json.loads((out / "train_results.json").read_text())
    assert [h["f1"] for h in results_b["history"]] == [h.f1 for h in uninterrupted.history]
    assert results_b["steps"] == uninterrupted.steps == 14

    # any checkpoint is a model folder that evaluation takes directly
    from xlqa.evaluate import EvalConfig, evaluate_model

    ckpt = latest_checkpoint(out)
    res = evaluate_model(EvalConfig(model=str(ckpt), data=[str(dev_file)], output=str(tmp_path / "ev"),
                                    progress=False, max_seq_length=64, doc_stride=32, precision="fp32"))  # fmt: skip
    assert res.datasets[0].f1 == results_b["history"][-1]["f1"]

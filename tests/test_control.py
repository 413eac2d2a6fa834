"""Run control with real background processes: train --detach, runs status, runs stop, runs resume."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from test_guard import tiny_squad
from xlqa.allocator import chosen
from xlqa.cli.main import app
from xlqa.errors import RunStoreError
from xlqa.runs.store import RunStore
from xlqa.train.control import run_status, stop_run

# imported first by the detached training process (a sitecustomize on its PYTHONPATH): the checkpoint of step 10
# takes a while, time to read the run's status and stop it mid-run
SLOW_CHECKPOINT = """
import functools
import xlqa.train.loop
from xlqa.train.faults import Faults

xlqa.train.loop.train = functools.partial(xlqa.train.loop.train, faults=Faults(checkpoint_delay=(10, 4.0)))
"""


def _invoke(args: list[str], env: dict) -> str:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})
    assert result.exit_code == 0, result.output
    return result.output


def wait_for(cond, timeout: float, what: str, log: Path | None = None):
    """``cond()``'s first truthy value, polled until ``timeout``; else fail with the end of ``log``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    detail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{detail}")


def _run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_detach_status_stop_resume(tmp_path, tiny_model_dir, xlqa_cache, monkeypatch):
    from xlqa.train.control import config_of_run, process_alive, read_pid
    from xlqa.train.loop import train

    store = tmp_path / "store"
    env = {"XLQA_RUNS": str(store)}
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_CHECKPOINT)
    monkeypatch.setenv("PYTHONPATH", str(hooks), prepend=os.pathsep)
    train_file = tiny_squad(tmp_path / "train.json")
    dev_file = tiny_squad(tmp_path / "dev.json", n=16, offset=100)
    out = tmp_path / "run"
    t0 = time.time()
    printed = _invoke(
        ["train", "--model", str(tiny_model_dir), "--train", str(train_file), "--dev", str(dev_file),
         "--output", str(out), "--max-steps", "24", "--batch-size", "4", "--lr", "1e-3", "--save-every", "100",
         "--max-seq-length", "64", "--max-query-length", "32", "--doc-stride", "32",
         "--precision", "fp32", "--name", "bg", "--detach"],
        env,
    )  # fmt: skip
    assert time.time() - t0 < 20  # returned at once, the training runs on
    run_id, folder = next(line for line in printed.splitlines() if "\t" in line).split("\t")
    assert Path(folder) == out and run_id.endswith("-bg")
    pid = read_pid(out)["pid"]
    assert process_alive(pid)

    # status while it runs: progress from the events, the process, health
    wait_for(lambda: (out / "checkpoints" / ".tmp-step-0000010").exists(), 120, "step 10", out / "train.log")
    status = json.loads(_invoke(["runs", "status", "bg", "--json"], env))
    assert status["status"] == "running" and status["alive"] and status["pid"] == pid
    assert status["step"] == 10 and status["total_steps"] == 24 and status["loss"] > 0
    assert status["examples_per_s"] > 0 and status["eta"] is not None and status["health"]["nonfinite"] == 0
    table = _invoke(["runs", "status"], env)  # no argument: the running runs
    assert "bg" in table and "10/24" in table and "ok" in table
    # past its 3 warm-up batches the live ETA has a range, and the table shows it beside the expected time
    assert all(isinstance(x, float | int) for x in status["eta_range"]), status["eta_range"]
    assert re.search(r"\d:\d\d:\d\d \(\d:\d\d:\d\d-\d:\d\d:\d\d\)", table), table
    # the launched processes run with the malloc xlqa.allocator chose (tcmalloc where installed, as in CI)
    recorded = json.loads((out / "config.json").read_text())["environment"]["malloc"]
    assert recorded == (chosen() or ("system",))[0]

    # graceful stop: finishes its step, checkpoints, exits with status stopped
    stopped = _invoke(["runs", "stop", run_id, "--wait", "120"], env)
    assert "stopped" in stopped
    assert not process_alive(pid) and _run_json(out)["status"] == "stopped"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "stopped" and events[-1]["steps"] == 11
    assert (out / "checkpoints" / "step-0000011" / "trainer_state.pt").exists()
    status = json.loads(_invoke(["runs", "status", str(out), "--json"], env))
    assert status["status"] == "stopped" and not status["alive"] and status["eta"] is None

    # resume in the background, to the end
    _invoke(["runs", "resume", "bg"], env)
    wait_for(
        lambda: _run_json(out)["status"] == "finished", 180, "the resumed run to finish", out / "train.log"
    )
    assert "resume" in (out / "events.jsonl").read_text()

    # a graceful stop and a resume change nothing: same weights as one uninterrupted run
    cfg = config_of_run(out)
    cfg.output = str(tmp_path / "uninterrupted")
    train(cfg)
    wa = load_file(Path(cfg.output) / "checkpoints" / "step-0000024" / "model.safetensors")
    wb = load_file(out / "checkpoints" / "step-0000024" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_stop_and_status_errors(tmp_path, tiny_model_dir):
    env = {"XLQA_RUNS": str(tmp_path / "store")}
    result = CliRunner().invoke(app, ["runs", "stop", "nope"], env=env)
    assert result.exit_code == 2 and "nope" in result.output
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "missing")], env=env)
    assert result.exit_code == 2 and "missing" in result.output


def test_run_control_takes_an_id_prefix_name_or_folder(tmp_path):
    store = RunStore(tmp_path / "store")
    run = store.create_run("train", model="m", config={}, dir=tmp_path / "out" / "e5")  # as --output out/e5
    env = {"XLQA_RUNS": str(store.root)}
    for ref in ("e5", str(run.dir), run.id, run.id[:-3]):
        status = json.loads(_invoke(["runs", "status", ref, "--json"], env))
        assert (status["run"], status["name"], status["dir"]) == (run.id, "e5", str(run.dir)), ref
        assert status["status"] == "dead" and not status["alive"]  # "running" in the index, no process
    assert run_status("e5", store=store)["run"] == run.id
    for args, message in (
        (["runs", "stop", str(run.dir)], f"run {run.id} has no live training process"),
        (["runs", "resume", "e5", "--foreground"], "no config.json: not a training run folder"),
        (["runs", "status", "e6"], "did you mean e5"),
    ):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})
        assert result.exit_code == 2 and message in result.output, result.output
    with pytest.raises(RunStoreError, match="no live training process"):
        stop_run("e5", store=store)

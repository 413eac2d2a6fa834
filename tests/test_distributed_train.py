"""Training on more than one process (gloo on this CPU), and checkpoints that fail or must be shared.

Two real processes under ``torchrun`` and under ``accelerate launch --multi_gpu`` (which ``xlqa train --detach
--num-processes 2`` starts itself) train a tiny model: both ranks must have taken part (each writes its own RNG
state into every checkpoint, which only a process with that rank index does), the loss must go down, the
guard's rollback must work across the processes, and resuming with another process count must be refused with
the count to use. ``accelerate launch --cpu --num_processes 2`` is not used: it starts one process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_control import wait_for
from test_guard import events_of, tiny_config, tiny_squad
from xlqa.errors import CheckpointError, ConfigError
from xlqa.runs.store import RunStore
from xlqa.train.checkpoint import STATE_DIR, latest_checkpoint, list_checkpoints

# imported first by every training process (a sitecustomize on its PYTHONPATH): steps 3-5 are non-finite, so
# the guard (3 in a row) rolls back to its snapshot under two processes
NONFINITE = """
import functools
import xlqa.train.loop
from xlqa.train.faults import Faults

xlqa.train.loop.train = functools.partial(xlqa.train.loop.train, faults=Faults(nonfinite_steps={3, 4, 5}))
"""
# the same for a slow checkpoint: step 6's sleeps half-written, time to stop the run from outside (10 s: `xlqa
# runs stop` starting up on a slow, loaded CPU took over 3 s, and the run had gone on to step 8)
SLOW_CHECKPOINT = """
import functools
import xlqa.train.loop
from xlqa.train.faults import Faults

xlqa.train.loop.train = functools.partial(xlqa.train.loop.train, faults=Faults(checkpoint_delay=(6, 10.0)))
"""
FLAGS = ["--max-steps", "16", "--batch-size", "4", "--lr", "5e-3", "--save-every", "6", "--log-every", "1",
         "--warmup-ratio", "0", "--max-seq-length", "64", "--max-query-length", "32", "--doc-stride", "32",
         "--precision", "fp32", "--guard-snapshot-every", "2", "--no-progress"]  # fmt: skip


def _env(tmp_path: Path, faults: bool) -> dict:
    env = {**os.environ, "XLQA_RUNS": str(tmp_path / "store"), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    if faults:
        hooks = tmp_path / "hooks"
        hooks.mkdir(exist_ok=True)
        (hooks / "sitecustomize.py").write_text(NONFINITE)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hooks), env.get("PYTHONPATH")]))
    return env


def _data_flags(tmp_path: Path, model: Path, out: Path) -> list[str]:
    train = tiny_squad(tmp_path / "train.json")
    dev = tiny_squad(tmp_path / "dev.json", n=16, offset=100)
    return ["--model", str(model), "--train", str(train), "--dev", str(dev), "--output", str(out), *FLAGS]


def _assert_two_ranks_trained(out: Path, *, rollback: bool) -> None:
    """Both ranks wrote their state, the loss went down, and the run ended where it should."""
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step-0000016"
    states = sorted(p.name for p in (ckpt / STATE_DIR).glob("random_states_*.pkl"))
    assert states == ["random_states_0.pkl", "random_states_1.pkl"]  # one per rank: two ranks took part
    marker = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    assert marker["num_processes"] == 2 and marker["distributed_type"] == "MULTI_CPU"
    events = events_of(out)
    assert {e["processes"] for e in events if e["event"] in ("start", "resume")} == {2}
    assert events[-1]["event"] == "end" and events[-1]["steps"] == 16
    assert [e["event"] for e in events].count("eval") >= 3  # the sharded dev evaluation ran each epoch
    losses = [e["loss"] for e in events if e["event"] == "step" and e.get("loss") is not None]
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses  # it learns
    rollbacks = [e for e in events if e["event"] == "rollback"]
    assert [(e["step"], e["to_step"]) for e in rollbacks] == ([(5, 2)] if rollback else [])
    assert not (
        out / "checkpoints" / ".guard-snapshot"
    ).exists()  # the guard's snapshot is removed at the end
    assert (out / "best" / "model.safetensors").is_file()


def test_torchrun_two_processes_train_roll_back_and_refuse_a_one_process_resume(
    tmp_path, tiny_model_dir, xlqa_cache
):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "xlqa.cli.main", "train", *_data_flags(tmp_path, tiny_model_dir, out)]  # fmt: skip
    done = subprocess.run(cmd, env=_env(tmp_path, faults=True), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    _assert_two_ranks_trained(out, rollback=True)
    (run,) = RunStore(tmp_path / "store").list_runs(kind="train")  # registered by rank 0, not once per rank
    assert run.status == "finished" and Path(run.dir) == out

    from xlqa.train.loop import train

    cfg = tiny_config(tmp_path, tiny_model_dir, output=str(out), max_query_length=32, max_steps=20)
    with pytest.raises(ConfigError, match=r"written by 2 process\(es\), resumed with 1; resume with 2"):
        train(cfg, resume_from=out)


def test_detach_num_processes_two_ranks_stop_and_resume(tmp_path, tiny_model_dir, xlqa_cache):
    """--detach --num-processes 2 runs accelerate launch; stop reaches both ranks; resume restarts two."""
    from xlqa.train.control import process_alive, read_pid

    out = tmp_path / "run"
    env = _env(tmp_path, faults=False)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_CHECKPOINT)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hooks), env.get("PYTHONPATH")]))
    xlqa = [sys.executable, "-m", "xlqa.cli.main"]
    cmd = [*xlqa, "train", *_data_flags(tmp_path, tiny_model_dir, out), "--detach", "--num-processes", "2",
           "--name", "two"]  # fmt: skip
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    launchers = [read_pid(out)["pid"]]
    try:
        # the checkpoint of step 6 sleeps half-written: stop the run then, from outside, as a user would
        wait_for(lambda: (out / "checkpoints" / ".tmp-step-0000006" / "model.safetensors").exists(), 300,
                 "the step-6 checkpoint", out / "train.log")  # fmt: skip
        assert read_pid(out).get("train_pid")  # rank 0 recorded itself beside its launcher
        stopped = subprocess.run([*xlqa, "runs", "stop", "two", "--wait", "120"], env=env, capture_output=True,
                                 text=True, timeout=180)  # fmt: skip
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not process_alive(launchers[0]), "the launcher outlived its stopped processes"
        events = events_of(out)
        assert json.loads((out / "run.json").read_text())["status"] == "stopped"
        # the stop came during step 6's checkpoint: the next step's check sees it in every process at once
        assert events[-1]["event"] == "stopped" and events[-1]["steps"] == 7, events[-3:]
        assert latest_checkpoint(out).name == "step-0000007"
        resumed = subprocess.run([*xlqa, "runs", "resume", "two"], env=env, capture_output=True, text=True,
                                 timeout=60)  # fmt: skip
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        launchers.append(read_pid(out)["pid"])
        wait_for(lambda: json.loads((out / "run.json").read_text())["status"] in ("finished", "failed"), 300,
                 "the resumed two-process run to end", out / "train.log")  # fmt: skip
        log = (out / "train.log").read_text()
        assert json.loads((out / "run.json").read_text())["status"] == "finished", log[-3000:]
    finally:
        for pid in launchers:  # each launcher leads its own session: nothing of it may outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    resume = [e for e in events_of(out) if e["event"] == "resume"]
    assert [e["step"] for e in resume] == [7]
    _assert_two_ranks_trained(out, rollback=False)


def test_num_processes_in_the_foreground_names_the_launcher_command(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from xlqa.cli.main import app

    out = tmp_path / "run"
    args = ["train", *_data_flags(tmp_path, tiny_model_dir, out), "--num-processes", "2"]
    result = CliRunner().invoke(app, args, env={"XLQA_RUNS": str(tmp_path / "store"), "COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "accelerate launch --multi_gpu --num_processes 2 -m xlqa.cli.main train" in result.output
    assert not out.exists() and not (tmp_path / "store").exists()  # refused before anything was registered


def _modes(folder: Path) -> set[tuple[str, int]]:
    return {
        ("d" if p.is_dir() else "f", stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]
    }


def test_checkpoints_follow_the_umask_and_a_failed_write_keeps_the_previous_one(tmp_path, tiny_model_dir):
    from xlqa.train.faults import Faults
    from xlqa.train.loop import train

    cfg = tiny_config(tmp_path, tiny_model_dir, max_query_length=32, max_steps=6, save_every=2)
    old = os.umask(0o002)  # group-writable: neither the default 022 nor the 077 of private temporary files
    try:
        with pytest.raises(CheckpointError, match=r"step-0000004 failed.*No space left on device") as info:
            train(cfg, faults=Faults(checkpoint_error=(4, "ENOSPC")))
    finally:
        os.umask(old)
    assert info.value.exit_code == 1
    out = Path(cfg.output)
    # the previous checkpoint is intact and nothing half-written is left behind
    assert [p.name for p in list_checkpoints(out)] == ["step-0000002"]
    assert not list((out / "checkpoints").glob(".tmp-*"))
    ckpt = out / "checkpoints" / "step-0000002"
    assert _modes(ckpt) == {("d", 0o775), ("f", 0o664)}, sorted(_modes(ckpt))
    assert {"model.safetensors", "config.json", "trainer_state.pt", "xlqa.json", STATE_DIR} <= {
        p.name for p in ckpt.iterdir()
    }
    # and the run resumes from it to the end; the best model is shared as the umask says too
    old = os.umask(0o022)
    try:
        result = train(cfg, resume_from=out)
    finally:
        os.umask(old)
    assert result.status == "finished" and result.steps == 6
    assert _modes(out / "best") == {("d", 0o755), ("f", 0o644)}
    assert _modes(latest_checkpoint(out)) == {("d", 0o755), ("f", 0o644)}


# -- the documented recipes ----------------------------------------------------------------------------------------
RECIPES = Path(__file__).resolve().parents[1] / "docs" / "distributed"


@pytest.mark.parametrize(
    "name, backend, machines",
    [("multi-gpu.yaml", "MULTI_GPU", 1), ("multi-node.yaml", "MULTI_GPU", 2), ("fsdp.yaml", "FSDP", 1),
     ("deepspeed-zero2.yaml", "DEEPSPEED", 1), ("deepspeed-zero3.yaml", "DEEPSPEED", 1)],
)  # fmt: skip
def test_recipe_configs_load_with_accelerates_own_loader(name, backend, machines):
    from accelerate.commands.config.config_args import load_config_from_file

    from xlqa.config import TrainConfig

    cfg = load_config_from_file(str(RECIPES / name))
    assert cfg.distributed_type.value == backend and cfg.num_machines == machines
    assert cfg.num_processes % machines == 0
    if backend == "FSDP":  # each process saves its own shards; the exported model is gathered separately
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    if backend == "DEEPSPEED":  # DeepSpeed takes these from its config: they must be xlqa's defaults
        ds, defaults = cfg.deepspeed_config, TrainConfig()
        assert ds["zero_stage"] == int(name[-6])
        assert (ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (
            defaults.grad_accum,
            defaults.max_grad_norm,
        )


def test_slurm_recipe_is_valid_bash_that_launches_xlqa_with_accelerate():
    script = RECIPES / "slurm.sbatch"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "accelerate launch" in text and "-m xlqa.cli.main" in text and "--machine_rank" in text


def test_bf16_weights_under_two_processes_is_refused_with_the_reason(tmp_path, tiny_model_dir, xlqa_cache):
    """The bf16 copy is not wrapped by DDP: its gradients would not be reduced, so several processes refuse it."""
    out = tmp_path / "run"
    flags = [f if f != "fp32" else "bf16" for f in _data_flags(tmp_path, tiny_model_dir, out)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "xlqa.cli.main", "train", *flags, "--bf16-weights"]  # fmt: skip
    done = subprocess.run(cmd, env=_env(tmp_path, faults=False), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "--bf16-weights trains in one process, not 2" in done.stdout + done.stderr
    assert latest_checkpoint(out) is None

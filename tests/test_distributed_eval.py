"""Evaluation across processes: ``accelerate launch`` and ``torchrun`` on CPU (gloo) answer as one process.

The data is cut so the work does not divide evenly: 41 windows (several per long context) in batches of 4
give 11 batches, the last one short, so the second process is topped up with a copy of the first batch, whose
windows must be dropped after gathering. Two ranks really run: each writes a marker file before the CLI
starts, and the results record two processes (a rank that ran alone would record one).

Also here: a SIGKILL in the middle of writing an evaluation's files, then the same command again, ends with
the same metrics as an uninterrupted evaluation and leaves no temporary file behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import write_squad
from xlqa.config import EvalConfig
from xlqa.data import load_squad
from xlqa.distributed import shard_batches
from xlqa.runs.store import RunStore

VENV_BIN = Path(sys.executable).parent
FILES = ("a", "b")
EVAL_ARGS = ["--max-seq-length", "64", "--doc-stride", "32", "--max-query-length", "24", "--batch-size", "4",
             "--precision", "fp32", "--no-progress"]  # fmt: skip
# the CLI, after a marker file saying which rank of how many this process is
MARKED_CLI = """
import os, sys
from pathlib import Path
Path(sys.argv[1], f"rank-{os.environ.get('RANK', '0')}-of-{os.environ.get('WORLD_SIZE', '1')}").touch()
from xlqa.cli.main import main
sys.argv = ["xlqa", *sys.argv[2:]]
main()
"""
# the CLI, whose atomic write of b/predictions.json stops (sleeping) after writing, before the rename
STUCK_WRITE_CLI = """
import os, sys, time
real_fsync = os.fsync
def fsync(fd):
    if "/b/.predictions.json." in os.readlink(f"/proc/self/fd/{fd}"):
        time.sleep(600)
    real_fsync(fd)
os.fsync = fsync
from xlqa.cli.main import main
sys.argv = ["xlqa", *sys.argv[1:]]
main()
"""
FILLER = (
    "The river runs through the old town.",
    "Many people visit the market on Sundays.",
    "Its library holds more than a thousand books.",
    "A bridge was built there in the last century.",
)
CITIES = ("Paris", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Prague", "Oslo")


def qa_file(path: Path, n: int, offset: int) -> Path:
    """``n`` questions, contexts from one sentence to several windows long (the answer first or last)."""
    exs = []
    for i in range(offset, offset + n):
        city = CITIES[i % len(CITIES)]
        filler = " ".join(FILLER[(i + k) % len(FILLER)] for k in range(i % 5 * 2))
        fact = f"Person {i} lives in {city}."
        context = f"{fact} {filler}" if i % 2 else f"{filler} {fact}".strip()
        exs.append({"id": f"q{i}", "question": f"Where does person {i} live?", "context": context,
                    "answers": [(city, context.index(city))]})  # fmt: skip
    return write_squad(path, exs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    """Two data files, and their evaluation by one process (the reference every other run must equal)."""
    from xlqa import jobs
    from xlqa.features import FeatureParams, cached_features
    from xlqa.modeling import load_tokenizer

    root = tmp_path_factory.mktemp("dist-eval")
    data = [qa_file(root / "a.json", 13, 0), qa_file(root / "b.json", 7, 50)]
    tok = load_tokenizer(str(tiny_model_dir))
    windows = len(cached_features(load_squad(data[0]).examples, tok, FeatureParams(64, 32, 24), cache_dir=""))
    assert windows % 4 and -(-windows // 4) % 2, (
        f"file a must give uneven batches and shards ({windows} windows)"
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process runs (OMP_NUM_THREADS=1): the same kernels
    try:
        cfg = EvalConfig(model=str(tiny_model_dir), data=[str(p) for p in data], output=str(root / "ref"),
                         max_seq_length=64, doc_stride=32, max_query_length=24, batch_size=4,
                         precision="fp32", progress=False, cache_dir="")  # fmt: skip
        job = jobs.evaluate(cfg, store=RunStore(root / "ref-store"))
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(root=root, data=data, model=tiny_model_dir, ref=job.run.dir, windows=windows)


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "XLQA_RUNS": str(tmp / "store"), "XLQA_CACHE": str(tmp / "cache"),
            "OMP_NUM_THREADS": "1", "COLUMNS": "200", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip


def _cli_args(setup, out: Path) -> list[str]:
    data = [a for p in setup.data for a in ("--data", str(p))]
    return ["evaluate", "--model", str(setup.model), *data, "--output", str(out), *EVAL_ARGS]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(run_dir: Path) -> list[tuple]:
    res = json.loads((run_dir / "results.json").read_text())
    return [(d["name"], d["n_questions"], d["metrics"], d.get("ci95")) for d in res["datasets"]]


def _assert_same_as_reference(setup, out: Path) -> None:
    for name in FILES:
        ref = json.loads((setup.ref / name / "predictions.json").read_text())
        got = json.loads((out / name / "predictions.json").read_text())
        assert got == ref  # exactly one answer per question, the same answers
        for extra in ("nbest_predictions.json", "null_odds.json"):
            assert json.loads((out / name / extra).read_text()) == json.loads(
                (setup.ref / name / extra).read_text()
            )
    assert _metrics(out) == _metrics(setup.ref)


def _assert_one_run(tmp: Path, out: Path) -> None:
    runs = RunStore(tmp / "store").list_runs()
    assert [(r.dir.resolve(), r.status) for r in runs] == [(out.resolve(), "finished")]
    assert not list(out.rglob("*.tmp"))


def _launch(cmd: list[str], tmp: Path) -> None:
    proc = subprocess.run(cmd, env=_env(tmp), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "already holds run" not in proc.stderr
    assert proc.stdout.count("xlqa evaluation") == 1  # the table is printed once, by the main process


# the two launchers users have: Accelerate's (--multi_gpu: on a CPU it still starts the gloo processes; --cpu
# would start one) and PyTorch's
LAUNCHERS = {
    "accelerate": lambda port: [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                                "--main_process_port", str(port)],
    "torchrun": lambda port: [str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(port)],
}  # fmt: skip


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_launched_processes_give_the_single_process_answers(setup, tmp_path, launcher):
    script = tmp_path / "marked_cli.py"
    script.write_text(MARKED_CLI)
    out = tmp_path / "out"
    cmd = [*LAUNCHERS[launcher](_free_port()), str(script), str(tmp_path), *_cli_args(setup, out)]
    _launch(cmd, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("rank-*")) == ["rank-0-of-2", "rank-1-of-2"]
    assert json.loads((out / "results.json").read_text())["config"]["processes"] == 2
    _assert_same_as_reference(setup, out)
    _assert_one_run(tmp_path, out)


def test_sigkill_mid_write_then_the_same_command_gives_the_same_metrics(setup, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", STUCK_WRITE_CLI, *_cli_args(setup, out)],
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    try:
        deadline = time.time() + 240
        while not list((out / "b").glob(".predictions.json.*.tmp")):
            assert proc.poll() is None, f"evaluation exited ({proc.returncode}) early:\n{proc.stdout.read()}"
            assert time.time() < deadline, "timed out waiting for the write of b/predictions.json"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # killed mid-evaluation: a's files complete, b's predictions only as a temporary file, no results
    assert (out / "a" / "null_odds.json").is_file() and not (out / "results.json").exists()
    assert not (out / "b" / "predictions.json").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"

    rerun = subprocess.run([sys.executable, "-m", "xlqa.cli.main", *_cli_args(setup, out)],
                           env=_env(tmp_path), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    _assert_same_as_reference(setup, out)
    _assert_one_run(tmp_path, out)  # the same run, finished; the killed writer's temporary file is gone


def test_generative_evaluation_sharded_by_torchrun_gives_the_single_process_answers(tmp_path):
    from synthetic_qa import make_questions, place_names, save_tiny_t5
    from xlqa import jobs
    from xlqa.generative import build_windows
    from xlqa.modeling import load_tokenizer

    model = save_tiny_t5(tmp_path / "t5")
    data = write_squad(tmp_path / "g.json", make_questions(9, place_names()[1], seed=1, id_prefix="g"))
    args = ["--max-seq-length", "24", "--doc-stride", "8", "--max-query-length", "12",
            "--max-answer-length", "6", "--batch-size", "3", "--precision", "fp32",
            "--no-progress"]  # fmt: skip
    tok = load_tokenizer(str(model))
    n = len(
        build_windows(load_squad(data).examples, tok, max_seq_length=24, doc_stride=8, max_query_length=12)
    )
    assert n % 3 and -(-n // 3) % 2, f"the windows must give uneven batches and shards ({n} windows)"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = EvalConfig(model=str(model), data=[str(data)], output=str(tmp_path / "ref"), max_seq_length=24,
                         doc_stride=8, max_query_length=12, max_answer_length=6, batch_size=3,
                         precision="fp32", progress=False)  # fmt: skip
        ref = jobs.evaluate(cfg, store=RunStore(tmp_path / "ref-store")).run.dir
    finally:
        torch.set_num_threads(threads)
    script = tmp_path / "marked_cli.py"
    script.write_text(MARKED_CLI)
    out = tmp_path / "out"
    cmd = [str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(script), str(tmp_path), "evaluate", "--model", str(model), "--data", str(data),
           "--output", str(out), *args]  # fmt: skip
    _launch(cmd, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("rank-*")) == ["rank-0-of-2", "rank-1-of-2"]
    assert json.loads((out / "results.json").read_text())["config"]["processes"] == 2
    for name in ("predictions.json", "nbest_predictions.json"):
        assert json.loads((out / "g" / name).read_text()) == json.loads((ref / "g" / name).read_text())
    assert _metrics(out) == _metrics(ref)


@pytest.mark.parametrize("n_proc", [2, 3])
@pytest.mark.parametrize("n_batches", [1, 2, 5, 7])
def test_every_batch_is_computed_by_exactly_one_process_plus_whole_copies(n_proc, n_batches):
    batches = [[3 * b, 3 * b + 1, 3 * b + 2][: 1 + b % 3] for b in range(n_batches)]  # uneven sizes
    shards = [
        shard_batches(batches, SimpleNamespace(num_processes=n_proc, process_index=r)) for r in range(n_proc)
    ]
    assert len({len(s) for s in shards}) == 1  # the same number of collectives on every process
    dealt = [b for rnd in zip(*shards, strict=True) for b in rnd]
    assert dealt[:n_batches] == batches  # batch k on process k % n, whole and in order
    assert all(b in batches[:n_proc] for b in dealt[n_batches:])  # the top-up: copies of first batches

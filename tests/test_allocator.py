"""tcmalloc preloaded for the model commands (xlqa.allocator), in real processes; and the allocator benchmark
(benchmarks/bench_allocator.py): its settings really change what malloc does, and the script runs every variant
in a fresh process on the tiny model.

Each settings case runs in a fresh Python that allocates and fills a 64 MB tensor, frees it, and counts the
page faults of allocating and filling it again, as the next training step does. tcmalloc is installed by
``.ci/run`` (Debian's libtcmalloc-minimal4): the tests that need it skip without it, and fail under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchscript import benchmark_json
from test_guard import tiny_squad
from xlqa import allocator
from xlqa.errors import ConfigError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_allocator.py"
_spec = importlib.util.spec_from_file_location("bench_allocator", BENCH)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
VARIANTS = _module.VARIANTS
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")

SCRIPT = """
import importlib.util, json, resource, sys
import torch
spec = importlib.util.spec_from_file_location("bench_allocator", sys.argv[1])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
bench.set_malloc(sys.argv[2])
def fill():
    t = torch.empty(16 << 20, dtype=torch.float32)  # 64 MB: past glibc's largest default mmap threshold
    t.fill_(1.0)
    return float(t[-1])
fill()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
fill()
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="GLIBC_TUNABLES are glibc's (Linux)",
)


def second_fill_faults(variant: str) -> int:
    env = _module.variant_env(variant)  # as the benchmark starts its child
    cmd = [sys.executable, "-c", SCRIPT, str(BENCH), variant]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_each_variant_changes_what_the_second_allocation_faults():
    pages = (64 << 20) // 4096
    # glibc's default hands the 64 MB back to the kernel at free, and the fill faults every page in again.
    # (With trimming and mmap off, "kept", it does so in some runs and not in others: PyTorch's 64-byte-aligned
    # request is a little larger than the block just freed, which glibc may then pass over for fresh pages at
    # the top of its heap; the benchmark measures what that leaves of the gain.)
    assert second_fill_faults("default") >= pages * 0.9
    if THP.exists() and "[never]" not in THP.read_text():  # 2 MB pages, where the kernel gives them
        assert second_fill_faults("hugetlb") < pages * 0.05
    need_tcmalloc()
    assert second_fill_faults("tcmalloc") < pages * 0.05  # the freed memory, reused


def test_bench_allocator_runs_each_variant_in_a_fresh_process(tmp_path, shared_data, tiny_model_dir):
    need_tcmalloc()
    args = ["--variants", "default,tcmalloc,kept", "--model", tiny_model_dir,
            "--train", shared_data / "squad" / "train-v1.1.json", "--train-examples", "64",
            "--eval", shared_data / "xquad" / "xquad.de.json", "--eval-examples", "16", "--steps", "4",
            "--warmup", "1", "--rounds", "1", "--batch-size", "8"]  # fmt: skip
    report = benchmark_json("bench_allocator.py", args, tmp_path)
    assert [(r["variant"], r["malloc"]) for r in report["runs"]] == [
        ("default", "system"), ("tcmalloc", "tcmalloc"), ("kept", "system")
    ]  # fmt: skip
    assert report["runs"][2]["mallopt"] == [list(pair) for pair in VARIANTS["kept"][1]]
    for phase in ("train", "eval"):
        rows = report["summary"][phase]
        assert set(rows) == {"default", "tcmalloc", "kept"} and rows["default"]["speedup"] == 1.0, rows
        assert all(row["speedup"] > 0 and row["peak_rss_mb"] > 0 for row in rows.values()), rows
    assert all(len(r["train"]["steps"]) == 4 for r in report["runs"])
    assert report["summary"]["train"]["kept"]["late_seconds"] > 0


def need_tcmalloc() -> str:
    lib = allocator.find_library("tcmalloc")
    if lib is None:
        msg = "tcmalloc is not installed (Debian/Ubuntu: apt install libtcmalloc-minimal4)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {msg}")
        pytest.skip(msg)
    return lib


def test_preload_env_puts_the_library_first_and_keeps_the_rest(monkeypatch):
    lib = need_tcmalloc()
    monkeypatch.delenv("XLQA_MALLOC", raising=False)
    env = allocator.preload_env({"LD_PRELOAD": "/opt/other.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == f"{lib} /opt/other.so" and env["PATH"] == "/bin"
    assert (
        env[allocator.MARKER] == "tcmalloc" and int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40
    )
    assert allocator.preload_env(env)["LD_PRELOAD"] == env["LD_PRELOAD"]  # never twice
    mine = allocator.preload_env({"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": "5"})
    assert mine["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] == "5"  # the user's own setting wins
    monkeypatch.setenv("XLQA_MALLOC", "system")
    assert allocator.preload_env({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_a_bad_or_missing_choice_is_named(monkeypatch):
    monkeypatch.setenv("XLQA_MALLOC", "mimalloc")
    with pytest.raises(
        ConfigError, match="XLQA_MALLOC='mimalloc': use one of auto, system, tcmalloc, jemalloc"
    ):
        allocator.preload_env({})
    monkeypatch.setitem(allocator.LIBRARIES, "jemalloc", ("xlqa_no_such_library",))
    monkeypatch.setenv("XLQA_MALLOC", "jemalloc")
    with pytest.raises(ConfigError, match=r"not installed .*apt install libjemalloc2"):
        allocator.preload_env({})
    monkeypatch.setitem(allocator.LIBRARIES, "tcmalloc", ("xlqa_no_such_library",))
    monkeypatch.setenv("XLQA_MALLOC", "auto")  # auto falls back to glibc's, quietly
    assert allocator.chosen() is None and allocator.MARKER not in allocator.preload_env({})


def test_other_commands_and_a_started_again_process_never_start_again(monkeypatch):
    monkeypatch.delenv("XLQA_MALLOC", raising=False)
    assert allocator.reexec_preloaded(["runs", "list"]) is None  # returns: this process (pytest) goes on
    assert allocator.reexec_preloaded(["--verbose", "report", "x"]) is None
    monkeypatch.setenv(allocator.MARKER, "tcmalloc")
    assert allocator.reexec_preloaded(["train", "--help"]) is None


@pytest.mark.parametrize("choice", [None, "system"])
def test_xlqa_train_runs_with_the_malloc_it_was_given(tmp_path, tiny_model_dir, choice):
    need_tcmalloc()
    data = tiny_squad(tmp_path / "train.json", n=8)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "XLQA_MALLOC", allocator.MARKER)}
    env.update({"XLQA_RUNS": str(tmp_path / "runs")}, **({"XLQA_MALLOC": choice} if choice else {}))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "xlqa", "train", "--model", str(tiny_model_dir), "--train", str(data),
           "--output", str(out), "--max-steps", "2", "--batch-size", "4", "--max-seq-length", "64",
           "--doc-stride", "32", "--max-query-length", "32", "--precision", "fp32", "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tcmalloc" not in done.stderr  # no "large alloc" reports, nothing from the library at all
    recorded = json.loads((out / "config.json").read_text())["environment"]["malloc"]
    assert recorded == ("system" if choice == "system" else "tcmalloc")


@pytest.mark.parametrize("choice", [None, "system"])
def test_xlqa_serve_runs_with_the_malloc_it_was_given(tmp_path, choice):
    """The server's forward passes gain as evaluation does (README: dynamic batching served 1.22-1.31x the
    requests with tcmalloc): ``xlqa serve`` starts again with it, as the same process."""
    import httpx

    from serving import free_port

    need_tcmalloc()
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "XLQA_MALLOC", allocator.MARKER)}
    env.update({"XLQA_API_KEY": ""}, **({"XLQA_MALLOC": choice} if choice else {}))
    port = free_port()
    cmd = [sys.executable, "-m", "xlqa", "serve", "--port", str(port), "--runs", str(tmp_path / "runs")]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "xlqa serve did not answer within 120 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert allocator.active(proc.pid) == ("system" if choice == "system" else "tcmalloc")
    finally:
        proc.terminate()
        proc.wait(30)
    assert "tcmalloc" not in log.read_text()

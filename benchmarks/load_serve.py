"""Load test of ``xlqa serve``: dynamic batching against batch-size-1 serving, same model, same run.

Starts ``xlqa serve`` itself (a subprocess on a free loopback port) twice: with dynamic batching
(``--batch-size 32``) and with ``--batch-size 1``. Each time, after a warm-up, ``--clients`` concurrent clients
(asyncio + httpx, one connection each) send ``--requests`` ``POST /v1/answer`` requests in all, real XQuAD
questions and contexts of the 12 languages, round robin. Reports p50/p99 latency and requests/s of each and
their ratio; every request must succeed (exit status 1 otherwise, or when a mode runs past ``--time-limit``).

    python benchmarks/load_serve.py --model minilm-l6 --data ../shared/data/xquad \\
        --requests 1000 --clients 100 --out benchmarks/results/serve-load-cpu.json

Weights do not matter for speed: the offline MiniLM or E5-small sources have no fine-tuned QA head, which is
fine here. Loopback only: the server binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from xlqa.allocator import active

LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")


def questions(data_dir: Path, per_language: int) -> list[dict]:
    """``per_language`` questions of every XQuAD language, interleaved (one language after another)."""
    per_lang = []
    for lang in LANGS:
        doc = json.loads((data_dir / f"xquad.{lang}.json").read_text(encoding="utf-8"))
        rows = [
            {"question": qa["question"], "context": p["context"]}
            for art in doc["data"]
            for p in art["paragraphs"]
            for qa in p["qas"]
        ]
        per_lang.append(rows[:per_language])
    return [rows[i] for i in range(per_language) for rows in per_lang if i < len(rows)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, batch_size: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "xlqa", "serve", "--model", args.model, "--host", "127.0.0.1",
        "--port", str(port), "--batch-size", str(batch_size), "--batch-wait-ms", str(args.batch_wait_ms),
        "--batch-tokens", str(args.batch_tokens),
        "--max-seq-length", str(args.max_seq_length), "--precision", args.precision,
        "--runs", str(log_path.parent / "runs"),
    ]  # fmt: skip
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "XLQA_API_KEY": ""})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # its log goes with the temporary folder: say what it said
            log.close()
            said = log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"xlqa serve exited with {proc.returncode}; its log ends:\n{said}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    log.close()
    said = log_path.read_text(errors="replace")[-2000:]
    raise SystemExit(f"xlqa serve was not ready within 300 s; its log ends:\n{said}")


async def load(url: str, bodies: list[dict], n: int, clients: int, limit_s: float) -> dict:
    """``n`` requests from ``clients`` concurrent clients; latencies, failures and the wall time."""
    latencies: list[float] = []
    failures: list[str] = []
    counter = iter(range(n))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=limit_s) as http:
            for i in counter:
                t0 = time.perf_counter()
                try:
                    r = await http.post("/v1/answer", json=bodies[i % len(bodies)])
                    ok = r.status_code == 200 and r.json()["answers"]
                    if not ok:
                        failures.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as err:
                    failures.append(f"{type(err).__name__}: {err}")
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), limit_s)
        timed_out = False
    except TimeoutError:
        timed_out = True
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "failed": len(failures) + (n - len(latencies)),
        "failures": failures[:5],
        "timed_out": timed_out,
        "seconds": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "max_ms": round(float(lat.max()), 1) if len(lat) else None,
    }


def batch_stats(url: str) -> dict:
    """Forward passes, windows and seconds spent in forward passes so far (the server's Prometheus metrics)."""
    text = httpx.get(f"{url}/metrics").text
    values = {}
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key in ("xlqa_batch_windows_sum", "xlqa_batch_windows_count", "xlqa_batch_seconds_sum"):
            values[key] = float(value)
    return {
        "forward_passes": int(values.get("xlqa_batch_windows_count", 0)),
        "windows": int(values.get("xlqa_batch_windows_sum", 0)),
        "forward_seconds": values.get("xlqa_batch_seconds_sum", 0.0),
    }


def run_mode(args, batch_size: int, bodies: list[dict], tmp: Path) -> dict:
    proc, url = start(args, batch_size, tmp / f"serve-bs{batch_size}.log")
    try:
        asyncio.run(load(url, bodies, args.warmup, min(args.clients, args.warmup), args.time_limit))
        before = batch_stats(url)
        result = asyncio.run(load(url, bodies, args.requests, args.clients, args.time_limit))
        after = batch_stats(url)
        passes = after["forward_passes"] - before["forward_passes"]
        result["forward_passes"] = passes
        result["requests_per_pass"] = round(args.requests / max(passes, 1), 2)
        result["windows"] = after["windows"] - before["windows"]
        busy = after["forward_seconds"] - before["forward_seconds"]
        result["forward_busy"] = round(busy / result["seconds"], 3)  # share of the time in forward passes
        result["ms_per_window"] = round(1000 * busy / max(result["windows"], 1), 2)
        return {"batch_size": batch_size, "malloc": active(proc.pid), **result}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default="minilm-l6", help="model for xlqa serve (offline source, folder, hub id)"
    )
    ap.add_argument("--data", default="../shared/data/xquad", help="folder of xquad.<lang>.json files")
    ap.add_argument("--requests", type=int, default=1000, help="timed requests per mode")
    ap.add_argument("--clients", type=int, default=100, help="concurrent clients")
    ap.add_argument("--warmup", type=int, default=50, help="untimed requests first")
    ap.add_argument("--batch-size", type=int, default=32, help="windows per forward pass with batching on")
    ap.add_argument(
        "--batch-tokens",
        type=int,
        default=0,
        help="padded tokens per forward pass at most (0: the server's default)",
    )
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-seq-length", type=int, default=384)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--time-limit", type=float, default=240.0, help="seconds per mode before giving up")
    ap.add_argument(
        "--out", default=None, help="JSON results file (e.g. benchmarks/results/serve-load-cpu.json)"
    )
    args = ap.parse_args()

    bodies = questions(Path(args.data), per_language=50)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bs in (args.batch_size, 1):
            rows.append(run_mode(args, bs, bodies, Path(tmp)))
    dyn, one = rows
    ratio = dyn["requests_per_s"] / one["requests_per_s"] if one["requests_per_s"] else float("inf")
    print(f"{'mode':<22}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'req/pass':>10}{'failed':>8}")
    for name, r in (("dynamic batching", dyn), ("batch size 1", one)):
        print(
            f"{name + ' (bs ' + str(r['batch_size']) + ')':<22}{r['requests_per_s']:>9.1f}{r['p50_ms']:>10.1f}"
            f"{r['p99_ms']:>10.1f}{r['max_ms']:>10.1f}{r['requests_per_pass']:>10.2f}{r['failed']:>8}"
        )
    for r in rows:
        print(f"bs {r['batch_size']}: {r['windows']} windows, {r['ms_per_window']} ms forward per window, "
              f"forward busy {r['forward_busy']:.0%} of the time")  # fmt: skip
    print(f"dynamic batching / batch size 1: {ratio:.2f}x requests/s")
    import torch

    report = {
        "benchmark": "load_serve",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": args.model,
        "requests": args.requests,
        "clients": args.clients,
        "questions": len(bodies),
        "max_seq_length": args.max_seq_length,
        "batch_wait_ms": args.batch_wait_ms,
        "batch_tokens": args.batch_tokens,
        "results": rows,
        "ratio_requests_per_s": round(ratio, 2),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    failed = any(r["failed"] or r["timed_out"] for r in rows)
    if failed:
        print("FAILED: some requests failed or a mode ran past --time-limit", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Loading a big data file: time and peak memory of ``load_squad`` against a bare ``json.load`` of the same file.

The file is XQuAD (all languages, from ``../shared/data`` or ``$XLQA_SHARED``) repeated with fresh question ids
until it reaches ``--size-mb``; the same questions are also written as SQuAD-style JSONL. Each measurement runs
in a fresh Python process (so peaks do not mix), reading its peak RSS (``VmHWM``) after the work; the peak
after the imports is measured first and subtracted. The baseline, in the same run, is the least any JSON loader must do: the
standard library's ``json.load`` of the whole file into Python objects.

    python benchmarks/bench_load.py --size-mb 200 --out benchmarks/results/load-cpu-200mb.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XLQA_SHARED", ROOT.parent / "shared"))

CHILD = r"""
import json, sys, time
def high_water_kb():  # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak across exec)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
mode, path = sys.argv[1], sys.argv[2]
from xlqa.data import load_squad  # imported before the baseline reading, in every mode
before = high_water_kb()
t0 = time.perf_counter()
if mode == "json.load":
    with open(path, "rb") as fh:
        obj = json.load(fh)
    n = sum(len(p["qas"]) for a in obj["data"] for p in a["paragraphs"])
else:
    n = len(load_squad(path, language="xx"))
seconds = time.perf_counter() - t0
peak = high_water_kb()
print(json.dumps({"questions": n, "seconds": seconds, "import_mb": before / 1024, "peak_mb": peak / 1024}))
"""


def seed_articles() -> list[dict]:
    files = sorted((SHARED / "data" / "xquad").glob("xquad.*.json"))
    if not files:
        sys.exit(f"no XQuAD files under {SHARED / 'data' / 'xquad'} (set XLQA_SHARED)")
    return [a for f in files for a in json.loads(f.read_text(encoding="utf-8"))["data"]]


def write_files(folder: Path, size_mb: int) -> tuple[Path, Path]:
    """A SQuAD JSON file of about ``size_mb`` MB and the same questions as JSONL."""
    seed = seed_articles()
    target = size_mb << 20
    articles, size, copy = [], 0, 0
    while size < target:
        for k, art in enumerate(seed):  # XQuAD's languages share ids: the article's place makes them unique
            paragraphs = [
                {"context": p["context"], "qas": [{**q, "id": f"{q['id']}-{k}-{copy}"} for q in p["qas"]]}
                for p in art["paragraphs"]
            ]
            articles.append({"title": art.get("title", ""), "paragraphs": paragraphs})
            size += len(json.dumps(articles[-1], ensure_ascii=False).encode())
            if size >= target:
                break
        copy += 1
    json_path, jsonl_path = folder / "big.json", folder / "big.jsonl"
    json_path.write_text(
        json.dumps({"version": "1.1", "data": articles}, ensure_ascii=False), encoding="utf-8"
    )
    with open(jsonl_path, "w", encoding="utf-8") as fh:
        for art in articles:
            for p in art["paragraphs"]:
                for q in p["qas"]:
                    row = {"id": q["id"], "title": art["title"], "context": p["context"], **q}
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return json_path, jsonl_path


def measure(mode: str, path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{mode} on {path} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["work_mb"] = result["peak_mb"] - result["import_mb"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        json_path, jsonl_path = write_files(Path(tmp), args.size_mb)
        print(f"wrote {json_path.stat().st_size / 2**20:.0f} MB JSON and {jsonl_path.stat().st_size / 2**20:.0f} MB "
              f"JSONL in {time.perf_counter() - t0:.0f} s")  # fmt: skip
        rows = []
        for mode, path in (("json.load", json_path), ("load_squad", json_path), ("load_squad", jsonl_path)):
            r = measure(mode, path)
            file_mb = path.stat().st_size / 2**20
            rows.append({"mode": mode, "file": path.name, "file_mb": round(file_mb, 1), **r})
    base = rows[0]
    print(
        f"\n{'what':<24}{'file MB':>9}{'questions':>11}{'seconds':>9}{'peak MB':>9}{'x file':>8}{'x json.load':>13}"
    )
    for r in rows:
        r["peak_over_file"] = r["work_mb"] / r["file_mb"]
        r["time_vs_json_load"] = r["seconds"] / base["seconds"]
        r["memory_vs_json_load"] = r["work_mb"] / base["work_mb"]
        print(f"{r['mode'] + ' ' + r['file']:<24}{r['file_mb']:>9.0f}{r['questions']:>11,}{r['seconds']:>9.1f}"
              f"{r['work_mb']:>9.0f}{r['peak_over_file']:>8.1f}{r['memory_vs_json_load']:>8.2f} mem"
              f" {r['time_vs_json_load']:.2f} t")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
        args.out.write_text(
            json.dumps({"meta": meta, "size_mb": args.size_mb, "rows": rows}, indent=2) + "\n"
        )
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

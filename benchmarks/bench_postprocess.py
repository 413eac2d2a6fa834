"""Span decoding speed: ``xlqa.postprocess.decode`` against the usual recipe's per-example double loop.

Baseline: the post-processing of the transformers ``run_qa.py`` example (``postprocess_qa_predictions``),
written from its description as ``reference_decode`` in ``tests/test_postprocess_reference.py``: for every
question, for every window, the top-20 start x top-20 end tokens in a Python double loop, then sort, n-best
texts and a softmax per question. It follows xlqa's rules (candidates inside the context, one entry per
character span, edge trimming, the null answer of SQuAD v2), so both must give identical answers, n-best lists
(text, offsets, scores, probabilities) and null odds on the same logits; the benchmark checks that first.

Logits are real: a QA model's forward pass over XQuAD (computed once, cached as .npz under --cache).

    python benchmarks/bench_postprocess.py --model demo-output/run/best \
        --data ../shared/data/xquad/xquad.de.json --out benchmarks/results/postprocess-cpu-de.json

Each decoder runs ``--repeats`` times (median reported) as SQuAD v1 (always answer) and as SQuAD v2 (null
answer against the CLS score, threshold 0). ``decode`` builds a question's n-best objects when they are read;
the "+n-best" column times decode plus building every list, as the loop does (what writing
``nbest_predictions.json`` costs). Run it under the torch lock: a concurrent model run skews the medians.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from xlqa.data import load_squad
from xlqa.postprocess import Decoded, decode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_postprocess_reference import assert_same_decoded, reference_decode

DEFAULT_MODEL = "demo-output/run/best"  # the demo's E5-small fine-tuned on 2,800 SQuAD questions


def model_logits(model_name: str, data_file: Path, cache: Path, batch_size: int) -> dict[str, np.ndarray]:
    """Start/end logits, offsets, example and CLS indices of every window of ``data_file`` (cached)."""
    weights = Path(model_name) / "model.safetensors"
    stamp = f"{weights.stat().st_mtime_ns}-{weights.stat().st_size}" if weights.exists() else ""
    key = hashlib.sha256(
        f"{Path(model_name).resolve()}|{stamp}|{data_file.read_bytes()!r}".encode()
    ).hexdigest()
    path = cache / f"{data_file.stem}-{key[:16]}.npz"
    if path.exists():
        with np.load(path) as z:
            return dict(z)
    import torch

    from xlqa.features import FeatureParams, build_features
    from xlqa.modeling import load_qa_model
    from xlqa.precision import choose_precision
    from xlqa.predict import padded_offsets, predict_logits

    model, tok = load_qa_model(model_name)
    feats = build_features(load_squad(data_file).examples, tok, FeatureParams())
    start, end = predict_logits(
        model,
        feats,
        pad_token_id=tok.pad_token_id or 0,
        batch_size=batch_size,
        progress=False,
        precision=choose_precision("auto", torch.device("cpu")),
    )
    out = {
        "start": start,
        "end": end,
        "offsets": padded_offsets(feats).astype(np.int32),
        "example_index": np.asarray(feats.example_index),
        "cls_index": np.asarray(feats.cls_index),
    }
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def timed(fn, repeats: int) -> tuple[float, list[float], Decoded]:
    """Median seconds over ``repeats`` calls of ``fn``, every time, and the last result."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def every_list(dec: Decoded) -> Decoded:
    """``dec`` after building every question's n-best entries (decode builds them when read), as the loop does."""
    list(dec.nbest.values())
    return dec


def bench_file(data_file: Path, args) -> dict:
    """Both decoders on one file's logits, as SQuAD v1 and as SQuAD v2; answers checked identical."""
    data = load_squad(data_file)
    lg = model_logits(args.model, data_file, Path(args.cache), args.batch_size)
    ids = [ex.id for ex in data.examples]
    contexts = [ex.context for ex in data.examples]
    inputs = (lg["start"], lg["end"], lg["offsets"], lg["example_index"], lg["cls_index"], ids, contexts)
    row = {"file": data_file.name, "questions": len(ids), "windows": len(lg["start"])}
    for mode, thr in (("v1", None), ("v2", 0.0)):
        kw = {"n_best": 20, "top_k": 20, "null_threshold": thr}
        fast_s, fast_all, fast = timed(lambda kw=kw: decode(*inputs, **kw), args.repeats)
        full_s, full_all, _ = timed(lambda kw=kw: every_list(decode(*inputs, **kw)), args.repeats)
        loop_s, loop_all, loop = timed(lambda kw=kw: reference_decode(*inputs, **kw), args.repeats)
        assert_same_decoded(fast, loop)  # texts, offsets, scores, probabilities, null odds: all equal
        row[mode] = {
            "decode_s": round(fast_s, 5),
            "loop_s": round(loop_s, 5),
            "ratio": round(loop_s / fast_s, 1),
            "decode_all_nbest_s": round(full_s, 5),
            "ratio_all_nbest": round(loop_s / full_s, 1),
            "decode_runs_s": [round(t, 5) for t in fast_all],
            "decode_all_nbest_runs_s": [round(t, 5) for t in full_all],
            "loop_runs_s": [round(t, 5) for t in loop_all],
            "identical": True,
            "answered": sum(1 for p in fast.predictions.values() if p),
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="QA model folder or offline name (e5-small)")
    ap.add_argument("--data", nargs="+", default=["../shared/data/xquad/xquad.de.json"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "xlqa" / "bench-logits"))
    ap.add_argument("--out", default="benchmarks/results/postprocess-cpu.json")
    args = ap.parse_args()

    rows = [bench_file(Path(f), args) for f in args.data]
    print(
        f"{'file':18s} {'mode':4s} {'questions':>9s} {'windows':>7s} {'decode s':>9s} {'loop s':>8s} "
        f"{'ratio':>6s} {'+n-best s':>9s} {'ratio':>6s}"
    )
    for r in rows:
        for mode in ("v1", "v2"):
            m = r[mode]
            print(
                f"{r['file']:18s} {mode:4s} {r['questions']:9d} {r['windows']:7d} {m['decode_s']:9.4f} "
                f"{m['loop_s']:8.4f} {m['ratio']:5.1f}x {m['decode_all_nbest_s']:9.4f} {m['ratio_all_nbest']:5.1f}x"
            )
    total = {
        mode: {
            "decode_s": round(sum(r[mode]["decode_s"] for r in rows), 5),
            "loop_s": round(sum(r[mode]["loop_s"] for r in rows), 5),
            "decode_all_nbest_s": round(sum(r[mode]["decode_all_nbest_s"] for r in rows), 5),
        }
        for mode in ("v1", "v2")
    }
    for t in total.values():
        t["ratio"] = round(t["loop_s"] / t["decode_s"], 1)
        t["ratio_all_nbest"] = round(t["loop_s"] / t["decode_all_nbest_s"], 1)
    print("total", json.dumps(total))
    out = {
        "benchmark": "postprocess",
        "command": " ".join(sys.argv),
        "args": vars(args),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": _cpus()},
        "numpy": np.__version__,
        "files": rows,
        "total": total,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()

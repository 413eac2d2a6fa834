"""Evaluation of XQuAD's 12 languages, time per phase and per language, peak memory, and the cached second run.

Per language, the phases :func:`xlqa.predict.predict_examples` and :func:`xlqa.evaluate.score_examples` go
through, each timed on its own: **load** (read and validate the file), **features** (tokenize into windows,
through the feature cache, empty at the start: a fresh ``--cache-dir``), **forward** (the model over
length-sorted batches, ``predict_logits``), **decoding** (offsets and span decoding) and **scoring** (official
metrics and the bootstrap intervals). The model is the demo's checkpoint when present (``--model``), loaded
once; batch size and window length are those of ``xlqa evaluate`` (64, 384).

Then the **second evaluation** of the same files and tokenizer: every language's features again (the cache
must answer: ``cache`` = ``hit``, tokenization skipped), and one real ``evaluate_model`` on the first language
whose log must say the windows came from the cache (what the user sees).

    python benchmarks/bench_eval.py --out benchmarks/results/eval-phases-cpu.json [--max-examples 100]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchlib import machine, peak_rss_mb, reset_peak_rss, window_params, write_result
from xlqa.config import EvalConfig
from xlqa.data import load_squad
from xlqa.evaluate import evaluate_model, score_examples
from xlqa.features import cached_features
from xlqa.modeling import load_qa_model
from xlqa.postprocess import decode
from xlqa.precision import choose_precision
from xlqa.predict import padded_offsets, predict_logits
from xlqa.sources.registry import spec_for_file

LANGS = ("en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi", "ro")
PHASES = ("load", "features", "forward", "decoding", "scoring")
ROOT = Path(__file__).resolve().parents[1]


def one_language(path: Path, model, tok, args, precision: str, cache: str) -> dict:
    """The phases of one file, timed one by one: seconds per phase, windows, F1, the cache's answer."""
    secs: dict[str, float] = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        secs[name] = round(time.perf_counter() - t0, 3)
        return out

    data = timed("load", lambda: load_squad(path, max_examples=args.max_examples))
    params = window_params(args.max_seq_length)
    feats = timed("features", lambda: cached_features(data.examples, tok, params, cache_dir=cache))
    start, end = timed("forward", lambda: predict_logits(
        model, feats, pad_token_id=tok.pad_token_id or 0, batch_size=args.batch_size, progress=False,
        precision=precision))  # fmt: skip
    dec = timed("decoding", lambda: decode(
        start, end, padded_offsets(feats), feats.example_index, feats.cls_index,
        [e.id for e in data.examples], [e.context for e in data.examples]))  # fmt: skip
    spec = spec_for_file(data)
    scored = timed("scoring", lambda: score_examples(
        data.examples, dec.predictions, rules=spec.rules, language=spec.language or None))  # fmt: skip
    return {"questions": len(data.examples), "windows": len(feats), "cache": feats.meta.get("cache"),
            "seconds": secs, "total_seconds": round(sum(secs.values()), 3), "f1": round(scored.f1, 2)}  # fmt: skip


class Captured(logging.Handler):
    """Keeps the log messages of a run, to check what the user is told."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def second_run(files: list[Path], model, tok, args, cache: str) -> dict:
    """The same files again: features from the cache for each, and one real evaluation's own words."""
    params = window_params(args.max_seq_length)
    per_lang, t_all = {}, time.perf_counter()
    for lang, path in zip(args.langs, files):
        data = load_squad(path, max_examples=args.max_examples)
        t0 = time.perf_counter()
        feats = cached_features(data.examples, tok, params, cache_dir=cache)
        per_lang[lang] = {
            "features_seconds": round(time.perf_counter() - t0, 3),
            "cache": feats.meta["cache"],
        }
    features_total = time.perf_counter() - t_all
    handler = Captured()
    logging.getLogger("xlqa").addHandler(handler)
    level = logging.getLogger("xlqa").level
    logging.getLogger("xlqa").setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = EvalConfig(model=args.model, data=[str(files[0])], output=out, batch_size=args.batch_size,
                             max_seq_length=args.max_seq_length,
                             doc_stride=window_params(args.max_seq_length).doc_stride, max_examples=args.max_examples,
                             cache_dir=cache, progress=False)  # fmt: skip
            evaluate_model(cfg, model=model, tokenizer=tok)
    finally:
        logging.getLogger("xlqa").removeHandler(handler)
        logging.getLogger("xlqa").setLevel(level)
    said = [m for m in handler.messages if "feature cache" in m]
    return {"languages": per_lang, "features_seconds": round(features_total, 3),
            "all_hits": all(v["cache"] == "hit" for v in per_lang.values()),
            "evaluate_says": said, "evaluate_says_cached": bool(said)}  # fmt: skip


def forward_levers(path: Path, model, tok, args, precision: str, cache: str) -> dict:
    """The forward pass (the biggest phase) under other settings, on the same windows, interleaved rounds.

    Batch size (``xlqa evaluate --batch-size``; on this CPU a window costs least in small batches) and weights
    cast to bf16 once instead of autocast casting them on every batch. F1 on these questions says whether the
    answers moved. Rounds alternate the settings so load from other processes falls on all of them alike.
    """
    import copy

    data = load_squad(path, max_examples=args.lever_examples)
    feats = cached_features(data.examples, tok, window_params(args.max_seq_length), cache_dir=cache)
    bf16 = copy.deepcopy(model).to(torch.bfloat16) if precision == "bf16" else None
    settings = [(f"autocast batch {b}", model, b, precision) for b in args.lever_batch_sizes]
    if bf16 is not None:
        settings += [(f"bf16 weights batch {b}", bf16, b, "fp32") for b in args.lever_batch_sizes]
    times: dict[str, list[float]] = {name: [] for name, *_ in settings}
    f1: dict[str, float] = {}
    spec = spec_for_file(data)
    predict_logits(
        model, feats, pad_token_id=tok.pad_token_id or 0, batch_size=16, progress=False, precision=precision
    )  # fmt: skip  (warm-up: kernels, allocator)
    for _ in range(args.lever_rounds):
        for name, m, bs, prec in settings:
            t0 = time.perf_counter()
            start, end = predict_logits(m, feats, pad_token_id=tok.pad_token_id or 0, batch_size=bs,
                                        progress=False, precision=prec)  # fmt: skip
            times[name].append(time.perf_counter() - t0)
            if name not in f1:
                dec = decode(start, end, padded_offsets(feats), feats.example_index, feats.cls_index,
                             [e.id for e in data.examples], [e.context for e in data.examples])  # fmt: skip
                f1[name] = round(score_examples(data.examples, dec.predictions, rules=spec.rules,
                                                language=spec.language or None).f1, 2)  # fmt: skip
    med = {name: statistics.median(v) for name, v in times.items()}
    ref = f"autocast batch {args.batch_size}"
    return {"file": path.name, "windows": len(feats), "seconds": times, "median_seconds": med, "f1": f1,
            "reference": ref, "speedup": {k: med[ref] / v for k, v in med.items()} if ref in med else {},
            "best": min(med, key=med.get)}  # fmt: skip


def default_model() -> str:
    best = ROOT / "demo-output" / "run" / "best"
    return str(best) if (best / "config.json").exists() else "e5-small"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="default: demo-output/run/best, else e5-small (untrained)")
    ap.add_argument("--xquad", default=str(ROOT.parent / "shared" / "data" / "xquad"), help="XQuAD folder")
    ap.add_argument("--langs", default=",".join(LANGS), help="comma-separated")
    ap.add_argument("--max-examples", type=int, default=None, help="first N questions per language")
    ap.add_argument("--max-seq-length", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="auto")
    ap.add_argument(
        "--cast-bf16", action="store_true", help="weights cast to bf16 once (instead of autocast)"
    )
    ap.add_argument("--cache-dir", default=None, help="feature cache (default: a fresh temporary folder)")
    ap.add_argument("--lever-lang", default="de", help="language of the forward-lever comparison")
    ap.add_argument("--lever-examples", type=int, default=200, help="its questions (0: skip the comparison)")
    ap.add_argument("--lever-batch-sizes", default="64,32,16,8")
    ap.add_argument("--lever-rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/eval-phases.json")
    args = ap.parse_args(argv)
    args.langs = [x for x in args.langs.split(",") if x]
    args.model = args.model or default_model()
    args.lever_batch_sizes = [int(b) for b in args.lever_batch_sizes.split(",") if b]
    return args


def _print(summary: dict) -> None:
    print(f"{'lang':5s} {'questions':>9s} {'windows':>7s} " + " ".join(f"{p:>9s}" for p in PHASES) + "    F1")
    for lang, r in summary["languages"].items():
        cells = " ".join(f"{r['seconds'][p]:9.2f}" for p in PHASES)
        print(f"{lang:5s} {r['questions']:9d} {r['windows']:7d} {cells} {r['f1']:6.1f}")
    tot = summary["phase_seconds"]
    share = summary["phase_share"]
    print(f"{'total':5s} {summary['questions']:9d} {summary['windows']:7d} "
          + " ".join(f"{tot[p]:9.2f}" for p in PHASES))  # fmt: skip
    print(f"{'share':23s} " + " ".join(f"{share[p]:9.1%}" for p in PHASES))
    sec = summary["second_run"]
    print(f"second run: features {sec['features_seconds']:.2f} s against {tot['features']:.2f} s "
          f"(cache hits: {sec['all_hits']}); evaluate says: {sec['evaluate_says'][:1]}")  # fmt: skip
    print(f"peak RSS {summary['peak_rss_mb']:.0f} MB")
    lever = summary.get("forward_levers")
    if lever:
        print(
            f"forward on {lever['windows']} {lever['file']} windows (median of rounds), against {lever['reference']}:"
        )
        for name, secs in lever["median_seconds"].items():
            print(
                f"  {name:22s} {secs:7.2f} s  x{lever['speedup'].get(name, float('nan')):.2f}  F1 {lever['f1'][name]}"
            )


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.cache_dir:
        run(args, args.cache_dir)
        return
    cache = tempfile.mkdtemp(prefix="bench-eval-cache-")  # its own feature cache, removed afterwards
    try:
        run(args, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run(args, cache: str) -> None:
    """Every phase of every language, the second run from the cache, the levers; print and write the JSON."""
    files = [Path(args.xquad) / f"xquad.{lang}.json" for lang in args.langs]
    reset_peak_rss()
    t0 = time.perf_counter()
    model, tok = load_qa_model(args.model)
    load_model_s = time.perf_counter() - t0
    precision = choose_precision(args.precision, torch.device("cpu"))
    if args.cast_bf16:  # the lever measured by forward_levers, applied to the whole evaluation
        model, precision = model.to(torch.bfloat16), "fp32"
    langs = {}
    for lang, path in zip(args.langs, files):
        langs[lang] = one_language(path, model, tok, args, precision, cache)
        print(f"{lang}: {langs[lang]['total_seconds']:.1f} s {langs[lang]['seconds']}", flush=True)
    peak = peak_rss_mb()
    phase = {p: round(sum(r["seconds"][p] for r in langs.values()), 3) for p in PHASES}
    total = sum(phase.values())
    summary = {
        "benchmark": "eval-phases", "model": args.model, "precision": precision, **machine(),
        "args": vars(args), "load_model_seconds": round(load_model_s, 3), "languages": langs,
        "questions": sum(r["questions"] for r in langs.values()), "windows": sum(r["windows"] for r in langs.values()),
        "phase_seconds": phase, "phase_share": {p: v / total for p, v in phase.items()},
        "total_seconds": round(total, 3), "biggest_phase": max(phase, key=phase.get), "peak_rss_mb": peak,
        "second_run": second_run(files, model, tok, args, cache),
    }  # fmt: skip
    if args.lever_examples:
        lever = forward_levers(Path(args.xquad) / f"xquad.{args.lever_lang}.json", model, tok, args, precision,
                               cache)  # fmt: skip
        summary["forward_levers"] = lever
    _print(summary)
    write_result(args.out, summary)


if __name__ == "__main__":
    main()

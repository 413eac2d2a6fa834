"""Where evaluation time goes: loading, features, model forward, span decoding, scoring (seconds per phase).

    python benchmarks/profile_eval.py --model runs/x/best --data ../shared/data/squad/dev-v1.1.json \
        --out benchmarks/results/profile-eval.json

The model forward is the only phase that should grow with model size; the others are xlqa's own overhead.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from xlqa.data import load_squad
from xlqa.evaluate import score_examples
from xlqa.features import FeatureParams, build_features
from xlqa.modeling import load_qa_model
from xlqa.postprocess import decode
from xlqa.precision import choose_precision
from xlqa.predict import padded_offsets, predict_logits
from xlqa.sources.registry import spec_for_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="auto")
    ap.add_argument(
        "--quantize", action="store_true", help="int8 dynamic quantization of Linear layers (CPU)"
    )
    ap.add_argument("--out", default="benchmarks/results/profile-eval.json")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    phases: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        phases[name] = round(time.perf_counter() - t, 3)
        return out

    model, tok = timed("load_model", lambda: load_qa_model(args.model))
    if args.quantize:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    model.to(device)
    precision = "fp32" if args.quantize else choose_precision(args.precision, device)
    data = timed("load_data", lambda: load_squad(args.data))
    feats = timed("features", lambda: build_features(data.examples, tok, FeatureParams()))
    start, end = timed(
        "forward",
        lambda: predict_logits(
            model, feats, pad_token_id=tok.pad_token_id or 0, batch_size=args.batch_size, progress=False,
            precision=precision, device=device,
        ),
    )  # fmt: skip
    offsets = timed("offsets", lambda: padded_offsets(feats))
    dec = timed(
        "decode",
        lambda: decode(
            start, end, offsets, feats.example_index, feats.cls_index, [e.id for e in data.examples],
            [e.context for e in data.examples],
        ),
    )  # fmt: skip
    scored = timed("score", lambda: score_examples(data.examples, dec.predictions, rules=spec_for_file(data).rules,
                                                   language=data.language))  # fmt: skip
    total = sum(phases.values())
    for k, v in phases.items():
        print(f"{k:12s} {v:8.2f} s  {100 * v / total:5.1f}%")
    print(f"{'total':12s} {total:8.2f} s   windows {len(feats)}  F1 {scored.f1:.2f}")
    out = {"args": vars(args), "precision": precision, "device": str(device), "windows": len(feats),
           "phases_s": phases, "metrics": scored.metrics}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Answer length: fixed token limits against xlqa's rule, on a real model's predictions and on the answer ceiling.

xlqa's rule (``xlqa.postprocess`` defaults): spans of up to 100 tokens stay possible, but a span longer than
``FREE_ANSWER_TOKENS`` English-like tokens, scaled per window by the tokenizer's fertility there
(``xlqa.spans.free_lengths``), loses ``LENGTH_PENALTY`` of its score per token beyond. A fixed limit either
cuts gold answers (mBERT splits Thai into 2.8x the tokens of English) or lets a model stretch uncertain spans.

The logits of the model over the 12 XQuAD languages are computed once (cached, as in bench_postprocess.py);
every rule then decodes the same logits, offline and without torch. The ceiling (a model sure of exactly the
labelled tokens, ``xlqa.ceiling``) is measured for mBERT's and XLM-R's tokenizers with xlqa's rule and with the
best fixed limit.

    python benchmarks/bench_answer_length.py --model demo-output/run/best \
        --out benchmarks/results/answer-length-xquad-e5.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from xlqa.ceiling import answer_ceiling
from xlqa.data import gold_texts, load_squad
from xlqa.metrics import per_question
from xlqa.postprocess import FREE_ANSWER_TOKENS, LENGTH_PENALTY, MAX_ANSWER_LENGTH, decode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_postprocess import DEFAULT_MODEL, model_logits

LANGS = ["en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi", "ro"]
FIXED = [10, 15, 20, 30, 50, 100]
TOKENIZERS = {"mBERT": "mbert-cased-tokenizer", "XLM-R": "xlm-r-tokenizer"}


def rule_kwargs(rule: str | int) -> dict:
    """decode() arguments of a rule: a fixed limit without penalty, or xlqa's defaults."""
    if rule == "xlqa":
        return {"max_answer_length": MAX_ANSWER_LENGTH}
    return {"max_answer_length": int(rule), "length_penalty": 0.0}


def scores(data, lg: dict, rule) -> tuple[float, float]:
    """(F1, EM) of the model's answers decoded under ``rule``, with the data's official rules."""
    ids = [ex.id for ex in data.examples]
    dec = decode(
        lg["start"], lg["end"], lg["offsets"], lg["example_index"], lg["cls_index"], ids,
        [ex.context for ex in data.examples], **rule_kwargs(rule),
    )  # fmt: skip
    per_q = per_question(gold_texts(data.examples), dec.predictions, rules="squad1", lang=data.language)
    f1 = 100 * float(np.mean([v[1] for v in per_q.values()]))
    em = 100 * float(np.mean([v[0] for v in per_q.values()]))
    return round(f1, 2), round(em, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="QA model folder (its logits are cached)")
    ap.add_argument("--xquad", default="../shared/data/xquad", help="folder of xquad.<lang>.json")
    ap.add_argument(
        "--tokenizers", default="../shared/models", help="folder of the mBERT and XLM-R tokenizers"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "xlqa" / "bench-logits"))
    ap.add_argument("--out", default="benchmarks/results/answer-length-xquad.json")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    files = {lang: Path(args.xquad) / f"xquad.{lang}.json" for lang in LANGS}
    data = {lang: load_squad(f) for lang, f in files.items()}
    rows = {}
    for lang in LANGS:
        lg = model_logits(args.model, files[lang], Path(args.cache), args.batch_size)
        rows[lang] = {"model": {str(r): scores(data[lang], lg, r) for r in [*FIXED, "xlqa"]}}
    avg = {r: float(np.mean([rows[lang]["model"][r][0] for lang in LANGS])) for r in rows["en"]["model"]}
    best_fixed = max((str(n) for n in FIXED), key=lambda r: avg[r])
    for name, folder in TOKENIZERS.items():
        tok = AutoTokenizer.from_pretrained(str(Path(args.tokenizers) / folder))
        for lang in LANGS:
            rows[lang][name] = {
                rule: answer_ceiling(data[lang], tok, max_answer_length=limit).exact_match
                for rule, limit in (("xlqa", MAX_ANSWER_LENGTH), (best_fixed, int(best_fixed)), ("30", 30))
            }
    print_table(rows, best_fixed, avg)
    out = {
        "benchmark": "answer_length",
        "command": " ".join(sys.argv),
        "args": vars(args),
        "rule": {
            "max_answer_length": MAX_ANSWER_LENGTH,
            "free_answer_tokens": FREE_ANSWER_TOKENS,
            "length_penalty": LENGTH_PENALTY,
        },
        "best_fixed": int(best_fixed),
        "average_f1": {k: round(v, 2) for k, v in avg.items()},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "languages": rows,  # model: rule -> [F1, EM]; mBERT/XLM-R: rule -> ceiling EM
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


def print_table(rows: dict, best_fixed: str, avg: dict) -> None:
    """Per language: the model's F1/EM at 30, 100, the best fixed limit and xlqa's rule; ceiling EM per tokenizer."""
    b = best_fixed
    head = ["lang", "F1/EM 30", "F1/EM 100", f"F1/EM {b}", "F1/EM xlqa"]
    head += [f"{t} ceil {r}" for t in TOKENIZERS for r in ("xlqa", b, "30")]
    print(" | ".join(head))
    for lang, row in rows.items():
        m = row["model"]
        cells = [lang] + [f"{m[r][0]:.2f}/{m[r][1]:.2f}" for r in ("30", "100", b, "xlqa")]
        cells += [f"{row[t][r]:.2f}" for t in TOKENIZERS for r in ("xlqa", b, "30")]
        print(" | ".join(cells))
    print("average F1: " + ", ".join(f"{r}: {v:.2f}" for r, v in avg.items()))
    for t in TOKENIZERS:
        worst = {r: min(row[t][r] for row in rows.values()) for r in ("xlqa", b, "30")}
        print(f"{t} lowest ceiling EM: " + ", ".join(f"{r}: {v:.2f}" for r, v in worst.items()))


if __name__ == "__main__":
    main()

"""The GPU benchmark: mBERT, XLM-R-base and mT5-small shapes, xlqa's batching against the padded baseline.

One command for a GPU machine (it also runs on a CPU; ``--tiny`` shrinks every model to 2 layers for a quick
check). Each family is built with **random weights** from its published shapes (config kwargs below, no hub
access; weights do not change speed): mBERT-base (BERT 12x768, vocabulary of ``mbert-cased-tokenizer``),
XLM-R-base (12x768, vocabulary of ``xlm-r-tokenizer``) and mT5-small (8+8 layers, d_model 512, 6 heads x 64,
gated-GELU 1024, vocabulary 250,112, untied LM head). Windows are real: SQuAD v1.1 train (training) and dev
(evaluation) cut by ``xlqa.features`` with the family's tokenizer; mT5 windows come from
``xlqa.generative.build_windows`` with the XLM-R SentencePiece tokenizer (mT5's own is not in
``../shared/models``; both are multilingual SentencePiece vocabularies of about 250k pieces, and the ids fit).

Per family, in the same run and precision (bf16 where the device computes it natively, else fp32; ``--precision``), two rows per phase:

- ``baseline``: random batches, every window padded to ``--max-seq-length`` (targets to
  ``--max-answer-length``), default AdamW, eager;
- ``xlqa``: length-grouped batches (``shuffled_batches``; evaluation ``sorted_batches``) padded per batch to a
  multiple of ``default_pad_multiple()``, plus the levers as flags: ``--token-budget`` (batches filled up to a
  number of padded tokens instead of a window count), ``--fused-adamw``, ``--compile``, ``--bf16-weights``
  (training on a bf16 copy with fp32 master weights, as ``xlqa train --bf16-weights``; evaluation in bf16
  weights, as ``xlqa evaluate``).

Training: forward + backward + optimizer step (collation included, as in the loop); evaluation: the forward
pass under ``inference_mode`` (for mT5 a teacher-forced pass over the target, not beam search). MFU counts
FLOPs on real, unpadded tokens (``bench_hardware``: ``6*N*L + 12*layers*A*L**2`` per training window,
a third of it for evaluation) against the device's dense bf16 peak from ``KNOWN_PEAKS``, else against a bf16
matmul measured in the run. Peak memory: ``torch.cuda.max_memory_allocated`` per phase on a GPU; on a CPU the
process's max RSS (monotonic, so only the first row of a run is its own).

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu-h100.json
    python benchmarks/bench_gpu.py --token-budget 16384 --fused-adamw --compile --bf16-weights
    python benchmarks/bench_gpu.py --tiny --max-examples 24 --steps 2 --out /tmp/gpu-tiny.json   # CPU check
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from bench_hardware import FlopModel, matmul_tflops, real_lengths, sync
from benchlib import window_params
from xlqa.batching import Collator, WindowDataset, default_pad_multiple, shuffled_batches, sorted_batches
from xlqa.data import load_squad
from xlqa.features import cached_features
from xlqa.generative import Seq2SeqCollator, Seq2SeqDataset, build_windows
from xlqa.precision import autocast, choose_precision
from xlqa.predict import model_inputs
from xlqa.train.bf16 import Bf16Weights

SHARED = Path(__file__).resolve().parents[2] / "shared"
FAMILIES = ("mbert", "xlmr", "mt5")
TOKENIZERS = {"mbert": "mbert-cased-tokenizer", "xlmr": "xlm-r-tokenizer", "mt5": "xlm-r-tokenizer"}
SQUAD_V11_WINDOWS = 88_600  # mBERT windows of SQuAD v1.1 train at 384/128 (issue 12), for the epoch estimate
# dense bf16 TFLOP/s from the vendors' datasheets (not the 2:4-sparsity figures); longest match wins
KNOWN_PEAKS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,
    "H200": 989.4,
    "GH200": 989.4,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
}


def known_peak(device_name: str) -> float | None:
    """The dense bf16 peak (TFLOP/s) of a GPU by its name, or None when it is not in ``KNOWN_PEAKS``."""
    for key in sorted(KNOWN_PEAKS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return KNOWN_PEAKS[key]
    return None


def build_model(family: str, vocab_size: int, tiny: bool) -> torch.nn.Module:
    """A random-weight model with the published shapes of ``family`` (2 small layers with ``tiny``)."""
    import transformers as tf

    enc_small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    base = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    shape = enc_small if tiny else base
    if family == "mbert":
        return tf.BertForQuestionAnswering(tf.BertConfig(vocab_size=vocab_size, type_vocab_size=2, **shape))
    if family == "xlmr":
        cfg = tf.XLMRobertaConfig(
            vocab_size=vocab_size,
            max_position_embeddings=514,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **shape,
        )
        return tf.XLMRobertaForQuestionAnswering(cfg)
    t5 = (
        dict(d_model=64, d_kv=32, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=2)
        if tiny
        else dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6)
    )
    cfg = tf.MT5Config(
        vocab_size=250_112,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        relative_attention_num_buckets=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        **t5,
    )
    return tf.MT5ForConditionalGeneration(cfg)


def budget_batches(lengths: np.ndarray, budget: int, multiple: int, seed: int | None) -> list[list[int]]:
    """Batches filled up to ``budget`` padded tokens (width rounded up to ``multiple``).

    ``seed`` None: evaluation order (longest first); else a seeded shuffle, length-sorted inside chunks of
    2,000 windows, batches shuffled (the training order of ``shuffled_batches``, by tokens instead of count).
    """
    lengths = np.asarray(lengths)
    if seed is None:
        chunks = [np.argsort(-lengths, kind="stable")]
    else:
        perm = np.random.default_rng(seed).permutation(len(lengths))
        chunks = [
            c[np.argsort(-lengths[c], kind="stable")] for c in np.array_split(perm, max(1, len(perm) // 2000))
        ]
    batches: list[list[int]] = []
    for chunk in chunks:
        cur: list[int] = []
        width = 0
        for i in chunk.tolist():
            width = width or -(-int(lengths[i]) // multiple) * multiple
            if cur and width * (len(cur) + 1) > budget:
                batches.append(cur)
                cur, width = [], -(-int(lengths[i]) // multiple) * multiple
            cur.append(i)
        batches.append(cur)
    if seed is not None:
        order = np.random.default_rng(seed + 1).permutation(len(batches))
        batches = [batches[k] for k in order]
    return batches


class Widen:
    """Wraps a collator: right-pads inputs to a multiple of ``multiple`` or to ``width``, targets likewise."""

    def __init__(self, collate, pad_id: int, *, multiple: int = 1, width: int = 0, label_width: int = 0):
        self.collate, self.pad_id, self.multiple = collate, pad_id, multiple
        self.width, self.label_width = width, label_width

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collate(items)
        w = batch["input_ids"].shape[1]
        target = self.width or -(-w // self.multiple) * self.multiple
        fills = {"input_ids": self.pad_id, "attention_mask": 0, "token_type_ids": 0}
        for key, fill in fills.items():
            if key in batch and target > w:
                batch[key] = torch.nn.functional.pad(batch[key], (0, target - w), value=fill)
        if "labels" in batch:
            lw = batch["labels"].shape[1]
            lt = self.label_width or -(-lw // min(8, self.multiple)) * min(8, self.multiple)
            batch["labels"] = torch.nn.functional.pad(batch["labels"], (0, max(0, lt - lw)), value=-100)
        return batch


def family_data(family: str, args, train: list, dev: list) -> dict:
    """Windows of ``family`` from the real SQuAD examples ``train`` and ``dev``, with their collators."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(Path(args.models) / TOKENIZERS[family]))
    if family == "mt5":
        kw = dict(
            max_seq_length=args.max_seq_length,
            doc_stride=window_params(args.max_seq_length).doc_stride,
            max_answer_length=args.max_answer_length,
        )
        tw, ew = build_windows(train, tok, training=True, **kw), build_windows(dev, tok, training=True, **kw)
        return {
            "vocab": 250_112,
            "pad": 0,
            "train": Seq2SeqDataset(tw),
            "train_lengths": tw.lengths,
            "eval": Seq2SeqDataset(ew),
            "eval_lengths": ew.lengths,
            "collate": Seq2SeqCollator(0),
        }
    params = window_params(args.max_seq_length)
    tf_, ef = (
        cached_features(train, tok, params, training=True),
        cached_features(dev, tok, params, training=False),
    )
    pad = tok.pad_token_id or 0
    return {
        "vocab": len(tok),
        "pad": pad,
        "train": WindowDataset(tf_),
        "train_lengths": tf_.lengths,
        "eval": WindowDataset(ef, with_labels=False),
        "eval_lengths": ef.lengths,
        "collate": Collator(pad, pad_to_multiple_of=1),
    }


def plan(data: dict, mode: str, phase: str, args) -> tuple[list[list[int]], Widen]:
    """The batches and collator of one (mode, phase): the padded baseline or xlqa's batching."""
    n = len(data[phase])
    lengths = data[f"{phase}_lengths"]
    size = args.batch_size if phase == "train" else args.eval_batch_size
    if mode == "baseline":
        perm = np.random.default_rng(0).permutation(n).tolist()
        widen = Widen(
            data["collate"], data["pad"], width=args.max_seq_length, label_width=args.max_answer_length
        )
        return [perm[i : i + size] for i in range(0, n, size)], widen
    mult = default_pad_multiple()
    if args.token_budget:
        batches = budget_batches(lengths, args.token_budget, mult, 0 if phase == "train" else None)
    elif phase == "train":
        batches = shuffled_batches(lengths, size, 0)
    else:
        batches = sorted_batches(lengths, size)
    return batches, Widen(data["collate"], data["pad"], multiple=mult)


def _forward(model, batch: dict, device: torch.device, training: bool):
    inputs = {k: v.to(device, non_blocking=True) for k, v in model_inputs(batch, model).items()}
    if "labels" in batch:
        return model(**inputs, labels=batch["labels"].to(device))
    if not training:
        return model(**inputs)
    return model(
        **inputs,
        start_positions=batch["start_positions"].to(device),
        end_positions=batch["end_positions"].to(device),
    )


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_phase(model, data, mode: str, phase: str, args, device, precision) -> dict:
    """Time ``--steps`` training steps (after ``--warmup``) or one pass over the evaluation windows."""
    batches, collate = plan(data, mode, phase, args)
    ds, fm, training = data[phase], FlopModel.of(model), phase == "train"
    levers = mode == "xlqa" and training
    # --bf16-weights: xlqa trains on a bf16 copy (fp32 master weights) and evaluates in bf16 weights, no autocast
    bf16 = Bf16Weights.when(model, mode == "xlqa" and args.bf16_weights, precision)
    target, step_precision = (model, precision) if bf16 is None else (bf16.module, "fp32")
    run = torch.compile(target) if args.compile and mode == "xlqa" else target
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True if levers and args.fused_adamw else None)
    model.train(training)
    target.train(training)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    count = args.warmup + args.steps if training else args.warmup + len(batches)
    stats = dict(windows=0, real_tokens=0, padded_tokens=0, flops=0.0, seconds=0.0)
    for i, idx in enumerate(itertools.islice(itertools.cycle(batches), count)):
        sync(device)
        t0 = time.perf_counter()
        batch = collate([ds[j] for j in idx])
        if bf16 is not None and (training or i == 0):
            bf16.pull()
        with torch.inference_mode(not training), autocast(step_precision, device):
            out = _forward(run, batch, device, training)
        if training:
            out.loss.backward()
            if bf16 is not None:
                bf16.push_grads()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync(device)
        if i < args.warmup:
            continue
        lin, lout = real_lengths(batch)
        stats["seconds"] += time.perf_counter() - t0
        stats["flops"] += fm.flops(lin, lout, training=training)
        stats["windows"] += len(idx)
        stats["real_tokens"] += int(lin.sum() + (0 if lout is None else lout.sum()))
        stats["padded_tokens"] += batch["input_ids"].numel() + (
            batch["labels"].numel() if lout is not None else 0
        )
    secs = stats["seconds"]
    return {
        "mode": mode,
        "phase": phase,
        **stats,
        "batches": count - args.warmup,
        "windows_per_s": stats["windows"] / secs,
        "tokens_per_s": stats["real_tokens"] / secs,
        "tflops": stats["flops"] / secs / 1e12,
        "peak_memory_mb": _peak_memory_mb(device),
    }


def bench_family(family: str, args, examples: tuple, device, precision, peak: float) -> list[dict]:
    """Baseline and xlqa rows (training, evaluation) of one family, a fresh model (same seed) for each."""
    data = family_data(family, args, *examples)
    rows = []
    for mode in ("baseline", "xlqa"):
        torch.manual_seed(0)
        model = build_model(family, data["vocab"], args.tiny).to(device)
        for phase in ("train", "eval"):
            row = run_phase(model, data, mode, phase, args, device, precision)
            row.update(family=family, params_m=model.num_parameters() / 1e6, mfu=row["tflops"] / peak)
            rows.append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _print(rows: list[dict], speedups: dict) -> None:
    print(f"{'family':6s} {'phase':5s} {'mode':8s} {'windows/s':>10s} {'tokens/s':>10s} ", end="")
    print(f"{'TFLOP/s':>8s} {'MFU':>6s} {'MB':>8s}")
    for r in rows:
        print(
            f"{r['family']:6s} {r['phase']:5s} {r['mode']:8s} "
            f"{r['windows_per_s']:10.1f} {r['tokens_per_s']:10.0f} "
            f"{r['tflops']:8.2f} {r['mfu']:6.1%} {r['peak_memory_mb']:8.0f}"
        )
    for fam, s in speedups.items():
        print(f"{fam}: xlqa over padded baseline: train x{s['train']:.2f}, eval x{s['eval']:.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: mbert,xlmr,mt5")
    ap.add_argument("--tiny", action="store_true", help="2 layers, hidden 64 (a CPU check of the command)")
    ap.add_argument("--train", default=str(SHARED / "data/squad/train-v1.1.json"))
    ap.add_argument("--eval", default=str(SHARED / "data/squad/dev-v1.1.json"))
    ap.add_argument("--models", default=str(SHARED / "models"), help="folder of the offline tokenizers")
    ap.add_argument("--max-examples", type=int, default=2000, help="questions read from each file")
    ap.add_argument("--max-seq-length", type=int, default=384)
    ap.add_argument("--max-answer-length", type=int, default=32, help="mT5 target tokens")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=128)
    ap.add_argument("--token-budget", type=int, default=0, help="xlqa: padded tokens per batch (0: off)")
    ap.add_argument("--fused-adamw", action="store_true", help="xlqa: AdamW(fused=True)")
    ap.add_argument("--compile", action="store_true", help="xlqa: torch.compile the model")
    ap.add_argument("--bf16-weights", action="store_true",
                    help="xlqa: train on a bf16 copy with fp32 master weights (xlqa train --bf16-weights), evaluate "
                         "in bf16 weights (as xlqa evaluate); with --precision bf16")  # fmt: skip
    ap.add_argument("--steps", type=int, default=30, help="measured training steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps/batches first")
    ap.add_argument("--precision", default="auto", help="auto: bf16 where native (any bf16 GPU), else fp32")
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = choose_precision(args.precision, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    shape = (1024, 1024, 1024) if args.tiny else (4096, 4096, 4096)
    measured = matmul_tflops(*shape, torch.bfloat16 if precision == "bf16" else torch.float32, device, 3)
    table = known_peak(name) if device.type == "cuda" else None
    peak = table or measured
    examples = tuple(load_squad(p, max_examples=args.max_examples).examples for p in (args.train, args.eval))
    rows: list[dict] = []
    for family in args.families.split(","):
        rows.extend(bench_family(family.strip(), args, examples, device, precision, peak))
    speedups: dict = {}
    for r in rows:
        if r["mode"] == "xlqa":
            base = next(
                b
                for b in rows
                if b["mode"] == "baseline" and b["family"] == r["family"] and b["phase"] == r["phase"]
            )
            speedups.setdefault(r["family"], {})[r["phase"]] = r["windows_per_s"] / base["windows_per_s"]
    _print(rows, speedups)
    mbert = [r for r in rows if r["family"] == "mbert" and r["phase"] == "train" and r["mode"] == "xlqa"]
    summary = {
        "device": name,
        "device_type": device.type,
        "precision": precision,
        "torch": torch.__version__,
        "peak_tflops": peak,
        "peak_source": "datasheet" if table else f"measured bf16 matmul {shape}",
        "measured_matmul_tflops": measured,
        "args": vars(args),
        "rows": rows,
        "speedups": speedups,
        "mbert_squad_epoch_seconds": SQUAD_V11_WINDOWS / mbert[0]["windows_per_s"] if mbert else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

"""Against the hardware: how much of the machine's own matmul peak a real training step and evaluation reach.

In one run, on one device (CUDA if present, else the CPU):

1. **Peak**: the median TFLOP/s of large matmuls (4096x4096x4096 and 3200x384 by 384x1536) in bf16 and fp32
   (bf16 on a 512^3 product only where the CPU emulates it: there it runs about 100x slower than fp32).
2. **Training step** of a real model (default the offline ``e5-small`` source, word embeddings frozen as in
   the demo) on real SQuAD windows (``xlqa.features``) with xlqa's batching: length-grouped batches
   (``shuffled_batches``) padded per batch (``Collator``), forward + backward + AdamW, bf16 autocast where the
   hardware computes bf16 natively (``choose_precision("auto")``), else fp32, or with the demo's
   ``--bf16-weights`` on a bf16 copy of the model with fp32 master weights (no autocast); the demo's dropouts
   (``DemoConfig``: attention and hidden dropout 0; ``--attention-dropout -1 --hidden-dropout -1`` for the
   model's own 0.1) and attention implementation (``--attention``, the demo's ``eager``); every layer trains
   (the demo freezes its bottom 4: the FLOP count below assumes a full backward pass). Each measured batch runs
   twice: the first run of a new padded shape also builds that shape's kernels (oneDNN on a CPU), which a long run
   pays once per shape; the figures are the second runs (steady state), the first ones are reported as ``cold``.
3. **Evaluation batches** on XQuAD-en windows, length-sorted, under ``inference_mode``, as ``xlqa evaluate``
   runs them: batches of 16 on a CPU (64 on a GPU), and in bf16 the weights cast once instead of autocast.
4. **Where the time goes**: one training step under ``torch.profiler``, each op's *self* time grouped into
   matmul / attention / elementwise+norm / optimizer / other, plus the unattributed rest of the step's wall
   time (Python, autograd and framework overhead).

What is counted (FLOPs, multiply-add = 2), on REAL tokens only (padding added by the batching is not counted):
``N`` = parameters outside ``nn.Embedding`` modules (the QA head included); per window of ``L`` real tokens,
a forward pass costs ``2*N*L + 4*layers*A*L**2`` (``A`` = attention width = heads x head size, the
``Q@K^T`` and ``P@V`` products), training (forward + backward) three times that: ``6*N*L +
12*layers*A*L**2``. Encoder-decoders (mT5) count encoder parameters on input tokens, decoder parameters and
the untied LM head on target tokens, the cross-attention K/V projections on input tokens, and attention
products of ``L_in**2``, ``L_out**2`` and ``L_in*L_out``. The optimizer, softmax, norms and elementwise ops
are not counted (they are time without FLOPs here). Achieved TFLOP/s are divided by the measured bf16 peak
(and by the fp32 one when the run is in fp32).

    flock /tmp/xlqa-torch.lock .venv/bin/python benchmarks/bench_hardware.py --steps 3 --batch-size 16 \
        --max-seq-length 256
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchlib import sync, train_step, window_params
from xlqa.allocator import active
from xlqa.config import DemoConfig
from xlqa.evaluate import eval_batch_size
from xlqa.train.bf16 import Bf16Weights

PEAK_SHAPES = ((4096, 4096, 4096), (3200, 384, 1536))
# bf16 on a CPU without native bf16 (AVX2 only) is emulated: 0.001 TFLOP/s against fp32's 0.14 at 1024^3 on an
# AMD EPYC (3 Dec), so a 4096^3 product takes minutes; one small shape shows the rate there
EMULATED_SHAPES = ((512, 512, 512),)
GROUPS = ("matmul", "attention", "elementwise+norm", "optimizer", "other")
MATMUL_OPS = ("mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "linear", "_mkldnn", "mkldnn_", "onednn")
ATTENTION_OPS = (
    "scaled_dot_product",
    "flash_attention",
    "efficient_attention",
    "softmax",
    "_cudnn_attention",
)
ELEMENTWISE_OPS = (
    "add",
    "mul",
    "div",
    "sub",
    "gelu",
    "relu",
    "tanh",
    "norm",
    "dropout",
    "bernoulli",
    "copy_",
    "to",
    "fill",
    "zero",
    "where",
    "masked",
    "sum",
    "mean",
    "exp",
    "sqrt",
    "rsqrt",
    "pow",
    "clamp",
    "cat",
    "embedding",
    "nll_loss",
    "log_softmax",
    "cross_entropy",
    "threshold",
    "neg",
    "_to_copy",
    "empty",
    "clone",
    "contiguous",
    "index",
    "gather",
    "scatter",
    "cumsum",
    "argmax",
    "max",
    "min",
    "ge",
    "lt",
    "eq",
    "ne",
)


def matmul_tflops(
    m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, repeats: int = 5
) -> float:
    """Median TFLOP/s of ``[m,k] @ [k,n]`` (2*m*k*n FLOPs), each repeat long enough to time (>= 0.05 s)."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    a @ b  # warm-up: kernel selection, allocation
    sync(device)
    inner, rates = 1, []
    while True:  # find an inner loop count that runs >= 0.05 s
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        if time.perf_counter() - t0 >= 0.05 or inner >= 4096:
            break
        inner *= 4
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        rates.append(2 * m * k * n * inner / (time.perf_counter() - t0) / 1e12)
    return statistics.median(rates)


def measure_peaks(device: torch.device, repeats: int = 5) -> dict:
    """``{"bf16": {shape: TFLOP/s}, "fp32": {...}, "bf16_max": ..., "fp32_max": ..., "bf16_native": ...}``.

    Where bf16 is emulated (a CPU without AVX512-BF16 or AMX) it is measured on ``EMULATED_SHAPES`` only.
    """
    from xlqa.precision import cpu_has_native_bf16

    native = device.type == "cuda" or cpu_has_native_bf16()
    out: dict = {"bf16_native": native}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        shapes = PEAK_SHAPES if native or name == "fp32" else EMULATED_SHAPES
        rates = {f"{m}x{k}x{n}": matmul_tflops(m, k, n, dtype, device, repeats) for m, k, n in shapes}
        out[name] = rates
        out[f"{name}_max"] = max(rates.values())
    return out


@dataclass
class FlopModel:
    """Parameters per input/output token and the attention shapes of a model (see the module docstring)."""

    n_in: int  # parameters applied to every input (encoder) token
    n_out: int  # parameters applied to every target (decoder) token, LM head included
    enc_layers: int
    dec_layers: int
    attn_width: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> FlopModel:
        """The counts of ``model``: parameters outside ``nn.Embedding`` modules, split by where they apply."""
        cfg = model.config
        emb = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
        n_in = n_out = 0
        seen: set[int] = set()
        for name, p in model.named_parameters():
            if id(p) in emb or id(p) in seen:
                continue
            seen.add(id(p))
            cross_kv = "EncDecAttention.k." in name or "EncDecAttention.v." in name
            on_output = (
                getattr(cfg, "is_encoder_decoder", False) and not cross_kv and not name.startswith("encoder.")
            )
            if on_output:
                n_out += p.numel()
            else:
                n_in += p.numel()
        enc = getattr(cfg, "num_hidden_layers", None) or cfg.num_layers
        dec = getattr(cfg, "num_decoder_layers", 0) if getattr(cfg, "is_encoder_decoder", False) else 0
        width = cfg.num_heads * cfg.d_kv if hasattr(cfg, "d_kv") else cfg.hidden_size
        return cls(n_in, n_out, enc, dec, width)

    def flops(self, in_lens: np.ndarray, out_lens: np.ndarray | None = None, *, training: bool) -> float:
        """FLOPs of one pass over windows of ``in_lens`` real input (and ``out_lens`` target) tokens."""
        li = np.asarray(in_lens, dtype=np.float64)
        lo = np.zeros_like(li) if out_lens is None else np.asarray(out_lens, dtype=np.float64)
        fwd = 2 * self.n_in * li.sum() + 2 * self.n_out * lo.sum()
        fwd += (
            4
            * self.attn_width
            * (self.enc_layers * (li**2).sum() + self.dec_layers * (lo**2 + li * lo).sum())
        )
        return float(fwd * (3 if training else 1))


def real_lengths(batch: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """Real (unpadded) input and target lengths of each window of a collated batch."""
    lin = batch["attention_mask"].sum(1).numpy()
    lout = (batch["labels"] != -100).sum(1).numpy() if "labels" in batch else None
    return lin, lout


def classify_op(name: str) -> str:
    """The group of a profiler op name (see ``GROUPS``); optimizer ops are found by their enclosing range."""
    short = name.removeprefix("aten::").lower()
    if any(short.startswith(k) or k in short for k in ATTENTION_OPS):
        return "attention"
    if any(short == k or short.startswith(k) for k in MATMUL_OPS):
        return "matmul"
    if any(short.startswith(k) or k in short for k in ELEMENTWISE_OPS):
        return "elementwise+norm"
    return "other"


def _under_optimizer(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step") or parent.name == "xlqa.optimizer":
            return True
        parent = parent.cpu_parent
    return False


def profile_step(step_fn, device: torch.device) -> dict:
    """Self time of every op of one call of ``step_fn`` by ``GROUPS`` (seconds), with the wall time."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        step_fn()
        sync(device)
        wall = time.perf_counter() - t0
    groups = dict.fromkeys(GROUPS, 0.0)
    top: dict[str, float] = {}
    for ev in prof.events():
        if ev.device_type != torch.autograd.DeviceType.CPU or not ev.name.startswith("aten::"):
            continue
        secs = ev.self_cpu_time_total / 1e6
        group = "optimizer" if _under_optimizer(ev) else classify_op(ev.name)
        groups[group] += secs
        top[ev.name] = top.get(ev.name, 0.0) + secs
    attributed = sum(groups.values())
    return {
        "wall_seconds": wall,
        "groups_seconds": groups,
        "unattributed_seconds": max(0.0, wall - attributed),
        "top_ops_seconds": dict(sorted(top.items(), key=lambda kv: -kv[1])[:12]),
    }


def _windows(args, tok):
    from xlqa.data import load_squad
    from xlqa.features import cached_features

    train = load_squad(args.train, max_examples=args.max_examples)
    tfeats = cached_features(train.examples, tok, window_params(args.max_seq_length), training=True)
    ev = load_squad(args.eval, max_examples=args.max_examples)
    efeats = cached_features(ev.examples, tok, window_params(args.eval_max_seq_length), training=False)
    return tfeats, efeats


def _train_rows(model, tok, feats, args, device, precision) -> tuple[dict, dict]:
    from torch.utils.data import DataLoader

    from xlqa.batching import Collator, WindowDataset, shuffled_batches

    batches = shuffled_batches(feats.lengths, args.batch_size, seed=0)
    loader = DataLoader(
        WindowDataset(feats), batch_sampler=batches, collate_fn=Collator(tok.pad_token_id or 0)
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    fm = FlopModel.of(model)
    it = iter(loader)
    model.train()
    bf16 = Bf16Weights.when(model, args.bf16_weights, precision)

    def step(batch):
        train_step(model, batch, opt, device=device, precision=precision, bf16=bf16)

    for _ in range(args.warmup):
        step(next(it))
    # each batch twice: the first run of a new padded shape also builds its kernels (oneDNN on a CPU), which a
    # long run pays once per shape; the second is the steady state (the figures), the first is reported as cold
    times, cold, flops, tokens, padded = [], [], 0.0, 0, 0
    for _ in range(args.steps):
        batch = next(it)
        for into in (cold, times):
            sync(device)
            t0 = time.perf_counter()
            step(batch)
            sync(device)
            into.append(time.perf_counter() - t0)
        flops += fm.flops(real_lengths(batch)[0], training=True)
        tokens += int(batch["attention_mask"].sum())
        padded += batch["input_ids"].numel()
    # the last measured batch once more (same shape as the measured steps), collated before: the step alone
    prof = profile_step(lambda: step(batch), device)
    prof["real_tokens"], prof["padded_shape"] = (
        int(batch["attention_mask"].sum()),
        list(batch["input_ids"].shape),
    )
    secs = sum(times)
    row = {
        "steps": args.steps,
        "step_seconds_median": statistics.median(times),
        "step_seconds": [round(t, 4) for t in times],
        "seconds": secs,
        "real_tokens": tokens,
        "padded_tokens": padded,
        "tflop": flops / 1e12,
        "tflops": flops / secs / 1e12,
        "cold": {
            "step_seconds": [round(t, 4) for t in cold],
            "step_seconds_median": statistics.median(cold),
            "tflops": flops / sum(cold) / 1e12,
        },
    }
    return row, prof


@torch.inference_mode()
def _eval_row(model, tok, feats, args, device, precision) -> dict:
    from xlqa.batching import Collator, WindowDataset, sorted_batches
    from xlqa.precision import autocast
    from xlqa.predict import model_inputs

    ds, collate = WindowDataset(feats, with_labels=False), Collator(tok.pad_token_id or 0)
    batches = sorted_batches(feats.lengths, args.eval_batch_size)
    fm = FlopModel.of(model)
    model.eval()
    secs = flops = 0.0
    tokens = 0
    for i, idx in enumerate(batches[: args.warmup + args.steps]):
        batch = collate([ds[j] for j in idx])
        inputs = {k: v.to(device) for k, v in model_inputs(batch, model).items()}
        sync(device)
        t0 = time.perf_counter()
        with autocast(precision, device):
            model(**inputs)
        sync(device)
        if i >= args.warmup:
            secs += time.perf_counter() - t0
            flops += fm.flops(real_lengths(batch)[0], training=False)
            tokens += int(batch["attention_mask"].sum())
    return {
        "batches": args.steps,
        "seconds": secs,
        "real_tokens": tokens,
        "tflop": flops / 1e12,
        "tflops": flops / secs / 1e12,
    }


def _print(summary: dict) -> None:
    peaks, ref = summary["peak_tflops"], summary["reference_peak_tflops"]
    for name in ("bf16", "fp32"):
        shapes = ", ".join(f"{s} {v:.3f}" for s, v in peaks[name].items())
        emulated = "" if name == "fp32" or peaks["bf16_native"] else " (emulated: no native bf16 here)"
        print(f"peak {name:5s} matmul TFLOP/s: {shapes}{emulated}")
    print(f"{'phase':8s} {'TFLOP/s':>8s} {'of peak':>8s}  (precision {summary['precision']}, peak {ref:.2f})")
    for phase in ("train", "eval"):
        r = summary[phase]
        print(f"{phase:8s} {r['tflops']:8.3f} {r['fraction_of_peak']:8.1%}")
    cold = summary["train"]["cold"]
    print(
        f"{'(cold)':8s} {cold['tflops']:8.3f} {cold['tflops'] / ref:8.1%}  training steps on shapes seen first"
    )
    prof = summary["train_profile"]
    print(
        f"one training step ({prof['real_tokens']} real tokens, {prof['padded_shape']}), "
        f"{prof['wall_seconds']:.2f} s:"
    )
    parts = dict(prof["groups_seconds"], unattributed=prof["unattributed_seconds"])
    for group, secs in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {group:18s} {secs:7.3f} s {secs / prof['wall_seconds']:6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="e5-small")
    ap.add_argument("--train", default="../shared/data/squad/train-v1.1.json")
    ap.add_argument("--eval", default="../shared/data/xquad/xquad.en.json")
    ap.add_argument("--max-examples", type=int, default=400)
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--eval-max-seq-length", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--eval-batch-size", type=int, default=0, help="0: as xlqa evaluate (16 on a CPU, 64 on a GPU)"
    )
    # 8 after 2, as the README measures: a process's first steps run slower (3 after 1 gave 28% where 8 after 2
    # gave 31-32% of the 4096³ figure on the same machine)
    ap.add_argument("--steps", type=int, default=8, help="measured training steps and evaluation batches")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--train-embeddings", action="store_true", help="default: word embeddings frozen (demo)")
    ap.add_argument("--precision", default="auto")
    demo = DemoConfig()
    ap.add_argument("--attention-dropout", type=float, default=demo.attention_dropout,
                    help="training (default: the demo's; -1: the model's own)")  # fmt: skip
    ap.add_argument("--hidden-dropout", type=float, default=demo.hidden_dropout,
                    help="training (default: the demo's; -1: the model's own)")  # fmt: skip
    ap.add_argument(
        "--attention", default=demo.attention, help="attention implementation (default: the demo's)"
    )
    ap.add_argument("--bf16-weights", action=argparse.BooleanOptionalAction, default=demo.bf16_weights,
                    help="bf16 training on a bf16 copy with fp32 master weights (default: the demo's)")  # fmt: skip
    ap.add_argument("--out", default=None, help="default benchmarks/results/hardware-<device>-<model>.json")
    args = ap.parse_args()

    from xlqa.modeling import load_qa_model
    from xlqa.precision import choose_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = choose_precision(args.precision, device)
    peaks = measure_peaks(device)
    own = {"attention_dropout": args.attention_dropout, "hidden_dropout": args.hidden_dropout}
    own = {k: (None if v is not None and v < 0 else v) for k, v in own.items()}
    model, tok = load_qa_model(args.model, attention=args.attention, **own)
    if not args.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    model.to(device)
    tfeats, efeats = _windows(args, tok)
    train, prof = _train_rows(model, tok, tfeats, args, device, precision)
    args.eval_batch_size = eval_batch_size(args.eval_batch_size, device)
    model.set_attn_implementation("sdpa")  # as xlqa evaluate loads a model: transformers' default kernel
    if precision == "bf16":  # as xlqa evaluate: weights cast to bf16 once, no autocast
        model.to(torch.bfloat16)
    evaluation = _eval_row(model, tok, efeats, args, device, "fp32" if precision == "bf16" else precision)
    ref = peaks["fp32_max" if precision == "fp32" else "bf16_max"]
    for row in (train, evaluation):
        row["fraction_of_peak"] = row["tflops"] / ref
        row["fraction_of_bf16_peak"] = row["tflops"] / peaks["bf16_max"] if peaks["bf16_native"] else None
        big = peaks["bf16"].get("4096x4096x4096") if peaks["bf16_native"] else None
        row["fraction_of_bf16_4096"] = row["tflops"] / big if big else None  # the "a large matmul"
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    summary = {
        "model": args.model,
        "device": dev_name,
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "torch": torch.__version__,
        "malloc": active(),  # LD_PRELOAD=libtcmalloc_minimal.so.4 measures what xlqa's commands run with
        "args": vars(args),
        "flop_model": asdict(FlopModel.of(model)),
        "peak_tflops": peaks,
        "reference_peak_tflops": ref,
        "train": train,
        "eval": evaluation,
        "train_profile": prof,
    }
    _print(summary)
    out = args.out or f"benchmarks/results/hardware-{device.type}-{args.model.replace(':', '-')}.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(summary, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()

"""How right is the live ETA? A real training run, and its ETA at every step event against the time really left.

``xlqa runs status`` and the dashboard show the ETA that every ``step`` event of ``events.jsonl`` carries
(:class:`xlqa.plan.live.LiveEta`). This benchmark trains a run with the demo's settings (``DemoConfig()``'s model,
learning rate, batch size, window length, frozen layers, dropouts, attention and bf16 weights) on the first
``--max-train-examples`` SQuAD v1.1 questions with a dev set (XQuAD German by default), so that the run has
end-of-epoch evaluations, best-model saves, checkpoints and guard snapshots, then compares each step event's
``eta`` with the seconds the run really had left (the ``end`` event's wall-clock time minus the step's), and does
the same for the per-step average (elapsed / steps done x steps left: what a progress bar shows).

    flock /tmp/xlqa-torch.lock .venv/bin/python benchmarks/bench_live_eta.py --data-dir ../shared/data \
        --out benchmarks/results/live-eta-cpu.json

``--events RUN/events.jsonl`` scores an existing run instead of training one. ``--pace`` checks the
evaluation prior instead: with the demo's model (fresh QA head, bf16 weights), every dev batch in the
evaluation's order, timed one by one, twice, against what the ETA's probe (:func:`xlqa.train.eta.dev_eval_seconds`
times ``PROBE_BATCHES``, each twice) predicts, and against those batches' own times in order: how right the
probe is, and how much the machine's pace moves between two passes over the same batches.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchlib import machine, write_result

FRACTIONS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)


def score_events(events: list[dict]) -> dict:
    """Each step event's ETA and the per-step average against the time really left; summaries over the run."""
    start = next((e for e in events if e["event"] in ("start", "resume")), None)
    end = next((e for e in reversed(events) if e["event"] == "end"), None)
    if start is None or end is None:
        raise SystemExit(
            "events: a run with a start and an end event is needed (an unfinished run has no truth)"
        )
    total, step0 = start["total_steps"], start.get("step", 0)
    # wall-clock times: a step event's "elapsed" is the training clock, the end event's the log's (with set-up)
    t_start, t_end = start["time"], end["time"]
    rows = []
    for e in (e for e in events if e["event"] == "step" and e["step"] < total):
        left = t_end - e["time"]
        average = (e["time"] - t_start) / max(1, e["step"] - step0) * (total - e["step"])
        rows.append({
            "step": e["step"], "left": round(left, 2), "eta": e["eta"], "eta_low": e.get("eta_low"),
            "eta_high": e.get("eta_high"), "average": round(average, 2), "error": round((e["eta"] - left) / left, 4),
            "average_error": round((average - left) / left, 4),
            "in_range": e.get("eta_low") is not None and e["eta_low"] <= left <= e["eta_high"],
        })  # fmt: skip
    if not rows:
        raise SystemExit("events: no step event before the last step (log more often: --log-every)")
    at = {}
    for f in FRACTIONS:
        row = min(rows, key=lambda r: abs(r["step"] - f * total))
        at[f"{round(f * 100)}%"] = {
            k: row[k] for k in ("step", "left", "eta", "average", "error", "average_error")
        }
    err = np.abs([r["error"] for r in rows])
    avg = np.abs([r["average_error"] for r in rows])
    return {
        "total_steps": total, "seconds": round(t_end - t_start, 2), "step_events": len(rows), "at": at,
        "eta_abs_error": {"median": round(float(np.median(err)), 4), "max": round(float(err.max()), 4)},
        "average_abs_error": {"median": round(float(np.median(avg)), 4), "max": round(float(avg.max()), 4)},
        "in_range": round(float(np.mean([r["in_range"] for r in rows])), 3), "rows": rows,
    }  # fmt: skip


def train_run(args, out: Path) -> Path:
    """Train with the demo's settings on the benchmark's data; returns the run's events file."""
    from xlqa.config import DemoConfig, TrainConfig
    from xlqa.demo import demo_freeze_layers
    from xlqa.train.loop import train

    demo = DemoConfig()
    data = Path(args.data_dir)
    cfg = TrainConfig(
        model=demo.model, train=str(data / "squad" / "train-v1.1.json"), dev=str(data / args.dev),
        output=str(out / "run"), epochs=args.epochs, lr=demo.lr, batch_size=demo.batch_size,
        max_seq_length=demo.train_max_seq_length, max_train_examples=args.max_train_examples,
        freeze_embeddings=demo.freeze_embeddings, freeze_layers=demo_freeze_layers(demo),
        attention_dropout=demo.attention_dropout, hidden_dropout=demo.hidden_dropout, attention=demo.attention,
        bf16_weights=demo.bf16_weights, precision=demo.precision, progress=False, log_every=args.log_every,
        save_every=args.save_every, guard_snapshot_every=args.guard_snapshot_every,
    )  # fmt: skip
    train(cfg)
    return out / "run" / "events.jsonl"


def pace(args) -> dict:
    """The dev evaluation's batches in order, twice, against the probe's prediction (see the module's doc)."""
    import torch

    from xlqa.batching import sorted_batches
    from xlqa.config import DemoConfig, TrainConfig
    from xlqa.data import load_squad
    from xlqa.modeling import load_qa_model
    from xlqa.plan import measure
    from xlqa.plan.counts import batch_tokens
    from xlqa.plan.evaluation import prepare
    from xlqa.plan.live import PROBE_BATCHES
    from xlqa.train.bf16 import Bf16Weights

    demo, cpu = DemoConfig(), torch.device("cpu")
    cfg = TrainConfig(model=demo.model, train="-", dev=str(Path(args.data_dir) / args.dev), output="-",
                      max_seq_length=demo.train_max_seq_length, attention=demo.attention, eval_batch_size=16,
                      cache_dir=args.cache_dir)  # fmt: skip
    model, tok = load_qa_model(cfg.model, attention=cfg.attention, attention_dropout=0.0, hidden_dropout=0.0)
    bf16 = Bf16Weights.when(model, demo.bf16_weights, "bf16")
    model, precision = (bf16.module, "fp32") if bf16 is not None else (model, "bf16")
    model.eval()
    prepared = prepare(model, tok, "extractive", load_squad(cfg.dev), cfg, precision, cpu)
    batches = sorted_batches(prepared.lengths, cfg.eval_batch_size)
    tokens = batch_tokens(prepared.lengths, batches, prepared.multiple)
    passes = []
    for _ in range(2):
        took = []
        for b in batches:
            took.append(measure.time_call(lambda b=b: prepared.run(b)))
        passes.append(took)
    probe = measure.time_batches(prepared.run, batches, tokens, PROBE_BATCHES, cpu, repeats=2)
    picked = measure.pick(tokens, PROBE_BATCHES)
    result = {
        "batches": len(batches), "tokens": int(tokens.sum()), "in_order_seconds": [round(sum(p), 2) for p in passes],
        "probe_predicted_seconds": round(measure.predict(probe, tokens).expected, 2),
        "probe_batches": {"tokens": probe.tokens, "seconds": [round(x, 4) for x in probe.seconds],
                          "in_order_seconds": [[round(p[i], 4) for i in picked] for p in passes]},
    }  # fmt: skip
    print(f"{len(batches)} dev batches in order: {result['in_order_seconds']} s (two passes); the probe predicts "
          f"{result['probe_predicted_seconds']} s from {probe.seconds} s, which took "
          f"{result['probe_batches']['in_order_seconds']} s in the passes")  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", help="score this run's events.jsonl instead of training one")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--dev", default="xquad/xquad.de.json", help="the dev file, under --data-dir")
    p.add_argument("--max-train-examples", type=int, default=1400)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--save-every", type=int, default=10_000)
    p.add_argument("--guard-snapshot-every", type=int, default=50)
    p.add_argument(
        "--pace", action="store_true", help="check the evaluation prior's probe instead (no training)"
    )
    p.add_argument("--cache-dir", default="", help="--pace: feature cache ('' none)")
    p.add_argument("--out", default="benchmarks/results/live-eta.json")
    args = p.parse_args(argv)
    if args.pace:
        summary = {"benchmark": "live ETA: the evaluation prior's probe against the dev batches in order",
                   "machine": machine(), "command": vars(args), **pace(args)}  # fmt: skip
        if args.out:
            write_result(args.out, summary)
        return summary
    work = None
    try:
        if args.events:
            events_file = Path(args.events)
        else:
            work = Path(tempfile.mkdtemp(prefix="bench-live-eta-"))
            events_file = train_run(args, work)
        events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    scored = score_events(events)
    print(f"{'at':>5} {'step':>5} {'left s':>8} {'eta s':>8} {'error':>7} {'average s':>10} {'error':>7}")
    for name, r in scored["at"].items():
        print(f"{name:>5} {r['step']:5d} {r['left']:8.1f} {r['eta']:8.1f} {r['error']:+7.1%} {r['average']:10.1f}"
              f" {r['average_error']:+7.1%}")  # fmt: skip
    e, a = scored["eta_abs_error"], scored["average_abs_error"]
    print(f"|error| over {scored['step_events']} step events: ETA median {e['median']:.1%} max {e['max']:.1%};"
          f" per-step average median {a['median']:.1%} max {a['max']:.1%}; time left inside the ETA's range"
          f" {scored['in_range']:.0%}")  # fmt: skip
    summary = {"benchmark": "live ETA against the time really left", "machine": machine(),
               "command": vars(args), **scored, "events": events}  # fmt: skip
    if args.out:
        write_result(args.out, summary)
    return summary


if __name__ == "__main__":
    main()

"""The live ETA: the planner's fixed + per-token model, fitted on the run's own batches, over those left.

A real run whose batches turn from short to long half-way shows the point: the ETA follows the token counts of
the batches still to come, where a per-step average (what the ETA was before) predicts far too little.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchscript import run_benchmark
from conftest import write_squad
from xlqa.batching import shuffled_batches
from xlqa.config import TrainConfig
from xlqa.plan.counts import batch_tokens, count_training
from xlqa.plan.live import LiveEta, RemainingWork, remaining_work

FILL = " ".join(f"Sentence {i} tells about the river and the town." for i in range(30))[:1200]


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"model": "m", "train": "t", "output": "o", "batch_size": 4, "save_every": 3, **kw})


@pytest.mark.parametrize(
    "kw",
    [dict(epochs=2), dict(epochs=1.5, grad_accum=3), dict(max_steps=7), dict(epochs=3, batch_size=5)],
    ids=["two-epochs", "accum-fractional", "max-steps", "uneven-batches"],
)
def test_remaining_work_from_the_start_is_the_planners_count(kw):
    lengths = np.random.default_rng(0).integers(10, 300, size=61)
    cfg = _cfg(**kw)
    counts = count_training(lengths, 61, cfg)
    work = remaining_work(lengths, cfg, epoch=0, batch_in_epoch=0, step=0, total_steps=counts.total_steps,
                          n_epochs=counts.epochs, multiple=8)  # fmt: skip
    assert np.array_equal(work.tokens, batch_tokens(lengths, counts.batches, 8))
    assert work.epoch_ends == counts.epochs
    assert work.epoch_ends + work.periodic_checkpoints == counts.checkpoints


def test_remaining_work_from_a_resumed_position_is_the_tail_of_the_run():
    lengths = np.random.default_rng(1).integers(10, 300, size=50)
    cfg = _cfg(epochs=2)  # 13 batches (steps) an epoch
    full = remaining_work(lengths, cfg, epoch=0, batch_in_epoch=0, step=0, total_steps=26, n_epochs=2)
    mid = remaining_work(lengths, cfg, epoch=1, batch_in_epoch=4, step=17, total_steps=26, n_epochs=2)
    assert np.array_equal(mid.tokens, full.tokens[17:])
    assert mid.epoch_ends == 1 and mid.periodic_checkpoints == 3  # steps 18, 21, 24
    # two processes: a round is two consecutive batches, at the pace of the longer one
    two = remaining_work(lengths, cfg, epoch=0, batch_in_epoch=0, step=0, total_steps=6, n_epochs=1, n_proc=2)
    first = shuffled_batches(lengths, 4, seed=cfg.seed)
    assert two.tokens[0] == batch_tokens(lengths, first[:2]).max() and len(two.tokens) == 6


def test_the_fit_ignores_warm_up_and_adds_measured_phases():
    tokens = np.array([100, 400] * 20, dtype=np.int64)
    work = RemainingWork(tokens, epoch_ends=1, periodic_checkpoints=2)
    cost = lambda t: 0.01 + 0.001 * t  # noqa: E731

    def fed(warmup: int) -> LiveEta:
        eta = LiveEta(work, warmup=warmup)
        for i in range(10):  # the first 3 batches are 20x slower (allocator, kernels, optimizer state)
            eta.batch_done(cost(tokens[i]) * (20 if i < 3 else 1))
        return eta

    exact = float(sum(cost(t) for t in tokens[10:]))
    live = fed(warmup=3).estimate()
    assert live is not None and live.expected == pytest.approx(exact, rel=1e-6)
    assert live.low <= live.expected <= live.high
    assert fed(warmup=0).estimate().expected > 1.5 * exact  # what warm-up in the fit would have done
    assert LiveEta(work, warmup=3).estimate() is None  # nothing measured after warm-up yet

    eta = fed(warmup=3)
    eta.add_phase("checkpoint", 0.5)  # 2 checkpoints left afterwards; no evaluation measured yet
    assert eta.estimate().expected == pytest.approx(exact + 2 * 0.5, rel=1e-6)
    with eta.timed("eval"):
        time.sleep(0.05)
    assert eta.left == {"eval": 0, "checkpoint": 2, "snapshot": 0}
    eta.batch_done(5.0)  # the batch after a phase pays for a new data loader: not a sample
    assert len(eta.samples) == 7


def test_phases_count_at_their_prior_until_one_is_measured():
    tokens = np.full(20, 100, dtype=np.int64)
    work = RemainingWork(tokens, epoch_ends=2, periodic_checkpoints=1)
    eta = LiveEta(work, warmup=0, snapshots=3, prior={"eval": 10.0, "checkpoint": 2.0, "snapshot": 1.0})
    for _ in range(5):
        eta.batch_done(0.1)
    batches = 15 * 0.1
    assert eta.estimate().expected == pytest.approx(batches + 2 * 10.0 + 3 * 2.0 + 3 * 1.0)
    eta.add_phase("eval", 4.0)  # measured: the mean of those measured replaces the prior
    eta.add_phase("snapshot", 0.5, new_loader=False)
    eta.batch_done(0.1)  # a snapshot starts no data loader: the next batch is a sample
    assert len(eta.samples) == 5
    assert eta.estimate().expected == pytest.approx(14 * 0.1 + 1 * 4.0 + 3 * 2.0 + 2 * 0.5)


def _short_then_long(path: Path, n: int) -> Path:
    """``n`` questions: odd ones on a long context (one window of ~300 tokens), even ones on a short one."""
    exs = []
    for i in range(n):
        ctx = f"Item {i}: the answer is Berlin{i}. " + (FILL if i % 2 else "")
        exs.append({"id": f"q{i}", "question": f"What is item {i}?", "context": ctx,
                    "answers": [(f"Berlin{i}", ctx.index(f"Berlin{i}"))]})  # fmt: skip
    return write_squad(path, exs)


def _rising_seed(n: int, batch_size: int) -> int:
    """A seed whose batch order puts short batches first (the batching of half long windows, by index)."""
    lengths = np.array([300 if i % 2 else 20 for i in range(n)])
    longs_first_half = []
    for seed in range(2000):
        b = shuffled_batches(lengths, batch_size, seed=seed)
        longs_first_half.append(sum(lengths[x].max() > 100 for x in b[: len(b) // 2]))
    return int(np.argmin(longs_first_half))


def test_a_run_whose_batches_get_longer_gets_a_token_aware_eta(tmp_path, tiny_model_dir, xlqa_cache):
    from xlqa.runs.store import RunStore
    from xlqa.train.control import run_status, run_training

    n, bs = 768, 32  # 24 batches: ~2 long among the first 12, ~10 among the last 12
    cfg = TrainConfig(model=str(tiny_model_dir), train=str(_short_then_long(tmp_path / "train.json", n)),
                      output=str(tmp_path / "run"), batch_size=bs, epochs=1, seed=_rising_seed(n, bs),
                      max_seq_length=384, doc_stride=128, save_every=4, log_every=1, progress=False,
                      precision="fp32", lr=1e-3, freeze_embeddings=True, cache_dir="")  # fmt: skip
    store = RunStore(tmp_path / "store")
    done = threading.Event()
    worker = threading.Thread(target=lambda: (run_training(cfg, store=store), done.set()), daemon=True)
    worker.start()
    seen = []  # run_status while it runs: the step event's eta, unchanged
    while not done.is_set() and worker.is_alive():
        if (tmp_path / "run" / "run.json").exists():
            s = run_status(tmp_path / "run", store=store)
            if s["status"] == "running" and s["eta"] is not None:
                seen.append((s["step"], s["eta"], s["eta_range"]))
        time.sleep(0.2)
    worker.join(60)
    assert done.is_set(), "the run did not finish"
    assert seen and all(isinstance(e, float | int) and e >= 0 for _, e, _ in seen)
    assert all(lo <= e <= hi for _, e, (lo, hi) in seen if lo is not None)  # the range, as status shows it

    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    end = next(e for e in events if e["event"] == "end")
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == start["total_steps"] == 24 and all("eta" in e for e in steps)
    mid = [e for e in steps if 10 <= e["step"] <= 14]
    live_err, mean_err = [], []
    for e in mid:
        actual = end["time"] - e["time"]
        mean = (e["time"] - start["time"]) / e["step"] * (24 - e["step"])  # the per-step average
        assert e["eta_low"] <= e["eta"] <= e["eta_high"]
        live_err.append(abs(e["eta"] - actual) / actual)
        mean_err.append(abs(mean - actual) / actual)
    assert np.median(live_err) < 0.3, (live_err, mean_err)
    assert np.median(live_err) < 0.5 * np.median(mean_err), (live_err, mean_err)


def test_a_guard_snapshot_tells_the_eta_its_seconds(tmp_path):
    import torch

    from xlqa.distributed import make_accelerator
    from xlqa.train.checkpoint import StateSnapshots

    acc = make_accelerator(mixed_precision="no")
    model = torch.nn.Linear(64, 64)
    acc.prepare(model, torch.optim.AdamW(model.parameters()))
    eta = LiveEta(RemainingWork(np.full(10, 100), epoch_ends=1, periodic_checkpoints=0), snapshots=2)
    store = StateSnapshots(acc, tmp_path)
    store.on_save = lambda seconds: eta.add_phase("snapshot", seconds, new_loader=False)
    store.save()
    assert len(eta.durations["snapshot"]) == 1 and eta.durations["snapshot"][0] > 0
    assert eta.left["snapshot"] == 1 and (tmp_path / "checkpoints" / ".guard-snapshot").is_dir()


def _losses_and_events(cfg: TrainConfig) -> tuple[list, list[dict]]:
    from xlqa.train.loop import train

    train(cfg)
    events = [json.loads(line) for line in (Path(cfg.output) / "events.jsonl").read_text().splitlines()]
    return [e["loss"] for e in events if e["event"] == "step"], events


def test_the_eta_counts_the_first_evaluation_and_writes_before_they_happen(
    tmp_path, tiny_model_dir, xlqa_cache, monkeypatch
):
    """At its start a run times dev batches and its first guard snapshot: until the first epoch ends, the ETA
    counts the dev evaluation, the best-model save and the checkpoint at those priors (before, it left them
    out), and the probe leaves training as it was (the same losses without it)."""
    import xlqa.train.eta as eta_module

    train_file = _short_then_long(tmp_path / "train.json", 96)
    dev_file = _short_then_long(tmp_path / "dev.json", 40)
    cfg = TrainConfig(model=str(tiny_model_dir), train=str(train_file), dev=str(dev_file),
                      output=str(tmp_path / "run"), batch_size=8, epochs=1, max_seq_length=384, doc_stride=128,
                      log_every=1, progress=False, precision="fp32", lr=1e-3, cache_dir="",
                      guard_snapshot_every=5)  # fmt: skip
    losses, events = _losses_and_events(cfg)
    prior = next(e for e in events if e["event"] == "eta_prior")
    assert prior["eval"] > 0 and prior["checkpoint"] > prior["snapshot"] > 0
    steps = [e for e in events if e["event"] == "step"]
    total = steps[-1]["step"]
    assert total == 12 and not any(e["event"] == "eval" for e in events[: events.index(steps[-1])])
    # the last step: no batch and no snapshot left, the evaluation and the checkpoint at their priors
    phases = prior["eval"] + prior["checkpoint"]
    # the first step: no fit yet, the per-step average plus the phases
    assert "eta_low" not in steps[0] and steps[0]["eta"] >= phases - 0.05
    assert steps[-1]["eta"] == pytest.approx(phases, abs=0.051)

    # the benchmark's scoring of a finished run: each step event against the time really left
    out = tmp_path / "live-eta.json"
    run_benchmark(
        "bench_live_eta.py", ["--events", tmp_path / "run" / "events.jsonl", "--out", out], tmp_path
    )
    scored = json.loads(out.read_text())
    assert (
        scored["total_steps"] == 12 and scored["step_events"] == 11 and len(scored["events"]) == len(events)
    )
    last = scored["rows"][-1]  # "left" is rounded to 0.01 s, the error computed before
    assert last["step"] == 11 and last["left"] > 0
    assert last["error"] == pytest.approx((last["eta"] - last["left"]) / last["left"], abs=0.02)

    monkeypatch.setattr(eta_module, "dev_eval_seconds", lambda ctx: 0.0)
    unprobed, events2 = _losses_and_events(replace(cfg, output=str(tmp_path / "run2")))
    assert next(e for e in events2 if e["event"] == "eta_prior")["eval"] < prior["eval"]
    assert unprobed == losses  # the probe ran in eval mode and kept the RNG: dropout masks are the same

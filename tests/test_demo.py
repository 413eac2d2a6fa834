"""The demo's report: per-language table, transfer gap, and a command that repeats the run."""

import json

from xlqa.config import DemoConfig
from xlqa.demo import reproduce_command, write_report
from xlqa.results import EvalResult


def _row(lang, em, f1):
    return {
        "name": f"xquad.{lang}",
        "language": lang,
        "n_questions": 1190,
        "metrics": {"exact_match": em, "f1": f1},
    }


def test_reproduce_command_names_only_what_differs_from_make_demo():
    assert reproduce_command(DemoConfig()) == "make demo"
    cmd = reproduce_command(DemoConfig(data_dir="../shared/data", train_examples=14000, langs=["en", "de"]))
    assert cmd == "xlqa demo --data-dir ../shared/data --train-examples 14000 --langs en,de"
    # data downloaded by name (no folder): no --data-dir; the model is an option of `xlqa demo` too
    cmd = reproduce_command(DemoConfig(model="minilm-l6", eval_examples=100))
    assert cmd == "xlqa demo --model minilm-l6 --eval-examples 100"


def test_report_table_gap_and_summary(tmp_path):
    results = EvalResult.parse(
        {
            "precision": "bf16",
            "datasets": [_row("en", 50.0, 60.0), _row("de", 30.0, 40.0), _row("zh", 40.0, 50.0)],
        }
    )
    cfg = DemoConfig(data_dir="../shared/data", train_examples=5000, langs=["en", "de", "zh"])
    path = write_report(results, {"train": 10.0, "evaluate": 5.0}, cfg, tmp_path)
    text = path.read_text()
    assert "| de | 1190 | 30.0 | 40.0 | +20.0 |" in text  # the report's sign: English F1 minus this F1
    assert "| **average** | | **40.0** | **50.0** | |" in text
    assert "Transfer gap (English F1 minus the average of the other languages): 15.0 F1." in text
    assert "`xlqa demo --data-dir ../shared/data --train-examples 5000 --langs en,de,zh`" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["average"]["f1"] == 50.0 and summary["languages"]["zh"]["exact_match"] == 40.0


def test_the_demo_freezes_layers_only_of_the_model_it_was_measured_on():
    from xlqa.demo import demo_freeze_layers

    assert demo_freeze_layers(DemoConfig()) == DemoConfig().freeze_layers == 4
    assert demo_freeze_layers(DemoConfig(model="minilm-l6")) == 0  # any depth, even a 2-layer test model

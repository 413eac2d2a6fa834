"""The demo's report: per-language table, transfer gap, and a command that repeats the run."""

import json

from xlqa.demo import DemoConfig, reproduce_command, write_report


def _row(lang, em, f1):
    return {
        "name": f"xquad.{lang}",
        "language": lang,
        "n_questions": 1190,
        "metrics": {"exact_match": em, "f1": f1},
    }


def test_reproduce_command_names_only_what_differs_from_make_demo():
    assert reproduce_command(DemoConfig()) == "make demo"
    cmd = reproduce_command(DemoConfig(train_examples=14000, langs=["en", "de"]))
    assert cmd == "xlqa demo --data-dir ../shared/data --train-examples 14000 --langs en,de"


def test_report_table_gap_and_summary(tmp_path):
    results = {
        "precision": "bf16",
        "datasets": [_row("en", 50.0, 60.0), _row("de", 30.0, 40.0), _row("zh", 40.0, 50.0)],
    }
    cfg = DemoConfig(train_examples=5000, langs=["en", "de", "zh"])
    path = write_report(results, {"train": 10.0, "evaluate": 5.0}, cfg, tmp_path)
    text = path.read_text()
    assert "| de | 1190 | 30.0 | 40.0 | -20.0 |" in text
    assert "| **average** | | **40.0** | **50.0** | |" in text
    assert "Transfer gap (English F1 minus the average of the other languages): 15.0 F1." in text
    assert "`xlqa demo --data-dir ../shared/data --train-examples 5000 --langs en,de,zh`" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["average"]["f1"] == 50.0 and summary["languages"]["zh"]["exact_match"] == 40.0

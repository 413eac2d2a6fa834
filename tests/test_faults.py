"""A full disk or a refused write while results or the feature cache are written: the previous file stays whole,
no temporary file is left, and the error names the file (issue 14, faults)."""

from __future__ import annotations

import errno
import logging
import os

import pytest
from typer.testing import CliRunner

from test_guard import tiny_squad
from xlqa import jobs
from xlqa.cli.main import app
from xlqa.config import EvalConfig
from xlqa.data import load_squad
from xlqa.features import FeatureParams, cached_features
from xlqa.fileio import write_json_atomic
from xlqa.results import EvalResult

REAL_REPLACE = os.replace


def disk_full_for(monkeypatch, name: str) -> None:
    """Every write that would land on a file called ``name`` fails as on a full disk (the rename is refused)."""

    def replace(src, dst, *a, **kw):
        if os.path.basename(os.fspath(dst)) == name or os.fspath(dst).endswith(name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
        return REAL_REPLACE(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)


def test_atomic_write_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"v": 1})
    disk_full_for(monkeypatch, "results.json")
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(target, {"v": 2})
    assert target.read_text() == '{\n  "v": 1\n}' and os.listdir(tmp_path) == ["results.json"]


def test_feature_cache_on_a_full_disk_warns_and_goes_on(tmp_path, monkeypatch, caplog, mbert_tokenizer):
    data = load_squad(tiny_squad(tmp_path / "d.json", n=6))
    monkeypatch.setattr(
        os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space"))
    )
    with caplog.at_level(logging.WARNING, logger="xlqa.features"):
        feats = cached_features(data.examples, mbert_tokenizer, FeatureParams(max_seq_length=64, doc_stride=32),
                                cache_dir=tmp_path / "cache")  # fmt: skip
    assert len(feats) >= 6 and "could not write feature cache" in caplog.text
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # no half-written entry


def test_evaluation_whose_results_cannot_be_written_keeps_the_previous_results(
    tmp_path, monkeypatch, tiny_model_dir, xlqa_cache
):
    data = tiny_squad(tmp_path / "xquad.en.json", n=8)
    out = tmp_path / "eval"
    cfg = dict(model=str(tiny_model_dir), data=[str(data)], max_seq_length=64, doc_stride=32, max_query_length=24,
               precision="fp32", progress=False, output=str(out))  # fmt: skip
    first = jobs.evaluate(EvalConfig(**cfg))
    before = (out / "results.json").read_bytes()
    disk_full_for(monkeypatch, "results.json")
    result = CliRunner().invoke(
        app,
        ["evaluate", "--model", str(tiny_model_dir), "--data", str(data), "--max-seq-length", "64",
         "--doc-stride", "32", "--max-query-length", "24", "--precision", "fp32", "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "results.json" in result.output and "No space left" in result.output
    assert "Traceback" not in result.output
    assert (out / "results.json").read_bytes() == before  # the previous results, whole
    assert EvalResult.read(out).datasets[0].f1 == first.result.datasets[0].f1
    assert not [p for p in out.rglob("*.tmp")]

"""Reports: files and numbers, byte-for-byte determinism, a standalone page that renders in real Chromium, CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from conftest import write_squad
from xlqa.cli.report import report
from xlqa.data import load_squad
from xlqa.errors import ConfigError, DataError
from xlqa.evaluate import score_examples
from xlqa.report.build import build_report
from xlqa.report.model import Figure, Heading, Paragraph, Table
from xlqa.report.render import render_html, render_markdown
from xlqa.results import DatasetResult, EvalResult
from xlqa.sources.registry import spec_for_file

# -- a tiny parallel benchmark (en/de/zh, same ids) and a SQuAD v2-style file -------------------------------
ENTITIES = [("Alba", "Maria Rossi", "1901"), ("Borgo", "Jan Novak", "1850"), ("Celle", "Ana Silva", "1777"),
            ("Dorna", "Li Wei", "1920"), ("Ebro", "Omar Haddad", "1666"), ("Fanta", "Eva Berg", "1999")]  # fmt: skip
TEMPLATES = {
    "en": [("Who founded {c}?", "{c} was founded by {p} in {y}. It is a small town.", "{p}"),
           ("When was {c} founded?", "{c} was founded by {p} in {y}. It is a small town.", "{y}")],
    "de": [("Wer gründete {c}?", "{c} wurde {y} von {p} gegründet. Es ist eine kleine Stadt.", "{p}"),
           ("Wann wurde {c} gegründet?", "{c} wurde {y} von {p} gegründet. Es ist eine kleine Stadt.", "{y}")],
    "zh": [("谁创立了{c}？", "{c}由{p}于{y}年创立。这是一个小镇。", "{p}"),
           ("{c}是哪一年创立的？", "{c}由{p}于{y}年创立。这是一个小镇。", "{y}")],
}  # fmt: skip


def _parallel_file(folder: Path, lang: str) -> Path:
    examples = []
    for i, (c, p, y) in enumerate(ENTITIES):
        for j, (q, ctx, ans) in enumerate(TEMPLATES[lang]):
            context, answer = ctx.format(c=c, p=p, y=y), ans.format(c=c, p=p, y=y)
            qid = f"q{i}{j}"
            examples.append(
                {
                    "id": qid,
                    "question": q.format(c=c),
                    "context": context,
                    "answers": [(answer, context.index(answer))],
                }
            )
    return write_squad(folder / f"xquad.{lang}.json", examples)


def _squad2_file(folder: Path) -> Path:
    examples = []
    for i, (c, p, y) in enumerate(ENTITIES):
        context = f"{c} was founded by {p} in {y}."
        examples.append(
            {
                "id": f"v{i}a",
                "question": f"Who founded {c}?",
                "context": context,
                "answers": [(p, context.index(p))],
            }
        )
        examples.append(
            {
                "id": f"v{i}b",
                "question": f"Who destroyed {c}?",
                "context": context,
                "answers": [],
                "impossible": True,
            }
        )
    return write_squad(folder / "dev-v2.0.json", examples, version="v2.0")


def write_eval(eval_dir: Path, files: list[Path], right) -> Path:
    """An evaluation folder as xlqa.evaluate writes it; ``right(qid, lang)`` decides which answers are right."""
    results = EvalResult(config={"model": "fake"}, precision="fp32", environment={"xlqa": "test"})
    for path in files:
        data = load_squad(path)
        rules, name = spec_for_file(data).rules, path.stem
        span = {
            ex.id: (ex.answers[0].text if ex.answers else ex.context[:5])
            if right(ex.id, data.language)
            else ex.context.split()[-1]
            for ex in data.examples
        }
        odds = {
            ex.id: (-1.0 if right(ex.id, data.language) != ex.is_impossible else 1.0) + k / 100
            for k, ex in enumerate(data.examples)
        }
        preds = {q: "" if rules == "squad2" and odds[q] > 0 else t for q, t in span.items()}
        nbest = {
            q: [{"text": t, "score": 1.0, "start": 0, "end": len(t), "probability": 1.0}]
            for q, t in span.items()
        }
        scored = score_examples(
            data.examples,
            preds,
            rules=rules,
            language=data.language,
            null_odds=odds if rules == "squad2" else None,
        )
        (eval_dir / name).mkdir(parents=True)
        for fname, obj in (("predictions", preds), ("nbest_predictions", nbest), ("null_odds", odds)):
            (eval_dir / name / f"{fname}.json").write_text(json.dumps(obj, ensure_ascii=False))
        fields = {"name": name, "path": str(path), "sha256": data.report.sha256, "language": data.language,
                  "n_questions": len(data.examples), "seconds": 0.1,
                  "null_threshold": 0.0 if rules == "squad2" else None}  # fmt: skip
        results.datasets.append(scored.model_copy(update=fields))
    results.write(eval_dir)
    return eval_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    files = [_parallel_file(root, lang) for lang in ("en", "de", "zh")] + [_squad2_file(root)]
    a = write_eval(root / "a" / "eval", files, lambda q, lang: (int(q[1]) + len(lang)) % 3 != 0)
    b = write_eval(root / "b" / "eval", files, lambda q, lang: lang == "en" or q.endswith("0"))
    return [a, b]


@pytest.fixture(scope="module")
def built(runs, tmp_path_factory) -> dict[str, Path]:
    return build_report(runs, tmp_path_factory.mktemp("report") / "out")


# -- contents -------------------------------------------------------------------------------------------------
def test_report_writes_every_file_and_figure(built):
    expected = {
        "markdown",
        "html",
        "csv",
        "f1_by_language",
        "f1_heatmap",
        "transfer_gap",
        "consistency",
        "breakdowns",
        "squad2_threshold",
    }
    assert set(built) == expected
    for path in built.values():
        assert path.is_file() and path.stat().st_size > 0, path
    for key in expected - {"markdown", "html", "csv"}:
        assert built[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = built["markdown"].read_text()
    for heading in (
        "## Scores",
        "## Transfer gap",
        "## Paired significance",
        "### b vs a",
        "## Cross-lingual consistency",
        "## Breakdowns",
        "## SQuAD v2 no-answer threshold",
    ):
        assert heading in md
    # languages in the fixed order: English first, then alphabetical
    assert md.index("| xquad.en |") < md.index("| xquad.de |") < md.index("| xquad.zh |")


def test_csv_numbers_equal_the_official_scores(built, runs):
    rows = list(csv.DictReader(built["csv"].open()))
    assert [r["run"] for r in rows] == ["a"] * 4 + ["b"] * 4
    for run, eval_dir in zip("ab", runs):
        for raw in json.loads((eval_dir / "results.json").read_text())["datasets"]:
            entry = DatasetResult.model_validate(raw)
            row = next(r for r in rows if r["run"] == run and r["dataset"] == entry.name)
            assert row["rules"] == entry.rules and int(row["n"]) == entry.n_questions
            assert float(row["em"]) == pytest.approx(entry.em, abs=1e-4)
            assert float(row["f1"]) == pytest.approx(entry.f1, abs=1e-4)
            assert float(row["f1_ci_low"]) <= float(row["f1"]) <= float(row["f1_ci_high"])


def test_paired_table_and_consistency_counts(built):
    md = built["markdown"].read_text()
    # b answers every English question right, a only those with (i + 2) % 3 != 0: 8 of 12
    en_row = next(line for line in md.splitlines() if line.startswith("| xquad.en | 12 |"))
    assert "+33.33" in en_row
    # consistency of run a: question i is right in en (len 2), de (2), zh (2) alike -> all-or-nothing
    table = md[md.index("| languages answered exactly |") :]
    assert "| 0 | 4 | 33.3 |" in table and "| 3 | 8 | 66.7 |" in table


def test_html_is_one_standalone_page(built):
    page = built["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page.lower()
    assert not re.search(r"""\b(src|href)\s*=\s*(?!["']data:)""", page), "external resource referenced"
    assert "url(" not in page and "@import" not in page
    assert page.count('<img src="data:image/png;base64,') == len(built) - 3
    assert "<table>" in page and "Paired significance" in page


def test_blocks_render_alike_in_markdown_and_escaped_html(tmp_path):
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    blocks = [
        Heading(1, "Title <b>"),
        Paragraph('a & b "quoted" <script>alert(1)</script>'),
        Table(["name", "x|y"], [["<i>", "1.0"]]),
        Figure("f", 'caption "c"'),
    ]
    md = render_markdown(blocks)
    assert md.split("\n") == [
        "# Title <b>", "",
        'a & b "quoted" <script>alert(1)</script>', "",
        "| name | x\\|y |", "|---|---|", "| <i> | 1.0 |", "",
        '![caption "c"](figures/f.png)', "",
    ]  # fmt: skip
    page = render_html(blocks, {"f": png})
    assert page == render_html(blocks, {"f": png})  # deterministic
    assert "<script" not in page and "<b>" not in page and "<i>" not in page  # autoescaped
    assert "<h1>Title &lt;b&gt;</h1>\n<p>a &amp; b &#34;quoted&#34; &lt;script&gt;" in page
    assert "<table><thead><tr><th>name</th><th>x|y</th></tr></thead><tbody><tr><td>&lt;i&gt;</td>" in page
    assert '<img src="data:image/png;base64,iVBORw0KGgpmYWtl" alt="caption &#34;c&#34;">' in page
    assert 'font-family:system-ui,-apple-system,"Segoe UI"' in page  # the CSS, inlined and not escaped
    assert page.startswith("<!DOCTYPE html>\n") and page.endswith("</body>\n</html>\n")


def test_single_run_has_no_paired_section(runs, tmp_path):
    written = build_report(runs[:1], tmp_path / "one", names=["solo"])
    md = written["markdown"].read_text()
    assert "Paired significance" not in md and "| solo |" in md and "consistency" in written


def test_errors_name_the_folder(tmp_path, runs):
    with pytest.raises(DataError, match=r"nowhere/results\.json: no results\.json"):
        build_report([tmp_path / "nowhere"], tmp_path / "out")
    with pytest.raises(ConfigError, match="distinct labels"):
        build_report(runs, tmp_path / "out", names=["x", "x"])


# -- determinism ----------------------------------------------------------------------------------------------
def test_same_inputs_give_byte_identical_files(runs, built, tmp_path):
    again = build_report(runs, tmp_path / "again")
    assert set(again) == set(built)
    for key in built:
        assert again[key].read_bytes() == built[key].read_bytes(), f"{key} differs between two builds"
    other_seed = build_report(runs, tmp_path / "seed1", seed=1)
    assert other_seed["markdown"].read_text() != built["markdown"].read_text()  # the seed is really used


# -- real browser ---------------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        msg = "chromium not installed (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {msg}")
        pytest.skip(msg)
    return CHROMIUM


def browser_problems(browser: str, folder: Path, page: str, tmp: Path) -> list[str]:
    """Load ``page`` from a local HTTP server in headless Chromium; return console messages, requests for
    anything but the page itself, and a missing or blank screenshot."""
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):  # keep the test output clean, remember what was asked for
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shot = tmp / f"{page}.png"
    try:
        proc = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={tmp / 'profile'}",
                "--enable-logging=stderr",
                "--v=0",
                f"--screenshot={shot}",
                "--window-size=1200,2000",
                f"http://127.0.0.1:{server.server_port}/{page}",
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        server.shutdown()
        server.server_close()
    problems = [line for line in proc.stderr.splitlines() if re.search(r":CONSOLE\b", line)]
    problems += [f"request for {p}" for p in requests if p not in (f"/{page}", "/favicon.ico")]
    if proc.returncode != 0:
        problems.append(f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}")
    if not shot.is_file():
        problems.append("no screenshot")
    else:
        from matplotlib.image import imread

        pixels = imread(shot)[..., :3]
        if pixels.std() < 0.02:
            problems.append(f"blank screenshot (pixel std {pixels.std():.4f})")
    return problems


def test_html_renders_in_chromium_without_errors(chromium, built, tmp_path):
    assert browser_problems(chromium, built["html"].parent, "report.html", tmp_path) == []


def test_browser_check_catches_a_script_error(chromium, built, tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    page = built["html"].read_text().replace("</body>", "<script>undefined_fn()</script></body>")
    (folder / "bad.html").write_text(page)
    problems = browser_problems(chromium, folder, "bad.html", tmp_path)
    assert any("undefined_fn" in p and "Uncaught" in p for p in problems), problems
    (folder / "missing.html").write_text(page.replace("<script>undefined_fn()</script>", '<img src="x.png">'))
    assert "request for /x.png" in browser_problems(chromium, folder, "missing.html", tmp_path / "2")


# -- CLI ------------------------------------------------------------------------------------------------------
def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(report)
    return app


def test_cli_report_prints_paths(runs, tmp_path):
    out = tmp_path / "cli"
    run_folder = runs[1].parent  # a run folder with eval/ inside is accepted too
    result = CliRunner().invoke(
        _app(), [str(runs[0]), str(run_folder), "--out", str(out), "--names", "base,new"]
    )
    assert result.exit_code == 0, result.output
    assert f"html: {out / 'report.html'}" in result.output
    assert "### new vs base" in (out / "report.md").read_text()
    helped = CliRunner().invoke(_app(), ["--help"], env={"COLUMNS": "200"})
    assert "Example: xlqa report runs/a/eval runs/b/eval --out report" in helped.output


def test_cli_report_error_exit_code(tmp_path):
    result = CliRunner().invoke(_app(), [str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "results.json" in result.output


def test_figures_have_readable_size(built):
    from matplotlib.image import imread

    for key in ("f1_by_language", "consistency", "breakdowns"):
        h, w = imread(built[key]).shape[:2]
        assert 500 <= w <= 2400 and 300 <= h <= 1600, (key, w, h)
        assert np.asarray(imread(built[key])).std() > 0.05


# -- issue 14: Holm decides "significant", only counts that occur, own-language question words --------------------
def _simple_file(folder: Path, lang: str, n: int = 40) -> Path:
    examples = []
    for i in range(n):
        context = f"Item {i} was made by maker{i} long ago. The end."
        examples.append({"id": f"s{i:02d}", "question": f"Who made item {i}?", "context": context,
                         "answers": [(f"maker{i}", context.index(f"maker{i}"))]})  # fmt: skip
    return write_squad(folder / f"xquad.{lang}.json", examples)


def test_significant_follows_the_holm_p_printed_beside_it(tmp_path):
    files = [_simple_file(tmp_path, lang) for lang in ("en", "de", "es", "zh")]
    base = write_eval(tmp_path / "a" / "eval", files, lambda q, lang: False)
    # 7 of 40 English questions better: sign-flip p = 2/2^7 = 0.016 < 0.05, Holm over 4 languages: 0.0625
    other = write_eval(tmp_path / "b" / "eval", files, lambda q, lang: lang == "en" and int(q[1:]) < 7)
    md = build_report([base, other], tmp_path / "out")["markdown"].read_text()
    en_row = next(line for line in md.splitlines() if line.startswith("| xquad.en | 40 |")).split(" | ")
    p, p_holm, significant = float(en_row[4]), float(en_row[5]), en_row[6].rstrip(" |")
    assert p < 0.05 <= p_holm and significant == "no"
    assert "significant: p (Holm) < 0.05" in md
    # the consistency table (of the first run: nothing right) has no rows of zeros for k = 1..4
    table = md[md.index("| languages answered exactly |") :].split("\n\n")[0]
    assert re.findall(r"^\| (\d+) \| (\d+) \|", table, re.M) == [("0", "40")]


def test_question_types_without_english_are_not_pooled_with_english_words(tmp_path):
    de = write_squad(tmp_path / "xquad.de.json", [
        {"id": f"d{i}", "question": f"Wer baute {i}?", "context": f"Bau {i} von Anna.",
         "answers": [("Anna", len(f"Bau {i} von "))]} for i in range(6)])  # fmt: skip
    run = write_eval(tmp_path / "a" / "eval", [de], lambda q, lang: True)
    md = build_report([run], tmp_path / "out")["markdown"].read_text()
    assert "xquad.de had no English member in the evaluation" in md
    assert "the buckets come from the English question" in md  # the rule, said for files that have one


FONT_LABELS = {"zh": "谁创立了", "th": "ภาษาไทย", "ar": "العربية", "hi": "हिन्दी"}


def test_figures_render_zh_th_ar_hi_labels_without_missing_glyphs(tmp_path):
    import warnings

    from xlqa.report.figures import breakdown_figure, font_families

    if len(font_families()) == 1:
        msg = "no Noto fonts for CJK/Thai/Arabic/Devanagari (apt-get install fonts-noto-core fonts-noto-cjk)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    buckets = {label: {"n": 3, "f1": 50.0} for label in FONT_LABELS.values()}
    pooled = {"run": {"question": buckets, "answer_length": buckets, "context_length": buckets}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = breakdown_figure(pooled, tmp_path)
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert path.exists() and not missing, missing[:3]

"""The dashboard in real Chromium (Playwright) against a real uvicorn server over a real run store.

Every page is opened with a populated store and its content checked against the store and the API; a detached
training run is followed live and stopped with the button; an evaluation is started from /evaluate and
followed to its results; the playground answers in Arabic and Chinese and the <mark> must be exactly the API's
``context[start:end]``. No page may log a console error, fail a request or ask for anything off the server.
Screenshots of every page go to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from conftest import write_squad
from serving import start_server
from test_report import write_eval
from xlqa.config import ServeConfig
from xlqa.runs.store import RunStore

CHROMIUM = "/usr/bin/chromium"
LANGS = ("en", "de", "ar", "zh")
PLACES = [("Alba", "Maria Rossi", "1901"), ("Borgo", "Jan Novak", "1850"), ("Celle", "Ana Silva", "1777"),
          ("Dorna", "Li Wei", "1920"), ("Ebro", "Omar Haddad", "1666"),
          ("Fanta", "Eva Berg", "1999")]  # fmt: skip
TEMPLATES = {
    "en": ("Who founded {c}?", "{c} was founded by {p} in {y}. It is a small town."),
    "de": ("Wer gründete {c}?", "{c} wurde {y} von {p} gegründet. Es ist eine kleine Stadt."),
    "ar": ("من أسس {c}؟", "أسس {p} مدينة {c} عام {y}. إنها بلدة صغيرة."),
    "zh": ("谁创立了{c}？", "{c}由{p}于{y}年创立。这是一个小镇。"),
}
# the page's nonfinite step, made NaN in the detached training process (a sitecustomize on its PYTHONPATH)
FAULTS = """
import functools
import xlqa.train.loop
from xlqa.train.faults import Faults

xlqa.train.loop.train = functools.partial(xlqa.train.loop.train, faults=Faults(nonfinite_steps={5}))
"""


def parallel_file(folder: Path, lang: str) -> Path:
    q, ctx = TEMPLATES[lang]
    examples = []
    for i, (c, p, y) in enumerate(PLACES):
        context = ctx.format(c=c, p=p, y=y)
        examples.append({"id": f"q{i}", "question": q.format(c=c), "context": context,
                         "answers": [(p, context.index(p))]})  # fmt: skip
    return write_squad(folder / f"xquad.{lang}.json", examples)


# -- the browser and what it must not see -------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        msg = "chromium not installed at /usr/bin/chromium (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {msg}")
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


class Tab:
    """A page that records console errors, page errors, failed requests and requests off ``base``."""

    def __init__(self, browser, base: str, shots: Path, allow: tuple[str, ...] = ()):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.base, self.shots, self.allow, self.problems, self.requests = base, shots, allow, [], []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("request", self._request)
        self.page.on("response", self._response)

    def _console(self, msg) -> None:
        if msg.type in ("error", "warning") and not any(a in msg.text for a in self.allow):
            self.problems.append(f"console {msg.type}: {msg.text}")

    def _failed(self, req) -> None:
        if not req.url.startswith(self.base) or "ERR_ABORTED" not in (req.failure or ""):
            self.problems.append(f"request failed: {req.url} {req.failure}")

    def _request(self, req) -> None:
        self.requests.append(req.url)
        if not req.url.startswith((self.base, "data:")):
            self.problems.append(f"external request: {req.url}")

    def _response(self, resp) -> None:
        if resp.status >= 400 and not any(a in resp.url for a in self.allow):
            self.problems.append(f"HTTP {resp.status}: {resp.url}")

    def goto(self, path: str):
        self.page.goto(self.base + path)
        return self.page

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()
        assert not self.problems, "\n".join(self.problems)


# -- a store with evaluations (real predictions, per-question scores) and the server over it ----------------
@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("dash")
    data = root / "data"
    data.mkdir()
    files = [parallel_file(data, lang) for lang in LANGS]
    store = RunStore(root / "store")
    strong = write_eval(root / "e" / "xlmr-large", files, lambda q, lang: lang == "en" or int(q[1]) % 3 != 0)
    weak = write_eval(root / "e" / "mbert-base", files, lambda q, lang: lang == "en" or int(q[1]) % 2 == 0)
    runs = [store.import_results(strong, model="xlm-roberta-large", name="xlmr-large"),
            store.import_results(weak, model="bert-base-multilingual-cased", name="mbert-base")]  # fmt: skip
    cfg = ServeConfig(model=[str(tiny_model_dir)], runs=str(store.root), allow_path=[str(root.parent)])
    shots = tmp_path_factory.mktemp("screenshots")
    with start_server(cfg, store=store, wait_ready=True) as url:
        yield {"url": url, "store": store, "runs": runs, "files": files, "root": root, "shots": shots}


@pytest.fixture()
def tab(browser, site):
    t = Tab(browser, site["url"], site["shots"])
    yield t
    t.close()


def api(site, path: str) -> dict:
    r = httpx.get(site["url"] + path, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def cells(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"{selector} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))"
    )


# -- pages ---------------------------------------------------------------------------------------------------
def test_runs_page_lists_the_store(tab, site):
    page = tab.goto("/")
    page.wait_for_selector("#runs tbody[data-loaded]")
    listed = api(site, "/v1/runs?sort=-created&limit=50")
    rows = cells(page, "#runs")
    assert len(rows) == listed["total"] == len(site["runs"])
    for row, run in zip(rows, listed["runs"]):
        assert row[1] == run["name"] and row[2] == run["kind"] and row[3] == run["model"]
        assert row[7] == f"{run['best_f1']:.1f}"  # best F1 as the store has it
    page.click("th[data-sort=best_f1]")  # descending first
    page.wait_for_function("document.querySelector('th[data-sort=best_f1]').classList.contains('desc')")
    page.wait_for_timeout(200)
    f1s = [float(r[7]) for r in cells(page, "#runs")]
    assert f1s == sorted(f1s, reverse=True)
    page.select_option("select[name=kind]", "train")
    page.wait_for_selector("#runs td.empty")
    assert "0 runs" in page.inner_text("#range")
    page.select_option("select[name=kind]", "")
    page.wait_for_selector("#runs tbody tr[data-run]")
    tab.shot("runs")
    for box in page.locator("#runs td.check input").all():  # select both, compare them
        box.check()
    page.click("#compare-selected")
    page.wait_for_url("**/compare?*")
    assert sorted(page.evaluate("new URLSearchParams(location.search).getAll('runs')")) == sorted(
        r.id for r in site["runs"]
    )
    page.wait_for_selector("#comparison[data-loaded]")


def test_run_page_shows_results_per_language(tab, site):
    run = site["runs"][0]
    page = tab.goto(f"/runs/{run.id}")
    page.wait_for_selector("#results:not([hidden]) #results-table tbody tr")
    page.wait_for_selector("#chart-results .main-svg")
    metrics = {m["dataset"]: m for m in site["store"].run_metrics(run.id)}
    rows = cells(page, "#results-table")
    assert {r[0] for r in rows} == set(metrics) and len(rows) == len(LANGS)
    results = api(site, f"/v1/runs/{run.id}/results")
    for r in rows:
        m = metrics[r[0]]
        assert (r[1], r[4], r[5]) == (m["language"], f"{m['exact_match']:.1f}", f"{m['f1']:.1f}"), r
    en = next(d for d in results["datasets"] if d["language"] == "en")
    assert en["gap_f1"] == 0
    for d in results["datasets"]:
        row = next(r for r in rows if r[0] == d["name"])
        lo, hi = d["ci95"]["f1"]
        assert row[6] == f"{lo:.1f} – {hi:.1f}" and row[9] == (
            f"{d['gap_f1']:+.1f}" if d["gap_f1"] else "0.0"
        )
        assert row[10] == "predictions"
    bars = page.evaluate("document.getElementById('chart-results').data")
    assert bars[0]["y"] == [d["f1"] for d in results["datasets"]]
    assert len(bars[0]["error_y"]["array"]) == len(LANGS)  # the 95% CIs as error bars
    href = page.get_attribute("#results-table a", "href")
    assert httpx.get(site["url"] + href).status_code == 200
    tab.shot("run-results")


def test_compare_page_heatmap_paired_and_consistency(tab, site):
    a, b = site["runs"]
    page = tab.goto(f"/compare?runs={a.id}&runs={b.id}")
    page.wait_for_selector("#comparison[data-loaded]")
    page.wait_for_selector("#chart-heatmap .main-svg")
    data = api(site, f"/v1/compare?runs={a.id}&runs={b.id}")
    heat = page.evaluate("document.getElementById('chart-heatmap').data[0]")
    assert heat["x"] == data["languages"]
    assert heat["z"] == [[data["f1"][r.id].get(lang) for lang in data["languages"]] for r in (a, b)]
    f1 = {m["language"]: m["f1"] for m in site["store"].run_metrics(b.id)}
    assert heat["z"][1] == [f1[lang] for lang in data["languages"]]  # the store's numbers
    rows = cells(page, "#paired")
    assert len(rows) == len(data["paired"]) == len(LANGS)
    for row, p in zip(rows, data["paired"]):
        assert row[0] == p["language"] and row[4] == f"{p['diff']:+.1f}".replace("+0.0", "0.0")
        assert row[8] == ("yes" if p["significant"] else "no") and row[7] == f"{p['p_holm']:.4f}"
    assert page.locator("#consistency .js-plotly-plot").count() == len(data["consistency"]) == 2
    tab.shot("compare")


def test_follow_a_training_run_and_stop_it(tab, site, tmp_path, tiny_model_dir, monkeypatch):
    from test_guard import tiny_config
    from xlqa.jobs import train
    from xlqa.train.control import process_alive

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(FAULTS)
    monkeypatch.setenv("PYTHONPATH", str(hooks), prepend=os.pathsep)
    cfg = tiny_config(tmp_path, tiny_model_dir, max_steps=100_000, log_every=2, save_every=40)
    job = train(cfg, detach=True, store=site["store"], name="live")
    try:
        page = tab.goto(f"/runs/{job.run.id}")
        count = "document.querySelectorAll('#chart-loss .scatterlayer path.point').length"  # points drawn
        page.wait_for_function(f"{count} >= 4", timeout=90_000)
        first = page.evaluate(count)
        page.wait_for_function(f"{count} > {first} + 3", timeout=30_000)  # the curve grows while it trains
        assert page.inner_text("#run-status") == "running"
        assert any("/stream?after=" in u for u in tab.requests)  # followed by server-sent events
        shapes = page.evaluate("document.getElementById('chart-loss').layout.shapes.map(s => s.x0)")
        assert 5 in shapes  # the non-finite step is marked on the loss curve
        assert "nonfinite" in page.inner_text("#notable")
        assert "step" in page.inner_text("#progress-text")
        # the live ETA with its range (the step events' eta_low and eta_high)
        page.wait_for_function(
            r"/ETA [^(]+ \([^)]+ – [^)]+\)/.test(document.getElementById('progress-text').textContent)",
            timeout=30_000,
        )
        page.wait_for_selector("#checkpoints td.path", timeout=60_000)
        tab.shot("run-live")
        page.click("#stop")
        page.wait_for_function(
            "document.getElementById('run-status').textContent === 'stopped'", timeout=90_000
        )
        page.wait_for_function("document.getElementById('action-msg').textContent.startsWith('Stop')")
        assert re.match(r"Stopped at step \d+|Stop requested", page.inner_text("#action-msg"))
        assert json.loads((Path(cfg.output) / "run.json").read_text())["status"] == "stopped"
        assert page.is_enabled("#resume") and not page.is_enabled("#stop")
        tab.shot("run-stopped")
    finally:  # a failed check must not leave a 100,000-step run training behind the next tests
        if job.pid and process_alive(job.pid):
            os.kill(job.pid, signal.SIGKILL)


def test_start_an_evaluation_and_see_it_finish(tab, site, tiny_model_dir):
    page = tab.goto("/evaluate")
    page.wait_for_selector("#benchmarks .family")
    checkpoints = api(site, "/v1/checkpoints")["checkpoints"]
    assert page.locator("#checkpoint option").count() == len(checkpoints) + 1
    page.fill("#model-path", str(tiny_model_dir))
    page.fill("#data-files", str(site["files"][1]))
    page.fill("#run-name", "from-the-page")
    page.fill("#max-examples", "4")
    tab.shot("evaluate")
    page.click("#start")
    page.wait_for_url("**/runs/*")
    page.wait_for_selector("#results:not([hidden]) #results-table tbody tr", timeout=120_000)
    run = site["store"].resolve("from-the-page")
    assert run.status == "finished" and run.kind == "eval"
    (m,) = site["store"].run_metrics(run.id)
    row = cells(page, "#results-table")[0]
    assert (row[0], row[1], row[3], row[5]) == (m["dataset"], "de", "4", f"{m['f1']:.1f}")
    tab.shot("evaluate-finished")


PLAYGROUND = {
    "arabic": ("من أسس المدينة؟", "أسس عمر حداد مدينة إبرو عام 1666. إنها بلدة صغيرة على النهر."),
    # astral characters first: JS string indices (UTF-16) differ from the API's code points after them
    "chinese": ("谁创立了这个小镇？", "𠮷𠮷野家镇由李伟于1920年创立。这是一个小镇，在河边。"),
}


@pytest.mark.parametrize("lang", sorted(PLAYGROUND))
def test_playground_highlights_at_the_answer_offsets(tab, site, lang):
    question, context = PLAYGROUND[lang]
    page = tab.goto("/playground")
    page.wait_for_selector("#model option[value]:not([value=''])", state="attached")
    page.fill("#question", question)
    page.fill("#context", context)
    page.click("#ask-go")
    page.wait_for_selector("#answer:not([hidden]) #nbest tbody tr")
    body = {"question": question, "context": context, "top_k": 5, "max_answer_length": 30,
            "handle_impossible_answer": False, "model": page.input_value("#model")}  # fmt: skip
    answers = httpx.post(site["url"] + "/v1/answer", json=body, timeout=30).json()["answers"]
    best = answers[0]
    assert best["end"] > best["start"] >= 0
    if lang == "chinese":  # astral characters before the end offset: a UTF-16 slice would cut elsewhere
        assert any(ord(ch) > 0xFFFF for ch in context[: best["end"]])
    assert page.inner_text("#highlight mark") == context[best["start"] : best["end"]] == best["text"]
    assert page.evaluate("document.getElementById('highlight').textContent") == context
    assert len(cells(page, "#nbest")) == len(answers)
    rtl = page.eval_on_selector("#highlight", "e => e.matches(':dir(rtl)')")
    assert rtl == (lang == "arabic")
    tab.shot(f"playground-{lang}")
    if len(answers) > 1:  # another candidate, chosen in the n-best table, moves the mark to its offsets
        page.click("#nbest tbody tr:nth-child(2)")
        assert page.inner_text("#highlight mark") == context[answers[1]["start"] : answers[1]["end"]]


# -- 1,000 runs, and the key rule ----------------------------------------------------------------------------
def test_runs_page_with_1000_runs_and_the_key_message(browser, tmp_path, site):
    store = RunStore(tmp_path / "big")
    for i in range(1000):
        store.create_run("train" if i % 3 else "eval", model=f"model-{i % 7}", config={"i": i},
                         name=f"run-{i:04d}", status=("finished", "stopped", "failed")[i % 3])  # fmt: skip
    from xlqa.server.app import create_app

    app = create_app(ServeConfig(runs=str(store.root)), store=store)
    app.state.xlqa.api_key = "s3cret"
    with start_server(app) as url:
        tab = Tab(browser, url, site["shots"], allow=("/v1/jobs/evaluate", "401", "422"))
        page = tab.page
        t0 = time.perf_counter()
        tab.goto("/")
        page.wait_for_selector("#runs tbody tr[data-run]")
        seconds = time.perf_counter() - t0
        print(f"runs page with 1000 runs: first rows in {seconds * 1000:.0f} ms")
        assert seconds < 5
        assert page.locator("#runs tbody tr").count() == 50 and page.inner_text("#range") == "1–50 of 1000"
        assert page.inner_text("#runs tbody tr:first-child td:nth-child(2)") == "run-0999"
        page.click("#next")
        page.wait_for_function("document.getElementById('range').textContent === '51–100 of 1000'")
        assert page.inner_text("#runs tbody tr:first-child td:nth-child(2)") == "run-0949"
        page.fill("input[name=q]", "run-012")
        page.wait_for_function("document.getElementById('range').textContent === '1–10 of 10'")
        tab.shot("runs-1000")
        # a state-changing request without the key: the page says what to do
        tab.goto("/evaluate")
        page.fill("#model-path", "some/model")
        page.fill("#data-files", "nowhere.json")  # inside the folders the server reads, but missing: 422
        page.click("#start")
        page.wait_for_selector("#flash:not([hidden])")
        assert "API key" in page.inner_text("#flash") and "401" in page.inner_text("#flash")
        tab.shot("evaluate-401")
        page.fill("#api-key", "s3cret")  # kept in localStorage, sent as a Bearer token from then on
        page.press("#api-key", "Tab")
        page.click("#start")
        page.wait_for_function("document.getElementById('flash').textContent.includes('422')")
        assert "data" in page.inner_text("#flash") and "401" not in page.inner_text("#flash")
        assert page.evaluate("localStorage.getItem('xlqa.apiKey')") == "s3cret"
        tab.close()


def test_static_files_are_local_cached_and_compressed(site):
    page = httpx.get(site["url"] + "/runs/" + site["runs"][0].id).text
    src = next(part.split('"')[0] for part in page.split('src="')[1:] if "plotly.min.js" in part)
    assert src.startswith("/static/plotly.min.js?v=")  # from the installed plotly package, no CDN
    r = httpx.get(site["url"] + src, headers={"Accept-Encoding": "gzip"})
    assert (
        r.status_code == 200
        and r.headers["content-encoding"] == "gzip"
        and "max-age" in r.headers["cache-control"]
    )
    assert len(r.content) > 1_000_000 and int(r.headers["content-length"]) < len(r.content) / 2
    again = httpx.get(site["url"] + src, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    assert httpx.get(site["url"] + "/static/..%2Fapp.py").status_code == 404
    missing = httpx.get(site["url"] + "/runs/no-such-run")
    assert missing.status_code == 404 and "Run not found" in missing.text and "no-such-run" in missing.text

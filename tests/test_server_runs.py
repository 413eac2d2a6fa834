"""The runs, results, comparison and jobs API against a real uvicorn server on loopback and a real run store.

The store holds real runs: two evaluations of a tiny random BERT on three parallel XQuAD languages, and a
short real training run with its events and checkpoints. The live tests start a detached training run and
follow it over server-sent events, stop it through the API, and start an evaluation through the API and
see it finish in the store.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from serving import start_server
from test_control import wait_for
from test_guard import tiny_squad
from xlqa import jobs
from xlqa.config import EvalConfig, ServeConfig, TrainConfig
from xlqa.runs.store import RunStore
from xlqa.server.app import create_app
from xlqa.train import control

LANGS = ("en", "de", "ar")


def _train_cfg(tmp: Path, model: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model=str(model), train=str(tiny_squad(tmp / "train.json")), output=str(out),
                dev=str(tiny_squad(tmp / "dev.json", n=8, offset=100)), max_steps=6, batch_size=4, lr=1e-3,
                progress=False, log_every=1, save_every=3, max_seq_length=64, doc_stride=32, cache_dir="",
                precision="fp32", warmup_ratio=0.0)  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir, shared_data):
    tmp = tmp_path_factory.mktemp("server-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLQA_CACHE", str(tmp / "cache"))
        mp.delenv("XLQA_API_KEY", raising=False)
        store = RunStore(tmp / "store")
        files = [str(shared_data / "xquad" / f"xquad.{lang}.json") for lang in LANGS]
        evals = [
            jobs.evaluate(EvalConfig(model=str(tiny_model_dir), data=files, max_examples=24, max_seq_length=n,
                                     doc_stride=stride, progress=False), name=name, store=store).run
            for name, n, stride in (("eval-a", 192, 64), ("eval-b", 128, 48))
        ]  # fmt: skip
        train_run, _ = control.run_training(
            _train_cfg(tmp, tiny_model_dir, tmp / "trained"), store=store, name="trained"
        )
        cfg = ServeConfig(runs=str(store.root), allow_path=[str(tmp.parent), str(shared_data)])
        app = create_app(cfg, store=store)
        with start_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            yield SimpleNamespace(url=url, client=client, store=store, evals=evals, train=train_run,
                                  tmp=tmp, model=tiny_model_dir, files=files,
                                  files_root=shared_data)  # fmt: skip


def test_list_filter_sort_page(env):
    c = env.client
    body = c.get("/v1/runs").json()
    assert body["total"] == 3 and body["offset"] == 0 and body["limit"] == 50
    assert [r["name"] for r in body["runs"]] == ["trained", "eval-b", "eval-a"]  # newest first
    row = body["runs"][0]
    assert set(row) >= {"id", "name", "kind", "model", "status", "step", "total_steps", "epoch", "epochs", "eta",
                        "best_f1", "health", "created", "updated"}  # fmt: skip
    assert row["kind"] == "train" and row["status"] == "finished" and row["step"] == row["total_steps"] == 6
    assert row["health"] == "ok" and row["eta"] is None and row["best_f1"] is not None
    assert c.get("/v1/runs", params={"kind": "eval"}).json()["total"] == 2
    assert [r["name"] for r in c.get("/v1/runs", params={"q": "EVAL-B"}).json()["runs"]] == ["eval-b"]
    assert c.get("/v1/runs", params={"status": "running"}).json()["total"] == 0
    names = [r["name"] for r in c.get("/v1/runs", params={"sort": "name"}).json()["runs"]]
    assert names == ["eval-a", "eval-b", "trained"]
    page = c.get("/v1/runs", params={"sort": "-name", "limit": 1, "offset": 1}).json()
    assert page["total"] == 3 and [r["name"] for r in page["runs"]] == ["eval-b"]
    f1 = [r["best_f1"] for r in c.get("/v1/runs", params={"kind": "eval", "sort": "-best_f1"}).json()["runs"]]
    assert f1 == sorted(f1, reverse=True)
    for bad in (
        {"sort": "size"},
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"kind": "x"},
        {"status": "z"},
    ):
        r = c.get("/v1/runs", params=bad)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", next(iter(bad))], bad


def test_dead_run_is_shown_dead(env):
    run = env.store.create_run("eval", model="m", config={}, name="ghost")
    proc = subprocess.Popen(["python3", "-c", "pass"])
    proc.wait()
    (run.dir / "eval.pid").write_text(json.dumps({"pid": proc.pid, "host": run.host}))
    try:
        rows = env.client.get("/v1/runs", params={"status": "dead"}).json()["runs"]
        assert [(r["name"], r["status"], r["health"]) for r in rows] == [("ghost", "dead", "dead")]
        assert env.client.get("/v1/runs/ghost").json()["run"]["status"] == "dead"
    finally:
        env.store.update_status(run.id, "failed")


def test_one_run_events_checkpoints(env):
    c = env.client
    detail = c.get(f"/v1/runs/{env.train.id[:20]}").json()  # a unique id prefix resolves
    assert detail["run"]["id"] == env.train.id and detail["run"]["config"]["max_steps"] == 6
    assert detail["status"]["status"] == "finished" and detail["status"]["step"] == 6
    steps = [(ck["step"], ck["best"]) for ck in detail["checkpoints"]]
    assert steps[:2] == [(3, False), (6, False)] and steps[-1][1] is True
    assert all(Path(ck["path"]).is_dir() for ck in detail["checkpoints"])
    events = c.get(f"/v1/runs/{env.train.id}/events").json()
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == list(range(len(seqs))) and events["next"] == seqs[-1]
    kinds = [e["event"] for e in events["events"]]
    assert kinds[0] == "start" and kinds.count("step") == 6 and "checkpoint" in kinds and kinds[-1] == "end"
    step = next(e for e in events["events"] if e["event"] == "step")
    assert {"step", "epoch", "loss", "lr", "grad_norm", "examples_per_s", "eta"} <= set(step)
    later = c.get(f"/v1/runs/{env.train.id}/events", params={"after": seqs[-3]}).json()
    assert [e["seq"] for e in later["events"]] == seqs[-2:]
    assert c.get(f"/v1/runs/{env.train.id}/events", params={"after": seqs[-1]}).json()["events"] == []
    ev = c.get(f"/v1/runs/{env.evals[0].id}").json()
    assert ev["status"] is None and ev["run"]["kind"] == "eval" and len(ev["evaluations"]) == 1
    allck = c.get("/v1/checkpoints").json()["checkpoints"]
    assert {ck["run"] for ck in allck} == {env.train.id} and allck[0]["run_name"] == "trained"
    bench = c.get("/v1/benchmarks").json()["benchmarks"]
    xq = next(b for b in bench if b["name"] == "xquad.de")
    assert xq == {**xq, "languages": ["de"], "family": "xquad"}


def test_not_found_and_bad_params(env):
    c = env.client
    for path in ("/v1/runs/nope", "/v1/runs/nope/events", "/v1/runs/nope/results", "/v1/runs/nope/stream",
                 f"/v1/runs/{env.evals[0].id}/predictions/xquad.xx"):  # fmt: skip
        r = c.get(path)
        assert r.status_code == 404, path
        assert "nope" in r.json()["detail"] or "xquad.xx" in r.json()["detail"], path
    assert c.get("/v1/runs/eval", params={}).status_code == 404  # a prefix of no id
    r = c.get(f"/v1/runs/{env.train.id}/events", params={"after": "x"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "after"]
    assert c.get("/v1/compare").status_code == 422
    assert c.get("/v1/compare", params={"runs": ["nope"]}).status_code == 404
    assert c.get("/v1/compare", params={"runs": ["eval-a", "eval-a"]}).status_code == 400


def test_results_and_predictions(env):
    c = env.client
    res = c.get("/v1/runs/eval-a/results").json()
    assert res["run"]["id"] == env.evals[0].id
    by_lang = {d["language"]: d for d in res["datasets"]}
    assert set(by_lang) == set(LANGS)
    recorded = {d.name: d for d in jobs.EvalResult.read(env.evals[0].dir / "results.json").datasets}
    for d in res["datasets"]:
        rec = recorded[d["name"]]
        assert d["f1"] == rec.f1 and d["em"] == rec.em and d["n_questions"] == 24
        assert d["ci95"]["f1"] == rec.ci95["f1"] and d["ci95"]["f1"][0] <= d["f1"] <= d["ci95"]["f1"][1]
        assert d["gap_f1"] == pytest.approx(by_lang["en"]["f1"] - d["f1"])  # positive: worse than English
        assert d["ext_f1"] == (rec.ext_f1 if rec.ext_f1 is not None else None)
        preds = c.get(d["predictions_url"])
        assert preds.status_code == 200 and len(preds.json()) == 24
        assert preds.json() == json.loads((env.evals[0].dir / d["name"] / "predictions.json").read_text())
    assert res["average_f1"] == pytest.approx(sum(d["f1"] for d in res["datasets"]) / 3)


def test_compare(env):
    a, b = env.evals
    body = env.client.get("/v1/compare", params={"runs": ["eval-a", "eval-b"]}).json()
    assert [r["id"] for r in body["runs"]] == [a.id, b.id] and body["languages"] == ["en", "ar", "de"]
    res_b = {d["language"]: d["f1"] for d in env.client.get("/v1/runs/eval-b/results").json()["datasets"]}
    assert body["f1"][b.id] == res_b
    paired = body["paired"]
    assert {p["language"] for p in paired} == set(LANGS) and all(
        p["a"] == a.id and p["b"] == b.id for p in paired
    )
    for p in paired:
        assert p["diff"] == pytest.approx(body["f1"][b.id][p["language"]] - body["f1"][a.id][p["language"]])
        assert 0 < p["p"] <= p["p_holm"] <= 1 and p["significant"] == (p["p_holm"] < 0.05)
    cons = body["consistency"][a.id]
    assert cons["languages"] == ["en", "ar", "de"] and cons["n_questions"] == 24
    assert len(cons["matrix"]) == 3 and all(row[i] == 1.0 for i, row in enumerate(cons["matrix"]))


def test_key_rule(env, monkeypatch):
    c = env.client
    # no key set: loopback clients may change state (here: a conflict, not a refusal)
    assert c.post("/v1/runs/trained/stop").status_code == 409
    monkeypatch.setenv("XLQA_API_KEY", "s3cret")
    with start_server(create_app(ServeConfig(runs=str(env.store.root)), store=env.store)) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for path in ("/v1/runs/trained/stop", "/v1/runs/trained/resume", "/v1/jobs/evaluate"):
                r = httpx.post(url + path, headers=headers, json={})
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, headers)
        ok = {"Authorization": "Bearer s3cret"}
        assert httpx.post(url + "/v1/runs/trained/stop", headers=ok).status_code == 409
        assert httpx.post(url + "/v1/runs/nope/stop", headers=ok).status_code == 404
        assert httpx.get(url + "/v1/runs").status_code == 200  # reading needs no key


def test_evaluate_request_validation(env):
    c = env.client
    n_runs = c.get("/v1/runs").json()["total"]
    cases = [
        ({"model": str(env.tmp / "none"), "data": env.files[:1]}, ["body", "model"]),
        ({"model": str(env.model), "benchmarks": ["xquad.xx"]}, ["body", "benchmarks"]),
        (
            {"model": str(env.model), "data": [env.files[0], str(env.tmp / "missing.json")]},
            ["body", "data", 1],
        ),
        ({"model": str(env.model)}, ["body", "benchmarks"]),
        ({"model": str(env.model), "data": env.files[:1], "max_examples": 0}, ["body", "max_examples"]),
        ({"model": str(env.model), "data": env.files[:1], "name": "bad name"}, ["body", "name"]),
        ({"model": str(env.model), "data": env.files[:1], "epochs": 3}, ["body", "epochs"]),
        ({"data": env.files[:1]}, ["body", "model"]),
        (
            {"model": str(env.model), "data": env.files[:1], "max_seq_length": 128, "doc_stride": 128},
            ["body", "doc_stride"],
        ),
    ]
    for body, loc in cases:
        r = c.post("/v1/jobs/evaluate", json=body)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (body, r.text)
    assert c.get("/v1/runs").json()["total"] == n_runs  # nothing registered


def test_live_training_stream_and_stop(env):
    c = env.client
    cfg = _train_cfg(env.tmp, env.model, env.tmp / "live", max_steps=5000, save_every=100000)
    run, pid = control.start_detached(cfg, store=env.store, name="live")
    try:
        seen, ended = [], None
        with (
            httpx.Client(base_url=env.url, timeout=120) as sc,
            sc.stream("GET", f"/v1/runs/{run.id}/stream") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            message: dict = {}
            for line in stream.iter_lines():
                if line:
                    key, _, value = line.partition(": ")
                    message[key] = value
                    continue
                if message.get("event") == "step":
                    seen.append((int(message["id"]), json.loads(message["data"])))
                    if len(seen) == 3:  # live steps arrive: stop the run through the API
                        r = c.post(f"/v1/runs/{run.id}/stop")
                        assert r.status_code == 202, r.text
                elif message.get("event") == "status":
                    ended = json.loads(message["data"])
                message = {}
        assert ended is not None and ended["status"] == "stopped" and not ended["alive"]
        ids = [i for i, _ in seen]
        assert ids == sorted(ids) and [e["seq"] for _, e in seen] == ids
        assert [e["step"] for _, e in seen[:3]] == [1, 2, 3] and seen[0][1]["loss"] > 0
        assert not control.process_alive(pid) and env.store.get_run(run.id).status == "stopped"
        row = c.get(f"/v1/runs/{run.id}").json()["run"]
        assert row["status"] == "stopped" and row["step"] < 5000
        # Last-Event-ID: a reconnecting client gets what came after, then the status, at once
        last = ids[-1]
        r = c.get(f"/v1/runs/{run.id}/stream", headers={"Last-Event-ID": str(last)})
        got = [int(x[4:]) for x in r.text.splitlines() if x.startswith("id: ")]
        assert got and got[0] == last + 1 and "event: status" in r.text
        # resume through the API: a new detached process continues from the checkpoint of the stop
        r = c.post(f"/v1/runs/{run.id}/resume")
        assert r.status_code == 202, r.text
        pid = r.json()["pid"]
        assert r.json()["run"]["id"] == run.id and control.process_alive(pid)
        assert c.post(f"/v1/runs/{run.id}/resume").status_code == 409  # already running
        events = f"/v1/runs/{run.id}/events"
        wait_for(lambda: any(e["event"] == "resume" for e in c.get(events).json()["events"]), 60, "the resume",
              run.dir / "train.log")  # fmt: skip
        assert c.post(f"/v1/runs/{run.id}/stop").status_code == 202
        wait_for(
            lambda: env.store.get_run(run.id).status == "stopped",
            60,
            "the second stop",
            run.dir / "train.log",
        )
    finally:
        if control.process_alive(pid):
            control.stop_run(run.id, store=env.store, wait=60)


def test_evaluate_job(env):
    c = env.client
    body = {
        "model": str(env.model),
        "benchmarks": ["xquad.de"],
        "mirror": str(env.files_root),
        "max_examples": 8,
        "max_seq_length": 128,
        "name": "api-eval",
    }  # fmt: skip (no doc_stride: half the 128-token window)
    r = c.post("/v1/jobs/evaluate", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["run"]["name"] == "api-eval" and job["pid"] > 0 and Path(job["run"]["dir"]).is_dir()
    row = c.get(f"/v1/runs/{job['run']['id']}").json()["run"]
    assert row["status"] == "running" and row["kind"] == "eval"
    log = Path(job["run"]["dir"]) / "eval.log"
    wait_for(lambda: c.get(f"/v1/runs/{job['run']['id']}").json()["run"]["status"] != "running", 90,
          "the evaluation to end", log)  # fmt: skip
    assert env.store.get_run(job["run"]["id"]).status == "finished", log.read_text()[-2000:]
    res = c.get(f"/v1/runs/{job['run']['id']}/results").json()
    assert [(d["name"], d["n_questions"]) for d in res["datasets"]] == [("xquad.de", 8)]
    results = json.loads((Path(job["run"]["dir"]) / "results.json").read_text())
    assert results["config"]["doc_stride"] == 64, results["config"]


def test_evaluate_job_that_fails_early_is_marked_failed(env):
    empty = env.tmp / "empty-mirror"
    empty.mkdir(exist_ok=True)
    body = {"model": str(env.model), "benchmarks": ["xquad.de"], "mirror": str(empty), "name": "no-data"}
    r = env.client.post("/v1/jobs/evaluate", json=body)
    assert r.status_code == 202, r.text
    rid, log = r.json()["run"]["id"], Path(r.json()["run"]["dir"]) / "eval.log"
    # xlqa evaluate exits before it tracks the run (nothing could be fetched): the watcher records the failure
    wait_for(lambda: env.store.get_run(rid).status == "failed", 60, "the run to be marked failed", log)
    assert "nothing to evaluate" in log.read_text()
    assert env.client.get(f"/v1/runs/{rid}").json()["run"]["status"] == "failed"

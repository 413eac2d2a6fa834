"""No file outside the allowed folders is read through the API: absolute paths, ``..`` and symlinks out."""

from __future__ import annotations

import httpx
import pytest

from serving import start_server
from xlqa.config import ServeConfig
from xlqa.runs.store import RunStore
from xlqa.server.app import create_app
from xlqa.server.paths import check_path, looks_like_path


@pytest.fixture()
def site(tmp_path, monkeypatch):
    monkeypatch.setenv("XLQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XLQA_API_KEY", raising=False)
    store = RunStore(tmp_path / "store")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"data": []}')
    (outside / "model").mkdir()
    (outside / "model" / "config.json").write_text("{}")
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / "link-to-model").symlink_to(outside / "model")
    (store.root / "link-to-secret.json").symlink_to(outside / "secret.json")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with start_server(create_app(ServeConfig(runs=str(store.root)), store=store)) as url:
        yield url, store, outside


@pytest.mark.parametrize(
    "model",
    ["/etc", "../../../../etc", "~/", "{outside}/model", "{store}/link-to-model", "{store}/../../x"],
)
def test_load_model_refuses_paths_outside_the_allowed_folders(site, model):
    url, store, outside = site
    model = model.format(outside=outside, store=store.root)
    r = httpx.post(f"{url}/v1/models", json={"model": model})
    assert r.status_code == 403, r.text
    assert "model" in r.json()["detail"] and "--allow-path" in r.json()["detail"]
    assert httpx.get(f"{url}/v1/models").json()["models"] == []


@pytest.mark.parametrize("data", ["/etc/passwd", "{outside}/secret.json", "{store}/link-to-secret.json"])
def test_evaluate_job_refuses_data_outside_and_registers_nothing(site, data):
    url, store, outside = site
    body = {"model": "minilm-l6", "data": [data.format(outside=outside, store=store.root)]}
    r = httpx.post(f"{url}/v1/jobs/evaluate", json=body)
    assert r.status_code == 403 and "data.0" in r.json()["detail"], r.text
    assert store.list_runs() == []


def test_allow_path_opens_a_folder_and_inside_paths_pass(tmp_path):
    outside = tmp_path / "models"
    (outside / "m").mkdir(parents=True)
    roots = [tmp_path.resolve() / "store", outside.resolve()]
    check_path(str(outside / "m"), roots, "model")  # inside an allowed folder: no error
    check_path("xlm-roberta-base", roots, "model")  # a hub id is not a path
    check_path("FacebookAI/xlm-roberta-base", roots, "model")
    assert looks_like_path("../x") and looks_like_path("/x") and looks_like_path("a/../../b")
    assert not looks_like_path("deepset/xlm-roberta-base-squad2")


def test_predictions_link_out_of_the_evaluation_folder_is_not_served(tmp_path, monkeypatch):
    from xlqa.errors import RunNotFoundError
    from xlqa.server.runs_results import predictions_file

    store = RunStore(tmp_path / "store")
    run = store.create_run("eval", model="m", config={}, name="ev")
    results = run.dir / "results.json"
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    (run.dir / "xquad.de").mkdir()
    (run.dir / "xquad.de" / "predictions.json").symlink_to(secret)
    monkeypatch.setattr(
        store, "run_metrics", lambda ref: [{"dataset": "xquad.de", "results_path": str(results)}]
    )
    with pytest.raises(RunNotFoundError, match="no predictions file"):
        predictions_file(store, run, "xquad.de")

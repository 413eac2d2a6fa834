"""The answer, model and Hugging Face routes of ``xlqa serve`` against a real uvicorn server on loopback.

A tiny random-weight BERT QA model with the real mBERT tokenizer answers real XQuAD questions in all 12
languages; windows are small (64-128 tokens) so that most contexts need several, and answers are checked
against ``context[start:end]`` and against :func:`xlqa.predict.predict_examples` (evaluation's path).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from serving import start_server
from xlqa.config import ServeConfig
from xlqa.data import Example, load_squad
from xlqa.features import FeatureParams, build_features
from xlqa.modeling import load_qa_model
from xlqa.predict import predict_examples
from xlqa.server.app import create_app

LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
SEQ, STRIDE = 128, 32


def _cfg(model_dir: Path | None, tmp: Path, **kw) -> ServeConfig:
    base = {
        "model": [str(model_dir)] if model_dir else [],
        "runs": str(tmp / "runs"),
        "allow_path": [str(tmp.parent)],  # the tests' models and files lie in pytest's folders
        "max_seq_length": SEQ,
        "doc_stride": STRIDE,
        "batch_size": 8,
        "batch_wait_ms": 20,
        "max_context_chars": 8000,
        "max_question_chars": 300,
        "max_batch_items": 40,
        "max_body_bytes": 100_000,
        "precision": "fp32",  # as predict_examples by default, so answers compare exactly
    }
    return ServeConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def xquad(shared_data) -> dict[str, list[Example]]:
    """The first three questions (of different paragraphs) of every XQuAD language."""
    out = {}
    for lang in LANGS:
        examples = load_squad(shared_data / "xquad" / f"xquad.{lang}.json").examples
        seen, picked = set(), []
        for ex in examples:
            if ex.context not in seen:
                seen.add(ex.context)
                picked.append(ex)
            if len(picked) == 3:
                break
        out[lang] = picked
    return out


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    with start_server(_cfg(tiny_model_dir, tmp), wait_ready=True) as url:
        yield url


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The same model loaded in the test process, for evaluation's own predictions."""
    return load_qa_model(str(tiny_model_dir))


def _post(url: str, path: str, body, **kw) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60, **kw)


def _check_offsets(context: str, answers: list[dict]) -> None:
    assert answers
    for a in answers:
        assert 0 <= a["start"] <= a["end"] <= len(context)
        assert a["text"] == context[a["start"] : a["end"]]


def _evaluation(reference, examples: list[Example], max_answer_length: int):
    model, tok = reference
    return predict_examples(
        model, tok, examples, params=FeatureParams(SEQ, STRIDE), max_answer_length=max_answer_length,
        cache_dir="", progress=False,
    )  # fmt: skip


# -- health, docs, models --
def test_health_ready_docs_models(server, tiny_model_dir):
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server}/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == [str(tiny_model_dir)]
    docs = httpx.get(f"{server}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    for p in ("/v1/answer", "/v1/answer/batch", "/v1/models", "/hf", "/hf/models/{name}"):
        assert p in paths, p
    models = httpx.get(f"{server}/v1/models").json()
    assert models["loading"] == [] and models["errors"] == {}
    (m,) = models["models"]
    assert m["name"] == str(tiny_model_dir) and m["task"] == "extractive"
    assert m["languages"] is None and m["checkpoint"] == {}  # a plain folder: nothing recorded


# -- answers --
def test_answers_in_all_xquad_languages_match_evaluation(server, xquad, reference):
    for lang in LANGS:
        ex = xquad[lang][0]
        r = _post(server, "/v1/answer", {"question": ex.question, "context": ex.context, "top_k": 3,
                                         "max_answer_length": 30})  # fmt: skip
        assert r.status_code == 200, (lang, r.text)
        body = r.json()
        assert len(body["answers"]) == 3
        _check_offsets(ex.context, body["answers"])
        assert [a["score"] for a in body["answers"]] == sorted(
            (a["score"] for a in body["answers"]), reverse=True
        )
        dec = _evaluation(reference, [ex], 30)
        best = dec.nbest[ex.id][0]
        top = body["answers"][0]
        assert (top["start"], top["end"], top["text"]) == (best.start, best.end, best.text), lang
        assert top["probability"] == pytest.approx(best.probability, abs=1e-4)


def test_long_context_windows_as_in_evaluation(server, xquad, reference, tiny_model_dir):
    # one question over a context of many paragraphs: offsets must point into the whole context
    for lang in ("en", "zh", "ar"):
        q = xquad[lang][2]
        context = "\n".join(e.context for e in reversed(xquad[lang]))
        ex = Example(id="long", question=q.question, context=context, answers=[])
        tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
        assert len(build_features([ex], tok, FeatureParams(SEQ, STRIDE))) >= 6
        r = _post(server, "/v1/answer", {"question": q.question, "context": context, "top_k": 5})
        assert r.status_code == 200, r.text
        answers = r.json()["answers"]
        _check_offsets(context, answers)
        dec = _evaluation(reference, [ex], 30)
        got = [(a["start"], a["end"]) for a in answers]
        assert got == [(c.start, c.end) for c in dec.nbest["long"][:5]], lang


def test_batch_endpoint_splits_and_keeps_order(server, xquad):
    items = [
        {"id": f"{lang}-{i}", "question": ex.question, "context": ex.context}
        for lang in LANGS
        for i, ex in enumerate(xquad[lang])
    ]  # 36 items: more than the model batch of 8 windows, fewer than --max-batch-items 40
    r = _post(server, "/v1/answer/batch", {"items": items, "top_k": 2})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["id"] for x in results] == [it["id"] for it in items]
    singles = {}
    for it, res in zip(items, results):
        _check_offsets(it["context"], res["answers"])
        singles[it["id"]] = res["answers"]
    one = _post(
        server, "/v1/answer", {"question": items[5]["question"], "context": items[5]["context"], "top_k": 2}
    )
    # a window's logits in a batch differ from alone in the last bits: spans exact, scores within 1e-6
    _same_answers(one.json()["answers"], singles[items[5]["id"]])
    # ids default to the item's index
    r = _post(
        server, "/v1/answer/batch", {"items": [{"question": "Who?", "context": "Marie Curie did."}] * 2}
    )
    assert [x["id"] for x in r.json()["results"]] == ["0", "1"]


def test_dynamic_batching_gives_the_answers_of_batch_size_one(tiny_model_dir, tmp_path, xquad):
    pairs = [(ex.question, ex.context) for lang in LANGS for ex in xquad[lang][:2]]

    def ask(url, pair):
        r = _post(url, "/v1/answer", {"question": pair[0], "context": pair[1], "top_k": 3})
        assert r.status_code == 200, r.text
        return r.json()["answers"]

    cfg = _cfg(tiny_model_dir, tmp_path, batch_size=32, batch_wait_ms=100)
    with start_server(cfg, wait_ready=True) as url, ThreadPoolExecutor(12) as pool:
        batched = list(pool.map(lambda p: ask(url, p), pairs))
        metrics = httpx.get(f"{url}/metrics").text
    single_cfg = _cfg(tiny_model_dir, tmp_path, batch_size=1)
    with start_server(single_cfg, wait_ready=True) as url:
        one_by_one = [ask(url, p) for p in pairs]
        single_metrics = httpx.get(f"{url}/metrics").text
    for b, s in zip(batched, one_by_one):
        assert [(a["start"], a["end"], a["text"]) for a in b] == [
            (a["start"], a["end"], a["text"]) for a in s
        ]
        assert [a["score"] for a in b] == pytest.approx([a["score"] for a in s], abs=1e-4)
    # the batched server ran forward passes of several windows; batch size 1 never did
    assert _metric(metrics, 'xlqa_batch_windows_bucket{le="1.0"}') < _metric(
        metrics, "xlqa_batch_windows_count"
    )
    assert _metric(single_metrics, 'xlqa_batch_windows_bucket{le="1.0"}') == _metric(
        single_metrics, "xlqa_batch_windows_count"
    )
    # every window went through exactly one forward pass; a question whose windows straddle two passes counts
    # in both
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    examples = [Example(id=str(i), question=q, context=c, answers=[]) for i, (q, c) in enumerate(pairs)]
    windows = len(build_features(examples, tok, FeatureParams(SEQ, STRIDE)))
    assert _metric(metrics, "xlqa_batch_windows_sum") == windows > len(pairs)
    assert _metric(metrics, "xlqa_batch_questions_sum") >= len(pairs)


def _metric(text: str, name: str) -> float:
    """The value of one sample (name with labels, as exposed) in Prometheus text."""
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"{name} not in the metrics")


def test_impossible_answer_is_empty_span(server):
    r = _post(server, "/v1/answer", {"question": "Why?", "context": "Nothing here.", "top_k": 20,
                                     "handle_impossible_answer": True})  # fmt: skip
    assert r.status_code == 200
    answers = r.json()["answers"]
    empty = [a for a in answers if a["text"] == ""]
    assert len(empty) == 1 and (empty[0]["start"], empty[0]["end"]) == (0, 0)
    assert sum(a["probability"] for a in answers) == pytest.approx(1.0, abs=1e-6)


# -- Hugging Face compatibility --
def test_huggingface_inference_client(server, xquad, tiny_model_dir):
    from huggingface_hub import InferenceClient

    ex = xquad["de"][0]
    for url in (f"{server}/hf/models/{tiny_model_dir.name}", f"{server}/hf", server):
        out = InferenceClient(model=url).question_answering(question=ex.question, context=ex.context)
        assert out.answer == ex.context[out.start : out.end] and out.answer
        assert 0 < out.score <= 1
    several = InferenceClient(model=f"{server}/hf").question_answering(
        question=ex.question, context=ex.context, top_k=3, max_answer_len=30
    )
    assert isinstance(several, list) and len(several) == 3
    v1 = _post(server, "/v1/answer", {"question": ex.question, "context": ex.context, "top_k": 3}).json()
    assert [(s.answer, s.start, s.end) for s in several] == [
        (a["text"], a["start"], a["end"]) for a in v1["answers"]
    ]
    # raw JSON: a list of inputs gives a list of answers
    raw = _post(server, "/hf", {"inputs": [{"question": ex.question, "context": ex.context}] * 2})
    assert (
        raw.status_code == 200
        and len(raw.json()) == 2
        and set(raw.json()[0]) == {"answer", "score", "start", "end"}
    )
    bad = _post(server, "/hf", {"inputs": {"question": "", "context": ex.context}})
    assert bad.status_code == 422 and "question" in bad.text
    assert _post(server, "/hf/models/nope", {"inputs": {"question": "a", "context": "b"}}).status_code == 404


# -- errors --
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"question": 123, "context": "c"}, "question"),
        ({"question": "q"}, "context"),
        ({"question": "", "context": "c"}, "question"),
        ({"question": "q", "context": "   "}, "context"),
        ({"question": "q", "context": "c", "top_k": 0}, "top_k"),
        ({"question": "q", "context": "c", "top_k": 21}, "top_k"),
        ({"question": "q", "context": "c", "top_k": "many"}, "top_k"),
        ({"question": "q", "context": "c", "max_answer_length": 0}, "max_answer_length"),
        (
            {"question": "q", "context": "c", "handle_impossible_answer": "perhaps"},
            "handle_impossible_answer",
        ),
        ({"question": "q", "context": "c", "colour": "red"}, "colour"),
    ],
)
def test_wrong_types_are_422_naming_the_field(server, body, field):
    r = _post(server, "/v1/answer", body)
    assert r.status_code == 422, r.text
    assert any(field in map(str, err["loc"]) for err in r.json()["detail"]), r.text


def test_limits_and_malformed_requests(server, tiny_model_dir):
    r = httpx.post(f"{server}/v1/answer", content=b'{"question": "q", "context": ', timeout=10,
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422 and "json" in r.text.lower()
    r = _post(server, "/v1/answer", {"question": "q", "context": "x" * 8001})
    assert r.status_code == 413 and "--max-context-chars" in r.json()["detail"]
    r = _post(server, "/v1/answer", {"question": "q" * 301, "context": "c"})
    assert r.status_code == 413 and "--max-question-chars" in r.json()["detail"]
    r = _post(server, "/v1/answer", {"question": "q", "context": "x" * 120_000})
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["detail"]
    items = [{"question": "q", "context": "c"}] * 41
    r = _post(server, "/v1/answer/batch", {"items": items})
    assert r.status_code == 413 and "--max-batch-items" in r.json()["detail"] and "40" in r.json()["detail"]
    r = _post(server, "/v1/answer/batch", {"items": [{"question": "q", "context": "c" * 8001}]})
    assert r.status_code == 413 and "items[0]" in r.json()["detail"]
    r = _post(server, "/v1/answer/batch", {"items": []})
    assert r.status_code == 422 and "items" in r.text
    r = _post(server, "/v1/answer", {"question": "q", "context": "c", "model": "nope"})
    assert r.status_code == 404 and str(tiny_model_dir) in r.json()["detail"]
    r = _post(server, "/v1/answer", {"question": "q", "context": "c", "model": tiny_model_dir.name})
    assert r.status_code == 200  # a folder's base name works as well
    assert (
        httpx.post(
            f"{server}/v1/answer", content=b"[1, 2]", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_queue_full_is_429_with_retry_after(tiny_model_dir, tmp_path, xquad):
    cfg = _cfg(tiny_model_dir, tmp_path, batch_size=1, queue_size=2, max_seq_length=32, doc_stride=8,
               max_context_chars=100_000, max_body_bytes=1_000_000)  # fmt: skip
    long_context = " ".join(
        ex.context for lang in LANGS for ex in xquad[lang]
    )  # hundreds of 1-window batches
    with start_server(cfg, wait_ready=True) as url:
        slow: dict = {}
        t = threading.Thread(
            target=lambda: slow.update(
                r=_post(url, "/v1/answer", {"question": "Who?", "context": long_context})
            )
        )
        t.start()
        deadline = time.monotonic() + 30
        while _metric(httpx.get(f"{url}/metrics").text, "xlqa_queue_windows") < 3:
            assert time.monotonic() < deadline and t.is_alive(), "the long request never filled the queue"
            time.sleep(0.005)
        r = _post(url, "/v1/answer", {"question": "Who?", "context": "Marie Curie won."})
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1 and "--queue-size" in r.json()["detail"]
        t.join(60)
        assert slow["r"].status_code == 200
        _check_offsets(long_context, slow["r"].json()["answers"])
        assert _metric(httpx.get(f"{url}/metrics").text, "xlqa_rejected_total") >= 1
        # a client batch bigger than the queue is queued a model batch at a time, not refused
        items = [{"question": ex.question, "context": ex.context} for ex in xquad["en"]] * 4
        r = _post(url, "/v1/answer/batch", {"items": items})
        assert r.status_code == 200 and len(r.json()["results"]) == 12


def test_not_ready_then_load_on_request(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("XLQA_API_KEY", raising=False)
    cfg = _cfg(tmp_path / "missing-model", tmp_path)
    with start_server(cfg) as url:
        deadline = time.monotonic() + 30
        while not httpx.get(f"{url}/v1/models").json()["errors"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.get(f"{url}/readyz").status_code == 503
        r = _post(url, "/v1/answer", {"question": "q", "context": "c"})
        assert r.status_code == 503 and "missing-model" in r.json()["detail"] and r.headers["retry-after"]
        assert (
            _post(url, "/v1/answer/batch", {"items": [{"question": "q", "context": "c"}]}).status_code == 503
        )
        assert _post(url, "/hf", {"inputs": {"question": "q", "context": "c"}}).status_code == 503
        r = _post(url, "/v1/models", {"model": str(tmp_path / "nothing-here")})
        assert r.status_code == 400 and "nothing-here" in r.json()["detail"]
        r = _post(url, "/v1/models", {"model": str(tiny_model_dir)})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == str(tiny_model_dir)
        assert _post(url, "/v1/models", {"model": str(tiny_model_dir)}).status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert (
            _post(url, "/v1/answer", {"question": "Who?", "context": "Marie Curie won."}).status_code == 200
        )


def test_checkpoint_metadata_of_a_trained_run(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    best = run / "best"
    shutil.copytree(tiny_model_dir, best)
    meta = {"task": "extractive", "step": 12, "epoch": 1, "dev": {"f1": 50.0}, "config": {"model": "mbert"}}
    (best / "xlqa.json").write_text(json.dumps(meta))
    (run / "config.json").write_text(json.dumps({"data": {"train": {"path": "/d/squad/train-v1.1.json",
                                                                    "language": "en"}}}))  # fmt: skip
    monkeypatch.delenv("XLQA_API_KEY", raising=False)
    with start_server(_cfg(None, tmp_path), wait_ready=True) as url:
        r = _post(url, "/v1/models", {"model": str(best)})
        assert r.status_code == 201, r.text
        (m,) = httpx.get(f"{url}/v1/models").json()["models"]
    assert m["languages"] == ["en"] and m["task"] == "extractive"
    assert m["checkpoint"]["step"] == 12 and m["checkpoint"]["dev"] == {"f1": 50.0}
    assert m["checkpoint"]["run"] == str(run) and m["checkpoint"]["base_model"] == "mbert"


def _non_loopback_address() -> str | None:
    try:
        addresses = socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        addresses = []
    return next((a for a in addresses if not a.startswith("127.")), None)


def test_loading_models_follows_the_key_rule(tiny_model_dir, tmp_path, monkeypatch):
    body = {"model": str(tiny_model_dir)}
    monkeypatch.setenv("XLQA_API_KEY", "s3cret")
    with start_server(create_app(_cfg(None, tmp_path)), wait_ready=True) as url:
        assert _post(url, "/v1/models", body).status_code == 401
        r = _post(url, "/v1/models", body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/v1/models").json()["models"] == []
        assert _post(url, "/v1/models", body, headers={"Authorization": "Bearer s3cret"}).status_code == 201
    monkeypatch.delenv("XLQA_API_KEY")
    address = _non_loopback_address()
    if address is None:  # no other interface here: ask the rule itself about a remote client
        from fastapi import HTTPException
        from starlette.requests import Request

        from xlqa.server.deps import require_write

        app = create_app(_cfg(None, tmp_path))
        scope = {"type": "http", "headers": [], "client": ("203.0.113.7", 4000), "app": app}
        with pytest.raises(HTTPException) as err:
            require_write(Request(scope), app.state.xlqa)
        assert err.value.status_code == 403
        return
    with start_server(create_app(_cfg(None, tmp_path)), host="0.0.0.0") as url:
        remote = url.replace("0.0.0.0", address)
        r = _post(remote, "/v1/models", body)
        assert r.status_code == 403 and "loopback" in r.json()["detail"]
        assert _post(url.replace("0.0.0.0", "127.0.0.1"), "/v1/models", body).status_code == 201


def _same_answers(got: list[dict], want: list[dict]) -> None:
    assert [(a["text"], a["start"], a["end"]) for a in got] == [
        (a["text"], a["start"], a["end"]) for a in want
    ]
    for a, b in zip(got, want):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)

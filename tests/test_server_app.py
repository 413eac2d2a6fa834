"""The app's plumbing through the real server: request ids, JSON access logs, the body limit, CORS, the API-key
rule for state-changing requests, metrics, OpenAPI, and ``xlqa serve`` as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from serving import free_port, start_server
from xlqa.config import ServeConfig
from xlqa.server.app import create_app
from xlqa.server.deps import is_loopback


@pytest.fixture()
def store_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XLQA_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("XLQA_API_KEY", raising=False)
    return tmp_path / "runs"


def test_health_ready_metrics_docs_and_request_ids(store_dir):
    with start_server(ServeConfig()) as url:
        r = httpx.get(f"{url}/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        made = r.headers["x-request-id"]
        assert len(made) == 16 and made != httpx.get(f"{url}/healthz").headers["x-request-id"]
        # a client's id is echoed, cleaned of anything but letters, digits and -_.
        r = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "abc-123<script>"})
        assert r.headers["x-request-id"] == "abc-123script"
        ready = httpx.get(f"{url}/readyz")  # no model asked for: ready at once
        assert ready.status_code == 200 and ready.json()["ready"] is True
        metrics = httpx.get(f"{url}/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'xlqa_requests_total{method="GET",route="/healthz",status="200"} 3.0' in metrics.text
        assert "xlqa_request_seconds_bucket" in metrics.text and "xlqa_queue_windows" in metrics.text
        assert httpx.get(f"{url}/docs").status_code == 200
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        assert {"/healthz", "/readyz", "/metrics", "/v1/answer", "/v1/models"} <= set(paths)


def test_body_limit_413_declared_and_streamed(store_dir):
    with start_server(ServeConfig(max_body_bytes=1000)) as url:
        body = json.dumps({"question": "q", "context": "x" * 2000})
        r = httpx.post(f"{url}/v1/answer", content=body, headers={"content-type": "application/json"})
        assert (
            r.status_code == 413
            and "1000 bytes" in r.json()["detail"]
            and "--max-body-bytes" in r.json()["detail"]
        )

        def chunks():  # no Content-Length: the limit holds while the body is read
            for _ in range(10):
                yield b"x" * 300

        r = httpx.post(f"{url}/v1/answer", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        small = httpx.post(
            f"{url}/v1/answer", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert small.status_code == 422  # under the limit: parsed, and refused as malformed JSON


def test_cors_off_by_default_and_configurable(store_dir):
    preflight = {"Origin": "http://lab.example", "Access-Control-Request-Method": "POST"}
    with start_server(ServeConfig()) as url:
        r = httpx.get(f"{url}/healthz", headers={"Origin": "http://lab.example"})
        assert "access-control-allow-origin" not in r.headers
    with start_server(ServeConfig(cors=["http://lab.example"])) as url:
        r = httpx.options(f"{url}/v1/answer", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://lab.example"
        r = httpx.options(f"{url}/v1/answer", headers={**preflight, "Origin": "http://other.example"})
        assert r.headers.get("access-control-allow-origin") != "http://other.example"


def test_state_changing_requests_need_the_key_when_one_is_set(store_dir, monkeypatch):
    monkeypatch.setenv("XLQA_API_KEY", "s3cret")
    with start_server(create_app(ServeConfig())) as url:
        body = {"model": "no-such-model"}
        r = httpx.post(f"{url}/v1/models", json=body)
        assert (
            r.status_code == 401
            and "Bearer" in r.json()["detail"]
            and r.headers["www-authenticate"] == "Bearer"
        )
        wrong = httpx.post(f"{url}/v1/models", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = httpx.post(f"{url}/v1/models", json=body, headers={"Authorization": "Bearer s3cret"})
        assert right.status_code not in (401, 403, 500)  # past the key: the unknown model is the problem now
        assert httpx.get(f"{url}/v1/models").status_code == 200  # reading needs no key


def _outward_address() -> str | None:
    """This machine's non-loopback IPv4 address, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            host = s.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(host) else host


def test_without_a_key_only_loopback_clients_change_state(store_dir):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("192.0.2.2")
    host = _outward_address()
    if host is None:
        pytest.skip("this machine has no non-loopback address to make a remote client from")
    with start_server(ServeConfig(), host=host) as url:
        r = httpx.post(f"{url}/v1/models", json={"model": "x"})
        assert r.status_code == 403 and "loopback" in r.json()["detail"]
        assert httpx.get(f"{url}/healthz").status_code == 200  # reading is open


def test_xlqa_serve_process_logs_json_lines_with_the_request_id(tmp_path, store_dir):
    port = free_port()
    env = {**os.environ, "XLQA_RUNS": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xlqa", "serve", "--port", str(port), "--runs", str(tmp_path / "store")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "trace-42"})
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "xlqa serve did not answer within 60 s"
                time.sleep(0.2)
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
        assert httpx.get(f"{url}/v1/runs").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [e for e in lines if e.get("request_id") == "trace-42"]
    assert access and access[0]["path"] == "/healthz" and access[0]["status"] == 200 and access[0]["ms"] >= 0
    assert {"time", "level", "logger"} <= set(access[0])
    assert f"http://127.0.0.1:{port}/" in err and str(tmp_path / "store") in err

"""A real uvicorn server on a free loopback port, in a thread, for tests and benchmarks.

    with start_server(create_app(cfg)) as url:
        httpx.get(f"{url}/healthz")

``start_server`` also takes a :class:`xlqa.config.ServeConfig` (the app is then built with
:func:`xlqa.server.app.create_app`). The context manager waits until the server accepts connections (and,
with ``wait_ready=True``, until ``/readyz`` says 200), and on exit stops it and runs the app's shutdown.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def start_server(
    app_or_cfg,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    wait_ready: bool = False,
    timeout: float = 60.0,
    store=None,
) -> Iterator[str]:
    """Serve ``app_or_cfg`` (a FastAPI app or a ``ServeConfig``) and yield its base URL (no trailing slash).

    Args:
        app_or_cfg: the ASGI app, or a ``ServeConfig`` to build one with ``create_app(cfg, store=store)``.
        host: address to bind (loopback by default).
        port: port to bind; a free one when None.
        wait_ready: also wait until ``GET /readyz`` answers 200 (the start-up models are loaded).
        timeout: seconds to wait for the server (and readiness) before failing.
        store: the run store given to ``create_app`` when ``app_or_cfg`` is a config.
    """
    app = app_or_cfg
    if not callable(app_or_cfg):
        from xlqa.server.app import create_app

        app = create_app(app_or_cfg, store=store)
    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    try:
        _wait(server, thread, url, timeout, wait_ready)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _wait(server: uvicorn.Server, thread: threading.Thread, url: str, timeout: float, ready: bool) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server at {url} stopped while starting (port taken or app failed)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server at {url} did not start within {timeout:.0f} s")
        time.sleep(0.02)
    while ready:
        r = httpx.get(f"{url}/readyz", timeout=5)
        if r.status_code == 200:
            return
        if r.json().get("errors") and not r.json().get("loading"):
            raise RuntimeError(f"the server at {url} could not load its models: {r.json()['errors']}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server at {url} was not ready within {timeout:.0f} s: {r.text}")
        time.sleep(0.05)


# the name the brief uses too
serve = start_server

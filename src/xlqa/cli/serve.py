"""``xlqa serve``: the HTTP API and the dashboard on uvicorn."""

from __future__ import annotations

import logging
from typing import Any

from xlqa.cli.common import console
from xlqa.cli.options import build_config
from xlqa.config import ServeConfig


def serve(**values: Any) -> None:
    import uvicorn

    from xlqa.server.app import create_app
    from xlqa.server.logs import configure_logging

    cfg = build_config(ServeConfig, values)
    app = create_app(cfg)
    configure_logging(json_lines=cfg.log_json)
    state = app.state.xlqa
    console.print(
        f"xlqa serve on http://{cfg.host}:{cfg.port}/ (dashboard), API docs at /docs; run store {state.store.root}; "
        f"state-changing requests: {'API key' if state.api_key else 'loopback clients only'}"
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_config=None, access_log=False, log_level=logging.INFO)

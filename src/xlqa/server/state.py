"""What one server process holds: its config, the run store, the loaded models, readiness and metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from xlqa.config import ServeConfig
from xlqa.runs.store import RunStore
from xlqa.server.metrics import Metrics


@dataclass
class ServerState:
    """The app's state (``app.state.xlqa``): set up by :func:`xlqa.server.app.create_app`, read by the routes."""

    cfg: ServeConfig
    store: RunStore
    metrics: Metrics
    api_key: str | None = None
    # name -> loaded model (:mod:`xlqa.server.engine`); filled at start-up and by authorised load requests
    models: dict[str, Any] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)
    load_errors: dict[str, str] = field(default_factory=dict)  # model -> why it failed to load
    # models being loaded on request right now (start-up loads are counted from cfg.model)
    loading: set[str] = field(default_factory=set)
    loading_lock: threading.Lock = field(default_factory=threading.Lock)
    # folders the API may read models and data from (:mod:`xlqa.server.paths`)
    roots: list = field(default_factory=list)

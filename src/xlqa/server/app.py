"""The FastAPI app: :func:`create_app` wires settings, state, middleware, error handlers and the routers.

Models named in ``ServeConfig.model`` load in a background thread at start-up, so ``/healthz`` answers at once
and ``/readyz`` says 503 until they are loaded (load failures are reported there and at ``/v1/models``).
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

import xlqa
from xlqa.config import ServeConfig
from xlqa.runs.store import RunStore
from xlqa.server import errors
from xlqa.server.metrics import Metrics
from xlqa.server.middleware import RequestContext
from xlqa.server.paths import allowed_roots
from xlqa.server.routes import answer, health, hf, jobs, models, pages, runs
from xlqa.server.state import ServerState
from xlqa.settings import get_settings

log = logging.getLogger(__name__)


def _load_models(state: ServerState) -> None:
    from xlqa.server.engine import load_into

    for name in state.cfg.model:
        try:
            load_into(state, name)
        except Exception as err:  # reported at /readyz and /v1/models; the server keeps running
            log.error("could not load model %s: %s", name, err)
            state.load_errors[name] = str(err).splitlines()[0] if str(err) else type(err).__name__
    if state.models or not state.cfg.model:
        state.ready.set()


def create_app(cfg: ServeConfig | None = None, *, store: RunStore | None = None) -> FastAPI:
    """The app for ``cfg`` (defaults: no model, the run store of ``$XLQA_RUNS``)."""
    cfg = cfg or ServeConfig()
    cfg.validate()
    settings = get_settings()
    state = ServerState(
        cfg=cfg,
        store=store or RunStore(cfg.runs),
        metrics=Metrics(),
        api_key=settings.api_key,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=_load_models, args=(state,), name="xlqa-model-loader", daemon=True)
        loader.start()
        try:
            yield
        finally:
            from xlqa.server.engine import shutdown

            await shutdown(state)

    app = FastAPI(
        title="xlqa",
        version=xlqa.__version__,
        description="Zero-shot cross-lingual question answering: answers, runs, results, jobs and a dashboard.",
        lifespan=lifespan,
    )
    state.roots = allowed_roots(state.store.root, settings.cache, cfg.allow_path)
    app.state.xlqa = state
    errors.install(app)
    for module in (health, models, answer, hf, runs, jobs, pages):
        app.include_router(module.router)
    if cfg.cors:
        app.add_middleware(
            CORSMiddleware, allow_origins=cfg.cors, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    app.add_middleware(RequestContext, metrics=state.metrics, max_body_bytes=cfg.max_body_bytes)
    return app

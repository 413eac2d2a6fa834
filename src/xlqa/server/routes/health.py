"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from xlqa.server.deps import State

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: 503 until the models given at start-up are loaded")
def readyz(state: State) -> JSONResponse:
    body = {
        "ready": state.ready.is_set(),
        "models": sorted(state.models),
        "loading": [m for m in state.cfg.model if m not in state.models and m not in state.load_errors],
        "errors": state.load_errors,
    }
    if not state.ready.is_set():
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse(body)


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests, latency, batch sizes, queue length",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

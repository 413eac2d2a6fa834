"""Errors as HTTP answers: bad input is a 4xx naming the field or the limit, never a 500.

=============================== ======= ===========================================================
error                           status  when
=============================== ======= ===========================================================
malformed JSON, wrong types     422     FastAPI's validation, with ``loc`` naming the field
:class:`LimitExceeded`          413     a context, question or batch beyond a ``ServeConfig`` limit
:class:`QueueFull`              429     the batcher's queue is full (``Retry-After`` says when to retry)
:class:`NotReady`               503     the models are still loading (``Retry-After``)
:class:`PathNotAllowed`         403     a model or data path outside the folders the server reads
``RunNotFoundError``            404     no run matches the reference
other ``XlqaError``             400     a user error of the library (bad config, bad data)
=============================== ======= ===========================================================
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from xlqa.errors import RunNotFoundError, XlqaError
from xlqa.server.paths import PathNotAllowed

log = logging.getLogger(__name__)


class LimitExceeded(XlqaError):
    """A request beyond one of the server's limits (413)."""


class QueueFull(XlqaError):
    """The batcher's queue is full (429 with ``Retry-After``)."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(XlqaError):
    """No model is loaded yet (503 with ``Retry-After``)."""


def _body(request: Request, detail: str) -> dict:
    return {"detail": detail, "request_id": getattr(request.state, "request_id", None)}


def install(app: FastAPI) -> None:
    """Register the handlers of the table above on ``app``."""

    @app.exception_handler(LimitExceeded)
    async def _limit(request: Request, err: LimitExceeded):
        return JSONResponse(_body(request, str(err)), status_code=413)

    @app.exception_handler(QueueFull)
    async def _queue(request: Request, err: QueueFull):
        headers = {"Retry-After": str(max(1, round(err.retry_after)))}
        return JSONResponse(_body(request, str(err)), status_code=429, headers=headers)

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, err: NotReady):
        return JSONResponse(_body(request, str(err)), status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(PathNotAllowed)
    async def _forbidden_path(request: Request, err: PathNotAllowed):
        return JSONResponse(_body(request, str(err)), status_code=403)

    @app.exception_handler(RunNotFoundError)
    async def _not_found(request: Request, err: RunNotFoundError):
        return JSONResponse(_body(request, str(err)), status_code=404)

    @app.exception_handler(XlqaError)
    async def _user_error(request: Request, err: XlqaError):
        return JSONResponse(_body(request, str(err)), status_code=400)

"""Per-request bookkeeping: a request id, the body-size limit, a JSON access log line, Prometheus counts.

A pure ASGI middleware (not ``BaseHTTPMiddleware``) so streamed responses (server-sent events) pass through
unbuffered and a too-large body is refused while it is being read, before it is all in memory.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xlqa.server.metrics import Metrics

log = logging.getLogger("xlqa.server.access")


def _json_response(status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> tuple[dict, dict]:
    data = json.dumps(body).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            *headers,
        ],
    }
    return start, {"type": "http.response.body", "body": data}


class RequestContext:
    """Request id (``X-Request-ID``, echoed or made), body limit (413), access log and metrics."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get("x-request-id") or uuid.uuid4().hex[:16]
        rid = "".join(c for c in rid if c.isalnum() or c in "-_.")[:64] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        t0 = time.perf_counter()
        status = {"code": 500}
        limit = self.max_body

        refused = {"sent": False}

        async def send_with_id(message: Message) -> None:
            if refused["sent"]:  # the 413 went out already; what the app answers after it is dropped
                return
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        async def too_large() -> None:
            if refused["sent"]:
                return
            detail = f"request body is larger than the limit of {limit} bytes (--max-body-bytes)"
            start, body = _json_response(413, {"detail": detail}, [rid_header])
            status["code"] = 413
            refused["sent"] = True
            await send(start)
            await send(body)

        declared = headers.get("content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await too_large()
                return
            received = 0

            async def limited_receive() -> Message:
                # past the limit: answer 413 now and tell the app the client is gone (it stops reading)
                nonlocal received
                if refused["sent"]:
                    return {"type": "http.disconnect"}
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        await too_large()
                        return {"type": "http.disconnect"}
                return message

            await self.app(scope, limited_receive, send_with_id)
        finally:
            seconds = time.perf_counter() - t0
            route = scope.get("route")
            path = getattr(route, "path", None) or (
                "static" if scope["path"].startswith("/static") else "other"
            )
            self.metrics.requests.labels(path, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(seconds)
            client = scope.get("client")
            log.info(
                json.dumps(
                    {
                        "request_id": rid,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status["code"],
                        "ms": round(seconds * 1000, 2),
                        "client": client[0] if client else None,
                    }
                )
            )

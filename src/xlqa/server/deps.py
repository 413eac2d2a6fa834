"""FastAPI dependencies: the server state, the run store, and the rule for state-changing requests.

The rule: when ``XLQA_API_KEY`` is set, a state-changing request must send ``Authorization: Bearer <key>``
(401 otherwise); when it is not set, such requests are accepted from loopback clients only (403 otherwise).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from xlqa.runs.store import RunStore
from xlqa.server.state import ServerState


def get_state(request: Request) -> ServerState:
    return request.app.state.xlqa


State = Annotated[ServerState, Depends(get_state)]


def get_store(state: State) -> RunStore:
    return state.store


Store = Annotated[RunStore, Depends(get_store)]


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def require_write(request: Request, state: State) -> None:
    """Let a state-changing request through only under the key rule (see the module docstring)."""
    if state.api_key:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), state.api_key.encode()
        ):
            raise HTTPException(
                401,
                "this request changes state: send 'Authorization: Bearer <key>' with the server's XLQA_API_KEY",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return
    client = request.client.host if request.client else None
    if not is_loopback(client):
        raise HTTPException(
            403,
            f"state-changing requests are accepted from loopback only when the server has no XLQA_API_KEY "
            f"(client {client})",
        )


Writer = Depends(require_write)

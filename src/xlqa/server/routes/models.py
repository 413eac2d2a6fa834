"""``GET /v1/models`` (what is loaded, with task, training languages and checkpoint) and ``POST /v1/models``
(load one more; a state-changing request under the API-key rule)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, HTTPException, Response

from xlqa.errors import XlqaError
from xlqa.server.deps import State, Writer
from xlqa.server.engine import load_into, loading
from xlqa.server.paths import check_path
from xlqa.server.schemas import LoadRequest, ModelInfo, ModelsResponse

log = logging.getLogger(__name__)

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelsResponse, summary="Loaded models")
def list_models(state: State) -> dict:
    """Loaded models (the first is the default), models still loading, and load errors."""
    return {
        "models": [m.info() for m in list(state.models.values())],
        "loading": loading(state),
        "errors": dict(state.load_errors),
    }


@router.post(
    "/v1/models",
    response_model=ModelInfo,
    status_code=201,
    dependencies=[Writer],
    responses={
        200: {"description": "already loaded"},
        400: {"description": "the model cannot be loaded (not found, not extractive)"},
        401: {"description": "XLQA_API_KEY is set and the request has no or a wrong Bearer key"},
        403: {
            "description": "no XLQA_API_KEY is set and the client is not on loopback, or the model path is"
            " outside the folders the server reads (--allow-path)"
        },
    },
    summary="Load a model",
)
async def load_model(req: LoadRequest, state: State, response: Response) -> dict:
    """Load a model folder, hub id or offline source and serve it (201; 200 when it was loaded already)."""
    check_path(req.model, state.roots, "model")
    if req.model in state.models:
        response.status_code = 200
        return state.models[req.model].info()
    try:
        loaded = await asyncio.to_thread(load_into, state, req.model)
    except XlqaError:
        raise
    except Exception as err:  # transformers raises many kinds: all mean this model cannot be served
        log.warning("could not load %s: %s", req.model, err)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HTTPException(400, f"could not load model {req.model!r}: {first}") from err
    return loaded.info()

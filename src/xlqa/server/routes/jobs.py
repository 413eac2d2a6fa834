"""Jobs: start a detached evaluation (exactly ``xlqa evaluate``, recorded in the run store) and follow it.

The request is checked first (the model is a folder, offline source or cached hub model; benchmarks are
registered names; data files exist): a bad one is a 422 naming the field, and nothing is registered. Then
the run is created and the process started (:func:`xlqa.runs.launch.start_evaluation`); the answer (202)
carries the run's id at once, to follow at ``/v1/runs/{id}`` and ``/v1/runs/{id}/stream``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from xlqa.config import EvalConfig
from xlqa.runs.launch import check_evaluation, start_evaluation
from xlqa.runs.schema import NAME_RE
from xlqa.server.deps import State, Store, Writer
from xlqa.server.paths import check_path

router = APIRouter(tags=["jobs"])


class EvaluateRequest(BaseModel):
    """An evaluation to start: a model and named benchmarks and/or data files on the server."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[
        str, Field(min_length=1, description="model folder (RUN/best), offline source or hub id")
    ]
    benchmarks: list[str] = Field(
        default_factory=list, description="benchmark names or groups, e.g. xquad.de"
    )
    data: list[str] = Field(default_factory=list, description="SQuAD-format files on the server")
    name: Annotated[
        str | None, Field(pattern=f"^(?:{NAME_RE.pattern})$", description="a readable run name")
    ] = None
    max_examples: Annotated[
        int | None, Field(ge=1, description="only the first N questions of each file")
    ] = None
    mirror: str | None = Field(None, description="data mirror folder or URL for benchmarks")
    batch_size: Annotated[int | None, Field(ge=1, le=4096)] = None
    max_seq_length: Annotated[int | None, Field(ge=16, le=8192)] = None
    doc_stride: Annotated[int | None, Field(ge=1, le=4096)] = None


def config_of(req: EvaluateRequest) -> EvalConfig:
    """The :class:`EvalConfig` of ``xlqa evaluate`` that the request asks for."""
    cfg = EvalConfig(model=req.model, data=list(req.data), benchmarks=",".join(req.benchmarks) or None)
    for key in ("max_examples", "mirror", "batch_size", "max_seq_length", "doc_stride"):
        if getattr(req, key) is not None:
            setattr(cfg, key, getattr(req, key))
    return cfg


@router.post(
    "/v1/jobs/evaluate",
    status_code=202,
    dependencies=[Writer],
    responses={
        401: {"description": "XLQA_API_KEY is set and the request has no or a wrong Bearer key"},
        403: {
            "description": "no XLQA_API_KEY is set and the client is not on loopback, or a model or data"
            " path is outside the folders the server reads (--allow-path)"
        },
    },
    summary="Start a detached evaluation (xlqa evaluate), recorded in the run store",
)
def evaluate(req: EvaluateRequest, store: Store, state: State) -> dict:
    check_path(req.model, state.roots, "model")
    for i, path in enumerate(req.data):
        check_path(path, state.roots, f"data.{i}")
    if req.mirror and "://" not in req.mirror:
        check_path(req.mirror, state.roots, "mirror")
    cfg = config_of(req)
    problems = check_evaluation(cfg)
    if problems:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", *(int(p) if p.isdigit() else p for p in field.split("."))),
                    "msg": msg,
                    "input": None,
                }
                for field, msg in problems
            ]
        )
    run, pid = start_evaluation(cfg, store=store, name=req.name)
    return {"run": {"id": run.id, "name": run.name, "dir": str(run.dir)}, "pid": pid}

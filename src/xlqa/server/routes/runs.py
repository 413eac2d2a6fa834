"""Runs, results and comparisons: the run store as JSON, and a live run's events as server-sent events.

Every route resolves its run like the CLI (id, unique id prefix or name; 404 otherwise) and calls one
function of :mod:`xlqa.server.runs_view` or :mod:`xlqa.server.runs_results`; plain ``def`` routes run in the
thread pool, so store and file reads never block the event loop. Stop and resume change state: they need the
API key rule (:data:`xlqa.server.deps.Writer`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from xlqa.runs.launch import live_status
from xlqa.runs.schema import Run
from xlqa.server import runs_results, runs_view
from xlqa.server.deps import Store, Writer
from xlqa.server.runs_events import Tail, events_after
from xlqa.train import control

log = logging.getLogger(__name__)
router = APIRouter(tags=["runs"])

SortKey = Literal[
    "created", "-created", "name", "-name", "kind", "-kind", "model", "-model", "status", "-status",
    "best_f1", "-best_f1",
]  # fmt: skip
POLL_S = 0.5  # how often a live stream looks for new events
KEEPALIVE_S = 10.0  # a comment line this often while nothing happens, so proxies keep the connection


def get_run(ref: str, store: Store) -> Run:
    return store.get_run(ref)


RunRef = Annotated[Run, Depends(get_run)]


@router.get("/v1/runs", summary="The runs table: filter, sort and page")
def list_runs(
    store: Store,
    kind: Literal["train", "eval"] | None = None,
    status: Literal["running", "finished", "failed", "stopped", "dead"] | None = None,
    q: Annotated[str | None, Query(max_length=200, description="text in the id, name or model")] = None,
    sort: SortKey = "-created",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    return runs_view.list_rows(store, kind=kind, status=status, q=q, sort=sort, limit=limit, offset=offset)


@router.get("/v1/runs/{ref}", summary="One run: config, status, checkpoints, evaluations")
def show_run(run: RunRef, store: Store) -> dict:
    return runs_view.run_detail(store, run)


@router.get("/v1/runs/{ref}/events", summary="A training run's events after a sequence number")
def run_events(run: RunRef, after: Annotated[int, Query(ge=-1)] = -1) -> dict:
    events, nxt = events_after(run.events_path, after)
    return {"events": events, "next": nxt}


@router.get("/v1/runs/{ref}/log", summary="The end of a run's log (train.log or eval.log)")
def run_log(run: RunRef) -> dict:
    path = run.dir / (control.LOG_FILE if run.kind == "train" else "eval.log")
    return {"path": str(path), "text": runs_view.tail_log(path)}


@router.get(
    "/v1/runs/{ref}/stream",
    response_class=EventSourceResponse,
    summary="A live run's events as server-sent events, then a `status` message when it ends",
)
async def stream_run(
    run: RunRef,
    store: Store,
    request: Request,
    after: Annotated[int, Query(ge=-1)] = -1,
    last_event_id: Annotated[str | None, Header()] = None,
):
    if last_event_id is not None and last_event_id.strip().lstrip("-").isdigit():
        after = max(after, int(last_event_id))
    tail = Tail(run.events_path)
    idle = 0.0
    while True:
        events = await anyio.to_thread.run_sync(tail.read)
        for e in events:
            if e["seq"] > after:
                yield ServerSentEvent(id=str(e["seq"]), event=str(e.get("event", "message")), data=e)
        if events:
            idle = 0.0
            continue
        status = await anyio.to_thread.run_sync(_status_if_over, store, run.id)
        if status is not None:
            for e in await anyio.to_thread.run_sync(tail.read):  # what was written before it ended
                if e["seq"] > after:
                    yield ServerSentEvent(id=str(e["seq"]), event=str(e.get("event", "message")), data=e)
            yield ServerSentEvent(event="status", data=status)
            return
        if idle >= KEEPALIVE_S:
            idle = 0.0
            yield ServerSentEvent(comment="keepalive")
        if await request.is_disconnected():
            return
        await anyio.sleep(POLL_S)
        idle += POLL_S


def _status_if_over(store, run_id: str) -> dict | None:
    """The run's status message once it no longer runs (None while it does)."""
    run = store.get_run(run_id)
    status = live_status(run)
    if status == "running":
        return None
    if run.kind == "train":
        return control.run_status(run.id, store=store)
    return {"run": run.id, "name": run.name, "status": status, "alive": False}


@router.get("/v1/runs/{ref}/results", summary="Per-language scores with 95% CIs, transfer gap, xlqa-ext")
def run_results(run: RunRef, store: Store) -> dict:
    return runs_results.run_results(store, run)


@router.get("/v1/runs/{ref}/predictions/{dataset}", summary="The predictions.json of one evaluated dataset")
def run_predictions(run: RunRef, store: Store, dataset: str) -> FileResponse:
    return FileResponse(runs_results.predictions_file(store, run, dataset), media_type="application/json")


@router.get("/v1/compare", summary="Compare runs: F1 table, paired significance (Holm), consistency")
def compare(
    store: Store,
    runs: Annotated[list[str], Query(min_length=1, max_length=runs_results.MAX_COMPARED)],
) -> dict:
    return runs_results.compare_runs(store, runs)


@router.get("/v1/checkpoints", summary="Every checkpoint of every training run (to evaluate)")
def list_checkpoints(store: Store) -> dict:
    return {"checkpoints": runs_view.all_checkpoints(store)}


@router.get("/v1/benchmarks", summary="The registered benchmarks and groups")
def list_benchmarks() -> dict:
    return runs_view.benchmarks()


# -- control -------------------------------------------------------------------------------------------------
STOP_WAIT_S = 5.0  # how long a stop request waits for the run to exit before answering 202 anyway


@router.post("/v1/runs/{ref}/stop", status_code=202, dependencies=[Writer], summary="Stop a training run")
def stop_run(run: RunRef, store: Store) -> dict:
    if run.kind != "train":
        raise HTTPException(400, f"run {run.id} is an evaluation; only training runs can be stopped")
    if control.run_process(run.dir) is None:
        raise HTTPException(409, f"run {run.id} has no running training process (status {live_status(run)})")
    stopped = control.stop_run(run.id, store=store, wait=STOP_WAIT_S)
    return {"run": runs_view.run_row(stopped)}


@router.post("/v1/runs/{ref}/resume", status_code=202, dependencies=[Writer], summary="Resume a training run")
def resume_run(run: RunRef, store: Store) -> dict:
    if run.kind != "train":
        raise HTTPException(400, f"run {run.id} is an evaluation; only training runs can be resumed")
    if control.run_process(run.dir) is not None:
        raise HTTPException(409, f"run {run.id} is already running")
    resumed, pid = control.start_detached(resume=run.id, store=store)
    return {"run": runs_view.run_row(store.get_run(resumed.id)), "pid": pid}

"""The dashboard: HTML pages (runs, one run, compare, evaluate, playground) and their static files.

The pages are Jinja2 templates from :func:`xlqa.web.templates` (the same environment as the HTML report) under
``dashboard/``; they hold no data themselves: their scripts read the JSON API (``/v1/...``), so the dashboard
shows exactly what a client of the API sees. Static files come from ``xlqa/web/static`` and plotly.js from the
installed ``plotly`` package (served here, never from a CDN: the dashboard makes no external request). URLs of
static files carry a hash of their content (``?v=``), so browsers may cache them for a long time.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

import xlqa
from xlqa.errors import RunNotFoundError
from xlqa.server.deps import State
from xlqa.web import templates

router = APIRouter(include_in_schema=False)

NAV = (("runs", "/", "Runs"), ("compare", "/compare", "Compare"), ("evaluate", "/evaluate", "Evaluate"),
       ("playground", "/playground", "Playground"))  # fmt: skip
_NAME = re.compile(r"[a-z][a-z0-9_-]*\.(css|js)")
_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8"}


@cache
def _static(name: str) -> tuple[bytes, bytes, str]:
    """``(raw, gzipped, short sha256)`` of a static file (read and compressed once per process)."""
    if name == "plotly.min.js":
        data = resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
    else:
        data = resources.files("xlqa.web").joinpath("static", name).read_bytes()
    return data, gzip.compress(data, compresslevel=6, mtime=0), hashlib.sha256(data).hexdigest()[:12]


def static_url(name: str) -> str:
    """The URL of a static file, with its content hash so that a changed file is fetched again."""
    return f"/static/{name}?v={_static(name)[2]}"


def _page(request: Request, state, template: str, page: str, title: str, **context) -> HTMLResponse:
    html = (
        templates()
        .get_template(f"dashboard/{template}")
        .render(
            title=title,
            page=page,
            nav=NAV,
            static_url=static_url,
            needs_key=bool(state.api_key),
            version=xlqa.__version__,
            **context,
        )
    )
    return HTMLResponse(html, status_code=context.get("status_code", 200))


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, state: State) -> HTMLResponse:
    """The run store as a table (paged, sorted and filtered by the API)."""
    return _page(request, state, "runs.html", "runs", "Runs", charts=False)


@router.get("/runs/{ref}", response_class=HTMLResponse)
def run_page(ref: str, request: Request, state: State) -> HTMLResponse:
    """One run: live training curves, progress, stop/resume, checkpoints, results per language."""
    try:
        run = state.store.resolve(ref)
    except RunNotFoundError as err:
        return _page(request, state, "missing.html", "runs", "Run not found", charts=False, message=str(err),
                     status_code=404)  # fmt: skip
    return _page(request, state, "run.html", "runs", run.name or run.id, charts=True, run_id=run.id)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, state: State) -> HTMLResponse:
    """Runs side by side: language heatmap, paired significance, consistency (runs from ``?runs=``)."""
    return _page(request, state, "compare.html", "compare", "Compare runs", charts=True)


@router.get("/evaluate", response_class=HTMLResponse)
def evaluate_page(request: Request, state: State) -> HTMLResponse:
    """Start the evaluation of a checkpoint on benchmarks or files (a detached job)."""
    return _page(request, state, "evaluate.html", "evaluate", "Start an evaluation", charts=False)


@router.get("/playground", response_class=HTMLResponse)
def playground_page(request: Request, state: State) -> HTMLResponse:
    """Ask a loaded model a question; the answer is highlighted at its character offsets."""
    return _page(request, state, "playground.html", "playground", "Playground", charts=False)


@router.get("/static/{name}")
def static_file(name: str, request: Request) -> Response:
    """A dashboard file (CSS, JS) or plotly.min.js, gzipped when the client accepts it, cacheable."""
    if name != "plotly.min.js" and not _NAME.fullmatch(name):
        return Response("not found", status_code=404, media_type="text/plain")
    try:
        raw, packed, digest = _static(name)
    except (FileNotFoundError, IsADirectoryError):
        return Response("not found", status_code=404, media_type="text/plain")
    etag = f'"{digest}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=604800", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    body = raw
    if "gzip" in request.headers.get("accept-encoding", ""):
        body, headers["Content-Encoding"] = packed, "gzip"
    return Response(body, media_type=_TYPES[name.rsplit(".", 1)[1]], headers=headers)

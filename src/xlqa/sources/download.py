"""Fetch named benchmarks: download into a cache with resume and sha256 checks, or read them from a mirror.

Where a file comes from, in order:
1. a local mirror folder (``mirror=`` or ``$XLQA_MIRROR``) laid out like the reference mirror
   (``../shared/data``): ``<mirror>/<spec.mirror_path>`` is verified and returned in place (never copied);
2. the cache, ``<cache>/data/<spec.mirror_path>`` with ``<cache>`` = ``cache_dir`` or ``$XLQA_CACHE`` or
   ``~/.cache/xlqa``: a file there is returned as is, because it was only moved there after verification;
3. a mirror URL (``mirror="https://host/xlqa-data"``), same layout, downloaded into the cache;
4. the official URL: the file itself, or an archive kept in ``<cache>/data/_archives/`` whose member is
   extracted.

Checksum policy:
- Official downloads are checked against ``spec.sha256`` (of the archive for MLQA/TyDi) before they are
  moved into place with ``os.replace``; a mismatch deletes the download and raises `ChecksumError` naming
  the URL, expected and actual sha256. Archive members are then extracted through a temporary file and
  moved into place atomically.
- Mirror files are checked against ``spec.mirror_checksums``: the checksum of the reference mirror's copy
  where that copy is not the official file (``mirror_sha256``: rebuilt SQuAD files, MLQA/TyDi files
  extracted from other copies), or the official sha256 for single-file specs (so a mirror holding the
  official file passes too).
- Where no checksum is known (an archive member absent from the reference mirror, or ``sha256=None``) the
  file is checked by its size (when known) and by parsing it as SQuAD-style JSON, with a warning.

Failures: HTTP 4xx, connection refused, timeouts and dropped connections raise `DownloadError` naming the
benchmark and URL and pointing at ``--mirror`` / ``XLQA_MIRROR``. The final file is never half-written.
A partial download ``<target>.part`` is kept only when it holds bytes that a later call can resume with an
HTTP Range request (the error says so); when the server does not answer 206 the download restarts.
Transient failures (connection errors, timeouts, HTTP 5xx) are retried ``retries`` times, each resuming.

The checks live in :mod:`xlqa.sources.verify` and archive extraction in :mod:`xlqa.sources.archive`. The
transfer is our own code on urllib rather than pooch or huggingface_hub's downloader: pooch cannot resume a
partial download (nor accept more than one checksum per file, nor fall back to mirrors), and
huggingface_hub's ``http_get`` resumes but is a hub-internal helper (its signature and HTTP client changed
between major versions) whose errors would still need mapping to the ones above.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

from xlqa import __version__
from xlqa.errors import DownloadError
from xlqa.settings import get_settings
from xlqa.sources.archive import extract_member
from xlqa.sources.registry import BenchmarkSpec, expand
from xlqa.sources.verify import CHUNK, from_mirror_folder, note_variant, verify_download

__all__ = [
    "cached_path",
    "data_dir",
    "default_cache_dir",
    "fetch",
    "get",
    "is_cached",
]

logger = logging.getLogger(__name__)

USER_AGENT = f"xlqa/{__version__} (+python urllib)"
_HINT = (
    "Check the network, or use a mirror: --mirror DIR_OR_URL or XLQA_MIRROR, laid out like the reference "
    "mirror (e.g. ../shared/data)."
)


class _Retryable(Exception):
    """A transient failure: the transfer may be retried (and resumed)."""


def default_cache_dir() -> Path:
    """The cache root of the settings (``$XLQA_CACHE``, default ``~/.cache/xlqa``)."""
    return get_settings().cache


def data_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding downloaded data: ``<cache_dir or default_cache_dir()>/data``."""
    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "data"


def cached_path(spec: BenchmarkSpec, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where `fetch` puts the file of ``spec`` in the cache (whether or not it is there yet)."""
    return data_dir(cache_dir) / spec.mirror_path


def is_cached(spec: BenchmarkSpec, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """True when the file of ``spec`` is already in the cache."""
    return cached_path(spec, cache_dir).is_file()


def _is_url(location: str) -> bool:
    return urllib.parse.urlsplit(location).scheme in ("http", "https")


def _resolve_mirror(mirror: str | os.PathLike[str] | None) -> str | None:
    value = os.fspath(mirror) if mirror is not None else (get_settings().mirror or "")
    if not value:
        return None
    if value.startswith("file://"):
        return urllib.request.url2pathname(urllib.parse.urlsplit(value).path)
    return value


def fetch(
    spec: BenchmarkSpec,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | os.PathLike[str] | None = None,
    progress: bool = True,
    *,
    retries: int = 2,
    timeout: float = 60.0,
) -> Path:
    """Return a local path to the verified file of one benchmark, downloading it when needed.

    Args:
        spec: the benchmark (see `xlqa.sources.registry.get_spec`).
        cache_dir: cache root (default ``$XLQA_CACHE`` or ``~/.cache/xlqa``); files go under its ``data/``.
        mirror: a local folder or an http(s) URL laid out like the reference mirror; default ``$XLQA_MIRROR``;
            "" disables the environment variable.
        progress: show a progress bar with ETA for network downloads.
        retries: how many times a transient network failure is retried (each retry resumes the download).
        timeout: seconds to wait for the connection and for each read.

    Raises:
        DownloadError: the file could not be obtained; ChecksumError when it has the wrong sha256.
    """
    location = _resolve_mirror(mirror)
    if location and not _is_url(location):
        return from_mirror_folder(spec, Path(location).expanduser())
    target = cached_path(spec, cache_dir)
    if target.is_file():
        logger.debug("%s: using cached %s", spec.name, target)
        return target
    opts = {"progress": progress, "retries": retries, "timeout": timeout}
    if location:
        url = location.rstrip("/") + "/" + urllib.parse.quote(spec.mirror_path)
        note_variant(spec, _download(spec, url, target, spec.mirror_checksums, None, **opts), url)
    elif not spec.is_archive:
        _download(spec, spec.url, target, (spec.sha256,) if spec.sha256 else (), spec.size, **opts)
    else:
        archive = data_dir(cache_dir) / "_archives" / Path(urllib.parse.urlsplit(spec.url).path).name
        if not archive.is_file():
            _download(spec, spec.url, archive, (spec.sha256,) if spec.sha256 else (), spec.size, **opts)
        extract_member(spec, archive, target)
    logger.info("%s: ready at %s", spec.name, target)
    return target


def get(
    names: str | list[str],
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Fetch every benchmark that ``names`` expands to (names, groups, comma lists: `datasets.expand`).

    Returns the local paths in the order of the expanded names. Raises ValueError for unknown names before any
    download starts, and DownloadError for the first benchmark that cannot be fetched.
    """
    return [fetch(spec, cache_dir=cache_dir, mirror=mirror, progress=progress) for spec in expand(names)]


def get_available(
    names: str | list[str],
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[list[tuple[BenchmarkSpec, Path]], list[tuple[BenchmarkSpec, DownloadError]]]:
    """Like :func:`get`, but a benchmark that cannot be fetched is reported instead of stopping the rest.

    For "evaluate on everything available": a mirror folder that holds only some MLQA or TyDi files still
    serves those. Returns ``(fetched, failed)`` with the specs, in the order of the expanded names.
    """
    fetched, failed = [], []
    for spec in expand(names):
        try:
            fetched.append((spec, fetch(spec, cache_dir=cache_dir, mirror=mirror, progress=progress)))
        except DownloadError as err:
            failed.append((spec, err))
    return fetched, failed


# ---------------------------------------------------------------- network
def _download(
    spec: BenchmarkSpec,
    url: str,
    dest: Path,
    accepted: tuple[str, ...],
    size: int | None,
    *,
    progress: bool,
    retries: int,
    timeout: float,
) -> str | None:
    """Download ``url`` to ``dest`` via ``dest.part`` (resumed when present), verify, then ``os.replace``.

    Returns the sha256 of the file when it was checked against ``accepted``, else None.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    logger.info("%s: downloading %s", spec.name, url)
    attempt = 0
    while True:
        try:
            if not (size is not None and part.is_file() and part.stat().st_size == size):
                _transfer(spec, url, part, size, progress=progress, timeout=timeout)
            break
        except _Retryable as exc:
            if attempt < retries:
                attempt += 1
                logger.warning("%s: %s; retry %d of %d", spec.name, exc, attempt, retries)
                time.sleep(min(0.5 * attempt, 5.0))
                continue
            raise DownloadError(
                f"could not download benchmark {spec.name!r} from {url}: {exc}. {_kept(part)}{_HINT}"
            ) from exc
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
    actual = verify_download(spec, url, part, accepted, size, is_json=dest.suffix == ".json")
    os.replace(part, dest)
    return actual


def _kept(part: Path) -> str:
    """Keep a non-empty partial download for resuming; drop an empty one."""
    if part.is_file() and part.stat().st_size > 0:
        size = part.stat().st_size
        return f"The partial download ({size} bytes) is kept at {part}; the next fetch resumes it. "
    part.unlink(missing_ok=True)
    return ""


def _transfer(
    spec: BenchmarkSpec, url: str, part: Path, size: int | None, *, progress: bool, timeout: float
) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file does not fit the server's file: start over
            logger.info("%s: the server refused to resume (HTTP 416); restarting from zero", spec.name)
            part.unlink()
            return _transfer(spec, url, part, size, progress=progress, timeout=timeout)
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(
            f"could not download benchmark {spec.name!r} from {url}: HTTP {exc.code} {exc.reason}. {_HINT}"
        ) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Retryable(f"connection failed ({reason})") from exc

    with resp:
        mode = "wb"
        if offset and resp.status == 206:
            start = _range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                logger.info(
                    "%s: resume at byte %d answered from byte %s; restarting", spec.name, offset, start
                )
                part.unlink()
                return _transfer(spec, url, part, size, progress=progress, timeout=timeout)
            mode = "ab"
            logger.info("%s: resuming at byte %d", spec.name, offset)
        elif offset:
            logger.info(
                "%s: the server does not resume (HTTP %d); restarting from zero", spec.name, resp.status
            )
            offset = 0
        length = resp.headers.get("Content-Length")
        body = int(length) if length and length.isdigit() else None
        total = offset + body if body is not None else size
        received = 0
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=spec.name,
            disable=not progress,
            leave=False,
        )
        try:
            with bar, open(part, mode) as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (TimeoutError, ConnectionError, HTTPException, OSError) as exc:
            raise _Retryable(f"connection lost after {offset + received} bytes ({exc})") from exc
        if body is not None and received < body:
            raise _Retryable(f"connection closed after {offset + received} of {offset + body} bytes")


def _range_start(content_range: str) -> int | None:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` header, or None."""
    try:
        unit, spec = content_range.split(" ", 1)
        return int(spec.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None

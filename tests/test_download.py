"""Downloader against a real HTTP server on 127.0.0.1: Range, dropped connections, 404, wrong bytes, timeouts.

Payloads are small fake SQuAD-format files registered as temporary specs; no real data is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from xlqa.errors import ChecksumError, DownloadError
from xlqa.sources import registry as datasets
from xlqa.sources.download import cached_path, fetch, get, is_cached
from xlqa.sources.registry import BenchmarkSpec, get_spec

PAYLOAD = json.dumps(
    {
        "version": "1.1",
        "data": [
            {
                "title": f"t{i}",
                "paragraphs": [
                    {"context": "Paris is in France. " * 20, "qas": [{"id": f"q{i}", "question": "?"}]}
                ],
            }
            for i in range(300)
        ],
    }
).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """State of the test server: files by path, one-shot or sticky behaviours, and a log of requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.once: dict[str, list[str]] = {}  # path -> behaviours used by the next requests, in order
        self.sticky: dict[str, str] = {}  # path -> behaviour for every request
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.url = ""

    def mode(self, path: str) -> str:
        queue = self.once.get(path)
        return queue.pop(0) if queue else self.sticky.get(path, "ok")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        state: Server = self.server.state  # type: ignore[attr-defined]
        state.requests.append((self.path, self.headers.get("Range")))
        mode = state.mode(self.path)
        body = state.files.get(self.path)
        if body is None or mode == "404":
            self.send_error(404, "Not Found")
            return
        if mode == "sleep":  # never answer within the client's timeout
            time.sleep(1.0)
            self.close_connection = True
            return
        if mode == "wrong":
            body = body[:-10] + b"X" * 10
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and mode != "norange":
            start, status = int(rng.removeprefix("bytes=").split("-")[0]), 206
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        payload = body[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if mode == "drop":  # send half of the promised body, then hang up
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the server's access log out of the test output."""


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    state = Server()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("XLQA_MIRROR", raising=False)
    monkeypatch.delenv("XLQA_CACHE", raising=False)


def make_spec(url: str, data: bytes | None = PAYLOAD, name: str = "fake.dev", **kw) -> BenchmarkSpec:
    fields = dict(
        name=name,
        language="en",
        rules="squad1",
        split="dev",
        url=url,
        sha256=sha(data) if data is not None else None,
        size=len(data) if data is not None else None,
        mirror_path=f"fake/{name}.json",
    )
    fields.update(kw)
    return BenchmarkSpec(**fields)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_fetch_downloads_verifies_and_reuses_cache(server, tmp_path, capsys):
    server.files["/f.json"] = PAYLOAD
    spec = make_spec(server.url + "/f.json")
    path = fetch(spec, cache_dir=tmp_path, progress=True)
    assert path == tmp_path / "data" / "fake" / "fake.dev.json" == cached_path(spec, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert files_under(tmp_path) == [path]  # no .part left
    assert server.requests == [("/f.json", None)]
    assert "fake.dev" in capsys.readouterr().err  # the tqdm bar names the benchmark
    assert fetch(spec, cache_dir=tmp_path) == path and is_cached(spec, tmp_path)
    assert len(server.requests) == 1  # served from the cache


def test_default_cache_dir_from_env(server, tmp_path, monkeypatch):
    server.files["/f.json"] = PAYLOAD
    monkeypatch.setenv("XLQA_CACHE", str(tmp_path / "c"))
    path = fetch(make_spec(server.url + "/f.json"), progress=False)
    assert path == tmp_path / "c" / "data" / "fake" / "fake.dev.json"


def test_checksum_mismatch_deletes_download(server, tmp_path):
    server.files["/f.json"] = PAYLOAD
    server.sticky["/f.json"] = "wrong"
    spec = make_spec(server.url + "/f.json")
    with pytest.raises(ChecksumError) as err:
        fetch(spec, cache_dir=tmp_path, progress=False)
    msg = str(err.value)
    assert spec.url in msg and spec.sha256 in msg
    assert sha(PAYLOAD[:-10] + b"X" * 10) in msg
    assert "fake.dev" in msg
    assert files_under(tmp_path) == []


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.files["/f.json"] = PAYLOAD
    server.once["/f.json"] = ["drop"]
    spec = make_spec(server.url + "/f.json")
    with pytest.raises(DownloadError, match="connection closed after") as err:
        fetch(spec, cache_dir=tmp_path, progress=False, retries=0)
    part = cached_path(spec, tmp_path).with_name("fake.dev.json.part")
    half = len(PAYLOAD) // 2
    assert files_under(tmp_path) == [part] and part.stat().st_size == half
    assert str(part) in str(err.value) and "resumes" in str(err.value)

    path = fetch(spec, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/f.json", None), ("/f.json", f"bytes={half}-")]
    assert files_under(tmp_path) == [path]


def test_retry_resumes_within_one_call(server, tmp_path):
    server.files["/f.json"] = PAYLOAD
    server.once["/f.json"] = ["drop"]
    path = fetch(make_spec(server.url + "/f.json"), cache_dir=tmp_path, progress=False, retries=1)
    assert path.read_bytes() == PAYLOAD
    assert [r[1] for r in server.requests] == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_server_without_range_support_restarts(server, tmp_path):
    server.files["/f.json"] = PAYLOAD
    server.once["/f.json"] = ["drop"]
    server.sticky["/f.json"] = "norange"
    spec = make_spec(server.url + "/f.json")
    with pytest.raises(DownloadError):
        fetch(spec, cache_dir=tmp_path, progress=False, retries=0)
    path = fetch(spec, cache_dir=tmp_path, progress=False, retries=0)
    assert path.read_bytes() == PAYLOAD  # the 200 answer replaced the partial file instead of being appended
    assert server.requests[1][1] is not None


def test_resumed_download_that_is_corrupt_leaves_nothing(server, tmp_path):
    server.files["/f.json"] = PAYLOAD
    spec = make_spec(server.url + "/f.json")
    part = cached_path(spec, tmp_path).with_name("fake.dev.json.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 100)  # a stale partial file with the wrong bytes
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        fetch(spec, cache_dir=tmp_path, progress=False)
    assert server.requests == [("/f.json", "bytes=100-")]
    assert files_under(tmp_path) == []


def test_oversized_partial_file_is_refused_by_server_and_restarted(server, tmp_path):
    data = PAYLOAD[:1000]
    server.files["/f.json"] = data
    spec = make_spec(server.url + "/f.json", data=data, size=None)  # size unknown: the server answers 416
    part = cached_path(spec, tmp_path).with_name("fake.dev.json.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 2000)
    assert fetch(spec, cache_dir=tmp_path, progress=False, retries=0).read_bytes() == data
    assert [r[1] for r in server.requests] == ["bytes=2000-", None]


def test_404_is_a_clear_error_and_leaves_nothing(server, tmp_path):
    spec = make_spec(server.url + "/missing.json")
    stale = cached_path(spec, tmp_path).with_name("fake.dev.json.part")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    with pytest.raises(DownloadError) as err:
        fetch(spec, cache_dir=tmp_path, progress=False)
    msg = str(err.value)
    assert "'fake.dev'" in msg and spec.url in msg and "HTTP 404" in msg
    assert "--mirror" in msg and "XLQA_MIRROR" in msg
    assert files_under(tmp_path) == []
    assert len(server.requests) == 1  # a 404 is not retried


def test_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = make_spec(f"http://127.0.0.1:{port}/f.json")
    with pytest.raises(DownloadError, match="connection failed") as err:
        fetch(spec, cache_dir=tmp_path, progress=False, retries=0)
    assert spec.url in str(err.value) and "XLQA_MIRROR" in str(err.value)
    assert files_under(tmp_path) == []


def test_timeout(server, tmp_path):
    server.files["/f.json"] = PAYLOAD
    server.sticky["/f.json"] = "sleep"
    spec = make_spec(server.url + "/f.json")
    with pytest.raises(DownloadError, match="timed out") as err:
        fetch(spec, cache_dir=tmp_path, progress=False, retries=0, timeout=0.3)
    assert spec.url in str(err.value) and "--mirror" in str(err.value)
    assert files_under(tmp_path) == []


def test_mirror_folder_read_in_place_with_mirror_checksum(tmp_path, monkeypatch):
    rebuilt = PAYLOAD.replace(b"Paris", b"Lyon!")
    mirror = tmp_path / "mirror"
    (mirror / "fake").mkdir(parents=True)
    (mirror / "fake" / "fake.dev.json").write_bytes(rebuilt)
    spec = make_spec("https://example.invalid/f.json", mirror_sha256=sha(rebuilt))
    cache = tmp_path / "cache"
    assert fetch(spec, cache_dir=cache, mirror=mirror) == mirror / "fake" / "fake.dev.json"
    monkeypatch.setenv("XLQA_MIRROR", str(mirror))
    assert fetch(spec, cache_dir=cache) == mirror / "fake" / "fake.dev.json"
    assert files_under(cache) == []  # read in place, never copied

    (mirror / "fake" / "fake.dev.json").write_bytes(PAYLOAD)  # the official bytes are accepted too
    assert fetch(spec, cache_dir=cache).read_bytes() == PAYLOAD

    (mirror / "fake" / "fake.dev.json").write_bytes(PAYLOAD + b" ")
    with pytest.raises(ChecksumError, match="neither the official file") as err:
        fetch(spec, cache_dir=cache)
    assert str(mirror / "fake" / "fake.dev.json") in str(err.value)
    assert (mirror / "fake" / "fake.dev.json").exists()  # a mirror is never modified

    # every fetch re-hashes: a same-size edit that keeps the modification time is caught too
    path = mirror / "fake" / "fake.dev.json"
    path.write_bytes(PAYLOAD)
    st = path.stat()
    assert fetch(spec, cache_dir=cache) == path
    path.write_bytes(PAYLOAD.replace(b"Paris", b"Pariz"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ChecksumError, match="neither the official file"):
        fetch(spec, cache_dir=cache)

    with pytest.raises(DownloadError, match="not in mirror folder"):
        fetch(make_spec("https://example.invalid/g.json", name="other"), mirror=mirror)


def test_mirror_file_without_known_checksum_is_parsed(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "fake").mkdir(parents=True)
    spec = make_spec("https://example.invalid/a.zip", member="A/f.json")  # archive member: no mirror checksum
    assert spec.mirror_checksums == ()
    (mirror / "fake" / "fake.dev.json").write_bytes(PAYLOAD)
    assert fetch(spec, mirror=f"file://{mirror}") == mirror / "fake" / "fake.dev.json"
    (mirror / "fake" / "fake.dev.json").write_bytes(PAYLOAD[:500])
    with pytest.raises(DownloadError, match="not valid JSON"):
        fetch(spec, mirror=mirror)


def test_shared_data_mirror_checksum(shared_data, tmp_path):
    spec = get_spec("xquad.de")
    assert fetch(spec, cache_dir=tmp_path, mirror=shared_data) == shared_data / "xquad" / "xquad.de.json"
    assert files_under(tmp_path) == []
    altered = bytearray((shared_data / spec.mirror_path).read_bytes())
    altered[100] ^= 1
    (tmp_path / "m" / "xquad").mkdir(parents=True)
    (tmp_path / "m" / spec.mirror_path).write_bytes(bytes(altered))
    with pytest.raises(ChecksumError, match=spec.sha256):
        fetch(spec, mirror=tmp_path / "m")


def test_mirror_url(server, tmp_path):
    rebuilt = PAYLOAD.replace(b"Paris", b"Rome!")
    server.files["/mirror/fake/fake.dev.json"] = rebuilt
    spec = make_spec("https://example.invalid/f.json", mirror_sha256=sha(rebuilt))
    path = fetch(spec, cache_dir=tmp_path, mirror=server.url + "/mirror/", progress=False)
    assert path == cached_path(spec, tmp_path) and path.read_bytes() == rebuilt
    assert server.requests == [("/mirror/fake/fake.dev.json", None)]

    server.files["/mirror/fake/other.json"] = b"garbage"
    other = make_spec("https://example.invalid/g.json", name="other", mirror_sha256=sha(rebuilt))
    with pytest.raises(ChecksumError, match=re.escape("/mirror/fake/other.json")):
        fetch(other, cache_dir=tmp_path, mirror=server.url + "/mirror", progress=False)
    assert not cached_path(other, tmp_path).with_name("other.json.part").exists()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_member_extraction_shares_one_archive(server, tmp_path):
    second = PAYLOAD.replace(b"France", b"Europe")
    archive = _zip({"PKG/dev/a.json": PAYLOAD, "PKG/dev/b.json": second, "PKG/README": b"x"})
    server.files["/PKG.zip"] = archive
    a = make_spec(server.url + "/PKG.zip", data=archive, name="a", member="PKG/dev/a.json")
    b = make_spec(server.url + "/PKG.zip", data=archive, name="b", member="PKG/dev/b.json")
    assert fetch(a, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    assert fetch(b, cache_dir=tmp_path, progress=False).read_bytes() == second
    assert len(server.requests) == 1  # the verified archive is kept and reused
    assert (tmp_path / "data" / "_archives" / "PKG.zip").read_bytes() == archive

    missing = make_spec(server.url + "/PKG.zip", data=archive, name="c", member="PKG/dev/c.json")
    with pytest.raises(DownloadError, match=r"member 'PKG/dev/c.json' not found .*PKG/dev/a.json"):
        fetch(missing, cache_dir=tmp_path, progress=False)
    assert sorted(p.name for p in files_under(tmp_path)) == ["PKG.zip", "a.json", "b.json"]


def test_zip_with_wrong_checksum_is_not_extracted(server, tmp_path):
    archive = _zip({"PKG/a.json": PAYLOAD})
    server.files["/PKG.zip"] = archive
    spec = make_spec(server.url + "/PKG.zip", data=archive, member="PKG/a.json", sha256=sha(b"other"))
    with pytest.raises(ChecksumError, match=r"PKG\.zip"):
        fetch(spec, cache_dir=tmp_path, progress=False)
    assert files_under(tmp_path) == []


def test_targz_member_extraction(server, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("pkg-dev/pkg-dev-arabic.json")
        info.size = len(PAYLOAD)
        tf.addfile(info, io.BytesIO(PAYLOAD))
    archive = buf.getvalue()
    server.files["/pkg-dev.tgz"] = archive
    spec = make_spec(server.url + "/pkg-dev.tgz", data=archive, member="pkg-dev/pkg-dev-arabic.json")
    assert fetch(spec, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD


def test_get_expands_registered_names(server, tmp_path):
    server.files["/a.json"] = PAYLOAD
    server.files["/b.json"] = PAYLOAD[::-1]
    specs = [
        make_spec(server.url + "/a.json", name="tmptest.a"),
        make_spec(server.url + "/b.json", data=PAYLOAD[::-1], name="tmptest.b"),
    ]
    for spec in specs:
        datasets.register(spec)
    try:
        with pytest.raises(ValueError, match=r"tmptest\.c"):
            get("tmptest.a,tmptest.c", cache_dir=tmp_path)
        assert server.requests == []  # unknown names fail before any download
        paths = get(["tmptest.b", "tmptest.a"], cache_dir=tmp_path, mirror="")
        assert [p.name for p in paths] == ["tmptest.b.json", "tmptest.a.json"]
        assert paths[0].read_bytes() == PAYLOAD[::-1]
    finally:
        for spec in specs:
            datasets.unregister(spec.name)


def test_copy_of_shared_mirror_layout_works_as_url_mirror(shared_data, server, tmp_path):
    """A real reference-mirror file served over HTTP verifies against the registry's checksum."""
    spec = get_spec("xquad.en")
    server.files["/m/" + spec.mirror_path] = (shared_data / spec.mirror_path).read_bytes()
    path = fetch(spec, cache_dir=tmp_path, mirror=server.url + "/m", progress=False)
    assert path.read_bytes() == (shared_data / spec.mirror_path).read_bytes()

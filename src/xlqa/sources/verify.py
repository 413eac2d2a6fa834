"""Is this the expected file? sha256 and SQuAD-format checks for downloads and mirror folders.

A download is accepted when its sha256 is one of the checksums the registry knows for it (the official file's,
or the reference mirror's copy); where none is known, by its size and a JSON parse, with a warning. A file in
a mirror folder is checked the same way and then used in place. Every file is hashed each time it is fetched:
hashing all of the reference mirror (79 MB) takes about 70 ms, all of XQuAD 12 ms, so no memo is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from xlqa.errors import ChecksumError, DownloadError
from xlqa.sources.registry import BenchmarkSpec

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read or written at a time


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_squad_json(spec: BenchmarkSpec, path: Path, where: str) -> None:
    """Raise DownloadError (naming ``where``) unless ``path`` is JSON with a top-level ``data`` list."""
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DownloadError(f"benchmark {spec.name!r}: {where} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise DownloadError(
            f"benchmark {spec.name!r}: {where} has no top-level 'data' list (not SQuAD format)"
        )


def note_variant(spec: BenchmarkSpec, actual: str | None, where: str) -> None:
    """Log when a verified single-file benchmark is the reference-mirror build rather than the official file."""
    if not spec.is_archive and spec.sha256 and actual and actual != spec.sha256:
        extra = f" ({spec.note})" if spec.note else ""
        logger.info("%s: %s is the reference-mirror build, not the official file%s", spec.name, where, extra)


def verify_download(
    spec: BenchmarkSpec, url: str, part: Path, accepted: tuple[str, ...], size: int | None, *, is_json: bool
) -> str | None:
    """Check a finished download; delete it and raise ChecksumError when it is not the expected file.

    Returns the sha256 of the file when it was checked against ``accepted``, else None.
    """
    actual_size = part.stat().st_size
    if accepted:
        actual = sha256_file(part)
        if actual not in accepted:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"benchmark {spec.name!r}: sha256 mismatch for {url}: expected {' or '.join(accepted)}, "
                f"got {actual} ({actual_size} bytes). The download was deleted. The file changed upstream or "
                f"was corrupted in transit; retry, or use --mirror / XLQA_MIRROR."
            )
        return actual
    if size is not None and actual_size != size:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"benchmark {spec.name!r}: size mismatch for {url}: expected {size} bytes, got {actual_size}. "
            "The download was deleted."
        )
    if is_json:
        try:
            check_squad_json(spec, part, url)
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
    logger.warning("%s: no sha256 known for %s; checked by size/JSON parse only", spec.name, url)
    return None


def from_mirror_folder(spec: BenchmarkSpec, folder: Path) -> Path:
    """The verified file of ``spec`` in a mirror folder laid out like the reference mirror, used in place."""
    path = folder / spec.mirror_path
    if not path.is_file():
        raise DownloadError(
            f"benchmark {spec.name!r}: not in mirror folder {folder} (expected {path}). Put the file there, "
            f"or fetch without --mirror / XLQA_MIRROR to download it from {spec.url}"
        )
    accepted = spec.mirror_checksums
    if not accepted:
        check_squad_json(spec, path, str(path))
        logger.warning(
            "%s: no known sha256 for the mirror copy %s; checked by JSON parse only", spec.name, path
        )
        return path
    actual = sha256_file(path)
    if actual not in accepted:
        raise ChecksumError(
            f"benchmark {spec.name!r}: mirror file {path} has sha256 {actual}, expected "
            f"{' or '.join(accepted)}. It is neither the official file ({spec.url}) nor the reference-mirror "
            "copy; replace it, or fetch without --mirror / XLQA_MIRROR."
        )
    note_variant(spec, actual, str(path))
    return path

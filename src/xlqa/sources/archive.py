"""One member out of a downloaded benchmark archive (MLQA's zip, TyDi QA's tar.gz), written atomically."""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from xlqa.errors import DownloadError
from xlqa.sources.registry import BenchmarkSpec
from xlqa.sources.verify import CHUNK

logger = logging.getLogger(__name__)


def extract_member(spec: BenchmarkSpec, archive: Path, target: Path) -> None:
    """Extract ``spec.member`` from a verified zip or tar archive to ``target`` through a temporary file."""
    assert spec.member is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                if spec.member not in names:
                    raise _missing_member(spec, archive, names)
                with zf.open(spec.member) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                try:
                    src = tf.extractfile(tf.getmember(spec.member))
                except KeyError:
                    src = None
                if src is None:
                    raise _missing_member(spec, archive, tf.getnames())
                with src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        else:
            raise DownloadError(
                f"benchmark {spec.name!r}: {archive} (from {spec.url}) is neither a zip nor a tar archive"
            )
        os.replace(tmp, target)
        logger.info("%s: extracted %s from %s", spec.name, spec.member, archive.name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"benchmark {spec.name!r}: cannot read archive {archive}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _missing_member(spec: BenchmarkSpec, archive: Path, names: list[str]) -> DownloadError:
    close = difflib.get_close_matches(spec.member or "", names, n=3)
    hint = f"; close: {', '.join(close)}" if close else ""
    return DownloadError(
        f"benchmark {spec.name!r}: member {spec.member!r} not found in {archive} ({len(names)} members{hint})"
    )

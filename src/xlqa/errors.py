"""The errors a user can fix: bad input, a missing file, an unreachable source, a bad flag.

Every such error derives from :class:`XlqaError`; the command line prints it in one line and the HTTP API
answers it with a 4xx. Its ``exit_code`` says which kind it is: 2 for what the command was given (a flag, a
file, a model, an output path: fix the command and run it again), 1 for work that was tried and failed
(a download, a training run that diverged). Anything else that escapes a job is a bug: the command line shows
its traceback. Messages name what to fix: the file, the question id, the field, the flag or the run.
"""

from __future__ import annotations


class XlqaError(Exception):
    """Something the user can fix; the message says what and where."""

    exit_code = 2  # a usage error: the command as given cannot run


class ConfigError(XlqaError, ValueError):
    """A config value or flag out of range, unknown, or missing."""


class DataError(XlqaError, ValueError):
    """A SQuAD-format file that cannot be read; ``str()`` names the file, question id and field."""

    def __init__(
        self, message: str, *, path: str | None = None, qid: str | None = None, field: str | None = None
    ) -> None:
        self.message, self.path, self.qid, self.field = message, path, qid, field
        parts = [str(path)] if path is not None else []
        if qid is not None:
            parts.append(f"question id {qid!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        super().__init__(": ".join([*parts, message]))


class DownloadError(XlqaError):
    """A named benchmark could not be fetched (network, mirror, or HTTP error)."""

    exit_code = 1  # the command was right; the fetch failed


class ChecksumError(DownloadError):
    """A fetched or mirrored file whose sha256 is not the registry's."""


class ModelLoadError(XlqaError):
    """A model or tokenizer could not be loaded (unknown hub id, no network, broken folder)."""


class OfflineModelError(ModelLoadError):
    """An offline model source is not installed or its file is broken."""


class RunStoreError(XlqaError, ValueError):
    """A run-store operation that cannot be done (bad name, duplicate, unreadable index)."""


class RunNotFoundError(RunStoreError, LookupError):
    """No run (or more than one) matches what was asked for; ``candidates`` lists close matches."""

    def __init__(self, message: str, candidates: list[str] | None = None):
        super().__init__(message)
        self.candidates = candidates or []


class TrainingDiverged(XlqaError):
    """Training stopped after repeated non-finite steps; ``diagnosis`` says where it overflowed.

    A resumable checkpoint of the last good state is written before this is raised.
    """

    exit_code = 1  # the run was tried and failed

    def __init__(self, message: str, diagnosis: dict | None = None):
        super().__init__(message)
        self.diagnosis = diagnosis or {}


class CheckpointError(XlqaError):
    """A checkpoint or model export could not be written (disk full, no permission); the previous one is kept."""

    exit_code = 1  # the run was tried and failed

"""Settings from the environment, read in one place: ``XLQA_CACHE``, ``XLQA_RUNS``, ``XLQA_MIRROR``, ``XLQA_API_KEY``,
``XLQA_DEDUPE_IDS``, ``XLQA_MALLOC``.

================ ============================================================= =====================
variable         what                                                          default
================ ============================================================= =====================
``XLQA_CACHE``   features, converted offline models and downloads               ``~/.cache/xlqa``
``XLQA_RUNS``    the run store folder (the run folders)                         ``./runs``
``XLQA_RUNS_DB`` the run index: a SQLite file or a ``postgresql://`` URL        ``$XLQA_RUNS/index.sqlite``
``XLQA_MIRROR``  a data mirror folder or URL laid out like the official files   none (download)
``XLQA_API_KEY`` the key state-changing API requests must send (Bearer)         none: loopback only
================ ============================================================= =====================

``XLQA_DEDUPE_IDS=1`` loads data files whose question ids repeat, renaming the later ones ``id#2``, ``id#3``
with a warning naming each (default: such a file is refused, naming every repeated id).

``XLQA_MALLOC`` picks the malloc of the processes that train and evaluate: ``auto`` (default: tcmalloc where
installed, else jemalloc, else glibc's), ``tcmalloc``, ``jemalloc`` or ``system`` (see :mod:`xlqa.allocator`).

An empty variable counts as unset; ``~`` is expanded. :func:`get_settings` reads the environment at each call,
so a test or a child process that changes it is seen at once.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """xlqa's environment variables (prefix ``XLQA_``)."""

    model_config = SettingsConfigDict(env_prefix="XLQA_", env_ignore_empty=True, extra="ignore")

    cache: Path = Path("~/.cache/xlqa")
    runs: Path = Path("runs")
    runs_db: str | None = None
    mirror: str | None = None
    api_key: str | None = None
    dedupe_ids: bool = False
    malloc: str = "auto"

    @field_validator("cache", "runs")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(value).expanduser()

    @property
    def features_dir(self) -> Path:
        """Where token windows are cached."""
        return self.cache / "features"

    @property
    def data_dir(self) -> Path:
        """Where downloaded benchmark files are kept."""
        return self.cache / "data"

    @property
    def models_dir(self) -> Path:
        """Where offline model sources are converted to Hugging Face folders."""
        return self.cache / "models"


def get_settings() -> Settings:
    """The current settings (the environment is read now)."""
    return Settings()

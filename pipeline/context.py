"""What every stage gets: the validated config and the output root, with path helpers."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import storage
from schemas.config import BuildConfig


class StageInputMissing(RuntimeError):
    """A stage was asked to run before the stage whose output it reads."""


@dataclass
class StageContext:
    cfg: BuildConfig

    @property
    def out(self) -> str:
        return self.cfg.out

    def uri(self, relative: str) -> str:
        return storage.join(self.out, relative)

    def require(self, relative: str, producer: str) -> str:
        uri = self.uri(relative)
        if not storage.exists(uri):
            raise StageInputMissing(f"{relative} is missing under {self.out}: run the `{producer}` stage first")
        return uri


def configure_worker(cfg: BuildConfig) -> None:
    """Per-task setup inside a Ray worker."""
    storage.configure(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)

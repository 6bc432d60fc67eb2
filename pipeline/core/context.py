"""What every stage gets: the validated config and the output root, with path helpers."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core import log, tempdirs
from pipeline.io import storage
from schemas.config import BuildConfig
from schemas.errors import LongVidError


class StageInputMissing(LongVidError, RuntimeError):
    """A stage was asked to run before the stage whose output it reads."""


@dataclass
class StageContext:
    cfg: BuildConfig
    # the build summary a stage computed when it rewrote the manifest tables (`probe`, `scenes`), for the runner
    manifest_summary: dict | None = None

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
    """Per-task setup inside a Ray worker (and in the driver): S3 endpoint, timeouts and retries; temporary folder;
    console logging at the driver's level."""
    log.configure_worker()
    st = cfg.storage
    storage.configure(st.s3_endpoint_url, st.s3_region, connect_timeout_s=st.s3_connect_timeout_s,
                      read_timeout_s=st.s3_read_timeout_s, max_attempts=st.s3_max_attempts,
                      retry_mode=st.s3_retry_mode)
    tempdirs.configure(cfg.out, st.tmp_dir)

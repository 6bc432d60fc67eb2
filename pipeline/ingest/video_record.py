"""Per-input work of the probe stage: fetch + hash, probe in an isolated process, and turn the outcome into a row."""

from __future__ import annotations

import contextlib
from typing import Iterator

from pipeline.core.errors import Rejection
from pipeline.ingest.isolated import IsolatedFailure, IsolatedWorker
from pipeline.ingest.probe import ProbeLimits
from pipeline.io import fetch, storage
from schemas import reasons
from schemas import sample as sample_schema
from schemas.config import BuildConfig

PROBE_FIELD_NAMES = (
    "container", "codec", "width", "height", "rotation", "fps", "num_frames", "duration_s", "has_audio", "bitrate",
    "reader", "reader_num_frames", "reader_fps",
)


def video_id_of(sha256: str) -> str:
    return sha256[:20]


def field_extension(source_uri: str, container: str | None) -> str:
    ext = storage.extension(source_uri)
    if ext in sample_schema.VIDEO_EXTENSIONS:
        return ext
    return sample_schema.FORMAT_EXTENSIONS.get(container or "", "mp4")


def limits_of(cfg: BuildConfig) -> ProbeLimits:
    p = cfg.probe
    return ProbeLimits(p.min_duration_s, p.max_duration_s, p.max_pixels, p.check_integrity)


def http_policy_of(cfg: BuildConfig) -> fetch.HttpPolicy:
    c = cfg.crawl
    return fetch.HttpPolicy(c.http_timeout_s, c.http_retries, c.http_backoff_s, c.http_backoff_max_s, c.http_jitter,
                            c.download_deadline_s, c.download_min_bytes_per_s, c.download_throughput_window_s)


def probe_input(item: dict, cfg: BuildConfig, worker: IsolatedWorker) -> dict:
    """One PROBE_PART row for one crawl row; never raises for a bad input."""
    row = {k: item[k] for k in ("source_uri", "source", "source_metadata")}
    row.update(ok=False, reason=None, message=None)
    uri = item["source_uri"]
    try:
        with fetch.fetch(uri, cfg.probe.max_bytes, http_policy_of(cfg), item.get("size_hint")) as got:
            row.update(sha256=got.sha256, video_id=video_id_of(got.sha256), bytes=got.bytes)
            try:
                fields = worker.call("probe", cfg.probe.timeout_s, path=got.path, **limits_of(cfg).as_kwargs())
            except IsolatedFailure as e:
                message = e.message.replace(got.path, uri) if got.path != uri else e.message
                row.update(reason=e.reason, message=message)
                return row
    except fetch.FetchError as e:
        row.update(reason=e.reason, message=e.message)
        return row
    row.update({k: fields[k] for k in PROBE_FIELD_NAMES})
    row["extension"] = field_extension(uri, fields["container"])
    row["ok"] = True
    return row


class SourceChanged(Rejection):
    def __init__(self, message: str):
        super().__init__(reasons.SOURCE_CHANGED, message)


@contextlib.contextmanager
def local_copy_checked(uri: str, sha256: str, cfg: BuildConfig) -> Iterator[str]:
    """A local path whose bytes hash to `sha256` (the source must not have changed since it was probed)."""
    with fetch.fetch(uri, cfg.probe.max_bytes, http_policy_of(cfg)) as got:
        if got.sha256 != sha256:
            raise SourceChanged(f"{uri} changed since it was probed (sha256 {got.sha256[:12]}… != "
                                f"{sha256[:12]}…): rerun from the probe stage")
        yield got.path

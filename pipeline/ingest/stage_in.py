"""A split video's source, fetched and verified once for all of its segment tasks.

The task that stages a video in (`staged`) fetches an S3 or http(s) source once, checks its sha256 against the
probe's, and keeps the copy in its own temporary folder (the worker's `worker-<pid>` subfolder of the job folder)
for as long as it runs; a local source is hashed once and read in place. That task outlives the video's segment
tasks (it waits for them), so the copy needs no cleanup of its own: it goes when the `with` block ends, and a copy
whose task was killed goes with the dead worker's folder at the next sweep (pipeline.core.tempdirs).

A segment task reads the staged copy when it runs on the node that holds it (`segment_source`), and otherwise
fetches and verifies the source itself, so placement never changes a result.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.ingest.video_record import local_copy_checked
from schemas.config import BuildConfig


@dataclass(frozen=True)
class Staged:
    node_id: str  # the Ray node holding `path`
    path: str  # the verified copy (or the local source itself)


def current_node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


@contextlib.contextmanager
def staged(video: dict, cfg: BuildConfig) -> Iterator[Staged]:
    """The video's source fetched and verified once, on this node; raises the source's Rejection (FetchError,
    SourceChanged) as `local_copy_checked` does."""
    with local_copy_checked(video["source_uri"], video["sha256"], cfg) as path:
        yield Staged(current_node_id(), path)


@contextlib.contextmanager
def segment_source(video: dict, copy: Staged | None, cfg: BuildConfig) -> Iterator[str]:
    """A local path of the video for one segment: the staged copy when this task runs on its node and it is there,
    else a copy fetched and verified here (a segment placed elsewhere, or a node lost)."""
    if copy is not None and copy.node_id == current_node_id() and os.path.exists(copy.path):
        yield copy.path
        return
    with local_copy_checked(video["source_uri"], video["sha256"], cfg) as path:
        yield path

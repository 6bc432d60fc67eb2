"""Per-shard outputs of shards the current plan no longer has.

Shards are planned from the accepted videos, so removing inputs (or changing `shard.target_bytes` /
`max_samples`) can leave fewer shards than before. Each stage that writes one file per shard removes the files of
unplanned shards from the folders it owns, after committing its own outputs, so that readers which list a folder
(`longvid audit` views, `ls shards/`, a glob in a trainer) see exactly the planned build.
"""

from __future__ import annotations

import logging

from pipeline.core.context import StageContext
from pipeline.io import storage
from schemas import layout

log = logging.getLogger(__name__)


def remove_unplanned(ctx: StageContext, directory: str, suffix: str, planned_shards: list[str]) -> list[str]:
    """Delete `<directory>/<shard stem><suffix>` files (direct children named like a shard) whose shard is not in
    `planned_shards` (shard file names); returns the removed URIs."""
    keep = {layout.shard_stem(name) for name in planned_shards}
    stale = []
    for rel, uri, _ in storage.list_committed(ctx.uri(directory)):
        if "/" in rel or not rel.endswith(suffix):
            continue
        stem = rel[: -len(suffix)]
        if stem.startswith(layout.SHARD_PREFIX + "-") and stem not in keep:
            stale.append(uri)
    storage.remove_files(stale)
    return stale


def report(stage: str, removed: list[str]) -> None:
    if removed:
        log.info(f"[{stage}] removed {len(removed)} files of shards no longer planned "
                 f"(e.g. {removed[0].rsplit('/', 1)[-1]})")

"""What is under `mixtures/`, and removal of what no configured stage references any more (the folder belongs to the
`mix` stage, so after a config change it still describes exactly the configured curriculum)."""

from __future__ import annotations

import contextlib
import os

from pipeline import storage
from pipeline.context import StageContext
from schemas import layout


def listing(ctx: StageContext) -> set[str]:
    """Paths (relative to the output root) of every file under mixtures/, temporaries of killed runs excluded."""
    root = ctx.uri(layout.MIXTURES_DIR)
    prefix = len(ctx.uri("")) if storage.is_s3(root) else len(os.path.join(ctx.out, ""))
    found = set()
    for uri, _ in storage.list_files(root):
        rel = uri[prefix:].lstrip("/")
        if ".tmp-" not in rel.rsplit("/", 1)[-1]:
            found.add(rel.replace(os.sep, "/"))
    return found


def remove_stale(ctx: StageContext, keep: set[str]) -> int:
    """Delete every file under mixtures/ not in `keep`; returns how many went."""
    stale = sorted(listing(ctx) - keep)
    if not stale:
        return 0
    if storage.is_s3(ctx.out):
        bucket, _ = storage.split_s3(ctx.out)
        keys = [storage.split_s3(ctx.uri(rel))[1] for rel in stale]
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i:i + 1000]]
            storage.s3_client().delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        return len(stale)
    for rel in stale:
        path = ctx.uri(rel)
        os.unlink(path)
        folder = os.path.dirname(path)
        with contextlib.suppress(OSError):  # not empty: something there is still referenced
            while folder.startswith(ctx.uri(layout.MIXTURES_DIR)) and not os.listdir(folder):
                os.rmdir(folder)
                folder = os.path.dirname(folder)
    return len(stale)

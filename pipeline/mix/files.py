"""What is under `mixtures/`, and removal of what no configured stage references any more (the folder belongs to the
`mix` stage, so after a config change it still describes exactly the configured curriculum).

The payloads (a video file per video, frame files per `img` sample) are listed by the partition tasks that chose
them, one sorted list per partition (`layout.mix_payloads_part_path`), so the driver never holds a path per video:
one Ray task reads the lists and the listing of `mixtures/` and removes the files in neither the lists nor the
stages' own files."""

from __future__ import annotations

from itertools import islice

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import tempdirs
from pipeline.core.context import StageContext, configure_worker
from pipeline.io import storage
from schemas import layout

LISTING_BATCH = 65536  # listed paths checked (and stale ones removed) at a time


def _payload_paths(ctx: StageContext, payload_lists: list[str]) -> pa.Array:
    """Every path of the partitions' payload lists (relative paths of the lists), as one Arrow string array."""
    chunks = [pa.array(storage.read_bytes(ctx.uri(rel)).decode("utf-8").split("\n")[:-1], pa.string())
              for rel in payload_lists]
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())


def remove_stale(ctx: StageContext, stage_files: list[str], payload_lists: list[str],
                 batch: int = LISTING_BATCH) -> int:
    """Delete every file under mixtures/ that is neither one of the stages' files (`stage_files`) nor in a
    partition's payload list, checking `batch` listed files at a time; returns how many went."""
    configure_worker(ctx.cfg)
    keep = pa.concat_arrays([pa.array(sorted(stage_files), pa.string()), _payload_paths(ctx, payload_lists)])
    listed = (f"{layout.MIXTURES_DIR}/{rel}" for rel, _, _ in storage.list_committed(ctx.uri(layout.MIXTURES_DIR)))
    removed = 0
    while listed_batch := list(islice(listed, batch)):
        paths = pa.array(listed_batch, pa.string())
        stale = paths.filter(pc.invert(pc.is_in(paths, value_set=keep))).to_pylist()
        storage.remove_files([ctx.uri(rel) for rel in stale], prune_below=ctx.uri(layout.MIXTURES_DIR))
        removed += len(stale)
    return removed


def remove_stale_in_task(ctx: StageContext, stage_files: list[str], payload_lists: list[str]) -> int:
    """remove_stale in a Ray task: the listing and the payload paths (one per video or frame) stay out of the
    driver."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=2)(tempdirs.released(remove_stale))
    return ray.get(remote.remote(ctx, stage_files, payload_lists, LISTING_BATCH))

"""probe: fetch + sha256 + PyAV probe + reader check for every input, in resumable parts; then dedup."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from pipeline.core import ray_runtime
from pipeline.core.context import StageContext, configure_worker
from pipeline.ingest import manifest
from pipeline.ingest.isolated import IsolatedWorker, process_worker
from pipeline.ingest.video_record import probe_input
from pipeline.io import storage
from schemas import layout, tables

log = logging.getLogger(__name__)

NAME = "probe"
DESCRIPTION = "hash, probe and check limits of every input; reject what fails; dedup by content"


def probe_part(unit: tuple[str, list[dict]], ctx: StageContext) -> dict:
    """One Ray task: probe the inputs of one part and commit its Parquet file."""
    uri, items = unit
    configure_worker(ctx.cfg)
    with ThreadPoolExecutor(ctx.cfg.crawl.download_concurrency) as pool:
        # downloads run side by side (one slow source holds back no other); the media checks take turns in this
        # process's long-lived child
        shared = _Serialized(process_worker())
        rows = list(pool.map(lambda item: probe_input(item, ctx.cfg, shared), items))
    storage.write_parquet(uri, tables.to_table(rows, tables.PROBE_PART))
    result = {"ok": sum(r["ok"] for r in rows), "rejected": sum(not r["ok"] for r in rows)}
    log.debug(f"[probe] {uri.rsplit('/', 1)[-1]}: {result['ok']} accepted, {result['rejected']} rejected")
    return result


class _Serialized:
    """One IsolatedWorker shared by the download threads: one call at a time."""

    def __init__(self, worker: IsolatedWorker):
        self._worker, self._lock = worker, threading.Lock()

    def call(self, *args, **kwargs):
        with self._lock:
            return self._worker.call(*args, **kwargs)


def run(ctx: StageContext) -> dict:
    crawl_rows = manifest.read_crawl(ctx)
    by_uri = {r["source_uri"]: r for r in crawl_rows}
    storage.remove_stale_temporaries(ctx.uri(layout.PROBE_PARTS_DIR))
    units = []
    skipped = 0
    committed = manifest.committed_parts(ctx, layout.PROBE_PARTS_DIR)
    for part in manifest.probe_parts(ctx, crawl_rows):
        if part.name in committed:
            skipped += len(part.keys)
        else:
            units.append((manifest.part_uri(ctx, layout.PROBE_PARTS_DIR, part), [by_uri[k] for k in part.keys]))
    if skipped:
        log.info(f"[probe] {skipped} inputs already probed (committed parts), {len(crawl_rows) - skipped} to go")
    ray_runtime.map_units(NAME, probe_part, units, (ctx,), "inputs",
                          total_items=sum(len(u[1]) for u in units), items_of=lambda u: len(u[1]))
    m = manifest.assemble(ctx)
    manifest.write(ctx, m)
    return {"inputs": len(m.crawl), "accepted": len(m.videos), "rejected": len(m.rejects)}

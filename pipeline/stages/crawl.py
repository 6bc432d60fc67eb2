"""crawl: list every input of every source into manifest/crawl.parquet."""

from __future__ import annotations

import logging
from collections import Counter

from pipeline.core.context import StageContext
from pipeline.ingest import crawl
from pipeline.ingest.video_record import http_policy_of
from pipeline.io import storage
from schemas import layout, tables

log = logging.getLogger(__name__)

NAME = "crawl"
DESCRIPTION = "list inputs of local dirs, manifests, s3:// prefixes and http(s) URLs"


def run(ctx: StageContext) -> dict:
    c = ctx.cfg.crawl
    skipped: Counter = Counter()
    rules = crawl.PathRules(tuple(c.allowed_roots), c.allow_paths_outside_manifest)
    download = crawl.Download(http_policy_of(ctx.cfg), ctx.cfg.probe.max_bytes)
    rows = crawl.crawl(ctx.cfg.sources, c.extensions, skipped, rules, download)
    line = "; ".join(filter(None, [f"crawl: {len(rows)} inputs", crawl.describe_skipped(skipped)]))
    if not rows and not c.allow_empty:
        raise crawl.NothingFound(line)
    storage.write_parquet(ctx.uri(layout.MANIFEST_CRAWL), tables.to_table(rows, tables.CRAWL))
    log.info(f"[crawl] {line} from {len(ctx.cfg.sources)} sources")
    return {"inputs": len(rows), "skipped": sum(skipped.values())}

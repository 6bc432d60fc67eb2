"""crawl: list every input of every source into manifest/crawl.parquet."""

from __future__ import annotations

from pipeline import crawl, storage
from pipeline.context import StageContext
from schemas import layout, tables

NAME = "crawl"
DESCRIPTION = "list inputs of local dirs, manifests, s3:// prefixes and http(s) URLs"


def run(ctx: StageContext) -> dict:
    rows = crawl.crawl(ctx.cfg.sources, ctx.cfg.crawl.extensions)
    storage.write_parquet(ctx.uri(layout.MANIFEST_CRAWL), tables.to_table(rows, tables.CRAWL))
    print(f"[crawl] {len(rows)} inputs from {len(ctx.cfg.sources)} sources", flush=True)
    return {"inputs": len(rows)}

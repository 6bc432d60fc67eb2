"""niah (off by default): an MH-NIAH-Video evaluation set from this build's videos, needles captioned by its caption
annotations where the `annotate` stage made them. Settings: the `niah` config section; output: niah.out (relative
to the build's output root by default)."""

from __future__ import annotations

import os

from pipeline.core.context import StageContext
from pipeline.io import storage
from pipeline.niah import generate
from schemas import layout

NAME = "niah"
DESCRIPTION = "multi-hop needle-in-a-video-haystack evaluation set (items.jsonl, answers.jsonl, haystacks/)"


def output_uri(ctx: StageContext) -> str:
    out = ctx.cfg.niah.out
    if storage.is_s3(out) or os.path.isabs(out):
        return out
    return ctx.uri(out)


def run(ctx: StageContext) -> dict:
    ctx.require(layout.MANIFEST_VIDEOS, "shard")
    s = ctx.cfg.storage
    return generate.generate(ctx.cfg.niah, [ctx.out], output_uri(ctx), s.s3_endpoint_url, s.s3_region)

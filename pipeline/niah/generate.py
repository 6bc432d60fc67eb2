"""Build a set: gather videos and needles, plan every item in the driver, render the items (as Ray tasks when there
are enough of them), then write items.jsonl and the key, answers.jsonl, in plan order."""

from __future__ import annotations

from pipeline.core import ray_runtime
from pipeline.io import storage
from pipeline.niah import needles as needle_sources
from pipeline.niah import render, sources
from pipeline.niah.errors import NiahInputError
from pipeline.niah.plan import Planner
from pipeline.niah.writers import jsonl_bytes
from schemas import niah as niah_schema
from schemas.config import NiahConfig


def settings_for(cfg: NiahConfig, out: str, s3_endpoint_url: str | None = None,
                 s3_region: str | None = None) -> render.RenderSettings:
    return render.RenderSettings(out=out, format=cfg.format, width=cfg.width, height=cfg.height,
                                 jpeg_quality=cfg.jpeg_quality, crf=cfg.crf, text_height=cfg.text_height,
                                 s3_endpoint_url=s3_endpoint_url, s3_region=s3_region)


def make_planner(cfg: NiahConfig, source_uris: list[str], settings: render.RenderSettings) -> Planner:
    videos, builds = sources.load(source_uris, cfg.pool_videos, cfg.seed)
    inside_out = settings.out.rstrip("/") + "/"
    videos = [v for v in videos if not v.uri.startswith(inside_out)]  # never a previous run's haystacks
    if cfg.needles:
        haystack, candidates = videos, needle_sources.from_folder(cfg.needles, cfg.caption_max_chars)
    else:
        haystack, needle_videos = needle_sources.split_videos(videos, cfg.needle_fraction, cfg.seed)
        captions = sources.captions_for(builds, {v.key for v in needle_videos})
        candidates = needle_sources.from_videos(needle_videos, captions, cfg.needle_spacing_s, cfg.caption_max_chars)
    if not haystack:
        raise NiahInputError(f"no videos found in {', '.join(source_uris)}: give --source with videos "
                             f"(a folder, s3:// prefix, manifest or a LongVid build)")
    return Planner(cfg, haystack, candidates, settings.digest_fields())


def generate(cfg: NiahConfig, source_uris: list[str], out: str, s3_endpoint_url: str | None = None,
             s3_region: str | None = None, use_ray: bool = True) -> dict:
    settings = settings_for(cfg, out, s3_endpoint_url, s3_region)
    plans = make_planner(cfg, source_uris, settings).all()
    storage.remove_stale_temporaries(storage.join(out, niah_schema.HAYSTACKS_DIR))
    if use_ray and len(plans) >= max(1, cfg.ray_min_items):
        ray_runtime.init()
        results = ray_runtime.map_units("niah", render.render_unit, plans, (settings,), "items")
    else:
        results = [render.render(p, settings) for p in plans]
    storage.write_bytes_if_changed(storage.join(out, niah_schema.ITEMS_JSONL), jsonl_bytes([r["item"] for r in results]))
    storage.write_bytes_if_changed(storage.join(out, niah_schema.ANSWERS_JSONL),
                                   jsonl_bytes([r["answer"] for r in results]))
    return {"items": len(plans), "hops": cfg.hops, "haystack_frames": cfg.haystack_frames, "format": cfg.format,
            "out": out}

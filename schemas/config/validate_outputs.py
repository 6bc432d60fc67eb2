"""Validation of the output sections: `mix`, `report`, `ray` and `niah` (the latter also used alone by
jobs/build_niah.py)."""

from __future__ import annotations

import re

from schemas import layout, mixture
from schemas import niah as niah_schema
from schemas.config.checks import check_uri, positive
from schemas.config.sections import BuildConfig, ConfigError, NiahConfig


FRAME_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def check_mix(cfg: BuildConfig) -> None:
    """The `mix` section."""
    mx = cfg.mix
    positive("mix.long_min_s", mx.long_min_s)
    if mx.long_max_s <= mx.long_min_s:
        raise ConfigError("mix.long_max_s", f"{mx.long_max_s} is not above long_min_s {mx.long_min_s}",
                          "raise long_max_s or lower long_min_s")
    if mx.timestamp_prompt not in mixture.TIMESTAMP_PROMPT_MODES:
        raise ConfigError("mix.timestamp_prompt", f"unknown mode {mx.timestamp_prompt!r}",
                          "use trainer (VideoChat-Flash --time_msg inserts it) or inline (written into the text)")
    positive("mix.max_turns", mx.max_turns)
    positive("mix.partition_shards", mx.partition_shards)
    if mx.merge_fan_in < 2:
        raise ConfigError("mix.merge_fan_in", f"{mx.merge_fan_in} merges nothing", "use 2 or more, e.g. 512")
    if not FRAME_PREFIX.match(mx.frame_prefix):
        raise ConfigError("mix.frame_prefix", f"{mx.frame_prefix!r} is not a plain name",
                          "use letters, digits and '-', e.g. frame")
    if not 1 <= mx.jpeg_quality <= 100:
        raise ConfigError("mix.jpeg_quality", f"{mx.jpeg_quality} is outside 1..100", "use 1..100, e.g. 90")
    for name, st in mx.stages.items():
        key = f"mix.stages.{name}"
        if name == layout.MIX_VIDEOS_NAME:
            raise ConfigError(key, f"{name!r} is reserved (mixtures/{name}/ holds the video payloads)",
                              "rename the curriculum stage")
        if name not in cfg.sampling.stages:
            raise ConfigError(key, f"no sampling stage named {name!r}",
                              f"add sampling.stages.{name} or drop this mixture with {key}=null "
                              f"(sampling stages: {', '.join(cfg.sampling.stages)})")
        if not st.videos:
            raise ConfigError(f"{key}.videos", "empty", "list short and/or long")
        for i, v in enumerate(st.videos):
            if v not in mixture.DURATION_CLASSES:
                raise ConfigError(f"{key}.videos[{i}]", f"unknown duration class {v!r}", "use short and/or long")
        if st.video_read_type not in mixture.VIDEO_READ_TYPES:
            raise ConfigError(f"{key}.video_read_type", f"unknown type {st.video_read_type!r}",
                              "use decord (video files) or img (frame directories)")
        if not st.tasks:
            raise ConfigError(f"{key}.tasks", "empty", f"name at least one of {', '.join(mixture.TASKS)}")
        for task, t in st.tasks.items():
            tkey = f"{key}.tasks.{task}"
            if task not in mixture.TASKS:
                raise ConfigError(tkey, "unknown task", f"use {', '.join(mixture.TASKS)}")
            positive(f"{tkey}.weight", t.weight)
            positive(f"{tkey}.max_records", t.max_records)
            problem = mixture.sampling_strategy_problem(t.sampling_strategy)
            if problem:
                raise ConfigError(f"{tkey}.sampling_strategy", problem, "e.g. all, first:1000, first:50% or end:200")


def check_report(cfg: BuildConfig) -> None:
    """The `report` section."""
    r = cfg.report
    positive("report.gallery_videos", r.gallery_videos, allow_zero=True)
    positive("report.gallery_frames", r.gallery_frames)
    positive("report.histogram_bins", r.histogram_bins)


def check_ray(cfg: BuildConfig) -> None:
    """The `ray` section."""
    if cfg.ray.num_cpus is not None:
        positive("ray.num_cpus", cfg.ray.num_cpus)


def check_niah(cfg: BuildConfig) -> None:
    validate_niah(cfg.niah)


def validate_niah(n: NiahConfig, prefix: str = "niah") -> NiahConfig:
    """The `niah` section (also used alone by jobs/build_niah.py)."""
    positive(f"{prefix}.items", n.items)
    for key in ("hops", "haystack_frames"):
        values = getattr(n, key)
        if not values:
            raise ConfigError(f"{prefix}.{key}", "empty", "give at least one value, e.g. [1, 2, 3]")
        for i, v in enumerate(values):
            positive(f"{prefix}.{key}[{i}]", v)
        if len(set(values)) != len(values):
            raise ConfigError(f"{prefix}.{key}", f"repeated values in {values}", "list each value once")
    positive(f"{prefix}.distractor_hops", n.distractor_hops, allow_zero=True)
    needles = max(n.hops) + n.distractor_hops
    shortest = min(n.haystack_frames)
    if shortest <= needles * niah_schema.NEEDLE_CLIP_FRAMES:
        raise ConfigError(f"{prefix}.haystack_frames", f"{shortest} frames cannot hold {needles} needle clips of "
                          f"{niah_schema.NEEDLE_CLIP_FRAMES} frames and a haystack",
                          f"give more than {needles * niah_schema.NEEDLE_CLIP_FRAMES} frames or fewer hops")
    if n.depths is not None:
        if len(n.depths) != needles:
            raise ConfigError(f"{prefix}.depths", f"{len(n.depths)} depths for {needles} needles "
                              f"(max hops {max(n.hops)} + distractor_hops {n.distractor_hops})",
                              "give one fraction per needle, or null for evenly spread depths")
        for i, d in enumerate(n.depths):
            if not 0.0 <= d <= 1.0:
                raise ConfigError(f"{prefix}.depths[{i}]", f"{d} is outside 0..1", "give a fraction of the haystack")
        for length in n.haystack_frames:
            try:
                niah_schema.clip_starts(length, needles, n.depths)
            except ValueError as e:
                raise ConfigError(f"{prefix}.depths", str(e), "spread the depths further apart")
    if n.needles:
        check_uri(f"{prefix}.needles", n.needles, must_exist=True)
        if n.needles.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}.needles", "cannot list an http URL", "use a local folder or s3:// prefix")
    if n.format not in niah_schema.FORMATS:
        raise ConfigError(f"{prefix}.format", f"unknown format {n.format!r}", f"use one of {', '.join(niah_schema.FORMATS)}")
    for k in ("width", "height", "caption_max_chars", "pool_videos", "needle_spacing_s", "text_height"):
        positive(f"{prefix}.{k}", getattr(n, k))
    for k in ("width", "height"):
        if getattr(n, k) % 2:
            raise ConfigError(f"{prefix}.{k}", f"{getattr(n, k)} is odd", "give an even size (H.264 needs it)")
    if not 1 <= n.jpeg_quality <= 100:
        raise ConfigError(f"{prefix}.jpeg_quality", f"{n.jpeg_quality} is outside 1..100", "use 1..100, e.g. 90")
    if not 0 <= n.crf <= 51:
        raise ConfigError(f"{prefix}.crf", f"{n.crf} is outside 0..51", "use 0..51, e.g. 18")
    if not 0.0 < n.needle_fraction < 1.0:
        raise ConfigError(f"{prefix}.needle_fraction", f"{n.needle_fraction} is outside (0, 1)", "use e.g. 0.25")
    if n.text_height >= 0.5:
        raise ConfigError(f"{prefix}.text_height", f"{n.text_height} is too large", "use a fraction below 0.5, e.g. 0.06")
    positive(f"{prefix}.ray_min_items", n.ray_min_items, allow_zero=True)
    if n.out:
        check_uri(f"{prefix}.out", n.out, must_exist=False)
    return n

"""Validation of the ingest sections: output and sources, crawl, storage, probe, scenes, sampling, shard."""

from __future__ import annotations

import os

from schemas.config.checks import check_uri, positive
from schemas.config.sections import PAYLOADS, SCENE_DETECTORS, BuildConfig, ConfigError
from schemas.sampling import SAMPLE_TYPES

S3_RETRY_MODES = ("standard", "adaptive", "legacy")


def check_paths(cfg: BuildConfig) -> None:
    """`out`, `sources` and `stages`."""
    if not cfg.out:
        raise ConfigError("out", "missing", "give an output path or s3:// URI with --out or `out:`")
    check_uri("out", cfg.out, must_exist=False)
    if cfg.out.startswith(("http://", "https://")):
        raise ConfigError("out", "cannot write to an http URL", "use a local path or s3://bucket/prefix")
    for i, s in enumerate(cfg.sources):
        check_uri(f"sources[{i}]", s, must_exist=True)
    if not cfg.stages:
        raise ConfigError("stages", "empty", "name at least one stage, e.g. ingest")


def check_probe(cfg: BuildConfig) -> None:
    """The `probe` section."""
    p = cfg.probe
    positive("probe.min_duration_s", p.min_duration_s, allow_zero=True)
    positive("probe.max_duration_s", p.max_duration_s)
    if p.max_duration_s <= p.min_duration_s:
        raise ConfigError("probe.max_duration_s", f"{p.max_duration_s} is not above min_duration_s {p.min_duration_s}",
                          "raise max_duration_s or lower min_duration_s")
    for k in ("max_pixels", "max_bytes", "timeout_s", "part_size"):
        positive(f"probe.{k}", getattr(p, k))


def check_crawl(cfg: BuildConfig) -> None:
    """The `crawl` section (normalises allowed_roots and extensions)."""
    c = cfg.crawl
    positive("crawl.http_timeout_s", c.http_timeout_s)
    positive("crawl.http_retries", c.http_retries, allow_zero=True)
    positive("crawl.http_backoff_s", c.http_backoff_s, allow_zero=True)
    positive("crawl.http_backoff_max_s", c.http_backoff_max_s, allow_zero=True)
    if not 0 <= c.http_jitter <= 1:
        raise ConfigError("crawl.http_jitter", f"{c.http_jitter} is outside 0..1", "give a fraction such as 0.5")
    positive("crawl.download_deadline_s", c.download_deadline_s)
    positive("crawl.download_min_bytes_per_s", c.download_min_bytes_per_s, allow_zero=True)
    positive("crawl.download_throughput_window_s", c.download_throughput_window_s)
    positive("crawl.download_concurrency", c.download_concurrency)
    c.allowed_roots = [os.path.abspath(os.path.expanduser(r)) for r in c.allowed_roots]
    if not c.extensions:
        raise ConfigError("crawl.extensions", "empty", "list the video extensions to pick up, e.g. [mp4, mkv]")
    c.extensions = [e.lower().lstrip(".") for e in c.extensions]


def check_storage(cfg: BuildConfig) -> None:
    """The `storage` section."""
    st = cfg.storage
    positive("storage.s3_connect_timeout_s", st.s3_connect_timeout_s)
    positive("storage.s3_read_timeout_s", st.s3_read_timeout_s)
    positive("storage.s3_max_attempts", st.s3_max_attempts)
    if st.s3_retry_mode not in S3_RETRY_MODES:
        raise ConfigError("storage.s3_retry_mode", f"unknown mode {st.s3_retry_mode!r}",
                          f"use one of {', '.join(S3_RETRY_MODES)}")
    if st.tmp_dir and os.path.exists(st.tmp_dir) and not os.path.isdir(st.tmp_dir):
        raise ConfigError("storage.tmp_dir", f"{st.tmp_dir} is not a folder", "give a folder for temporary files")


def check_scenes(cfg: BuildConfig) -> None:
    """The `scenes` section."""
    s = cfg.scenes
    if s.detector not in SCENE_DETECTORS:
        raise ConfigError("scenes.detector", f"unknown detector {s.detector!r}", f"use one of {', '.join(SCENE_DETECTORS)}")
    positive("scenes.threshold", s.threshold)
    positive("scenes.min_scene_len_s", s.min_scene_len_s, allow_zero=True)
    positive("scenes.downscale", s.downscale)
    positive("scenes.timeout_s", s.timeout_s)
    positive("scenes.part_size", s.part_size)
    positive("scenes.segment_s", s.segment_s)
    if s.segment_s < 30:
        raise ConfigError("scenes.segment_s", f"{s.segment_s:g} is below 30 s", "use 30 or more, e.g. 300")
    positive("scenes.num_gpus", s.num_gpus, allow_zero=True)
    positive("scenes.actors", s.actors)
    if s.detector == "transnetv2" and s.threshold is not None and not 0 < s.threshold < 1:
        raise ConfigError("scenes.threshold", f"{s.threshold:g} is not a probability",
                          "use a value between 0 and 1 for transnetv2, e.g. 0.5")


def check_sampling(cfg: BuildConfig) -> None:
    """The `sampling` section."""
    sm = cfg.sampling
    positive("sampling.clip_len", sm.clip_len)
    if not sm.stages:
        raise ConfigError("sampling.stages", "empty", "define at least one curriculum stage")
    for name, st in sm.stages.items():
        key = f"sampling.stages.{name}"
        if st.sample not in SAMPLE_TYPES:
            raise ConfigError(f"{key}.sample", f"unknown sampling {st.sample!r}", f"use one of {', '.join(SAMPLE_TYPES)}")
        positive(f"{key}.min_frames", st.min_frames)
        positive(f"{key}.max_frames", st.max_frames)
        positive(f"{key}.resolution", st.resolution)
        if st.max_frames < st.min_frames:
            raise ConfigError(f"{key}.max_frames", f"{st.max_frames} is below min_frames {st.min_frames}",
                              "make max_frames >= min_frames")


def check_shard(cfg: BuildConfig) -> None:
    """The `shard` section."""
    sm = cfg.sampling
    sh = cfg.shard
    positive("shard.target_bytes", sh.target_bytes)
    positive("shard.max_samples", sh.max_samples)
    if sh.payload not in PAYLOADS:
        raise ConfigError("shard.payload", f"unknown payload {sh.payload!r}", f"use one of {', '.join(PAYLOADS)}")
    if sh.payload == "frames" and sh.frames_stage not in sm.stages:
        raise ConfigError("shard.frames_stage", f"no sampling stage named {sh.frames_stage!r}",
                          f"use one of {', '.join(sm.stages)}")
    if not 1 <= sh.jpeg_quality <= 100:
        raise ConfigError("shard.jpeg_quality", f"{sh.jpeg_quality} is outside 1..100", "use 1..100, e.g. 90")

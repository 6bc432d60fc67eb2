"""Validation of the model sections: `hico` (encoder, dtypes) and `annotate` (backend, QA)."""

from __future__ import annotations

from schemas.config.checks import check_uri, positive
from schemas.config.sections import (BACKENDS, DTYPES, ENCODER_PRESETS, MERGE_DTYPES, QA_GENERATORS, RESIZE_BACKENDS,
                                     BuildConfig, ConfigError)
from schemas.tables import QA_FAMILIES


def check_hico(cfg: BuildConfig) -> None:
    """The `hico` section."""
    sm = cfg.sampling
    h = cfg.hico
    if h.stage not in sm.stages:
        raise ConfigError("hico.stage", f"no sampling stage named {h.stage!r}", f"use one of {', '.join(sm.stages)}")
    if h.encoder.preset not in ENCODER_PRESETS:
        raise ConfigError("hico.encoder.preset", f"unknown preset {h.encoder.preset!r}",
                          f"use one of {', '.join(ENCODER_PRESETS)}")
    if h.encoder.checkpoint:
        check_uri("hico.encoder.checkpoint", h.encoder.checkpoint, must_exist=True)
    if h.dtype not in DTYPES:
        raise ConfigError("hico.dtype", f"unknown dtype {h.dtype!r}", f"use one of {', '.join(DTYPES)}")
    if h.merge_dtype not in MERGE_DTYPES:
        raise ConfigError("hico.merge_dtype", f"unknown dtype {h.merge_dtype!r}",
                          f"use one of {', '.join(MERGE_DTYPES)} (float32 unless you reproduce a model run in that "
                          f"dtype)")
    if h.resize not in RESIZE_BACKENDS:
        raise ConfigError("hico.resize", f"unknown resize {h.resize!r}",
                          f"use one of {', '.join(RESIZE_BACKENDS)} (pil: identical to the model's image processor)")
    if h.encoder.checkpoint and "://" in h.encoder.checkpoint:
        raise ConfigError("hico.encoder.checkpoint", "must be a local file (the encoder and its hash read it)",
                          "copy the checkpoint to every node and give its local path")
    for k in ("tokens_per_frame", "batch_clips", "pool_size", "row_group_bytes"):
        positive(f"hico.{k}", getattr(h, k))
    positive("hico.num_gpus", h.num_gpus, allow_zero=True)


def check_annotate(cfg: BuildConfig) -> None:
    """The `annotate` section."""
    sm = cfg.sampling
    a = cfg.annotate
    if a.backend not in BACKENDS:
        raise ConfigError("annotate.backend", f"unknown backend {a.backend!r}", f"use one of {', '.join(BACKENDS)}")
    if a.checkpoint:
        check_uri("annotate.checkpoint", a.checkpoint, must_exist=True)
    if a.frames_stage not in sm.stages:
        raise ConfigError("annotate.frames_stage", f"no sampling stage named {a.frames_stage!r}",
                          f"use one of {', '.join(sm.stages)}")
    if a.dtype not in DTYPES:
        raise ConfigError("annotate.dtype", f"unknown dtype {a.dtype!r}", f"use one of {', '.join(DTYPES)}")
    if a.device not in ("auto", "cpu", "cuda"):
        raise ConfigError("annotate.device", f"unknown device {a.device!r}", "use auto, cpu or cuda")
    for k in ("batch_size", "pool_size", "max_new_tokens", "min_window_s", "max_window_s", "caption_max_chars",
              "qvh_clip_s"):
        positive(f"annotate.{k}", getattr(a, k))
    positive("annotate.repair_attempts", a.repair_attempts, allow_zero=True)
    positive("annotate.num_gpus", a.num_gpus, allow_zero=True)
    if a.max_window_s < a.min_window_s:
        raise ConfigError("annotate.max_window_s", f"{a.max_window_s} is below min_window_s {a.min_window_s}",
                          "make max_window_s >= min_window_s")
    for fam, gen in a.qa_generators.items():
        if fam not in QA_FAMILIES:
            raise ConfigError(f"annotate.qa_generators.{fam}", "unknown QA family", f"use {', '.join(QA_FAMILIES)}")
        if gen not in QA_GENERATORS:
            raise ConfigError(f"annotate.qa_generators.{fam}", f"unknown generator {gen!r}",
                              f"use one of {', '.join(QA_GENERATORS)}")
    for i, form in enumerate(a.qa_forms):
        if form not in ("open", "mc"):
            raise ConfigError(f"annotate.qa_forms[{i}]", f"unknown form {form!r}", "use open and/or mc")

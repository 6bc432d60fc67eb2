"""The build config: typed sections with defaults, loaded from YAML plus overrides, validated before any work.

Every problem is a ConfigError naming the dotted key, what is wrong and how to fix it; the job turns it into
`config error: <key>: <what> (<fix>)` and exit code 2.

sections.py holds the dataclasses and accepted names, loading.py the YAML / override / conversion path, and
validation.py the per-section checks (validate_ingest, validate_models, validate_outputs) in order.
"""

from schemas.config.checks import check_uri
from schemas.config.loading import apply_override, build, from_dict, load_yaml, merge, parse_size, to_dict
from schemas.config.sections import (BACKENDS, DTYPES, ENCODER_PRESETS, GiB, MERGE_DTYPES, PAYLOADS, QA_GENERATORS,
                                     RESIZE_BACKENDS, SCENE_DETECTORS, AnnotateConfig, BuildConfig, ConfigError,
                                     CrawlConfig, EncoderConfig, HicoConfig, MixConfig, MixStageConfig,
                                     MixTaskConfig, NiahConfig, ProbeConfig, RayConfig, ReportConfig,
                                     SamplingConfig, SamplingStageConfig, ScenesConfig, ShardConfig, StorageConfig)
from schemas.config.validate_outputs import validate_niah
from schemas.config.validation import validate

__all__ = [
    "BACKENDS", "DTYPES", "ENCODER_PRESETS", "GiB", "MERGE_DTYPES", "PAYLOADS", "QA_GENERATORS", "RESIZE_BACKENDS",
    "SCENE_DETECTORS", "AnnotateConfig", "BuildConfig", "ConfigError", "CrawlConfig", "EncoderConfig", "HicoConfig",
    "MixConfig", "MixStageConfig", "MixTaskConfig", "NiahConfig", "ProbeConfig", "RayConfig", "ReportConfig",
    "SamplingConfig", "SamplingStageConfig", "ScenesConfig", "ShardConfig", "StorageConfig", "apply_override",
    "build", "check_uri", "from_dict", "load_yaml", "merge", "parse_size", "to_dict", "validate", "validate_niah",
]

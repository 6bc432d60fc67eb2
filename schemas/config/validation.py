"""`validate`: every section's checks in order, before any work. Each check raises a ConfigError naming the dotted
key, what is wrong and how to fix it; a few normalise values in place (crawl extensions, allowed roots)."""

from __future__ import annotations

from schemas.config.sections import BuildConfig
from schemas.config.validate_ingest import (check_crawl, check_paths, check_probe, check_sampling, check_scenes,
                                            check_shard, check_storage)
from schemas.config.validate_models import check_annotate, check_hico
from schemas.config.validate_outputs import check_mix, check_niah, check_ray, check_report

SECTION_CHECKS = (check_paths, check_probe, check_crawl, check_storage, check_scenes, check_sampling, check_shard,
                  check_hico, check_annotate, check_mix, check_report, check_ray, check_niah)


def validate(cfg: BuildConfig) -> BuildConfig:
    for check in SECTION_CHECKS:
        check(cfg)
    return cfg

"""Stage registry. Adding a stage = one module exposing NAME, DESCRIPTION and run(ctx) -> dict, plus one line here.

Modules are named as import paths so stages living in annotators/ or compressors/ register without pipeline
importing them at start-up.
"""

from __future__ import annotations

import importlib

from schemas.errors import UsageError

# Canonical execution order: whatever order stages are requested in, they run in this one.
STAGES: dict[str, str] = {
    "crawl": "pipeline.stages.crawl",
    "probe": "pipeline.stages.probe",
    "scenes": "pipeline.stages.scenes",
    "shard": "pipeline.stages.shard",
    "hico": "pipeline.stages.hico",
    "annotate": "pipeline.stages.annotate",
    "mix": "pipeline.stages.mix",
    "stats": "pipeline.stages.stats",
    "report": "pipeline.stages.report",
    "niah": "pipeline.stages.niah",  # evaluation sets; off by default (not in any group), run with --stages niah
}

GROUPS: dict[str, tuple[str, ...]] = {
    "ingest": ("crawl", "probe", "scenes", "shard"),
}


class UnknownStage(UsageError, ValueError):
    pass


def resolve(requested: list[str]) -> list[str]:
    """Expand groups, drop repeats, order canonically; raise UnknownStage naming the bad entry."""
    wanted = set()
    for name in requested:
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in STAGES:
            wanted.add(name)
        else:
            raise UnknownStage(name)
    return [s for s in STAGES if s in wanted]


def load(name: str):
    return importlib.import_module(STAGES[name])

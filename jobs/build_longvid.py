"""Build (part of) the LongVid corpus.

    python jobs/build_longvid.py                      # the embedded demo: ./longvid-demo/{sources,out}
    python jobs/build_longvid.py --config configs/X.yaml [--source URI ...] [--out URI] [--stages a,b] [--set k=v ...]
    ray job submit --working-dir . -- python jobs/build_longvid.py --config configs/X.yaml

Flags override the file. A config error prints `config error: <key>: <problem> (<fix>)` and exits 2; other known
failures print one `error: ...` line and exit 1 (docs/errors.md). --quiet: warnings and errors only; --verbose: debug.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline import demo
from pipeline import stages as registry
from pipeline.core import entry, log, runner
from schemas import config as config_schema


def parse_args(argv: list[str]) -> argparse.Namespace:
    stage_help = ", ".join(list(registry.STAGES) + list(registry.GROUPS))
    p = argparse.ArgumentParser(description="Build the LongVid long-video corpus.")
    p.add_argument("--config", help="YAML build config")
    p.add_argument("--source", action="append", default=[], help="input URI (repeatable): dir, manifest, s3://, http(s)://")
    p.add_argument("--out", help="output root: local path or s3://bucket/prefix")
    p.add_argument("--stages", help=f"comma-separated stages or groups ({stage_help})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set shard.max_samples=100 (repeatable)")
    log.add_flags(p)
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> config_schema.BuildConfig:
    data = config_schema.load_yaml(args.config) if args.config else {}
    if args.source:
        data["sources"] = args.source
    if args.out:
        data["out"] = args.out
    if args.stages:
        data["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    if not args.config and not args.source:
        data["sources"] = [demo.ensure_corpus()]
        data.setdefault("out", os.path.join(demo.DEMO_ROOT, "out"))
        data.setdefault("stages", list(demo.DEMO_STAGES))
        data = config_schema.merge(demo.DEMO_SETTINGS, data)
    cfg = config_schema.build(data, args.overrides)
    try:
        stages = registry.resolve(cfg.stages)
    except registry.UnknownStage as e:
        known = ", ".join(list(registry.STAGES) + list(registry.GROUPS))
        raise config_schema.ConfigError("stages", f"unknown stage {e.args[0]!r}", f"use any of {known}")
    if "crawl" in stages and not cfg.sources:
        raise config_schema.ConfigError("sources", "empty", "give at least one --source or `sources:` entry")
    encoder = cfg.hico.encoder
    if "hico" in stages and not encoder.checkpoint and not encoder.allow_random_init:
        raise config_schema.ConfigError("hico.encoder.checkpoint", "missing",
                                        "give a local UMT-L checkpoint (.safetensors/.pt), or set "
                                        "hico.encoder.allow_random_init: true for tests and demos")
    if "annotate" in stages and not cfg.annotate.checkpoint and not cfg.annotate.tiny_demo_model:
        raise config_schema.ConfigError("annotate.checkpoint", "missing",
                                        "give a local checkpoint directory for annotate.backend, or set "
                                        "annotate.tiny_demo_model: true for tests and demos")
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return entry.run(lambda: build(args), log.level_of(args), resumable=True)


def build(args: argparse.Namespace) -> int:
    runner.run_build(load_config(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

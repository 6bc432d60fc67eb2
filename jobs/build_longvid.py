"""Build (part of) the LongVid corpus.

    python jobs/build_longvid.py                      # the embedded demo: ./longvid-demo/{sources,out}
    python jobs/build_longvid.py --config configs/X.yaml [--source URI ...] [--out URI] [--stages a,b] [--set k=v ...]
    ray job submit --working-dir . -- python jobs/build_longvid.py --config configs/X.yaml

Flags override the file. A config error prints `config error: <key>: <problem> (<fix>)` and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline import demo
from pipeline import stages as registry
from pipeline.core import runner
from pipeline.core.context import StageInputMissing
from pipeline.ingest.crawl import NothingFound, SourceError
from pipeline.io.fetch import LOCAL_DISK_ERRNOS
from pipeline.io.storage import StorageUnavailable
from pipeline.mix.validate import MixValidationError
from pipeline.stats.tables import StatsMismatch
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
    try:
        cfg = load_config(args)
    except config_schema.ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    try:
        runner.run_build(cfg)
    except config_schema.ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    except NothingFound as e:
        print(f"{e} (check the sources and crawl.extensions, or set crawl.allow_empty: true to build an empty "
              f"corpus)", file=sys.stderr)
        return 2
    except SourceError as e:
        print(f"config error: sources: {e} (check the source URI, its credentials and the manifest's columns)",
              file=sys.stderr)
        return 2
    except (StageInputMissing, MixValidationError, StatsMismatch) as e:
        # A stage refused to commit (missing input, invalid mixture, counts that do not reconcile): exit 1 with the
        # stage's own message, which names what to fix.
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        line = systemic_failure(e)
        if line is None:
            raise
        print(f"error: {line}; committed work is kept: rerun the same command to resume", file=sys.stderr)
        return 1
    return 0


def systemic_failure(e: BaseException) -> str | None:
    """One line for a failure of the system rather than of an input (S3 endpoint not answering, local disk full or
    read-only), also when a Ray task raised it (Ray wraps it and keeps it as `cause`); None for anything else."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        for err in (cause, e):
            if isinstance(err, StorageUnavailable):
                return (f"storage: S3 endpoint {err.endpoint} failed {err.operation} of {err.uri} "
                        f"({err.detail})")
            if isinstance(err, OSError) and not isinstance(err, ConnectionError) and err.errno in LOCAL_DISK_ERRNOS:
                where = f": {err.filename}" if err.filename else ""
                return f"disk: {err.strerror}{where} (free space, or point storage.tmp_dir at a larger disk)"
        e = cause or e.__cause__ or e.__context__
    return None

if __name__ == "__main__":
    sys.exit(main())

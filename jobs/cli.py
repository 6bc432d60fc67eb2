"""`longvid`: auditor commands over a finished build (local path or s3:// URI).

    longvid audit OUT                          summary, top reject reasons, the tables --sql can query
    longvid audit OUT --sql "SELECT ..."       DuckDB over the output's Parquet tables (--format table|csv|json)
    longvid report OUT [-o FILE]               writes OUT/report.html (or FILE): plots and a sample gallery
    longvid niah-score OUT PREDICTIONS [--json]  grades an MH-NIAH-Video set (docs/niah.md)

S3 credentials come from the standard AWS chain; --s3-endpoint-url (or $AWS_ENDPOINT_URL) for MinIO and the like.
Exit codes: 0 done, 1 the output cannot be read or the query failed, 2 bad arguments or config (docs/errors.md).
--quiet / --verbose after the command: warnings and errors only / debug lines too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from botocore.exceptions import BotoCoreError, ClientError

from pipeline import audit
from pipeline.core import entry, log
from pipeline.io import storage
from pipeline.niah import score as niah_score_module
from pipeline.report import build as report
from schemas import config as config_schema
from schemas.errors import LongVidError


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="longvid", description="Audit a LongVid build.")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("audit", help="print the build summary and top reject reasons, or run SQL over its tables")
    a.add_argument("out", help="the build's output root: local path or s3://bucket/prefix")
    a.add_argument("--sql", help="a DuckDB query over the views listed by `longvid audit OUT`")
    a.add_argument("--format", choices=("table", "csv", "json"), default="table", help="query output format")
    a.add_argument("--max-rows", type=int, default=100, help="rows shown by --format table (default 100)")
    r = sub.add_parser("report", help="write the self-contained report.html")
    r.add_argument("out", help="the build's output root: local path or s3://bucket/prefix")
    r.add_argument("-o", "--output", help="write the report here instead of OUT/report.html")
    r.add_argument("--config", help="YAML build config: its `report` and `storage` sections are used")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a report key, e.g. --set report.gallery_videos=10")
    n = sub.add_parser("niah-score", help="accuracy of predictions on an MH-NIAH-Video set, by hops and length")
    n.add_argument("out", help="the set's folder (holding answers.jsonl): local path or s3://bucket/prefix")
    n.add_argument("predictions", help='JSON lines {"id": ..., "answers": ["A", "C"]}: local path or s3:// URI')
    n.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    for cmd in (a, r, n):
        cmd.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (default: $AWS_ENDPOINT_URL or AWS)")
        log.add_flags(cmd)
    return p.parse_args(argv)


def report_config(args: argparse.Namespace) -> config_schema.BuildConfig:
    data = config_schema.load_yaml(args.config) if args.config else {}
    kept = {k: data[k] for k in ("report", "storage") if k in data}
    cfg = config_schema.build({**kept, "out": args.out}, args.overrides)
    if args.s3_endpoint_url:
        cfg.storage.s3_endpoint_url = args.s3_endpoint_url
    return cfg


def niah_score(args: argparse.Namespace) -> int:
    storage.configure(args.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
    key = niah_score_module.read_key(args.out)
    predictions = niah_score_module.read_predictions(args.predictions, {row["id"] for row in key})
    result = niah_score_module.score(key, predictions)
    print(json.dumps(result, indent=2) if args.json else niah_score_module.table(result))
    return 0


class OutputUnreadable(LongVidError):
    """The build's output (or a file of it) cannot be read: missing, no permission, S3 refusing the request."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return entry.run(lambda: command(args), log.level_of(args))


def command(args: argparse.Namespace) -> int:
    try:
        if args.command == "niah-score":
            return niah_score(args)
        if args.command == "audit":
            if args.max_rows < 1:
                raise config_schema.ConfigError("--max-rows", f"{args.max_rows} is below 1", "give 1 or more")
            storage.configure(args.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
            if args.sql:
                audit.print_query(args.out, args.sql, args.format, args.max_rows)
            else:
                print(audit.overview(args.out))
            return 0
        cfg = report_config(args)
        storage.configure(cfg.storage.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL"), cfg.storage.s3_region)
        written = report.write(args.out, cfg, args.output)
        print(f"report written to {written}")
        return 0
    except (OSError, BotoCoreError, ClientError) as e:
        raise OutputUnreadable(f"cannot read {args.out}: {e}") from e


if __name__ == "__main__":
    sys.exit(main())

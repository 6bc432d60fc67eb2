"""Build an MH-NIAH-Video evaluation set (multi-hop needle in a video haystack) from any videos.

    python jobs/build_niah.py --source URI [--source URI ...] --out OUT --items N --hops 1,2,3 \\
        --haystack-frames 1000,5000 [--needles DIR] [--distractor-hops D] [--depths 0.2,0.5,0.8] [--seed S] \\
        [--format frames|video|both] [--config X.yaml] [--set niah.width=448 ...]

A source is a folder, an s3:// prefix, a manifest (.csv/.jsonl/.parquet) or a LongVid build's output root (then its
shards are the videos and its caption annotations caption the needles). `--items` is per (hops, length) pair.
A config error or unusable input prints `config error: <key>: <problem> (<fix>)` and exits 2 (docs/errors.md);
--quiet: warnings and errors only; --verbose: debug. See docs/niah.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.core import entry, log
from pipeline.io import storage
from pipeline.niah import generate
from schemas import config as config_schema
from schemas import niah as niah_schema

# flag -> niah config key; errors about a key set by a flag name the flag
FLAGS = {"--items": "items", "--hops": "hops", "--haystack-frames": "haystack_frames", "--needles": "needles",
         "--distractor-hops": "distractor_hops", "--depths": "depths", "--seed": "seed", "--format": "format"}


def _number_list(kind):
    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}")
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Build a multi-hop needle-in-a-video-haystack evaluation set.")
    p.add_argument("--source", action="append", default=[], help="videos: folder, s3:// prefix, manifest or a "
                   "LongVid build (repeatable)")
    p.add_argument("--out", help="output folder: local path or s3://bucket/prefix")
    p.add_argument("--items", type=int, help="items per (hops, haystack length) pair")
    p.add_argument("--hops", type=_number_list(int), help="hops per chain, comma-separated (1: single-hop)")
    p.add_argument("--haystack-frames", type=_number_list(int), help="haystack lengths in frames at 1 fps, "
                   "comma-separated")
    p.add_argument("--needles", help="folder of needle images with captions.jsonl ({\"file\", \"caption\"} lines); "
                   "default: frames of source videos kept out of haystacks")
    p.add_argument("--distractor-hops", type=int, help="images of a distractor chain that points only among itself")
    p.add_argument("--depths", type=_number_list(float), help="needle clip depths as fractions, comma-separated "
                   "(default: evenly spread)")
    p.add_argument("--seed", type=int)
    p.add_argument("--format", help="haystacks as frames (JPEG folders), video (mp4 at 1 fps) or both")
    p.add_argument("--config", help="YAML file: its `niah` and `storage` sections are used")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a niah key, e.g. --set niah.width=448")
    p.add_argument("--s3-endpoint-url", help="S3 endpoint (default: $AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--no-ray", action="store_true", help="render every item in this process")
    log.add_flags(p)
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> tuple[config_schema.NiahConfig, config_schema.StorageConfig]:
    data = config_schema.load_yaml(args.config) if args.config else {}
    data = {k: data[k] for k in ("niah", "storage") if k in data}
    niah = dict(data.get("niah") or {})
    given = {flag: key for flag, key in FLAGS.items() if getattr(args, key) is not None}
    for key in given.values():
        niah[key] = getattr(args, key)
    data["niah"] = niah
    for o in args.overrides:
        if not o.startswith("niah.") and not o.startswith("storage."):
            raise config_schema.ConfigError(o.split("=", 1)[0], "only niah.* and storage.* keys apply here",
                                            "write e.g. --set niah.width=448")
        data = config_schema.apply_override(data, o)
    if not args.source:
        raise config_schema.ConfigError("--source", "missing", "give at least one --source with videos")
    if not args.out:
        raise config_schema.ConfigError("--out", "missing", "give an output folder or s3:// URI")
    for i, s in enumerate(args.source):
        config_schema._check_uri(f"--source[{i}]", s, must_exist=True)
    try:
        storage_cfg = config_schema._from_dict(config_schema.StorageConfig, data.get("storage") or {}, "storage")
        cfg = config_schema.validate_niah(config_schema._from_dict(config_schema.NiahConfig, data["niah"], "niah"))
    except config_schema.ConfigError as e:
        for flag, key in given.items():
            if e.key == f"niah.{key}" or e.key.startswith(f"niah.{key}["):
                raise config_schema.ConfigError(flag + e.key[len(f"niah.{key}"):], e.problem, e.fix) from None
        raise
    return cfg, storage_cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return entry.run(lambda: build(args), log.level_of(args))


def build(args: argparse.Namespace) -> int:
    cfg, storage_cfg = load_config(args)
    endpoint = args.s3_endpoint_url or storage_cfg.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    storage.configure(endpoint, storage_cfg.s3_region)
    out = args.out if storage.is_s3(args.out) else storage.normalize_local(args.out)
    result = generate.generate(cfg, args.source, out, endpoint, storage_cfg.s3_region, use_ray=not args.no_ray)
    print(f"{result['items']} items written to {out} ({niah_schema.ITEMS_JSONL}; key in {niah_schema.ANSWERS_JSONL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

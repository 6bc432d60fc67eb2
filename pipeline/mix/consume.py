"""Reading a stage mixture the way a trainer does: `data.yaml` with its relative paths resolved from the file's
folder (local or s3://), and an absolute copy for trainers started elsewhere.

    python -m pipeline.mix.consume out/mixtures/stage3/data.yaml > /data/longvid-stage3.yaml
"""

from __future__ import annotations

import argparse
import sys

import yaml

from pipeline.io import storage


def read_data_yaml(uri: str) -> list[dict]:
    """The `datasets:` entries of a mixture's data.yaml with `json_path` and `data_root` made absolute."""
    doc = yaml.safe_load(storage.read_bytes(uri))
    folder = storage.parent(uri)
    out = []
    for ds in doc.get("datasets") or []:
        ds = dict(ds)
        ds["json_path"] = storage.resolve_from(folder, ds["json_path"])
        ds["data_root"] = storage.resolve_from(folder, ds.get("data_root", ""))
        out.append(ds)
    return out


def absolute_data_yaml(uri: str) -> str:
    return yaml.safe_dump({"datasets": read_data_yaml(uri)}, sort_keys=False, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print a mixture's data.yaml with absolute paths")
    parser.add_argument("data_yaml", help="mixtures/<stage>/data.yaml (local path or s3:// URI)")
    parser.add_argument("--s3-endpoint-url", default=None, help="S3-compatible endpoint (else boto3's own)")
    args = parser.parse_args(argv)
    storage.configure(args.s3_endpoint_url)
    sys.stdout.write(absolute_data_yaml(args.data_yaml))
    return 0


if __name__ == "__main__":
    sys.exit(main())

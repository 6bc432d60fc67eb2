"""Checks of the output location that run before Ray starts, so a bad `out` is one config error line, not a
traceback after minutes of startup."""

from __future__ import annotations

import os

from pipeline.io import storage
from schemas.config import ConfigError


def check_out(out: str) -> None:
    """`out` must be a folder this process can create and write (local), or a prefix of an existing bucket (S3)."""
    if storage.is_s3(out):
        _check_bucket(out)
    else:
        _check_local(out)


def _check_local(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError("out", f"{out} is a file, not a folder", "give a folder path (it is created when missing)")
    ancestor = out
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ConfigError("out", f"{ancestor} is a file, so {out} cannot be created", "give a folder path")
    probe = os.path.join(out, f".longvid-write-check-{os.getpid()}")
    try:
        os.makedirs(out, exist_ok=True)
        with open(probe, "wb"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise ConfigError("out", f"cannot write to {out}: {e.strerror or e}",
                          "give a folder this user can create and write, or fix its permissions")


def _check_bucket(out: str) -> None:
    from botocore.exceptions import ClientError

    bucket, _ = storage.split_s3(out)
    try:
        with storage.s3_operation("HeadBucket", f"s3://{bucket}"):
            storage.s3_client().head_bucket(Bucket=bucket)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        endpoint = storage.settings().endpoint_url or "the default AWS endpoint"
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ConfigError("out", f"bucket {bucket!r} does not exist at {endpoint}",
                              "create the bucket or fix its name in out")
        if code in ("403", "AccessDenied", "Forbidden"):
            raise ConfigError("out", f"access to bucket {bucket!r} at {endpoint} is denied",
                              "check the credentials and the bucket policy")
        raise
    _check_prefix_writable(out)


def _check_prefix_writable(out: str) -> None:
    """Write and delete a marker object under the prefix: a bucket the credentials may read but not write fails
    here, not in the first task that commits a part."""
    from botocore.exceptions import ClientError

    marker = storage.join(out, f".longvid-write-check-{os.getpid()}")
    bucket, key = storage.split_s3(marker)
    operation = "PutObject"
    try:
        with storage.s3_operation(operation, marker):
            storage.s3_client().put_object(Bucket=bucket, Key=key, Body=b"")
        operation = "DeleteObject"
        with storage.s3_operation(operation, marker):
            storage.s3_client().delete_object(Bucket=bucket, Key=key)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", "")) or type(e).__name__
        raise ConfigError("out", f"cannot write to {out}: {operation} of {marker} refused ({code})",
                          "grant these credentials s3:PutObject and s3:DeleteObject on the prefix, or give another "
                          "out")

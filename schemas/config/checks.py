"""Checks shared by the sections' validators."""

from __future__ import annotations

import os

from schemas.config.sections import ConfigError

SOURCE_SCHEMES = ("http://", "https://", "s3://")


def check_uri(key: str, uri: str, must_exist: bool) -> None:
    if "://" in uri:
        if not uri.startswith(SOURCE_SCHEMES):
            scheme = uri.split("://", 1)[0]
            raise ConfigError(key, f"scheme {scheme!r} is not supported", "use a local path, s3://, http:// or https://")
        if uri.startswith("s3://") and len(uri) <= len("s3://"):
            raise ConfigError(key, "s3 URI has no bucket", "write s3://bucket/prefix")
    elif must_exist and not os.path.exists(uri):
        raise ConfigError(key, f"local path does not exist: {uri}", "check the path or create it")


def positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}", "give a positive value")

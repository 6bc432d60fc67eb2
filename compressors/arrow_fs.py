"""pyarrow's S3 filesystem for the readers that scan Parquet lazily (HiCo tokens, the auditor's tables). It goes
through pyarrow's own S3 client with the standard AWS credential chain; the endpoint and region follow the build's
storage settings, else the AWS environment variables (as boto3 does)."""

from __future__ import annotations

import os
from typing import Optional


def s3_filesystem(endpoint_url: Optional[str] = None, region: Optional[str] = None, *,
                  connect_timeout_s: Optional[float] = None, request_timeout_s: Optional[float] = None,
                  max_attempts: Optional[int] = None):
    """A pyarrow.fs.S3FileSystem. `endpoint_url` (e.g. http://127.0.0.1:9000), else $AWS_ENDPOINT_URL: its scheme
    picks http or https (https when it has none); `region`, else $AWS_REGION, else $AWS_DEFAULT_REGION. The timeouts
    and attempts (storage.s3_*), when given, bound a hanging endpoint as they do for boto3; else pyarrow's defaults."""
    from pyarrow import fs

    kwargs = {}
    if connect_timeout_s is not None:
        kwargs["connect_timeout"] = connect_timeout_s
    if request_timeout_s is not None:
        kwargs["request_timeout"] = request_timeout_s
    if max_attempts is not None:
        kwargs["retry_strategy"] = fs.AwsStandardS3RetryStrategy(max_attempts=max_attempts)
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        kwargs["endpoint_override"] = host.rstrip("/") if sep else endpoint
        if sep:
            kwargs["scheme"] = scheme
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return fs.S3FileSystem(**kwargs)

"""List the inputs of every configured source: local directories and files, manifests, S3 prefixes, http(s) URLs.

A source yields rows of schemas.tables.CRAWL. Only metadata moves here; bytes are read later by the task that
needs them. The same URI listed twice (by two sources) is one input.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

from pipeline.io import fetch, storage
from schemas.errors import UsageError

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
URI_COLUMNS = ("url", "path")


class SourceError(UsageError, ValueError):
    """A source that cannot be listed (bad manifest, missing bucket): a config-level problem, not a reject."""

    label = "config error: sources"
    hint = "check the source URI, its credentials and the manifest's columns"


class NothingFound(UsageError, RuntimeError):
    """The sources hold no input (and crawl.allow_empty is off); the message says what was skipped."""

    label = None  # the message leads with `crawl: 0 inputs; ...`
    hint = "check the sources and crawl.extensions, or set crawl.allow_empty: true to build an empty corpus"


@dataclass(frozen=True)
class PathRules:
    """Where the local paths of a manifest may point: below the manifest's own folder or one of `allowed_roots`
    (symlinks resolved), anywhere when `anywhere` is set."""
    allowed_roots: tuple[str, ...] = ()
    anywhere: bool = False

    def check(self, path: str, manifest: str, n: int, ref: str) -> None:
        if self.anywhere:
            return
        real = os.path.realpath(path)
        roots = [os.path.dirname(os.path.realpath(manifest))] + [os.path.realpath(r) for r in self.allowed_roots]
        if any(real == r or real.startswith(os.path.join(r, "")) for r in roots):
            return
        raise SourceError(f"{manifest} record {n}: {ref!r} resolves to {real}, outside the manifest's folder "
                          f"{roots[0]} (add its folder to crawl.allowed_roots, or set "
                          f"crawl.allow_paths_outside_manifest: true)")


def describe_skipped(skipped: Counter) -> str:
    """`skipped 1 file by extension (.txt)`; '' when nothing was skipped."""
    total = sum(skipped.values())
    if not total:
        return ""
    kinds = ", ".join(f"{('.' + e) if e else '(no extension)'}{f' x{c}' if c > 1 else ''}"
                      for e, c in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"skipped {total} file{'s' if total != 1 else ''} by extension ({kinds})"


def _row(uri: str, source: str, metadata: dict | None = None, size: int | None = None) -> dict:
    return {
        "source_uri": storage.local_uri(uri),  # a name that is not UTF-8 is carried as an escaped file:// URI
        "source": storage.local_uri(source),
        "source_metadata": json.dumps(metadata or {}, sort_keys=True, default=str, ensure_ascii=False),
        "size_hint": size,
    }


@dataclass(frozen=True)
class Download:
    """How a manifest is fetched over http(s): the downloads' deadline, throughput floor and retries, and a size
    limit."""
    policy: fetch.HttpPolicy = fetch.HttpPolicy()
    max_bytes: int = 1 << 30


def _read_bytes(uri: str, download: Download) -> bytes:
    if storage.is_http(uri):
        try:
            with fetch.fetch(uri, download.max_bytes, download.policy) as got, open(got.path, "rb") as f:
                return f.read()
        except fetch.FetchError as e:
            raise SourceError(f"cannot read manifest: {e.message}") from None
    return storage.read_bytes(uri)


def _is_manifest(uri: str) -> bool:
    return storage.path_part(uri).lower().endswith(MANIFEST_SUFFIXES)


def _read_manifest_records(uri: str, download: Download) -> list[dict]:
    data = _read_bytes(uri, download)
    lower = storage.path_part(uri).lower()
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pylist()
    text = data.decode("utf-8-sig")
    if lower.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(text)))
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SourceError(f"{uri} line {n}: not valid JSON ({e})")
    return records


def _resolve(ref: str, manifest_uri: str) -> str:
    if "://" in ref:
        return ref
    if storage.is_http(manifest_uri):
        from urllib.parse import urljoin

        return urljoin(manifest_uri, ref)
    if storage.is_s3(manifest_uri):
        bucket, key = storage.split_s3(manifest_uri)
        segments = key.split("/")[:-1] if not ref.startswith("/") else []
        for seg in ref.lstrip("/").split("/"):
            if seg == "..":
                if not segments:
                    raise SourceError(f"{manifest_uri}: {ref!r} points outside bucket {bucket!r}")
                segments.pop()
            elif seg != ".":
                segments.append(seg)
        return f"s3://{bucket}/{'/'.join(segments)}"
    return os.path.normpath(os.path.join(os.path.dirname(manifest_uri), os.path.expanduser(ref)))


def list_manifest(uri: str, rules: PathRules = PathRules(), download: Download = Download()) -> Iterator[dict]:
    records = _read_manifest_records(uri, download)
    local = not storage.is_http(uri) and not storage.is_s3(uri)
    for n, rec in enumerate(records, 1):
        column = next((c for c in URI_COLUMNS if rec.get(c)), None)
        if column is None:
            raise SourceError(f"{uri} record {n} has no `url` or `path` value (each row needs one)")
        extra = {k: v for k, v in rec.items() if k not in URI_COLUMNS}
        ref = str(rec[column])
        resolved = _resolve(ref, uri)
        if local and "://" not in resolved:
            rules.check(resolved, uri, n, ref)
        yield _row(resolved, uri, extra)


def list_source(source: str, extensions: Iterable[str], skipped: Optional[Counter] = None,
                rules: PathRules = PathRules(), download: Download = Download()) -> Iterator[dict]:
    """Rows of one source; files left out by extension are counted in `skipped` (extension -> files)."""
    exts = {e.lower() for e in extensions}
    skipped = Counter() if skipped is None else skipped
    if _is_manifest(source) and (storage.is_http(source) or storage.is_s3(source)):
        yield from list_manifest(source, download=download)
        return
    if storage.is_http(source):
        yield _row(source, source)
        return
    if storage.is_s3(source):
        if storage.extension(source) in exts and storage.exists(source):
            yield _row(source, source, size=storage.size(source))
            return
        try:
            for uri, size in storage.list_files(source):
                if storage.extension(uri) in exts:
                    yield _row(uri, source, size=size)
                else:
                    skipped[storage.extension(uri)] += 1
        except Exception as e:
            if isinstance(e, (SourceError, storage.StorageUnavailable)):
                raise
            raise SourceError(f"cannot list {source}: {type(e).__name__}: {e}")
        return
    path = storage.normalize_local(source)
    if os.path.isdir(path):
        for found, size in storage.list_files(path):
            if storage.extension(found) in exts:
                yield _row(found, source, size=size)
            else:
                skipped[storage.extension(found)] += 1
    elif _is_manifest(path):
        yield from list_manifest(path, rules)
    elif os.path.isfile(path):
        yield _row(path, source, size=os.path.getsize(path))
    else:
        raise SourceError(f"{source}: no such file or directory")


def crawl(sources: Iterable[str], extensions: Iterable[str], skipped: Optional[Counter] = None,
          rules: PathRules = PathRules(), download: Download = Download()) -> list[dict]:
    """All inputs of all sources, one row per distinct URI, sorted by URI."""
    extensions = list(extensions)
    rows: dict[str, dict] = {}
    for source in sources:
        for row in list_source(source, extensions, skipped, rules, download):
            rows.setdefault(row["source_uri"], row)
    return [rows[k] for k in sorted(rows)]

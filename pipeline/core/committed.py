"""The one resume check of a stage that skips committed work: a unit is done when its record and every output it
lists exist and the record names the digest the unit would be written with now. Any other state (a missing file, an
older digest) means the unit is written again; the record is written last, so a crash leaves no record to trust."""

from __future__ import annotations

import json
from typing import Callable, Iterable

from pipeline.io import storage


def committed_record(record_uri: str, digest: str, outputs: Iterable[str] = (), *, key: str = "digest",
                     exists: Callable[[str], bool] = storage.exists) -> dict | None:
    """The record at `record_uri` when it and all `outputs` (checked with `exists`) are there and `record[key]` is
    `digest`; else None."""
    if not storage.exists(record_uri) or not all(exists(o) for o in outputs):
        return None
    record = json.loads(storage.read_bytes(record_uri))
    return record if record.get(key) == digest else None

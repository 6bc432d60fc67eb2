"""The content identity of a file: the sha256 of its bytes, as a lowercase hex string.

It lives in schemas because it is part of the contract, not a helper of one stage: the `sha256` column of the
manifest, the `sha256` of each shard in the wids index and shard records, and the `weights_sha256` column of every
token and annotation row are all this digest, and a reader checks files against them with it.
"""

from __future__ import annotations

import hashlib
import os

CHUNK_BYTES = 1 << 22


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a local file's bytes, read in chunks (never whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()

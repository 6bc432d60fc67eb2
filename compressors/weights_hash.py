"""Content hashes of model weights, computed once per machine.

Resume decisions (`hico`, `annotate`) and the `weights_sha256` column of every token and annotation row name the
weights by the sha256 of their bytes, so a fine-tuned checkpoint with the same file names and shapes is told apart.
Hashing a 15 GB checkpoint takes minutes, so each file's hash is cached under the cache folder
(``$LONGVID_HASH_CACHE``, else ``$XDG_CACHE_HOME/longvid/sha256``, else ``~/.cache/longvid/sha256``), keyed by the
file's resolved path and checked against its size and modification time: a changed file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from schemas import hashing

CACHE_ENV = "LONGVID_HASH_CACHE"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "longvid" / "sha256"


def _stamp(path: str) -> dict:
    st = os.stat(path)
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_temporary(real_path: str) -> bool:
    tmp = os.path.realpath(tempfile.gettempdir())
    return real_path.startswith(tmp + os.sep)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a local file's bytes, from the cache when the file's path, size and mtime are unchanged (files in
    the temporary folder, e.g. a demo model built for one run, are hashed without caching)."""
    path = os.fspath(path)
    stamp = _stamp(path)
    if _is_temporary(stamp["path"]):
        return hashing.file_sha256(path)
    entry = cache_dir() / (hashlib.sha256(stamp["path"].encode()).hexdigest() + ".json")
    try:
        cached = json.loads(entry.read_text())
        if {k: cached.get(k) for k in stamp} == stamp and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    digest = hashing.file_sha256(path)
    if _stamp(path) == stamp:  # not rewritten while we read it
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({**stamp, "sha256": digest}))
            os.replace(tmp, entry)
        except OSError:  # a read-only home only costs the next run a rehash
            pass
    return digest


def weight_files(directory: str | os.PathLike, suffixes: Iterable[str] = WEIGHT_SUFFIXES) -> list[str]:
    suffixes = tuple(suffixes)
    return sorted(n for n in os.listdir(directory)
                  if n.endswith(suffixes) and os.path.isfile(os.path.join(directory, n)))


def directory_sha256(directory: str | os.PathLike, suffixes: Iterable[str] = WEIGHT_SUFFIXES) -> str:
    """sha256 over a checkpoint directory's weight files: ``name NUL file_sha256 NL`` for each, sorted by name."""
    names = weight_files(directory, suffixes)
    if not names:
        raise FileNotFoundError(f"no weight files ({', '.join(suffixes)}) in {directory}")
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}\0{file_sha256(os.path.join(directory, name))}\n".encode())
    return digest.hexdigest()


__all__ = ["CACHE_ENV", "WEIGHT_SUFFIXES", "cache_dir", "directory_sha256", "file_sha256", "weight_files"]

"""HiCo clip compression: the UMT video encoder, exact ToMe token merging, and the token store trainers read.

Public API for trainers: `merge_clip_tokens`, `HicoReader`, and the encoder/preprocessing used to compute the
same tokens online.

The names are resolved on first use: importing a light submodule (`compressors.arrow_fs`, `compressors.dtypes`)
must not import torch, which costs a driver that never merges tokens about 0.5 GB and seconds of start-up.
"""

from __future__ import annotations

import importlib

_PUBLIC = {"merge_clip_tokens": "compressors.token_merging", "HicoReader": "compressors.token_store",
           "VideoTokens": "compressors.token_store"}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'compressors' has no attribute {name!r}")

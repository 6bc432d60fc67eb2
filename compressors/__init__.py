"""HiCo clip compression: the UMT video encoder, exact ToMe token merging, and the token store trainers read.

Public API for trainers: `merge_clip_tokens`, `HicoReader`, and the encoder/preprocessing used to compute the
same tokens online.
"""

import importlib

__all__ = ["merge_clip_tokens", "HicoReader", "VideoTokens"]
_HOMES = {"merge_clip_tokens": "compressors.token_merging", "HicoReader": "compressors.token_store",
          "VideoTokens": "compressors.token_store"}


def __getattr__(name: str):
    # Imported on first use: `compressors.arrow_fs` (pyarrow's S3 filesystem, used by drivers that never touch a
    # token) must not pull torch in through this package (~450 MiB per process).
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'compressors' has no attribute {name!r}")

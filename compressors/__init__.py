"""HiCo clip compression: the UMT video encoder, exact ToMe token merging, and the token store trainers read.

Public API for trainers: `merge_clip_tokens`, `HicoReader`, and the encoder/preprocessing used to compute the
same tokens online.
"""

from compressors.token_merging import merge_clip_tokens
from compressors.token_store import HicoReader, VideoTokens

__all__ = ["merge_clip_tokens", "HicoReader", "VideoTokens"]

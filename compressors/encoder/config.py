"""The encoder's architecture as data: :class:`VideoEncoderConfig` (presets, (de)serialisation, validation, derived
sizes) and :func:`encoder_id`, the short architecture id recorded beside the weights' hash."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

POS_EMBED_KINDS = ("sincos", "learned", "sincos_1d")
# The UMT-L checkpoints were pretrained on clips of 4 frames at 224 px: their 1-D sin-cos table (pos_embed
# "sincos_1d") is defined on that grid and interpolated from it (bicubic per frame, linear in time).
UMT_PRETRAIN_FRAMES = 4
UMT_PRETRAIN_IMG_SIZE = 224


@dataclass
class VideoEncoderConfig:
    img_size: int = 224  # the square size the positional embedding was trained at
    patch_size: int = 16
    width: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    tubelet_size: int = 1
    num_frames: int = 4  # frames per clip
    pos_embed: str = "sincos"  # "sincos" | "learned" | "sincos_1d"
    qkv_bias: bool | str = True  # True | False | "qv" (separate q/v biases, none for k: UMT checkpoints)
    feature_block: int = -2  # Python index of the block whose output is taken; later blocks are not built
    layer_norm_eps: float = 1e-6
    final_norm_eps: float | None = None  # None = layer_norm_eps (UMT's vision_layernorm uses 1e-12)

    def __post_init__(self) -> None:
        self.validate()

    # -- presets ------------------------------------------------------------------------------------------------
    @classmethod
    def umt_large(cls, **overrides: Any) -> "VideoEncoderConfig":
        """UMT-L/16: width 1024, 24 blocks, 16 heads, tubelet 1, features of the second-to-last block."""
        return cls(**overrides)

    @classmethod
    def umt_large_videochat_flash(cls, **overrides: Any) -> "VideoEncoderConfig":
        """UMT-L/16 with the parameter layout of VideoChat-Flash's UMT vision tower: a 1-D sinusoid table over all
        clip positions, q/v-only attention biases and a final norm with eps 1e-12 (key ``vision_layernorm``)."""
        base = dict(pos_embed="sincos_1d", qkv_bias="qv", final_norm_eps=1e-12)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def tiny(cls, **overrides: Any) -> "VideoEncoderConfig":
        """A tiny encoder for tests and demos (width 64, 2 blocks, 4 heads)."""
        base = dict(width=64, depth=2, num_heads=4)
        base.update(overrides)
        return cls(**base)

    # -- (de)serialisation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VideoEncoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown video encoder config key(s): {', '.join(unknown)}; "
                             f"valid keys: {', '.join(sorted(known))}")
        return cls(**dict(data))

    # -- validation and derived sizes ---------------------------------------------------------------------------
    def validate(self) -> None:
        def bad(key: str, why: str) -> None:
            raise ValueError(f"video encoder config: {key}={getattr(self, key)!r} {why}")

        for key in ("img_size", "patch_size", "width", "depth", "num_heads", "tubelet_size", "num_frames"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(key, "must be a positive integer")
        if self.img_size % self.patch_size:
            bad("img_size", f"must be a multiple of patch_size ({self.patch_size})")
        if self.width % self.num_heads:
            bad("width", f"must be a multiple of num_heads ({self.num_heads})")
        if self.num_frames % self.tubelet_size:
            bad("num_frames", f"must be a multiple of tubelet_size ({self.tubelet_size})")
        if self.pos_embed not in POS_EMBED_KINDS:
            bad("pos_embed", f"must be one of {', '.join(POS_EMBED_KINDS)}")
        if self.pos_embed == "sincos" and self.width % 16:
            bad("width", "must be a multiple of 16 for pos_embed='sincos'")
        if self.pos_embed == "sincos_1d" and self.width % 2:
            bad("width", "must be even for pos_embed='sincos_1d'")
        if self.qkv_bias not in (True, False, "qv"):
            bad("qkv_bias", "must be true, false or 'qv'")
        if isinstance(self.feature_block, bool) or not isinstance(self.feature_block, int) \
                or not -self.depth <= self.feature_block < self.depth:
            bad("feature_block", f"must be a block index in [-{self.depth}, {self.depth})")
        if not self.mlp_ratio > 0:
            bad("mlp_ratio", "must be > 0")

    @property
    def grid_size(self) -> int:
        """Patches per side at ``img_size`` (the positional embedding's training grid)."""
        return self.img_size // self.patch_size

    @property
    def temporal_size(self) -> int:
        return self.num_frames // self.tubelet_size

    @property
    def feature_block_index(self) -> int:
        """``feature_block`` as a non-negative index."""
        return self.feature_block % self.depth

    @property
    def num_blocks_run(self) -> int:
        return self.feature_block_index + 1

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio)

    def tokens_per_frame(self, size: int | None = None) -> int:
        size = self.img_size if size is None else size
        return (size // self.patch_size) ** 2

    def tokens_per_clip(self, size: int | None = None, num_frames: int | None = None) -> int:
        num_frames = self.num_frames if num_frames is None else num_frames
        return num_frames // self.tubelet_size * self.tokens_per_frame(size)


def encoder_id(config: VideoEncoderConfig) -> str:
    """A short architecture id, e.g. ``umt-vit-w1024-d24-p16-t1``; non-default positional embedding, bias layout or
    feature block are appended (``-pos-learned``, ``-qkvb-qv``, ``-fb21``). The weights are identified separately by
    :attr:`LoadReport.weights_sha256`."""
    parts = [f"umt-vit-w{config.width}-d{config.depth}-p{config.patch_size}-t{config.tubelet_size}"]
    if config.pos_embed != "sincos":
        parts.append(f"pos-{config.pos_embed}")
    if config.qkv_bias is not True:
        parts.append(f"qkvb-{str(config.qkv_bias).lower()}")
    if config.feature_block_index != (-2 % config.depth):
        parts.append(f"fb{config.feature_block_index}")
    return "-".join(parts)

"""UMT-L style video ViT for HiCo clip features, in plain PyTorch (no timm, no flash-attn).

The encoder turns a clip of ``T`` frames (``[B, T, 3, H, W]``, ImageNet-normalised, see
:mod:`compressors.preprocess`) into ``T/tubelet * (H/16) * (W/16)`` tokens of ``width`` channels: 784 tokens per
4-frame clip at 224 px, 3136 at 448 px. Token order is time-major (all patches of frame 0, then frame 1, ...), and
row-major within a frame. There is no CLS token. The features are those of block ``feature_block`` (a Python index,
``-2`` = second-to-last, as in VideoChat-Flash) after the final LayerNorm; blocks after it are neither built nor run.

Architecture: ``Conv3d`` patch embedding (kernel = stride = ``(tubelet, patch, patch)``) + positional embedding,
then pre-norm transformer blocks (LayerNorm -> multi-head self-attention over all ``T*P`` tokens of the clip with
``scaled_dot_product_attention`` -> residual; LayerNorm -> MLP with exact GELU -> residual), then ``norm``.

Positional embedding (``VideoEncoderConfig.pos_embed``), defined on the training grid
``(num_frames/tubelet, img_size/patch, img_size/patch)``:

* ``"sincos"`` -- fixed, separable 3-D sin-cos: the first 3/4 of the channels carry a 2-D (row, column) sin-cos
  code of the patch position, the last 1/4 a 1-D sin-cos code of the frame index. Not stored in the state dict.
* ``"learned"`` -- ``pos_embed_spatial [1, g*g, width]`` + ``pos_embed_temporal [1, T0, width]`` (added).
* ``"sincos_1d"`` -- fixed 1-D sinusoid table over all ``T0*g*g`` positions (VideoMAE / UMT
  ``get_sinusoid_encoding_table``, interleaved sin/cos), the layout of the released UMT-L checkpoints.

At another input resolution the spatial grid of the table is resized per frame (bicubic, ``align_corners=False``);
for another number of frames the temporal axis is resized linearly; a single frame gets the first frame's positions.
Resizing runs in float32. ``"sincos_1d"`` is always defined on UMT's pretraining grid (4 frames, 224 px) and resized
from there, as VideoChat-Flash's tower does for its 448 px model, whatever ``img_size`` the config names.

State-dict keys (what a checkpoint must provide, after prefix stripping)::

    patch_embed.proj.weight            [width, 3, tubelet, patch, patch]
    patch_embed.proj.bias              [width]
    pos_embed_spatial                  [1, (img_size/patch)^2, width]      (pos_embed="learned" only)
    pos_embed_temporal                 [1, num_frames/tubelet, width]      (pos_embed="learned" only)
    blocks.{i}.norm1.weight / .bias    [width]
    blocks.{i}.attn.qkv.weight         [3*width, width]
    blocks.{i}.attn.qkv.bias           [3*width]                           (qkv_bias=True)
    blocks.{i}.attn.q_bias / .v_bias   [width]                             (qkv_bias="qv": UMT style, k has no bias)
    blocks.{i}.attn.proj.weight / .bias
    blocks.{i}.norm2.weight / .bias
    blocks.{i}.mlp.fc1.weight / .bias  [mlp_ratio*width, width]
    blocks.{i}.mlp.fc2.weight / .bias  [width, mlp_ratio*width]
    norm.weight / norm.bias            [width]   (``vision_layernorm.*`` is accepted as an alias)

for ``i`` in ``0 .. num_blocks_run-1``. Keys of deeper blocks (``i < depth``) are reported as *unused*.

:func:`load_encoder` builds the model and loads a local ``.safetensors`` or torch ``.pt/.pth`` checkpoint; it
refuses to hand out random weights unless ``allow_random_init`` is set (tests and demos only), and its
:class:`LoadReport` records whether the weights are random and the checkpoint's sha256.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compressors.weights_hash import file_sha256
from schemas.errors import UsageError

log = logging.getLogger(__name__)

POS_EMBED_KINDS = ("sincos", "learned", "sincos_1d")
DEFAULT_KEY_PREFIXES = ()  # no prefixes given: recognise the checkpoint layout (CHECKPOINT_LAYOUTS)
# Where the UMT-L vision encoder sits in the checkpoints people have, most specific first: (layout name, key prefix).
CHECKPOINT_LAYOUTS = (
    ("llava_model", "model.vision_tower.vision_tower.encoder."),  # a full VideoChat-Flash (LLaVA) model
    ("llava_inner_model", "vision_tower.vision_tower.encoder."),  # that model's inner `model` saved alone
    ("vision_tower", "vision_tower.encoder."),  # the UMT vision tower module's own state dict
    ("umt_encoder", "encoder."),  # the standalone UMT-L encoder (UMT-L_f4_vision.pt)
    ("prefixed", "vision_tower."),  # this encoder's key names under `vision_tower.`
    ("bare", ""),  # this encoder's own key names
)
_ENCODER_KEY_STARTS = ("patch_embed.", "blocks.")  # keys only a vision encoder has
_WRAPPER_PREFIX = "module."  # DistributedDataParallel's wrapper, stripped before the layout is recognised
# Checkpoint key prefix -> our key prefix, applied after prefix stripping (UMT names its final norm this way).
KEY_ALIASES = {"vision_layernorm.": "norm."}
_WRAPPER_KEYS = ("model", "state_dict", "module")
# The UMT-L checkpoints were pretrained on clips of 4 frames at 224 px: their 1-D sin-cos table (pos_embed
# "sincos_1d") is defined on that grid and interpolated from it (bicubic per frame, linear in time).
UMT_PRETRAIN_FRAMES = 4
UMT_PRETRAIN_IMG_SIZE = 224


class EncoderWeightsError(UsageError, RuntimeError):
    """The encoder cannot get real weights (no checkpoint, unreadable file, missing or mis-shaped keys)."""


# --------------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# Positional tables (float64 maths, float32 result, always built on the CPU)
# --------------------------------------------------------------------------------------------------------------------


def _sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """MAE-style 1-D sin-cos code: ``[len(positions), dim]`` = [sin(p * w_k), cos(p * w_k)], w_k = 10000^(-k/(dim/2))."""
    half = dim // 2
    omega = 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float64, device="cpu") / half))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_separable_table(width: int, temporal: int, grid: int) -> Tensor:
    """``[temporal, grid, grid, width]``: 2-D (row, col) code in the first 3/4 of the channels, frame code in the
    last 1/4."""
    dim_s, dim_t = width // 4 * 3, width // 4
    rows, cols = torch.meshgrid(torch.arange(grid, device="cpu"), torch.arange(grid, device="cpu"), indexing="ij")
    spatial = torch.cat([_sincos_1d(dim_s // 2, rows.reshape(-1)), _sincos_1d(dim_s // 2, cols.reshape(-1))], dim=1)
    frames = _sincos_1d(dim_t, torch.arange(temporal, device="cpu"))
    table = torch.cat([spatial[None].expand(temporal, -1, -1), frames[:, None].expand(-1, grid * grid, -1)], dim=2)
    return table.reshape(temporal, grid, grid, width).to(torch.float32)


def sincos_joint_table(width: int, temporal: int, grid: int) -> Tensor:
    """``[temporal, grid, grid, width]``: the VideoMAE / UMT 1-D sinusoid table over the flattened (t, row, col)
    position, channel ``j`` = sin (even j) or cos (odd j) of ``pos / 10000^(2*(j//2)/width)``."""
    n = temporal * grid * grid
    pos = torch.arange(n, dtype=torch.float64, device="cpu")[:, None]
    j = torch.arange(width, dtype=torch.float64, device="cpu")
    angles = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / width)[None, :]
    table = angles.clone()
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.reshape(temporal, grid, grid, width).to(torch.float32)


def resize_pos_table(table: Tensor, temporal: int, grid_h: int, grid_w: int) -> Tensor:
    """Resize a ``[T0, g, g, C]`` table to ``[temporal * grid_h * grid_w, C]`` (float32): spatial bicubic per frame
    (``align_corners=False``), then temporal linear."""
    t0, gh0, gw0, width = table.shape
    table = table.to(torch.float32)
    if (gh0, gw0) != (grid_h, grid_w):
        spatial = F.interpolate(table.permute(0, 3, 1, 2), size=(grid_h, grid_w), mode="bicubic",
                                align_corners=False)
        table = spatial.permute(0, 2, 3, 1)
    if t0 != temporal:
        seq = table.permute(1, 2, 3, 0).reshape(grid_h * grid_w, width, t0)
        seq = F.interpolate(seq, size=temporal, mode="linear", align_corners=False)
        table = seq.reshape(grid_h, grid_w, width, temporal).permute(3, 0, 1, 2)
    return table.reshape(temporal * grid_h * grid_w, width)


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    def __init__(self, config: VideoEncoderConfig):
        super().__init__()
        kernel = (config.tubelet_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(3, config.width, kernel_size=kernel, stride=kernel)

    def forward(self, clips: Tensor) -> Tensor:
        # [B, T, 3, H, W] -> [B, 3, T, H, W] -> [B, C, T', H', W'] -> [B, T'*H'*W', C] (time-major, row-major)
        x = self.proj(clips.transpose(1, 2))
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, config: VideoEncoderConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qv_bias = config.qkv_bias == "qv"
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=config.qkv_bias is True)
        if self.qv_bias:
            self.q_bias = nn.Parameter(torch.zeros(config.width))
            self.v_bias = nn.Parameter(torch.zeros(config.width))
        self.proj = nn.Linear(config.width, config.width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        if self.qv_bias:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            qkv = F.linear(x, self.qkv.weight, bias)
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, head_dim], scale = head_dim^-0.5
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, config: VideoEncoderConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.width, config.mlp_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.mlp_hidden, config.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, config: VideoEncoderConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = Mlp(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UMTVideoEncoder(nn.Module):
    """``forward(clips [B, T, 3, H, W]) -> [B, T/tubelet * (H/patch) * (W/patch), width]``. See the module
    docstring for the architecture, token order and state-dict keys."""

    def __init__(self, config: VideoEncoderConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        if config.pos_embed == "learned":
            self.pos_embed_spatial = nn.Parameter(torch.zeros(1, config.grid_size ** 2, config.width))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, config.temporal_size, config.width))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_blocks_run))
        final_eps = config.layer_norm_eps if config.final_norm_eps is None else config.final_norm_eps
        self.norm = nn.LayerNorm(config.width, eps=final_eps)
        # Fixed tables are plain tensors (not buffers): they never enter the state dict, stay float32 whatever the
        # model dtype, and are built lazily per device (so a model built on 'meta' needs nothing re-initialised).
        self._pos_cache: dict[tuple, Tensor] = {}

    # -- positional embedding -----------------------------------------------------------------------------------
    def base_pos_table(self) -> Tensor:
        """The positional table on the training grid, ``[T0, g, g, width]`` (float32 for fixed kinds; for learned
        it is differentiable and in the parameters' dtype)."""
        cfg = self.config
        t0, g = cfg.temporal_size, cfg.grid_size
        if cfg.pos_embed == "learned":
            return (self.pos_embed_spatial.reshape(1, g, g, cfg.width)
                    + self.pos_embed_temporal.reshape(t0, 1, 1, cfg.width))
        if cfg.pos_embed == "sincos":
            return sincos_separable_table(cfg.width, t0, g)
        # UMT's table is always the pretraining one (4 frames of 224 px), resized to other grids and frame counts
        # like the VideoChat-Flash tower does, whatever img_size / num_frames the config gives
        return sincos_joint_table(cfg.width, UMT_PRETRAIN_FRAMES // cfg.tubelet_size,
                                  UMT_PRETRAIN_IMG_SIZE // cfg.patch_size)

    def pos_embed_for(self, temporal: int, grid_h: int, grid_w: int, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> Tensor:
        """``[temporal * grid_h * grid_w, width]`` positional embedding for the given token grid.

        A single frame (``temporal == 1``) gets the first frame's positions, as the reference tower's image path
        (``use_image``) does, not a temporal interpolation."""
        device = torch.device(device) if device is not None else self.patch_embed.proj.weight.device
        dtype = dtype or self.patch_embed.proj.weight.dtype
        if self.config.pos_embed == "learned":
            return self._resized_table(temporal, grid_h, grid_w).to(device=device, dtype=dtype)
        key = (temporal, grid_h, grid_w, str(device), dtype)
        table = self._pos_cache.get(key)
        if table is None:
            table = self._resized_table(temporal, grid_h, grid_w).to(device=device, dtype=dtype)
            self._pos_cache[key] = table
        return table

    def _resized_table(self, temporal: int, grid_h: int, grid_w: int) -> Tensor:
        base = self.base_pos_table()
        if temporal == 1:
            base = base[:1]
        return resize_pos_table(base, temporal, grid_h, grid_w)

    # -- forward ------------------------------------------------------------------------------------------------
    def _check_input(self, clips: Tensor) -> tuple[int, int, int]:
        cfg = self.config
        if clips.ndim != 5 or clips.shape[2] != 3:
            raise ValueError(f"expected clips of shape [B, T, 3, H, W], got {tuple(clips.shape)}")
        _, t, _, h, w = clips.shape
        if t % cfg.tubelet_size or h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"clip shape {tuple(clips.shape)}: T must be a multiple of tubelet_size "
                             f"({cfg.tubelet_size}) and H, W multiples of patch_size ({cfg.patch_size})")
        return t // cfg.tubelet_size, h // cfg.patch_size, w // cfg.patch_size

    def embed(self, clips: Tensor) -> Tensor:
        """Patch embedding + positional embedding: ``[B, N, width]`` tokens entering block 0."""
        temporal, gh, gw = self._check_input(clips)
        weight = self.patch_embed.proj.weight
        x = self.patch_embed(clips.to(dtype=weight.dtype))
        return x + self.pos_embed_for(temporal, gh, gw, device=x.device, dtype=x.dtype)

    def forward(self, clips: Tensor) -> Tensor:
        x = self.embed(clips)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def init_random_weights(model: UMTVideoEncoder, seed: int = 0) -> None:
    """Deterministic random init (normal, std 0.02, clipped at 2 std, for projections and learned positions;
    LayerNorm = identity; zero biases). Uses a CPU generator, so call it on a CPU model."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            if isinstance(owner, nn.LayerNorm):
                param.fill_(1.0 if leaf == "weight" else 0.0)
            elif leaf in ("bias", "q_bias", "v_bias"):
                param.zero_()
            else:
                param.normal_(0.0, 0.02, generator=gen).clamp_(-0.04, 0.04)


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    missing: list[str]
    unexpected: list[str]
    weights_sha256: str | None
    random_init: bool
    checkpoint: str | None
    unused: list[str] = field(default_factory=list)  # keys of blocks after feature_block (not built, not run)
    layout: str | None = None  # which CHECKPOINT_LAYOUTS entry (or which given prefixes) the weights came from

    def to_dict(self) -> dict:
        return asdict(self)


def _as_prefixes(key_prefix: str | Sequence[str] | None) -> tuple[str, ...]:
    if key_prefix is None:
        return ()
    if isinstance(key_prefix, str):
        return (key_prefix,) if key_prefix else ()
    return tuple(p for p in key_prefix if p)


def normalize_key(key: str, prefixes: Sequence[str]) -> str:
    """Strip any of ``prefixes`` from the front of ``key`` repeatedly, then apply :data:`KEY_ALIASES`."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix) and len(key) > len(prefix):
                key = key[len(prefix):]
                changed = True
    return _alias(key)


def detect_layout(keys: Iterable[str]) -> tuple[str, str]:
    """(layout name, key prefix) of the first :data:`CHECKPOINT_LAYOUTS` entry whose prefix holds encoder keys."""
    keys = list(keys)
    for name, prefix in CHECKPOINT_LAYOUTS:
        starts = tuple(prefix + s for s in _ENCODER_KEY_STARTS)
        if any(k.startswith(starts) for k in keys):
            return name, prefix
    known = ", ".join(f"{name} ({prefix}blocks.*)" for name, prefix in CHECKPOINT_LAYOUTS)
    raise EncoderWeightsError(f"no vision encoder keys found (first keys: {_first(keys)}); known layouts: {known}. "
                              f"Give hico.encoder.key_prefixes for another layout")


def _alias(key: str) -> str:
    for old, new in KEY_ALIASES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _check_norm_source(raw: str, key: str) -> None:
    """Refuse to take a language model's final norm (``model.norm.*``) for the vision encoder's ``norm.*``."""
    if not key.startswith("norm."):
        return
    head = raw[:len(raw) - len(key)]
    if "vision_layernorm" in raw or head == "" or head.endswith("encoder."):
        return
    raise EncoderWeightsError(f"checkpoint key {raw!r} would load as the vision encoder's final norm {key!r}, but "
                              f"it is not an encoder key (a language model's final norm?). Leave "
                              f"hico.encoder.key_prefixes empty to recognise the layout, or give the encoder's own "
                              f"prefix")


def _unwrap(obj: Any) -> Mapping[str, Any]:
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None or any(isinstance(v, Tensor) for v in obj.values()):
            return obj
        obj = inner
    raise EncoderWeightsError(f"checkpoint does not hold a state dict (found {type(obj).__name__})")


class _Checkpoint:
    """Keys of a checkpoint plus lazy tensor access (safetensors is read per tensor, never whole)."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = None
        self._tensors: Mapping[str, Tensor] | None = None
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                self._handle = safe_open(str(path), framework="pt", device="cpu")
                self.keys = list(self._handle.keys())
            else:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
                self._tensors = {k: v for k, v in _unwrap(state).items() if isinstance(v, Tensor)}
                self.keys = list(self._tensors)
        except EncoderWeightsError:
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure is a weights error with the path in it
            raise EncoderWeightsError(
                f"cannot read encoder checkpoint {path}: {type(exc).__name__}: {exc}. Expected a .safetensors file "
                f"or a torch .pt/.pth state dict loadable with weights_only=True") from exc

    def shape(self, key: str) -> tuple[int, ...]:
        if self._handle is not None:
            return tuple(self._handle.get_slice(key).get_shape())
        return tuple(self._tensors[key].shape)

    def tensor(self, key: str) -> Tensor:
        if self._handle is not None:
            return self._handle.get_tensor(key)
        return self._tensors[key]


_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


class KeyCollision(UsageError, ValueError):
    """Two checkpoint keys name the same model weight after prefix stripping."""

    def __init__(self, first: str, second: str, key: str):
        self.first, self.second, self.key = first, second, key
        super().__init__(f"keys {first!r} and {second!r} both map to {key!r}")


@dataclass
class KeyMatch:
    """Checkpoint keys sorted against an encoder's state dict (see :func:`match_checkpoint_keys`)."""

    loaded: dict[str, Tensor] = field(default_factory=dict)  # model key -> tensor
    mismatched: list[tuple[str, str, list, list]] = field(default_factory=list)  # (raw, key, ckpt shape, model shape)
    unexpected: list[tuple[str, str]] = field(default_factory=list)  # (raw, key)
    unused: list[str] = field(default_factory=list)  # keys of blocks after feature_block


def match_checkpoint_keys(raw_keys: Iterable[str], to_key, shape_of, tensor_of, expected: Mapping[str, Tensor],
                          config: VideoEncoderConfig) -> KeyMatch:
    """Map checkpoint keys (`to_key`: raw -> model key) onto `expected`; loads tensors whose shapes fit.

    Raises KeyCollision when two raw keys map to one model key. Used by every loader of encoder weights.
    """
    match = KeyMatch()
    sources: dict[str, str] = {}
    for raw in raw_keys:
        key = to_key(raw)
        if key in sources:
            raise KeyCollision(sources[key], raw, key)
        sources[key] = raw
        if key in expected:
            shape = tuple(shape_of(raw))
            if shape != tuple(expected[key].shape):
                match.mismatched.append((raw, key, list(shape), list(expected[key].shape)))
            else:
                match.loaded[key] = tensor_of(raw)
            continue
        block = _BLOCK_KEY.match(key)
        if block and config.num_blocks_run <= int(block.group(1)) < config.depth:
            match.unused.append(key)
        else:
            match.unexpected.append((raw, key))
    return match


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return resolved


def _first(names: Iterable[str], n: int = 5) -> str:
    names = list(names)
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def load_encoder(checkpoint: str | os.PathLike | None, config: VideoEncoderConfig,
                 key_prefix: str | Sequence[str] | None = DEFAULT_KEY_PREFIXES, allow_random_init: bool = False,
                 device: torch.device | str = "cpu", dtype: torch.dtype | str = torch.float32,
                 seed: int = 0) -> tuple[UMTVideoEncoder, LoadReport]:
    """Build a :class:`UMTVideoEncoder` for ``config`` and load ``checkpoint`` into it.

    ``checkpoint``: a local ``.safetensors`` file, or a torch ``.pt/.pth`` file holding a state dict or a dict with a
    ``model`` / ``state_dict`` / ``module`` entry (loaded with ``weights_only=True``). With no ``key_prefix`` (the
    default) the layout is recognised (:data:`CHECKPOINT_LAYOUTS`: a full VideoChat-Flash model, the vision tower's
    own state dict, the standalone UMT-L encoder, or bare keys; a ``module.`` wrapper is dropped first), only keys
    under the tower's prefix are read, and ``report.layout`` names the layout. Given prefixes are stripped from the
    front of each key, repeatedly (``vision_tower.encoder.blocks.0...`` -> ``blocks.0...``); a key that would
    become the final ``norm`` without being an encoder key (e.g. an LLM's ``model.norm``) is refused. Keys of blocks
    after ``feature_block`` go to ``report.unused``; keys the model does not know go to ``report.unexpected``
    (logged, not fatal). A tensor whose shape disagrees with the model is always an error.

    Without a checkpoint, or with missing keys, this raises :class:`EncoderWeightsError` unless
    ``allow_random_init`` is true, in which case the model gets a seeded random init (``seed``) under whatever the
    checkpoint provides and ``report.random_init`` is True. The model comes back in eval mode, with
    ``requires_grad=False``, on ``device`` in ``dtype``.
    """
    dtype = _resolve_dtype(dtype)
    prefixes = _as_prefixes(key_prefix)
    layout = None
    with torch.device("meta"):
        model = UMTVideoEncoder(config)
    model = model.to_empty(device="cpu")  # assemble on the CPU (deterministic init), then move once
    expected = model.state_dict()

    missing: list[str] = list(expected)
    unexpected: list[str] = []
    unused: list[str] = []
    sha = None
    ckpt_str = None
    loaded: dict[str, Tensor] = {}

    if checkpoint is not None:
        path = Path(checkpoint)
        ckpt_str = str(checkpoint)
        if not path.is_file():
            raise EncoderWeightsError(f"encoder checkpoint not found: {path}")
        ckpt = _Checkpoint(path)
        sha = file_sha256(path)
        if prefixes:
            raw_keys, layout = ckpt.keys, f"prefixes {list(prefixes)}"

            def to_key(raw: str) -> str:
                key = normalize_key(raw, prefixes)
                _check_norm_source(raw, key)
                return key
        else:
            unwrapped = {k[len(_WRAPPER_PREFIX):] if k.startswith(_WRAPPER_PREFIX) else k: k for k in ckpt.keys}
            layout, tower = detect_layout(unwrapped)
            raw_keys = [raw for k, raw in unwrapped.items() if k.startswith(tower)]  # nothing outside the tower
            strip = {raw: k[len(tower):] for k, raw in unwrapped.items()}

            def to_key(raw: str) -> str:
                return _alias(strip[raw])
            log.info("encoder checkpoint %s: layout %s (keys under %r)", path, layout, tower)
        try:
            match = match_checkpoint_keys(raw_keys, to_key, ckpt.shape, ckpt.tensor, expected, config)
        except KeyCollision as e:
            raise EncoderWeightsError(
                f"encoder checkpoint {path}: keys {e.first!r} and {e.second!r} both map to {e.key!r} after "
                f"stripping prefixes {list(prefixes)}; pass a narrower key_prefix")
        loaded, unused = match.loaded, match.unused
        unexpected = [key for _, key in match.unexpected]
        mismatched = [f"{key}: checkpoint {shape} vs model {want}" for _, key, shape, want in match.mismatched]
        if mismatched:
            raise EncoderWeightsError(
                f"encoder checkpoint {path} does not fit the encoder config ({encoder_id(config)}, "
                f"img_size={config.img_size}, num_frames={config.num_frames}): {len(mismatched)} shape mismatch(es): "
                f"{_first(mismatched, 3)}")
        missing = [k for k in expected if k not in loaded]
        if unexpected:
            log.warning("encoder checkpoint %s: %d unexpected key(s) ignored: %s", path, len(unexpected),
                        _first(unexpected))

    random_init = bool(missing)
    if random_init and not allow_random_init:
        if checkpoint is None:
            raise EncoderWeightsError(
                "no encoder checkpoint given: the video encoder would run with random weights. Point the config at "
                "a local .safetensors/.pt checkpoint, or (tests and demos only) set `allow_random_init: true`")
        raise EncoderWeightsError(
            f"encoder checkpoint {checkpoint} is missing {len(missing)} of {len(expected)} weight(s) the model "
            f"needs: {_first(missing)} (checkpoint layout: {layout}). Check the checkpoint, key_prefix and "
            f"encoder config, or (tests and demos only) set `allow_random_init: true`")
    if random_init:
        init_random_weights(model, seed)
        log.warning("video encoder %s runs with RANDOM weights (seed %d, %d missing key(s)); allow_random_init is "
                    "set - outputs are meaningless beyond tests and demos", encoder_id(config), seed, len(missing))
    if loaded:
        result = model.load_state_dict(loaded, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model, LoadReport(missing=missing, unexpected=unexpected, weights_sha256=sha, random_init=random_init,
                             checkpoint=ckpt_str, unused=unused, layout=layout)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "CHECKPOINT_LAYOUTS", "DEFAULT_KEY_PREFIXES", "EncoderWeightsError", "KEY_ALIASES", "LoadReport", "POS_EMBED_KINDS",
    "detect_layout",
    "UMTVideoEncoder", "VideoEncoderConfig", "count_parameters", "encoder_id", "file_sha256", "init_random_weights",
    "load_encoder", "normalize_key", "resize_pos_table", "sincos_joint_table", "sincos_separable_table",
]

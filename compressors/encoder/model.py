"""The UMT-L style video ViT (see the package docstring): positional tables, the transformer, and the seeded
random init used by tests and demos."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compressors.encoder.config import UMT_PRETRAIN_FRAMES, UMT_PRETRAIN_IMG_SIZE, VideoEncoderConfig


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

"""Frame preprocessing for the HiCo video encoder and grouping of sampled frames into clips.

``preprocess_frames``: uint8 RGB frames ``[T, H, W, 3]`` -> ``[T, 3, size, size]`` normalised pixels, ``size`` 224 or
448 depending on the curriculum stage. The default (``resize="pil"``) is bit-identical to VideoChat-Flash's
``UMTImageProcessor`` (what the released model sees): each uint8 frame is resized to ``size x size`` with
``PIL.Image.resize(BICUBIC)`` (no crop, aspect ratio not kept), rescaled as float64 ``x * (1/255)`` then cast to
float32, and normalised in float32 as ``(x - mean) / std`` with the ImageNet mean/std (UMT's) as float32. The
rescale and normalisation depend on the 8-bit value only, so they are applied through a per-channel 256-entry table
computed with exactly those operations; frames are resized on a few threads (PIL releases the GIL).

``resize="torch"`` resizes float pixels with torch's antialiased bicubic instead (on the target device, faster for
big batches) -- NOT identical: up to ~0.02 after normalisation, which flips ToMe matches of about a quarter of a
clip's tokens. ``quantize=True`` rounds its result to 8-bit levels (then at most 1 level from PIL's).

``plan_clips`` / ``clip_batch``: consecutive groups of ``clip_len`` sampled frames; a final short group is padded by
repeating its last frame and marked ``padded``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from schemas.config.sections import RESIZE_BACKENDS

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # UMTImageProcessor's image_mean
IMAGENET_STD = (0.229, 0.224, 0.225)  # UMTImageProcessor's image_std
RESCALE_FACTOR = 1 / 255
_PIL_THREADS = 4


@lru_cache(maxsize=None)
def _normalisation_table() -> np.ndarray:
    """[3, 256] float32: the processor's rescale + normalise of every 8-bit value, per channel."""
    levels = (np.arange(256, dtype=np.float64) * RESCALE_FACTOR).astype(np.float32)
    mean = np.array(IMAGENET_MEAN, dtype=np.float32)[:, None]
    std = np.array(IMAGENET_STD, dtype=np.float32)[:, None]
    return (levels[None, :] - mean) / std


def preprocess_frames(frames: np.ndarray | Tensor, size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32, *, resize: str = "pil", quantize: bool = False,
                      chunk_size: int = 32) -> Tensor:
    """uint8 ``[T, H, W, 3]`` RGB frames -> ``[T, 3, size, size]`` normalised pixels in ``dtype`` on ``device``.

    ``resize="pil"`` (default) is bit-identical to the model's image processor (float32 result, then cast to
    ``dtype``); ``"torch"`` is the faster, not identical path (``quantize`` rounds it to 8-bit levels). Works
    ``chunk_size`` frames at a time, so long full-HD videos never need a whole float copy.
    """
    if resize not in RESIZE_BACKENDS:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_BACKENDS)}, got {resize!r}")
    if isinstance(frames, np.ndarray):
        frames = np.ascontiguousarray(frames)
        frames = torch.from_numpy(frames if frames.flags.writeable else frames.copy())
    if not isinstance(frames, Tensor):
        raise TypeError(f"frames must be a numpy array or a torch tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3], got {tuple(frames.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    device = torch.device(device) if device is not None else frames.device
    n = frames.shape[0]
    out = torch.empty((n, 3, size, size), dtype=dtype, device=device)
    if resize == "pil":
        table = _normalisation_table()
        with ThreadPoolExecutor(_PIL_THREADS) as pool:
            for start in range(0, n, chunk_size):
                resized = _pil_resize(frames[start:start + chunk_size], size, pool)  # uint8 [n, size, size, 3]
                pixels = np.empty((len(resized), 3, size, size), dtype=np.float32)
                for c in range(3):
                    pixels[:, c] = table[c][resized[..., c]]
                out[start:start + len(resized)] = torch.from_numpy(pixels).to(device=device, dtype=dtype)
        return out
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    for start in range(0, n, chunk_size):
        chunk = frames[start:start + chunk_size].to(device)
        x = chunk.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)
        if quantize:
            x = x.mul_(255.0).round_().div_(255.0)
        out[start:start + chunk.shape[0]] = ((x - mean) / std).to(dtype)
    return out


def _pil_resize(chunk: Tensor, size: int, pool: ThreadPoolExecutor) -> np.ndarray:
    """uint8 [n, H, W, 3] -> uint8 numpy [n, size, size, 3], each frame through ``PIL.Image.resize(BICUBIC)``."""
    arrays = chunk.cpu().numpy()
    if arrays.shape[1:3] == (size, size):
        return arrays  # PIL returns an unchanged copy for the same size
    from PIL import Image

    return np.stack(list(pool.map(lambda a: np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC)),
                                  arrays)))


@dataclass
class ClipSpec:
    clip_index: int
    positions: list[int]  # positions into the sampled-frame list, length clip_len
    padded: bool  # True when the last positions repeat the clip's last real frame
    n_real: int | None = None  # number of real (not repeated) frames; filled in when not given

    def __post_init__(self) -> None:
        if self.n_real is None:
            self.n_real = len(self.positions)


def plan_clips(num_frames: int, clip_len: int = 4) -> list[ClipSpec]:
    """Consecutive groups of ``clip_len`` sampled frames; a final short group repeats its last position."""
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    specs = []
    for index, start in enumerate(range(0, num_frames, clip_len)):
        real = list(range(start, min(start + clip_len, num_frames)))
        pad = clip_len - len(real)
        specs.append(ClipSpec(clip_index=index, positions=real + [real[-1]] * pad, padded=pad > 0, n_real=len(real)))
    return specs


def clip_index_tensor(specs: Sequence[ClipSpec], device: torch.device | str | None = None) -> Tensor:
    """``[n_clips * clip_len]`` int64 frame positions of ``specs`` in order."""
    lengths = {len(s.positions) for s in specs}
    if len(lengths) > 1:
        raise ValueError(f"clips of different lengths: {sorted(lengths)}")
    return torch.tensor([p for s in specs for p in s.positions], dtype=torch.long, device=device)


def clip_batch(frames: Tensor, specs: Sequence[ClipSpec]) -> Tensor:
    """``frames [N, 3, S, S]`` -> ``[n_clips, clip_len, 3, S, S]`` gathered with one ``index_select``."""
    if not specs:
        return frames.new_empty((0, 0, *frames.shape[1:]))
    index = clip_index_tensor(specs, device=frames.device)
    if int(index.max()) >= frames.shape[0] or int(index.min()) < 0:
        raise IndexError(f"clip positions out of range for {frames.shape[0]} frames")
    clip_len = len(specs[0].positions)
    return frames.index_select(0, index).view(len(specs), clip_len, *frames.shape[1:])


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RESCALE_FACTOR", "ClipSpec", "clip_batch",
           "clip_index_tensor", "plan_clips", "preprocess_frames"]

"""Frames for one loader item: the clip variant of the sampling rule, and decoding from in-memory video bytes
(decord, as the training reader does; PyAV when decord cannot open the video)."""

from __future__ import annotations

import ctypes
import io
from typing import Sequence

import torch

from pipeline.frames import read_frames_pyav
from schemas.mixture import clip_window
from schemas.sampling import frame_indices


def clip_frame_indices(vlen: int, fps: float, start_s: float, end_s: float, min_frames: int, max_frames: int,
                       sample: str, clip_len: int = 4) -> tuple[list[int], float]:
    """(frame indices, clip duration) of a clipped sample as the training reader computes them: the window's own
    frame count (schemas.mixture.clip_window) goes through the sampling rule, shifted to the window's first frame."""
    first, clip_vlen, duration = clip_window(vlen, fps, start_s, end_s)
    if clip_vlen <= 0:
        raise ValueError(f"clip [{start_s}, {end_s}] s holds no frame of a {vlen / fps:.2f} s video")
    idx = frame_indices(clip_vlen, fps, min_frames, max_frames, sample, clip_len)
    return [first + i for i in idx], duration


def decode_frames(data: bytes, indices: Sequence[int], threads: int = 1, reader: str = "decord",
                  shared: bool = False):
    """RGB frames at `indices` (repeats allowed) of the video in `data`, uint8 [T, H, W, 3]: a numpy array, or with
    `shared` a torch tensor in shared memory, which a DataLoader worker hands to the main process without copying."""
    if reader != "pyav":
        try:
            import decord

            vr = decord.VideoReader(io.BytesIO(data), num_threads=threads)
        except Exception:  # decord cannot open it: the probe would have planned with PyAV's counts too
            vr = None
        if vr is not None:
            if max(indices) >= len(vr):
                raise ValueError(f"frame {max(indices)} requested from a video of {len(vr)} frames")
            batch = vr.get_batch(list(indices))
            return _to_shared(batch) if shared else batch.asnumpy()
    frames = read_frames_pyav(io.BytesIO(data), indices, pad_missing=False)
    return torch.from_numpy(frames).share_memory_() if shared else frames


def _to_shared(batch) -> torch.Tensor:
    """decord's frames copied once, straight into shared memory: the copy `asnumpy()` makes, to another target
    (the same library call), instead of a copy to numpy that the DataLoader then copies again."""
    from decord._ffi.base import _LIB, check_call

    out = torch.empty(tuple(batch.shape), dtype=torch.uint8).share_memory_()
    check_call(_LIB.DECORDArrayCopyToBytes(batch.handle, ctypes.c_void_p(out.data_ptr()), ctypes.c_size_t(out.numel())))
    return out

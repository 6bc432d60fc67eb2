"""Frames for one loader item: the clip variant of the sampling rule, decoding from in-memory video bytes (decord,
as the training reader does; PyAV when decord cannot open the video), and the sampled-frame JPEGs of a `frames`
payload, with the check that they are the item's frames."""

from __future__ import annotations

import ctypes
import io
from typing import Optional, Sequence

import numpy as np
import torch

from pipeline.io.frames import read_frames_pyav
from schemas.loader import SAMPLE_FRAMES_STAGE_KEY
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


def carried_jpegs_mismatch(doc: dict, num_jpegs: int, indices: Sequence[int]) -> Optional[str]:
    """None when the sample's `num_jpegs` JPEG frames are exactly the frames at `indices`, else why they are not.

    The JPEGs are the frames of one stage's plan (shard.frames_stage). A sample document naming that stage settles
    it; otherwise every plan with `num_jpegs` frames could be it, and the JPEGs serve `indices` only when all such
    plans are `indices` (stage3 and stage4 differ in resolution only, stage1 and stage2 can share a count)."""
    if num_jpegs == 0:
        return "the sample carries no JPEG frames (its shard was written with shard.payload=video)"
    plans = doc.get("sampling") or {}
    wanted = list(indices)
    stage = doc.get(SAMPLE_FRAMES_STAGE_KEY)
    if stage is not None:
        carried = (plans.get(stage) or {}).get("frame_indices")
        if carried != wanted:
            return f"its JPEGs are the frames of the {stage} plan, not of this one"
        if len(carried) != num_jpegs:
            return f"it carries {num_jpegs} JPEGs for the {len(carried)} frames of {stage}"
        return None
    same_count = {name: p["frame_indices"] for name, p in plans.items() if len(p["frame_indices"]) == num_jpegs}
    if wanted not in same_count.values():
        return f"its {num_jpegs} JPEGs are not this plan's {len(wanted)} frames"
    others = sorted(name for name, idx in same_count.items() if idx != wanted)
    if others:
        return (f"its {num_jpegs} JPEGs could also be the frames of {', '.join(others)} (the sample does not say "
                f"which stage they are)")
    return None


def decode_jpegs(jpegs: Sequence[bytes], shared: bool = False):
    """RGB frames of JPEG images of one size, uint8 [T, H, W, 3]: a numpy array, or with `shared` a torch tensor in
    shared memory (see decode_frames)."""
    from PIL import Image

    if not jpegs:
        raise ValueError("no JPEG frames to decode")
    out = None
    for k, data in enumerate(jpegs):
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
        if out is None:
            shape = (len(jpegs),) + rgb.shape
            out = torch.empty(shape, dtype=torch.uint8).share_memory_() if shared else np.empty(shape, np.uint8)
            view = out.numpy() if shared else out
        if rgb.shape != view.shape[1:]:
            raise ValueError(f"JPEG frame {k} is {rgb.shape[1]}x{rgb.shape[0]}, frame 0 "
                             f"{view.shape[2]}x{view.shape[1]}")
        view[k] = rgb
    return out


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

"""Decode frames at given indices the way the training reader does (decord), with PyAV as the fallback."""

from __future__ import annotations

import io
from typing import BinaryIO, Sequence

import numpy as np


def read_frames(path: str, indices: Sequence[int]) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB frames at `indices` (repeats allowed)."""
    try:
        import decord

        vr = decord.VideoReader(path, num_threads=1)
        return vr.get_batch(list(indices)).asnumpy()
    except Exception:
        return read_frames_pyav(path, indices)


def read_frames_pyav(source: str | BinaryIO, indices: Sequence[int], pad_missing: bool = True) -> np.ndarray:
    """The PyAV fallback, from a path or a file object. Frames past the last decodable one repeat it when
    `pad_missing` (PyAV can count a frame or two fewer than decord planned with); otherwise they are an error."""
    import av

    wanted = set(indices)
    last_wanted = max(wanted)
    got: dict[int, np.ndarray] = {}
    with av.open(source) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last_wanted:
                break
    if not got:
        raise ValueError(f"no frames decoded from {source if isinstance(source, str) else 'the video'}")
    missing = wanted - set(got)
    if missing and not pad_missing:
        raise ValueError(f"frames {sorted(missing)[:5]} not found: the video has fewer frames than planned")
    last = got[max(got)]
    return np.stack([got.get(i, last) for i in indices])


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()

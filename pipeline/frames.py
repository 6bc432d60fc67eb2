"""Decode frames at given indices the way the training reader does (decord), with PyAV as the fallback."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def read_frames(path: str, indices: Sequence[int]) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB frames at `indices` (repeats allowed)."""
    try:
        import decord

        vr = decord.VideoReader(path, num_threads=1)
        return vr.get_batch(list(indices)).asnumpy()
    except Exception:
        return _read_frames_pyav(path, indices)


def _read_frames_pyav(path: str, indices: Sequence[int]) -> np.ndarray:
    import av

    wanted = sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= wanted[-1]:
                break
    if not got:
        raise ValueError(f"no frames decoded from {path}")
    last = got[max(got)]
    return np.stack([got.get(i, last) for i in indices])


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()

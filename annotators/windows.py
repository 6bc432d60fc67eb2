"""Caption windows: scenes merged (too short) or split (too long) into windows of bounded length, and the frames
to show the model for each window (the training reader's `middle` rule applied inside the window)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.sampling import frame_indices


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def caption_windows(scenes: list[dict], duration_s: float, min_s: float, max_s: float) -> list[Window]:
    """Contiguous windows covering [0, duration]: short scenes join their successor, long ones split evenly."""
    spans = [(s["start_s"], s["end_s"]) for s in scenes] if scenes else [(0.0, duration_s)]
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and (merged[-1][1] - merged[-1][0] < min_s):
            merged[-1][1] = end
        else:
            merged.append([start, end])
    if len(merged) > 1 and merged[-1][1] - merged[-1][0] < min_s:
        last = merged.pop()
        merged[-1][1] = last[1]
    windows = []
    for start, end in merged:
        parts = max(1, int(np.ceil((end - start) / max_s - 1e-9)))
        edges = np.linspace(start, end, parts + 1)
        windows += [Window(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]
    return windows


def window_frames(window: Window, vlen: int, fps: float, num_frames: int) -> list[int]:
    """`num_frames` indices inside the window by middle sampling (absolute indices into the video)."""
    first = min(int(round(window.start_s * fps)), vlen - 1)
    last = max(first + 1, min(int(round(window.end_s * fps)), vlen))
    return [first + i for i in frame_indices(last - first, fps, num_frames, num_frames, "middle")]

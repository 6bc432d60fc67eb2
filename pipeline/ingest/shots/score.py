"""Shot boundaries from small frames in numpy: hard cuts, fades through black and cross-dissolves.

Each frame is a thumbnail of its Y, U and V planes (32x18 each, averaged down by ffmpeg's scaler). Changes are mean
absolute differences on a 0..1 scale, computed exactly from the uint8 bytes (integer sums in cache-sized blocks:
an hour of frames as float32 would be 250 MB of fresh memory per temporary, and the page faults alone cost more than
the arithmetic). Three detectors work on them:

- hard cut: the mean absolute change from the previous thumbnail is several times the mean change of the frames
  around it (a rolling window, so a shot full of motion needs a bigger jump than a still one) and above a floor;
- fade through black: a run of dark, flat frames between brighter content; the boundary is the run's middle;
- cross-dissolve: across a window of 2k frames centred on i (k from 0.2 to 1 s), the net change of every pixel
  (`net`: |after - before|) is large and almost all of the change the frames went through on the way (`path`: the
  sum of the frame-to-frame changes). A dissolve moves every pixel steadily from one shot to the other, so net/path
  is near 1; camera or object motion goes back and forth and keeps it low. The score is net * (net/path)^2 at the
  best window length, and must also stand out from the score's rolling median; the frames must change faster
  inside the window than on at least one side of it (a steady sweep of motion changes as fast everywhere).

Times: frame j of a segment shows `start_s + j / rate`. Boundaries within `min_gap_s` of a stronger kind are merged
(fade > cut > dissolve), so one transition gives one boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScoreParams:
    cut_ratio: float = 3.0  # a cut's change over the mean change of its window
    cut_floor: float = 0.015  # and at least this mean absolute change (0..1 scale)
    cut_peak: float = 2.0  # and this many times the change into the frame before and out to the frame after
    window_s: float = 1.5  # rolling window, each side, for the cut ratio and the dissolve median
    dark_luma: float = 0.13  # a fade's black: mean luma under this (0..1, 16/255 is video black) ...
    dark_flat: float = 0.05  # ... and luma standard deviation under this
    dissolve_floor: float = 0.012  # dissolve score floor
    dissolve_ratio: float = 1.5  # and over this many times the rolling median score
    dissolve_linearity: float = 0.7  # net/path at least this
    dissolve_contrast: float = 1.5  # the mean change inside the span over the mean change either side of it
    half_spans_s: tuple = (0.2, 0.3, 0.5, 0.7, 1.0)
    min_gap_s: float = 0.5  # boundaries closer than this are one transition


@dataclass(frozen=True)
class Boundary:
    time_s: float
    kind: str  # cut | fade | dissolve
    score: float


BLOCK_ROWS = 2048  # frames per block of the difference sums (a few MB: stays in cache)


def abs_change(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean absolute difference of uint8 rows x[j] and y[j] on a 0..1 scale (float64, exact up to the division)."""
    block_sums = _block_sums_cv2 if _cv2() is not None else block_sums_numpy
    sums = np.empty(len(x), np.int64)
    for s in range(0, len(x), BLOCK_ROWS):
        sums[s:s + BLOCK_ROWS] = block_sums(x[s:s + BLOCK_ROWS], y[s:s + BLOCK_ROWS])
    return sums / (255.0 * max(1, x.shape[1]))


def _cv2():
    """OpenCV when it imports (opencv-python needs libGL.so.1, which a slim image may lack), else None."""
    global _CV2
    if _CV2 is False:
        try:
            import cv2
        except ImportError:
            cv2 = None
        _CV2 = cv2
    return _CV2


_CV2 = False  # not looked up yet


def _block_sums_cv2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    return cv2.reduce(cv2.absdiff(x, y), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0]


def block_sums_numpy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row sums of |x - y| for uint8 blocks without OpenCV (the same integers, about 10x slower)."""
    d = np.maximum(x, y)
    d -= np.minimum(x, y)
    return d.sum(axis=1, dtype=np.uint32)


def plane_mean_std(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and standard deviation of uint8 rows on a 0..1 scale, from exact integer sums."""
    n = plane.shape[1]
    total = plane.sum(axis=1, dtype=np.int64)
    squares = np.empty(len(plane), np.int64)
    for s in range(0, len(plane), BLOCK_ROWS):
        block = plane[s:s + BLOCK_ROWS].astype(np.int32)
        squares[s:s + BLOCK_ROWS] = np.einsum("ij,ij->i", block, block)
    mean = total / n
    var = np.maximum(squares / n - mean * mean, 0.0)
    return mean / 255.0, np.sqrt(var) / 255.0


def _rolling(values: np.ndarray, half: int, fn) -> np.ndarray:
    """fn over the window [i-half, i+half] (clipped at the ends) for every i."""
    n = len(values)
    if n == 0:
        return values
    padded = np.pad(values, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    return fn(windows, axis=1)[:n]


def hard_cuts(change: np.ndarray, rate: float, p: ScoreParams) -> list[tuple[int, float]]:
    """(frame, score) of every frame that starts a new shot by a jump; change[i] is frame i-1 → i."""
    half = max(2, int(round(p.window_s * rate)))
    total = _rolling(change, half, np.sum)
    # the neighbourhood's mean without the frame itself and its two neighbours
    local = np.convolve(change, np.ones(3), mode="same")
    mean = (total - local) / max(1, 2 * half + 1 - 3)
    ratio = change / np.maximum(mean, 1e-4)
    # a cut is one jump: a dissolve or fast motion raises the frames on either side as well
    neighbours = np.maximum(np.pad(change[:-1], (1, 0)), np.pad(change[1:], (0, 1)))
    hits = np.flatnonzero((ratio >= p.cut_ratio) & (change >= p.cut_floor) & (change >= p.cut_peak * neighbours))
    return [(int(i), float(change[i])) for i in hits]


def dark_runs(luma_mean: np.ndarray, luma_std: np.ndarray, p: ScoreParams) -> list[tuple[int, int]]:
    """[first, last] frame of every run of dark flat frames that does not touch the ends of the frames."""
    dark = (luma_mean < p.dark_luma) & (luma_std < p.dark_flat)
    runs, i, n = [], 0, len(dark)
    while i < n:
        if dark[i]:
            j = i
            while j + 1 < n and dark[j + 1]:
                j += 1
            if i > 0 and j < n - 1:
                runs.append((i, j))
            i = j + 1
        else:
            i += 1
    return runs


def dissolves(frames: np.ndarray, change: np.ndarray, rate: float, p: ScoreParams) -> list[tuple[int, int, float]]:
    """(centre frame, half span, score) of cross-dissolve candidates, strongest first, spans not overlapping;
    `frames` are the uint8 thumbnails."""
    n = len(frames)
    path = np.concatenate([[0.0], np.cumsum(change, dtype=np.float64)])
    best = np.zeros(n)
    best_k = np.zeros(n, dtype=np.int64)
    linear = np.zeros(n)
    for k in sorted({max(1, int(round(s * rate))) for s in p.half_spans_s}):
        if n <= 2 * k:
            continue
        i = np.arange(k, n - k)
        net = abs_change(frames[2 * k:], frames[:n - 2 * k])
        travelled = path[i + k + 1] - path[i - k + 1]
        r = net / np.maximum(travelled, 1e-6)
        score = net * r * r
        better = score > best[i]
        best[i[better]] = score[better]
        best_k[i[better]] = k
        linear[i[better]] = r[better]
    median = _rolling(best, max(2, int(round(2 * p.window_s * rate))), np.median)
    ok = (best >= p.dissolve_floor) & (best >= p.dissolve_ratio * median) & (linear >= p.dissolve_linearity)
    found: list[tuple[int, int, float]] = []
    taken = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(ok)[np.argsort(-best[ok], kind="stable")]:
        k = int(best_k[i])
        if taken[max(0, i - k):i + k + 1].any():
            continue
        # the frames change faster inside the span than on at least one side of it (a steady sweep of motion does
        # not); both sides must be in the frames
        if i - 3 * k < 1 or i + 3 * k >= n:
            continue
        inside = (path[i + k + 1] - path[i - k + 1]) / (2 * k)
        before = (path[i - k + 1] - path[i - 3 * k + 1]) / (2 * k)
        after = (path[i + 3 * k + 1] - path[i + k + 1]) / (2 * k)
        if inside < p.dissolve_contrast * min(before, after):
            continue
        # centre: the score's centroid over the span where it stays above half the peak
        lo, hi = i, i
        while lo - 1 >= max(0, i - 2 * k) and best[lo - 1] >= best[i] / 2:
            lo -= 1
        while hi + 1 < min(n, i + 2 * k + 1) and best[hi + 1] >= best[i] / 2:
            hi += 1
        w = best[lo:hi + 1]
        centre = float((np.arange(lo, hi + 1) * w).sum() / w.sum()) if w.sum() > 0 else float(i)
        taken[max(0, i - k):i + k + 1] = True
        found.append((int(round(centre)), k, float(best[i])))
    return found


def boundaries(frames: np.ndarray, width: int, height: int, rate: float, start_s: float = 0.0,
               p: ScoreParams = ScoreParams()) -> list[Boundary]:
    """Every shot boundary in yuv444p `frames` (frame j at start_s + j / rate, start_s on the 1/rate grid), sorted."""
    if len(frames) < 2:
        return []
    change = np.zeros(len(frames))
    change[1:] = abs_change(frames[1:], frames[:-1])
    luma_mean, luma_std = plane_mean_std(frames[:, :width * height])

    gap = max(1, int(round(p.min_gap_s * rate)))
    first = round(start_s * rate)  # start_s is on the frame grid: whole frames keep segment times exact
    found: list[tuple[float, str, float, int, int]] = []  # (frame, kind, score, span lo, span hi)
    for a, b in dark_runs(luma_mean, luma_std, p):
        found.append(((a + b) / 2, "fade", 1.0, a - gap, b + gap))
    for i, score in hard_cuts(change, rate, p):
        if not any(lo <= i <= hi for _, _, _, lo, hi in found):
            found.append((float(i), "cut", score, i - gap, i + gap))
    cuts = [(lo, hi) for _, _, _, lo, hi in found]
    for c, k, score in dissolves(frames, change, rate, p):
        if not any(lo <= c + k and c - k <= hi for lo, hi in cuts):
            found.append((float(c), "dissolve", score, c - k, c + k))
    found.sort()
    out: list[Boundary] = []
    for frame, kind, score, _, _ in found:
        t = (first + frame) / rate
        if out and t - out[-1].time_s < p.min_gap_s:
            if score > out[-1].score and out[-1].kind != "fade":
                out[-1] = Boundary(t, kind, score)
            continue
        out.append(Boundary(t, kind, score))
    return out

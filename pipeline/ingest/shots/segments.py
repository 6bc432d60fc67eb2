"""A long video split into time segments that are scored in parallel tasks and stitched.

Each segment owns the boundaries in [start_s, end_s) and is decoded with CONTEXT_S more on either side, so every
window the scorer looks at holds the same frames as in one pass over the whole video and the stitched boundaries
equal the one-pass ones. ffmpeg's input seek starts each decode at the keyframe before the segment's context: the
frames it decodes only to drop are at most one GOP per segment. (Reading the keyframe index first would cost a
demux of the whole file, about 3 s for an hour of H.264, more than the GOPs it saves.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.ingest.shots import frames as shot_frames
from pipeline.ingest.shots import score as shot_score

CONTEXT_S = 8.0  # > the scorer's widest look-around (rolling median 2 x window_s plus a dissolve's span)


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float  # math.inf for the last


def plan(duration_s: float, segment_s: float, rate: float) -> list[Segment]:
    """Equal segments of at most about `segment_s` covering the video, their edges on the analysis frame grid."""
    count = max(1, math.ceil(duration_s / segment_s - 0.25))  # no tail segment of a few seconds
    edges = [0.0, *(_grid(j * duration_s / count, rate) for j in range(1, count)), math.inf]
    return [Segment(a, b) for a, b in zip(edges, edges[1:])]


def _grid(t: float, rate: float) -> float:
    """`t` rounded down to the analysis frame grid, so every segment samples the same instants as one pass."""
    return math.floor(t * rate + 1e-6) / rate


def fast_boundaries(path: str, segment: Segment, spec: shot_frames.FrameSpec = shot_frames.FrameSpec(),
                    params: shot_score.ScoreParams = shot_score.ScoreParams(),
                    timeout_s: float | None = None) -> list[shot_score.Boundary]:
    """The fast detector's boundaries owned by `segment`."""
    start = _grid(max(0.0, segment.start_s - CONTEXT_S), spec.rate) if segment.start_s > 0 else 0.0
    length = None if math.isinf(segment.end_s) else segment.end_s + CONTEXT_S - start
    frames = shot_frames.read_frames(path, spec, start, length, timeout_s)
    found = shot_score.boundaries(frames, spec.width, spec.height, spec.rate, start, params)
    return [b for b in found if segment.start_s <= b.time_s < segment.end_s]


def stitch(parts: list[list[float]], min_gap_s: float) -> list[float]:
    """Boundary times of consecutive segments, one per transition across a segment edge."""
    times: list[float] = []
    for part in parts:
        for t in part:
            if not times or t - times[-1] >= min_gap_s:
                times.append(t)
    return times

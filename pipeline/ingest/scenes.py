"""Shot boundaries as a contiguous list of scenes in seconds covering [0, duration].

Detectors, by the name in `scenes.detector`:
- `fast` (default): one reduced-resolution ffmpeg decode and numpy scores for cuts, fades and dissolves
  (pipeline.ingest.shots.score); the stage splits a long video into segments scored in parallel (pipeline.ingest.shots.segments);
- `transnetv2`: the trained TransNetV2 network (pipeline.ingest.shots.transnet);
- `content`, `adaptive`, `threshold`, `histogram`, `hash`: PySceneDetect's detectors.
"""

from __future__ import annotations

import math

FAST = "fast"
TRANSNET = "transnetv2"


def _detector(name: str, threshold: float | None, min_scene_len_frames: int):
    import scenedetect as sd

    classes = {
        "content": sd.ContentDetector,
        "adaptive": sd.AdaptiveDetector,
        "threshold": sd.ThresholdDetector,
        "histogram": sd.HistogramDetector,
        "hash": sd.HashDetector,
    }
    cls = classes[name]
    kwargs = {"min_scene_len": min_scene_len_frames}
    if threshold is not None:
        kwargs["adaptive_threshold" if name == "adaptive" else "threshold"] = threshold
    return cls(**kwargs)


def contiguous(cuts_s: list[float], duration_s: float) -> list[dict]:
    """Scenes [0, c1], [c1, c2], …, [cn, duration] from sorted cut times strictly inside (0, duration)."""
    edges = [0.0] + [c for c in sorted(cuts_s) if 0.0 < c < duration_s] + [duration_s]
    return [{"start_s": a, "end_s": b} for a, b in zip(edges, edges[1:]) if b > a]


def fast_params(threshold: float | None, min_scene_len_s: float):
    """The fast detector's parameters: `threshold` scales its cut ratio (default 3.0), `min_scene_len_s` is the
    closest two boundaries may be."""
    from pipeline.ingest.shots import score as shot_score

    p = shot_score.ScoreParams(min_gap_s=min_scene_len_s)
    if threshold is not None:
        from dataclasses import replace

        p = replace(p, cut_ratio=threshold)
    return p


def fast_cut_times(path: str, start_s: float = 0.0, end_s: float = math.inf, threshold: float | None = None,
                   min_scene_len_s: float = 0.5, timeout_s: float | None = None) -> list[dict]:
    """The fast detector's boundaries in [start_s, end_s) as [{"time_s", "kind", "score"}] (JSON-friendly)."""
    from pipeline.ingest.shots import segments as shot_segments

    found = shot_segments.fast_boundaries(path, shot_segments.Segment(start_s, end_s),
                                          params=fast_params(threshold, min_scene_len_s), timeout_s=timeout_s)
    return [{"time_s": b.time_s, "kind": b.kind, "score": b.score} for b in found]


def transnet_cut_times(path: str, model=None, start_s: float = 0.0, end_s: float = math.inf,
                       threshold: float | None = None) -> list[float]:
    """TransNetV2 boundaries in [start_s, end_s); `model` is a loaded shot_transnet.TransNet (one is made if None)."""
    from pipeline.ingest.shots import transnet as shot_transnet

    rate = shot_transnet.video_rate(path)
    frames, begin = shot_transnet.read_rgb(path, rate, start_s, end_s)
    model = model or shot_transnet.TransNet()
    p = model.predict(frames)
    return shot_transnet.boundaries(p, rate, begin, start_s, end_s, 0.5 if threshold is None else threshold)


def detect_scenes(path: str, duration_s: float, detector: str = FAST, threshold: float | None = None,
                  min_scene_len_s: float = 0.5, downscale: int | None = None) -> list[dict]:
    """Scenes of one video in one pass (the stage splits long videos into segments itself)."""
    if detector == FAST:
        return contiguous([b["time_s"] for b in fast_cut_times(path, threshold=threshold,
                                                                min_scene_len_s=min_scene_len_s)], duration_s)
    if detector == TRANSNET:
        return contiguous(transnet_cut_times(path, threshold=threshold), duration_s)
    return contiguous(pyscenedetect_cut_times(path, detector, threshold, min_scene_len_s, downscale), duration_s)


def pyscenedetect_cut_times(path: str, detector: str, threshold: float | None, min_scene_len_s: float,
                            downscale: int | None) -> list[float]:
    import scenedetect as sd

    video = sd.open_video(path)
    fps = float(video.frame_rate)
    manager = sd.SceneManager()
    manager.add_detector(_detector(detector, threshold, max(1, round(min_scene_len_s * fps))))
    if downscale:
        manager.auto_downscale = False
        manager.downscale = downscale
    manager.detect_scenes(video=video, show_progress=False)
    return [start.seconds for start, _ in manager.get_scene_list(start_in_scene=True)[1:]]

"""Shot boundaries with PySceneDetect, as a contiguous list of scenes in seconds covering [0, duration]."""

from __future__ import annotations


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


def detect_scenes(path: str, duration_s: float, detector: str = "content", threshold: float | None = None,
                  min_scene_len_s: float = 0.5, downscale: int | None = None) -> list[dict]:
    import scenedetect as sd

    video = sd.open_video(path)
    fps = float(video.frame_rate)
    manager = sd.SceneManager()
    manager.add_detector(_detector(detector, threshold, max(1, round(min_scene_len_s * fps))))
    if downscale:
        manager.auto_downscale = False
        manager.downscale = downscale
    manager.detect_scenes(video=video, show_progress=False)
    cuts = [start.seconds for start, _ in manager.get_scene_list(start_in_scene=True)[1:]]
    return contiguous(cuts, duration_s)

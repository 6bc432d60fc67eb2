"""TransNetV2 shot boundaries of one video through a model actor pool (the fast detector's segments are tasks the
scenes stage plans itself: pipeline.stages.scenes).

Called from inside a `scenes` task, which decodes segment after segment and hands the frames to the model actors
(`scenes.actors`, each with `scenes.num_gpus` GPUs), decoding the next segment while a model scores the last.
"""

from __future__ import annotations

from pipeline.ingest.shots import segments as shot_segments
from pipeline.ingest.shots import transnet as shot_transnet


class TransNetActor:
    """Holds one loaded TransNetV2; made with num_gpus=scenes.num_gpus by `transnet_pool`."""

    def __init__(self, threads: int | None):
        self.model = shot_transnet.TransNet(threads=threads)

    def predict(self, frames):
        return self.model.predict(frames)


def transnet_pool(actors: int, num_gpus: float) -> list:
    """The model actors. On the CPU they ask for no CPU of their own (the tasks feeding them hold those), so a
    pool never starves the tasks that decode for it."""
    import ray

    cls = ray.remote(num_gpus=num_gpus, num_cpus=0 if num_gpus == 0 else 1)(TransNetActor)
    return [cls.remote(None if num_gpus else 1) for _ in range(actors)]


def release_pool(pool: list | None) -> None:
    """Stop the model actors (and free their GPUs) once the stage is done with them."""
    import ray

    for actor in pool or []:
        ray.kill(actor)


def transnet_times(path: str, duration_s: float, threshold: float | None, min_scene_len_s: float,
                   segment_s: float, pool: list, timeout_s: float | None = None) -> list[float]:
    import ray

    rate = shot_transnet.video_rate(path)
    segments = shot_segments.plan(duration_s, segment_s, rate)
    level = 0.5 if threshold is None else threshold
    parts: list[list[float]] = []
    pending = None  # (ref, segment, begin)
    for j, g in enumerate(segments + [None]):
        decoded = None
        if g is not None:
            frames, begin = shot_transnet.read_rgb(path, rate, g.start_s, g.end_s, timeout_s)
            decoded = (pool[j % len(pool)].predict.remote(frames), g, begin)
        if pending is not None:
            ref, seg, begin = pending
            parts.append(shot_transnet.boundaries(ray.get(ref), rate, begin, seg.start_s, seg.end_s, level))
        pending = decoded
    return shot_segments.stitch(parts, min_scene_len_s)

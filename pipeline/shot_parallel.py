"""Shot boundaries of one video spread over Ray: segments as parallel tasks (fast), or a model actor pool (TransNetV2).

Called from inside a `scenes` task. A video longer than `scenes.segment_s` is split (pipeline.shot_segments); its
segments run as tasks pinned to this node (they read the local copy of the file), the calling task scoring the
last one itself and then waiting for the others (Ray lends a waiting task's CPU to them). TransNetV2: this task decodes segment after segment and hands the frames
to the model actors (`scenes.actors`, each with `scenes.num_gpus` GPUs), decoding the next segment while a model
scores the last.
"""

from __future__ import annotations

from pipeline import scenes, shot_frames, shot_segments, shot_transnet


def _pinned(fn, num_cpus: float = 1):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return ray.remote(num_cpus=num_cpus, max_retries=1,
                      scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))(fn)


def fast_times(path: str, duration_s: float, threshold: float | None, min_scene_len_s: float,
               segment_s: float, timeout_s: float | None = None) -> list[float]:
    """Boundary times; `timeout_s` bounds each segment's decode (a ShotDecodeError with reason timeout)."""
    rate = shot_frames.FrameSpec().rate
    segments = shot_segments.plan(duration_s, segment_s, rate)
    if len(segments) == 1:
        return [b["time_s"] for b in scenes.fast_cut_times(path, threshold=threshold, min_scene_len_s=min_scene_len_s,
                                                           timeout_s=timeout_s)]
    import ray

    # all segments but the last as tasks; this task scores the last itself meanwhile (one worker fewer to start)
    remote = _pinned(scenes.fast_cut_times)
    refs = [remote.remote(path, g.start_s, g.end_s, threshold, min_scene_len_s, timeout_s) for g in segments[:-1]]
    last = segments[-1]
    own = scenes.fast_cut_times(path, last.start_s, last.end_s, threshold, min_scene_len_s, timeout_s)
    try:
        parts = [*ray.get(refs), own]
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, shot_frames.ShotDecodeError):
            raise e.cause from None
        raise
    return shot_segments.stitch([[b["time_s"] for b in part] for part in parts], min_scene_len_s)


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

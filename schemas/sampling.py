"""Duration-based frame sampling and the timestamp prompt, exactly as the VideoChat-Flash trainer computes them.

A contract of the corpus (the manifest's frame indices follow it), so it lives in schemas where every package may
import it. Public API for trainers: `pipeline.sampling.frame_indices` / `timestamp_prompt` (re-exported there) so
online re-sampling sees the frames the pipeline annotated and encoded. `vlen` and `fps` must be the training reader's values (decord's
`len(VideoReader)` and `get_avg_fps()`), not the container's metadata.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_TYPES = ("dynamic_fps1", "middle")


def num_frames_to_sample(vlen: int, fps: float, min_frames: int, max_frames: int, sample: str = "dynamic_fps1",
                         clip_len: int = 4) -> int:
    if sample == "middle":
        return max_frames
    if sample != "dynamic_fps1":
        raise ValueError(f"unknown sample type {sample!r}; expected one of {SAMPLE_TYPES}")
    duration = vlen / fps
    n = clip_len * math.floor(duration / clip_len)
    if n == 0:
        n = clip_len
    n = min(n, max_frames)
    if min_frames > vlen:
        min_frames = clip_len * (vlen // clip_len)
    return max(n, min_frames)


def frame_indices(vlen: int, fps: float, min_frames: int, max_frames: int, sample: str = "dynamic_fps1",
                  clip_len: int = 4) -> list[int]:
    """Indices of the frames to sample from a video of `vlen` frames at `fps` (see DESIGN.md, sampling rule)."""
    if vlen <= 0:
        raise ValueError(f"vlen must be positive, got {vlen}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n = num_frames_to_sample(vlen, fps, min_frames, max_frames, sample, clip_len)
    acc = min(n, vlen)
    # numpy's float linspace, not exact integer division: the trainer's rounding must be reproduced bit for bit
    edges = np.linspace(0, vlen, acc + 1).astype(int)
    idx = ((edges[:-1] + edges[1:] - 1) // 2).tolist()
    if len(idx) < n:
        idx = idx + [idx[-1]] * (n - len(idx))
    return idx


IMAGE_TOKEN = "<image>"
# The answer of a temporal-grounding turn: what the QA templates write and what a mixture's grounding record teaches.
GROUNDING_ANSWER = "The event happens in the {s:.1f} - {e:.1f} seconds."


def timestamp_prompt(duration_s: float, num_frames: int) -> str:
    """The timestamp sentence the model sees before the question: time lives in the prompt, not in a timestamp
    module. Use :func:`video_question` / :func:`first_user_turn` to place it; never concatenate it by hand."""
    return f"The video lasts for {duration_s:.2f} seconds, and {num_frames} frames are uniformly sampled from it. "


def video_question(question: str, duration_s: float, num_frames: int) -> str:
    """The text after the video placeholder, as VideoChat-Flash trains with ``--time_msg short``: the timestamp
    sentence (ending in ". "), a newline, then the question."""
    return timestamp_prompt(duration_s, num_frames) + "\n" + question


def first_user_turn(question: str, duration_s: float | None = None, num_frames: int | None = None) -> str:
    """The first human turn of a video sample: ``<image>\n`` + :func:`video_question`, or ``<image>\n`` + the question
    when ``duration_s`` is None (the trainer inserts the timestamp sentence itself)."""
    if duration_s is None:
        return f"{IMAGE_TOKEN}\n{question}"
    if num_frames is None:
        raise ValueError("num_frames is required with duration_s")
    return f"{IMAGE_TOKEN}\n" + video_question(question, duration_s, num_frames)


def plan(vlen: int, fps: float, stages: dict, clip_len: int = 4) -> list[dict]:
    """Sampling plan rows (schemas.tables.SAMPLING_PLAN) for every curriculum stage config."""
    duration = vlen / fps
    rows = []
    for name, st in stages.items():
        idx = frame_indices(vlen, fps, st.min_frames, st.max_frames, st.sample, clip_len)
        rows.append({
            "stage": name,
            "sample": st.sample,
            "min_frames": st.min_frames,
            "max_frames": st.max_frames,
            "resolution": st.resolution,
            "duration_s": duration,
            "frame_indices": idx,
            "timestamps_s": [i / fps for i in idx],
            "prompt": timestamp_prompt(duration, len(idx)),
        })
    return rows

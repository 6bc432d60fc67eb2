"""Frames at a fixed size: 1 fps sampling of a video and single frames through ffmpeg (streamed as raw RGB, never a
whole video in memory), and images letterboxed the same way."""

from __future__ import annotations

import subprocess
from typing import Iterator

import numpy as np

from pipeline.io import ffmpeg
from schemas import niah as niah_schema

# bit-exact scaling so the same input gives the same pixels on every run
_SWS = "bicubic+accurate_rnd+full_chroma_int+bitexact"


def _fit_filter(width: int, height: int) -> str:
    return (f"scale={width}:{height}:force_original_aspect_ratio=decrease:flags={_SWS},"
            f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black,format=rgb24")


def _raw_frames(args: list[str], width: int, height: int, limit: int | None) -> Iterator[np.ndarray]:
    cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-threads", "1", *args,
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    size = width * height * 3
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    count, at_end = 0, False
    try:
        while limit is None or count < limit:
            data = proc.stdout.read(size)
            if len(data) < size:
                at_end = True
                break
            count += 1
            yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
    finally:
        proc.stdout.close()
        if not at_end:  # the caller has what it wants
            proc.kill()
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        code = proc.wait()
    if at_end and code != 0:
        raise RuntimeError(f"ffmpeg could not decode: {stderr[-1000:]}")


def sample_1fps(path: str, width: int, height: int, limit: int | None = None) -> Iterator[np.ndarray]:
    """The video's frames at 1 fps (t = 0, 1, 2, ... s), letterboxed to width x height, at most `limit`."""
    graph = f"fps={niah_schema.HAYSTACK_FPS}:round=near,{_fit_filter(width, height)}"
    return _raw_frames(["-i", path, "-an", "-sn", "-vf", graph], width, height, limit)


def frame_at(path: str, time_s: float, width: int, height: int) -> np.ndarray:
    """The frame shown at `time_s`, letterboxed to width x height."""
    frames = list(_raw_frames(["-ss", f"{time_s:.3f}", "-i", path, "-an", "-sn", "-vf", _fit_filter(width, height),
                               "-frames:v", "1"], width, height, 1))
    if not frames:
        raise ValueError(f"no frame at {time_s:.3f} s in {path}")
    return frames[0]


def letterbox(image, width: int, height: int) -> np.ndarray:
    """A PIL image scaled to fit width x height, centred on black."""
    from PIL import Image

    image = image.convert("RGB")
    scale = min(width / image.width, height / image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image.resize((w, h), Image.Resampling.BICUBIC), ((width - w) // 2, (height - h) // 2))
    return np.asarray(canvas)

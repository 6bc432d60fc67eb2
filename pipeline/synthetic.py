"""Videos with known content made by ffmpeg: scene cuts at known times, known durations, optional audio.

Used by the embedded demo corpus, the tests and the benchmarks. Each scene is drawn by a different lavfi source
(moving test patterns and flat colours), so a content detector sees a hard cut at every boundary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from pipeline.io import ffmpeg

# Consecutive entries differ strongly in hue and luma, so a cut between any two is unmistakable.
SCENE_SOURCES = (
    "testsrc2=size={w}x{h}:rate={fps}",
    "color=c=0xC02020:size={w}x{h}:rate={fps}",
    "smptebars=size={w}x{h}:rate={fps}",
    "color=c=0x2040D0:size={w}x{h}:rate={fps}",
    "testsrc=size={w}x{h}:rate={fps}",
    "color=c=0x20B040:size={w}x{h}:rate={fps}",
    "rgbtestsrc=size={w}x{h}:rate={fps}",
    "color=c=0xF0E040:size={w}x{h}:rate={fps}",
)


@dataclass
class SyntheticVideo:
    scene_durations_s: Sequence[float]
    width: int = 320
    height: int = 240
    fps: int = 25
    audio: bool = False
    codec: str = "libx264"
    extra_args: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return float(sum(self.scene_durations_s))

    @property
    def cut_times_s(self) -> list[float]:
        t, cuts = 0.0, []
        for d in self.scene_durations_s[:-1]:
            t += d
            cuts.append(t)
        return cuts


def write(video: SyntheticVideo, path: str) -> str:
    """Encode `video` to `path` (container from the extension) and return the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    args: list[str] = []
    labels = []
    for i, d in enumerate(video.scene_durations_s):
        src = SCENE_SOURCES[i % len(SCENE_SOURCES)].format(w=video.width, h=video.height, fps=video.fps)
        args += ["-f", "lavfi", "-t", f"{d}", "-i", src]
        labels.append(f"[{i}:v]")
    n = len(video.scene_durations_s)
    graph = f"{''.join(labels)}concat=n={n}:v=1:a=0,format=yuv420p[v]"
    if video.audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=22050:duration={video.duration_s}"]
    args += ["-filter_complex", graph, "-map", "[v]"]
    if video.audio:
        args += ["-map", f"{n}:a", "-c:a", "aac", "-b:a", "48k"]
    codec_args = ["-c:v", video.codec]
    if video.codec == "libx264":
        codec_args += ["-preset", "ultrafast", "-crf", "28"]
    elif video.codec.startswith("libvpx"):
        # "good" with one thread: "realtime" lets wall-clock timing steer rate control, so bytes differed run to run.
        codec_args += ["-deadline", "good", "-cpu-used", "8", "-threads", "1", "-crf", "20", "-b:v", "1M"]
    # bitexact: no random Matroska UIDs or encoder-version tags, so the same video encodes to the same bytes.
    codec_args += ["-fflags", "+bitexact", "-flags:v", "+bitexact"]
    args += codec_args + ["-r", str(video.fps), *video.extra_args, path]
    ffmpeg.run(args)
    return path


def write_audio_only(path: str, duration_s: float = 3.0) -> str:
    ffmpeg.run(["-f", "lavfi", "-i", f"sine=frequency=440:duration={duration_s}", "-c:a", "aac", path])
    return path


def write_truncated_copy(src: str, dst: str, keep_fraction: float = 0.5) -> str:
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * keep_fraction)])
    return dst


def write_random_bytes(path: str, n: int = 200_000, seed: int = 0) -> str:
    import random

    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(bytes(rng.getrandbits(8) for _ in range(n)))
    return path


def write_html_named_video(path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("<!doctype html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>\n")
    return path

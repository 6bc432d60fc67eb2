"""Small frames for shot detection from one ffmpeg decode pass.

ffmpeg does the expensive part in its own threads: it decodes (optionally skipping the frames no other frame refers
to, and the deblocking filter, neither of which a shot boundary needs), resamples to a fixed analysis rate and scales
down to a thumbnail before writing raw frames to a pipe. Frame k of the output shows the video at
`start_s + k / rate` seconds (the rate conversion repeats the last decoded frame over skipped ones).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import Rejection
from pipeline.io import ffmpeg
from schemas import reasons


class ShotDecodeError(Rejection):
    """The video could not be decoded for shot detection (a reject reason and a message)."""


@dataclass(frozen=True)
class FrameSpec:
    rate: float = 10.0  # analysis frames per second
    width: int = 32
    height: int = 18
    pix_fmt: str = "yuv444p"  # yuv444p (three planes of one size, averaged down by the scaler) or rgb24
    fast_decode: bool = True  # skip non-reference frames and the loop filter
    threads: int = 1  # decoder threads; one per task, parallelism comes from segments

    @property
    def frame_bytes(self) -> int:
        if self.pix_fmt in ("rgb24", "yuv444p"):
            return self.width * self.height * 3
        raise ValueError(f"unsupported pix_fmt {self.pix_fmt!r}")


def read_frames(path: str, spec: FrameSpec, start_s: float = 0.0, duration_s: float | None = None,
                timeout_s: float | None = None) -> np.ndarray:
    """uint8 array [frames, frame_bytes]: the video from `start_s` for `duration_s` (to the end if None)."""
    cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-threads", str(spec.threads)]
    if spec.fast_decode:
        cmd += ["-skip_frame", "noref", "-skip_loop_filter", "all"]
    if start_s > 0:
        cmd += ["-ss", f"{start_s:.6f}"]
    if duration_s is not None:
        cmd += ["-t", f"{duration_s:.6f}"]
    cmd += ["-i", path, "-map", "0:v:0", "-an", "-sn", "-dn", "-filter_threads", "1",
            "-vf", f"fps={spec.rate:g}:start_time=0,scale={spec.width}:{spec.height}:flags=area",
            "-pix_fmt", spec.pix_fmt, "-f", "rawvideo", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ShotDecodeError(reasons.TIMEOUT, f"decoding for shot detection took over {timeout_s:g} s")
    if proc.returncode != 0:
        raise ShotDecodeError(reasons.UNREADABLE, f"ffmpeg could not decode the video for shot detection "
                                            f"({proc.returncode}): {proc.stderr.decode(errors='replace')[-1500:]}")
    n = len(proc.stdout) // spec.frame_bytes
    return np.frombuffer(proc.stdout, np.uint8, count=n * spec.frame_bytes).reshape(n, spec.frame_bytes)


"""Locate the ffmpeg binary: $FFMPEG_BINARY, then `ffmpeg` on PATH, then the one shipped by imageio-ffmpeg."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    env = os.environ.get("FFMPEG_BINARY")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise FileNotFoundError(f"$FFMPEG_BINARY points to {env!r}, which is not an executable file")
        return env
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise FileNotFoundError("no ffmpeg found: set $FFMPEG_BINARY, put ffmpeg on PATH or install imageio-ffmpeg") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


def run(args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg quietly; raise with its stderr on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc

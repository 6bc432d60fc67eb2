"""Haystack outputs: a folder of JPEG frames and/or an H.264 video at 1 fps, fed one frame at a time and committed
only when complete (a folder renamed into place locally; on S3 the item's record, written last, is the commit).

The video is bit-exact: single-threaded libx264 with fixed settings and ffmpeg's bitexact flags, so the same frames
give the same bytes on every run with the same ffmpeg."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import numpy as np

from pipeline.io import ffmpeg, storage
from pipeline.io.frames import encode_jpeg
from schemas import niah as niah_schema


def video_args(width: int, height: int, crf: int, path: str) -> list[str]:
    return [ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(niah_schema.HAYSTACK_FPS),
            "-i", "-", "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-threads", "1", "-x264-params", "threads=1:lookahead-threads=1:sliced-threads=0",
            "-sws_flags", "bicubic+accurate_rnd+full_chroma_int+bitexact",
            "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", "-movflags", "+faststart",
            "-f", "mp4", path]


class FrameFolder:
    def __init__(self, uri: str, quality: int):
        self.uri, self.quality, self.count = uri, quality, 0
        self.local = None if storage.is_s3(uri) else f"{uri}{storage.TEMPORARY_MARKER}{uuid.uuid4().hex[:8]}"
        if self.local:
            os.makedirs(self.local)

    def add(self, frame: np.ndarray, encoded: bytes | None = None) -> None:
        data = encoded if encoded is not None else encode_jpeg(frame, self.quality)
        name = niah_schema.frame_name(self.count, "jpg")
        if self.local:
            with open(os.path.join(self.local, name), "wb") as f:
                f.write(data)
        else:
            storage.write_bytes(storage.join(self.uri, name), data)
        self.count += 1

    def commit(self) -> None:
        if self.local:
            if os.path.isdir(self.uri):
                shutil.rmtree(self.uri)  # left by a run killed before its record was written
            os.replace(self.local, self.uri)

    def abort(self) -> None:
        if self.local:
            shutil.rmtree(self.local, ignore_errors=True)


class VideoFile:
    def __init__(self, uri: str, width: int, height: int, crf: int):
        self.uri = uri
        self._staged = storage.staged_output(uri)
        path = self._staged.__enter__()
        self._proc = subprocess.Popen(video_args(width, height, crf, path), stdin=subprocess.PIPE,
                                      stderr=subprocess.PIPE)

    def add(self, frame: np.ndarray, encoded: bytes | None = None) -> None:
        self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())

    def commit(self) -> None:
        self._proc.stdin.close()
        stderr = self._proc.stderr.read().decode(errors="replace")
        if self._proc.wait() != 0:
            self._staged.__exit__(RuntimeError, None, None)
            raise RuntimeError(f"ffmpeg could not encode {self.uri}: {stderr[-1000:]}")
        self._staged.__exit__(None, None, None)

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        try:
            self._staged.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass


def jsonl_bytes(rows: list[dict]) -> bytes:
    import json

    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")

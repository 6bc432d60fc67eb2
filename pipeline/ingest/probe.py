"""Probe one local media file with PyAV, check it against the limits, and read the training reader's view.

`analyze` runs inside pipeline.ingest.isolated's child process; it returns the probe fields of schemas.tables or raises
ProbeReject with a reason code from schemas.reasons and a message a person can act on.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from pipeline.core.errors import Rejection
from schemas import reasons


class ProbeReject(Rejection):
    pass


@dataclass(frozen=True)
class ProbeLimits:
    min_duration_s: float = 1.0
    max_duration_s: float = 4 * 3600.0
    max_pixels: int = 3840 * 2160
    check_integrity: bool = True

    def as_kwargs(self) -> dict:
        return asdict(self)


def _rate(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    return None


def _first_frame_rotation(container, stream) -> int:
    for frame in container.decode(stream):
        return int(frame.rotation or 0)
    raise ProbeReject(reasons.UNREADABLE, "the video stream holds no decodable frame")


def _count_packets(container, stream) -> tuple[int, float | None]:
    """Demux (no decode) every packet of `stream`: its frame count and end time in seconds."""
    # an hour of video is ~100k packets: integer time-base units in the loop, one conversion at the end
    n, last = 0, None
    for packet in container.demux(stream):
        if packet.size:
            n += 1
            pts = packet.pts
            if pts is not None:
                pts += packet.duration or 0
                if last is None or pts > last:
                    last = pts
    return n, None if last is None else float(last * stream.time_base)


def reader_view(path: str, fallback_frames: int | None, fallback_fps: float | None) -> tuple[str, int, float]:
    """(reader, vlen, fps) as the trainer's reader sees the file: decord, or PyAV's count where decord fails."""
    try:
        import decord

        vr = decord.VideoReader(path, num_threads=1)
        vlen, fps = len(vr), float(vr.get_avg_fps())
        del vr
        if vlen > 0 and fps > 0 and math.isfinite(fps):
            return "decord", vlen, fps
    except Exception:
        pass
    if fallback_frames and fallback_fps:
        return "pyav", int(fallback_frames), float(fallback_fps)
    raise ProbeReject(reasons.UNREADABLE, "neither decord nor PyAV could count the frames")


def analyze(path: str, min_duration_s: float, max_duration_s: float, max_pixels: int, check_integrity: bool) -> dict:
    import av

    if os.path.getsize(path) == 0:
        raise ProbeReject(reasons.UNREADABLE, "empty file (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except Exception as e:
        raise ProbeReject(reasons.UNREADABLE, f"not a media file FFmpeg can open ({type(e).__name__}: {e})")
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise ProbeReject(reasons.NO_VIDEO_STREAM, f"no video stream (streams found: {', '.join(kinds)})")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise ProbeReject(reasons.UNREADABLE, "video stream has no frame size")
        fps = _rate(stream)
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        else:
            duration = None
        try:
            rotation = _first_frame_rotation(container, stream)
        except ProbeReject:
            raise
        except Exception as e:
            raise ProbeReject(reasons.UNREADABLE, f"first frame does not decode ({type(e).__name__}: {e})")
        if abs(rotation) % 180 == 90:
            width, height = height, width
        if width * height > max_pixels:
            raise ProbeReject(reasons.TOO_LARGE, f"{width}x{height} is above the limit of {max_pixels} pixels")

        packets = end = None
        if check_integrity or duration is None or not stream.frames:
            container.seek(0)
            try:
                packets, end = _count_packets(container, stream)
            except Exception as e:
                raise ProbeReject(reasons.UNREADABLE, f"corrupt data while demuxing ({type(e).__name__}: {e})")
            if duration is None and end is not None:
                duration = end - float((stream.start_time or 0) * stream.time_base)
        if not duration or duration <= 0 or not fps:
            raise ProbeReject(reasons.UNREADABLE, "cannot determine duration or frame rate")
        if check_integrity and packets is not None:
            if stream.frames and packets < 0.9 * stream.frames:
                raise ProbeReject(reasons.UNREADABLE,
                                  f"truncated: {packets} of {stream.frames} video frames present in the file")
            start = float((stream.start_time or 0) * stream.time_base) if stream.time_base else 0.0
            # Matroska/WebM headers carry no frame count: compare the demuxed span with the declared duration
            if end is not None and duration and (end - start) < 0.9 * duration - 1.0 / (fps or 25):
                raise ProbeReject(reasons.UNREADABLE, f"truncated: video data ends at {end - start:.2f} s of a "
                                  f"declared {duration:.2f} s")
        num_frames = int(stream.frames or packets or round(duration * fps))
        if duration < min_duration_s:
            raise ProbeReject(reasons.TOO_SHORT, f"{duration:.2f} s is below the minimum of {min_duration_s:g} s")
        if duration > max_duration_s:
            raise ProbeReject(reasons.TOO_LONG, f"{duration:.1f} s is above the maximum of {max_duration_s:g} s")
        has_audio = bool(container.streams.audio)
        bitrate = int(container.bit_rate or 0) or None
        container_name = container.format.name
        codec = ctx.name

    reader, vlen, reader_fps = reader_view(path, packets or num_frames, fps)
    return {
        "container": container_name,
        "codec": codec,
        "width": width,
        "height": height,
        "rotation": rotation,
        "fps": fps,
        "num_frames": num_frames,
        "duration_s": duration,
        "has_audio": has_audio,
        "bitrate": bitrate,
        "reader": reader,
        "reader_num_frames": vlen,
        "reader_fps": reader_fps,
    }

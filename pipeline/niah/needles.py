"""Needle candidates: an image folder with captions.jsonl, or frames of corpus videos kept out of haystacks, captioned
from the build's caption annotations (the clip caption around the frame, else the video caption) or, without
annotations, by the video's name and the frame's time."""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass

import numpy as np

from pipeline.io import storage
from pipeline.niah import imaging, sources
from pipeline.niah.errors import NiahInputError
from schemas import niah as niah_schema


@dataclass(frozen=True)
class Needle:
    caption: str
    image_uri: str = ""  # an image file (local or s3://) ...
    video: sources.VideoRef | None = None  # ... or a frame of a corpus video
    time_s: float = 0.0
    from_annotations: bool = False  # the caption describes the content (not a file name and time)

    def describe(self) -> dict:
        if self.video is not None:
            return {"video": self.video.key, "time_s": self.time_s}
        return {"image": self.image_uri}


def clean_caption(text: str, max_chars: int) -> str:
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(text)).split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars + 1].rsplit(" ", 1)[0] if " " in text[:max_chars + 1] else text[:max_chars]
    return cut[:max_chars].rstrip(" ,.;:")


def from_folder(folder: str, max_chars: int) -> list[Needle]:
    index = storage.join(folder, niah_schema.NEEDLE_CAPTIONS)
    if not storage.exists(index):
        raise NiahInputError(f"--needles {folder}: no {niah_schema.NEEDLE_CAPTIONS} "
                             '(write one {"file": <image name>, "caption": <text>} per line)')
    needles = []
    for n, line in enumerate(storage.read_bytes(index).decode("utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{index} line {n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise NiahInputError(f"{where}: not valid JSON ({e})")
        if not isinstance(rec, dict) or not rec.get("file") or not str(rec.get("caption", "")).strip():
            raise NiahInputError(f'{where}: needs "file" and a non-empty "caption"')
        if storage.extension(rec["file"]) not in niah_schema.NEEDLE_IMAGE_EXTENSIONS:
            raise NiahInputError(f"{where}: {rec['file']!r} is not an image "
                                 f"({', '.join(niah_schema.NEEDLE_IMAGE_EXTENSIONS)})")
        uri = storage.resolve_from(folder, rec["file"])
        if not storage.exists(uri):
            raise NiahInputError(f"{where}: image {rec['file']!r} not found in {folder}")
        needles.append(Needle(clean_caption(rec["caption"], max_chars), image_uri=uri, from_annotations=True))
    return needles


def split_videos(videos: list[sources.VideoRef], fraction: float, seed: int):
    """(haystack videos, needle videos): a seeded `fraction` of the corpus gives needles and never appears in a
    haystack."""
    if len(videos) < 2:
        raise NiahInputError(f"the sources hold {len(videos)} usable video(s): without --needles at least 2 are "
                             "needed (some give needle frames, the rest haystacks)")
    order = list(videos)
    random.Random(f"split:{seed}").shuffle(order)
    count = min(len(order) - 1, max(1, round(len(order) * fraction)))
    needle_keys = {v.key for v in order[:count]}
    return [v for v in videos if v.key not in needle_keys], [v for v in videos if v.key in needle_keys]


def _time_label(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


def _farthest_from(times: list[float], duration: float) -> float:
    """The half-second point of the video farthest from every time in `times` (the middle when there are none), so
    a video caption's needle frame differs from the clip captions' ones."""
    if not times:
        return round(duration / 2, 3)
    points = [i / 2 for i in range(int(duration * 2))] or [0.0]
    return max(points, key=lambda p: (min(abs(p - t) for t in times), -p))


def from_videos(videos: list[sources.VideoRef], captions: dict[str, list[dict]], spacing_s: float,
                max_chars: int) -> list[Needle]:
    needles = []
    for ref in videos:
        duration = ref.duration_s
        if not duration:
            with sources.local_copy(ref) as path:
                duration = sources.duration_of(path)
        if not duration:
            continue  # unreadable: gives no needles
        rows = captions.get(ref.key, [])
        clips = [r for r in rows if r["level"] == "clip" and r["start_s"] is not None and r["end_s"] is not None
                 and r["start_s"] < duration]
        whole = [r for r in rows if r["level"] == "video"]
        times = []
        for r in clips:
            t = round((r["start_s"] + min(r["end_s"], duration)) / 2, 3)
            if clean_caption(r["text"], max_chars):
                times.append(t)
                needles.append(Needle(clean_caption(r["text"], max_chars), video=ref, time_s=t, from_annotations=True))
        if whole and clean_caption(whole[0]["text"], max_chars):
            needles.append(Needle(clean_caption(whole[0]["text"], max_chars), video=ref,
                                  time_s=_farthest_from(times, duration), from_annotations=True))
        if not clips and not whole:
            t = min(spacing_s / 2, duration / 2)
            while t < duration:
                needles.append(Needle(f"{ref.label} at {_time_label(t)}", video=ref, time_s=round(t, 3)))
                t += spacing_s
    return needles


def load_image(needle: Needle, width: int, height: int) -> np.ndarray:
    if needle.video is not None:
        with sources.local_copy(needle.video) as path:
            return imaging.frame_at(path, needle.time_s, width, height)
    from PIL import Image

    with Image.open(io.BytesIO(storage.read_bytes(needle.image_uri))) as image:
        return imaging.letterbox(image, width, height)

"""Render one planned item: load and caption-overlay its needle images, stream 1 fps haystack frames around the
needle clips into the frame folder and/or video, and return its items.jsonl and answers.jsonl rows. Pure (no Ray);
`render_unit` is the same as a Ray task body. A committed item leaves a record, so a rerun returns it untouched."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pipeline.io import storage
from pipeline.io.frames import encode_jpeg
from pipeline.niah import imaging, needles, overlay, questions, sources
from pipeline.niah.errors import NiahInputError
from pipeline.niah.plan import ItemPlan
from pipeline.niah.writers import FrameFolder, VideoFile
from schemas import niah as niah_schema


@dataclass(frozen=True)
class RenderSettings:
    out: str
    format: str
    width: int
    height: int
    jpeg_quality: int
    crf: int
    text_height: float
    s3_endpoint_url: str | None = None
    s3_region: str | None = None

    def digest_fields(self) -> dict:
        return {k: getattr(self, k) for k in ("format", "width", "height", "jpeg_quality", "crf", "text_height")}


def _needle_images(plan: ItemPlan, s: RenderSettings) -> list[np.ndarray]:
    """Images of chain + distractors; each but the last of either chain carries the clue to the next."""
    images = []
    for group in (plan.chain, plan.distractors):
        for j, needle in enumerate(group):
            image = needles.load_image(needle, s.width, s.height)
            if j + 1 < len(group):
                image = overlay.render_clue(image, group[j + 1].caption, s.text_height)
            images.append(image)
    return images


def _background(plan: ItemPlan, s: RenderSettings, used: list[dict]) -> Iterator[np.ndarray]:
    """1 fps frames of the planned haystack videos, cycling through them; unreadable videos are skipped."""
    unreadable: set[str] = set()
    while True:
        produced = 0
        for ref in plan.haystack_videos:
            if ref.key in unreadable:
                continue
            entry = {"video": ref.key, "frames": 0}
            try:
                with sources.local_copy(ref) as path:
                    for frame in imaging.sample_1fps(path, s.width, s.height):
                        entry["frames"] += 1
                        produced += 1
                        if entry["frames"] == 1:
                            used.append(entry)
                        yield frame
            except (RuntimeError, OSError) as err:
                unreadable.add(ref.key)
                used.append({"video": ref.key, "frames": entry["frames"], "skipped": str(err)[:200]})
        if produced == 0:
            raise NiahInputError(f"{plan.id}: none of its {len(plan.haystack_videos)} haystack video(s) decodes")


def _hop_rows(group, starts: list[int]) -> list[dict]:
    rows = []
    for j, (needle, start) in enumerate(zip(group, starts)):
        rows.append({"hop": j + 1, "caption": needle.caption,
                     "clue": overlay.clue_text(group[j + 1].caption) if j + 1 < len(group) else None,
                     "frame_indices": niah_schema.frame_indices_of_clip(start), "source": needle.describe()})
    return rows


def render(plan: ItemPlan, s: RenderSettings) -> dict:
    record_uri = storage.join(s.out, niah_schema.work_record_path(plan.id, plan.digest()))
    if storage.exists(record_uri):
        return json.loads(storage.read_bytes(record_uri))
    images = _needle_images(plan, s)
    fact_q = plan.fact_question or questions.colour_question(images[plan.hops - 1], random.Random(f"{plan.rng_key}:fact"))
    clip_at = {start: k for k, start in enumerate(plan.clip_starts)}
    writers = []
    if s.format in ("frames", "both"):
        writers.append(FrameFolder(storage.join(s.out, niah_schema.haystack_frames_dir(plan.id)), s.jpeg_quality))
    if s.format in ("video", "both"):
        writers.append(VideoFile(storage.join(s.out, niah_schema.haystack_video_path(plan.id)), s.width, s.height,
                                 s.crf))
    used: list[dict] = []
    background = _background(plan, s, used)
    encoded = [encode_jpeg(im, s.jpeg_quality) for im in images] if s.format != "video" else [None] * len(images)
    try:
        frame = 0
        while frame < plan.num_frames:
            k = clip_at.get(frame)
            if k is None:
                image, data = next(background), None
                for w in writers:
                    w.add(image, data)
                frame += 1
                continue
            for _ in range(niah_schema.NEEDLE_CLIP_FRAMES):
                for w in writers:
                    w.add(images[k], encoded[k])
                frame += 1
        background.close()
        for w in writers:
            w.commit()
    except BaseException:
        background.close()
        for w in writers:
            w.abort()
        raise
    haystack = {}
    if s.format in ("frames", "both"):
        haystack["frames"] = niah_schema.haystack_frames_dir(plan.id)
    if s.format in ("video", "both"):
        haystack["video"] = niah_schema.haystack_video_path(plan.id)
    qs = [plan.caption_question, fact_q]
    hops = len(plan.chain)
    result = {
        "item": {"id": plan.id, "haystack": haystack, "num_frames": plan.num_frames, "prompt": plan.prompt,
                 "questions": [{"question": q["question"], "options": q["options"]} for q in qs], "seed": plan.seed},
        "answer": {"id": plan.id, "answers": [q["answer"] for q in qs], "question_kinds": [q["kind"] for q in qs],
                   "hops": hops, "num_frames": plan.num_frames,
                   "chain": _hop_rows(plan.chain, plan.clip_starts[:hops]),
                   "distractors": _hop_rows(plan.distractors, plan.clip_starts[hops:]),
                   "needle_frame_indices": sorted(i for st in plan.clip_starts
                                                  for i in niah_schema.frame_indices_of_clip(st)),
                   "haystack_sources": used},
    }
    storage.write_bytes(record_uri, json.dumps(result, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return result


def render_unit(plan: ItemPlan, s: RenderSettings) -> dict:
    """Ray task body: set up storage for this worker, then render."""
    storage.configure(s.s3_endpoint_url, s.s3_region)
    return render(plan, s)

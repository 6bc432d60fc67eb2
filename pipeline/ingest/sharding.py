"""WebDataset shards: deterministic assignment (sorted by video_id, filled to a size and count target) and
byte-reproducible tar writing (fixed mtime, owner, mode and member order)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from typing import Iterable

from pipeline.io import storage
from schemas import layout
from schemas import sample as sample_schema

JSON_OVERHEAD = 4096
FIXED_MTIME = 0
RECORD_REJECTS = "rejects"  # shard record key: [{video_id, reason, message}] of planned videos the tar lacks


@dataclass
class ShardPlan:
    index: int
    videos: list[dict] = field(default_factory=list)  # manifest rows in key order
    est_bytes: int = 0

    @property
    def name(self) -> str:
        return layout.shard_name(self.index)


def estimated_bytes(video: dict, payload: str, frames_stage: str) -> int:
    n = video["bytes"] + JSON_OVERHEAD
    if payload == "frames":
        plan = next((p for p in video["sampling"] if p["stage"] == frames_stage), None)
        if plan:
            n += len(plan["frame_indices"]) * max(video["width"] * video["height"] // 10, 1024)
    return n


def spans(sizes: Iterable[int], target_bytes: int, max_samples: int) -> list[tuple[int, int]]:
    """(start, stop) of each shard over items in key order with these estimated sizes: a shard is closed before the
    item that would take it over `target_bytes` or `max_samples` (an item larger than the target gets its own)."""
    out: list[tuple[int, int]] = []
    start = stop = total = 0
    for stop, size in enumerate(sizes):
        if stop > start and (total + size > target_bytes or stop - start >= max_samples):
            out.append((start, stop))
            start, total = stop, 0
        total += size
        stop += 1
    if stop > start:
        out.append((start, stop))
    return out


def assign(videos: Iterable[dict], target_bytes: int, max_samples: int, payload: str = "video",
           frames_stage: str = "stage3") -> list[ShardPlan]:
    ordered = sorted(videos, key=lambda v: v["video_id"])
    sizes = [estimated_bytes(v, payload, frames_stage) for v in ordered]
    return [ShardPlan(k, ordered[a:b], sum(sizes[a:b]))
            for k, (a, b) in enumerate(spans(sizes, target_bytes, max_samples))]


def canonical_json(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def content_digest(docs: list[dict], payload_settings: dict) -> str:
    h = hashlib.sha256(canonical_json(payload_settings))
    for doc in docs:
        h.update(canonical_json(doc))
    return h.hexdigest()


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class SampleWriter:
    """Writes samples into an open tar: members of one key are consecutive, in a fixed field order."""

    def __init__(self, path: str):
        self.tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)
        self.count = 0

    def add_bytes(self, key: str, field_name: str, data: bytes) -> None:
        import io

        self.tar.addfile(_tarinfo(f"{key}.{field_name}", len(data)), io.BytesIO(data))

    def add_file(self, key: str, field_name: str, path: str) -> None:
        with open(path, "rb") as f:
            self.tar.addfile(_tarinfo(f"{key}.{field_name}", os.path.getsize(path)), f)

    def add_sample(self, key: str, video_field: str, video_path: str, doc: dict,
                   frames_jpeg: list[bytes] | None = None) -> None:
        if not sample_schema.is_valid_key(key):
            raise ValueError(f"invalid WebDataset key {key!r}: no dots or path separators allowed")
        self.add_file(key, video_field, video_path)
        self.add_bytes(key, sample_schema.JSON_FIELD, canonical_json(doc))
        for k, data in enumerate(frames_jpeg or []):
            self.add_bytes(key, sample_schema.frame_field(k), data)
        self.count += 1

    def close(self) -> None:
        self.tar.close()


def wids_index(records: list[dict]) -> dict:
    """The wids shard index (URLs relative to the index file)."""
    return {
        "__kind__": layout.WIDS_KIND,
        "wids_version": layout.WIDS_VERSION,
        "name": layout.SHARD_PREFIX,
        "shardlist": [
            {"url": r["shard"], "nsamples": r["nsamples"], "filesize": r["filesize"], "sha256": r["sha256"]}
            for r in sorted(records, key=lambda r: r["shard"])
        ],
    }


def extract_videos(tar_uri: str, videos: list[dict], dest: str, missing_ok: bool = False) -> dict[str, str]:
    """Copy the video field of each of `videos` ({video_id, extension}) out of a shard tar (local or s3://, read as
    a stream that stops once all are found) into `dest`; video_id -> local path. A video the shard lacks is an
    error unless `missing_ok`."""
    wanted = {f"{v['video_id']}.{v['extension']}": v["video_id"] for v in videos}
    paths = {}
    with storage.open_read(tar_uri) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            vid = wanted.get(member.name)
            if vid is None:
                continue
            path = os.path.join(dest, member.name)
            with tar.extractfile(member) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            paths[vid] = path
            if len(paths) == len(wanted):
                break
    missing = set(wanted.values()) - set(paths)
    if missing and not missing_ok:
        raise RuntimeError(f"{tar_uri} lacks videos {sorted(missing)[:3]}: rerun the shard stage")
    return paths

"""The streaming loader trainers import: a PyTorch IterableDataset over LongVid WebDataset shards.

    from pipeline.loader import LongVidDataset
    ds = LongVidDataset("out", "stage3", tasks=["event_count"], shuffle_buffer=256, seed=0)   # a build's root
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=4)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for item in loader: ...

`source` is a list of shard URLs (local paths or s3://), one `.tar`, a `shards.txt`, or a build's output root
(`mixtures/<stage>/shards.txt`, else every shard of `shards/index.json`). With a mixture (found beside the shard
list, or passed as `mixture=`) there is one item per training record of the chosen tasks; without one, one item
per video with no conversations.

Sample order and resume (pipeline.loader.stream): the items of one epoch on one rank form a stream fixed by
(seed, epoch, rank, world size, shards, mixture); every item carries its position `sample_index` in it. A
DataLoader yields that stream in order whatever its `num_workers`, so a trainer that has consumed the items up to
position N - 1 resumes with `set_epoch(epoch, start_sample=N)` and gets exactly the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional, Sequence, Union

import numpy as np
import torch

from pipeline.io import storage
from pipeline.loader import decode as loader_decode
from pipeline.loader import mixture as loader_mixture
from pipeline.loader import shards as loader_shards
from pipeline.loader import stream as loader_stream
from pipeline.loader.mixture import MixRecord
from pipeline.loader.shards import ShardSample
from schemas import loader as loader_schema
from schemas.config import ConfigError
from schemas.sampling import timestamp_prompt


class _Item:
    """A stream entry before it is fetched: the shard sample and, with a mixture, one of its records."""

    __slots__ = ("sample", "record")

    def __init__(self, sample: ShardSample, record: Optional[MixRecord]):
        self.sample, self.record = sample, record


class LongVidDataset(torch.utils.data.IterableDataset):
    """Options: schemas.loader.LoaderOptions (stage, tasks, task_weights, payload, shuffle_shards, shuffle_buffer,
    seed, resample, epoch_length, rank, world_size, decode_threads, frames_source); `mixture` / `hico` override the
    folders found beside the shards; `clip_len` must equal the build's sampling.clip_len.

    Items are dicts: `video_id`, `record_id`, `task`, `conversations` (the record's turns; [] without a
    mixture), `stage`, `epoch`, `sample_index`, `frame_indices` (int64 [T]), `timestamps` (float64 [T], seconds
    from the video's start), `duration` (seconds: the video's, or the clip's for a clipped record), `start`,
    `end` (clip window or None), `prompt` (the timestamp prompt for `duration` and T), `frames` (uint8
    [T, H, W, 3], payload frames/both; by default from the sample's JPEG frames (shard.payload=frames) when they
    are exactly the item's frames, else decoded from the video: see `frames_source`), `tokens` (float16
    [n_clips, 64, C]) and `token_times` (float64 [n_clips, 2], clip start/end seconds; a clipped record gets the
    clips overlapping its window) (payload tokens/both), `shard`. Arrays are numpy, except `frames` in a
    DataLoader worker, which are decoded into a shared-memory tensor; a DataLoader hands everything over as
    tensors."""

    def __init__(self, source: Union[str, Sequence[str]], stage: str, *, mixture: Optional[str] = None,
                 hico: Optional[str] = None, clip_len: int = 4, s3_endpoint_url: Optional[str] = None, **options):
        if options.get("tasks") is not None:
            options["tasks"] = tuple(options["tasks"])
        known = [f.name for f in dataclasses.fields(loader_schema.LoaderOptions)]
        for key in options:
            if key not in known or key == "stage":
                raise ConfigError(key, "unknown loader option", f"use any of {', '.join(known[1:])}")
        self.opts = loader_schema.validate(loader_schema.LoaderOptions(stage=stage, **options))
        if s3_endpoint_url:
            storage.configure(s3_endpoint_url, storage.settings().region)
        # Captured here and re-applied in each DataLoader worker (a spawned worker starts with defaults).
        self._s3 = storage.settings()
        found = loader_shards.resolve(source, stage)
        self.urls = found.urls
        self.mixture_dir = mixture or found.mixture_dir
        self.hico_dir = hico or found.hico_dir
        self.clip_len = clip_len
        if self.opts.tasks and not self.mixture_dir:
            raise ConfigError("tasks", "given, but no stage mixture was found beside the shards",
                              "run the `mix` stage, or pass mixture=<out>/mixtures/<stage>")
        self.records = loader_mixture.load_records(self.mixture_dir, self.opts.tasks) if self.mixture_dir else None
        self.multiplicity = self._multiplicity()
        if self.opts.wants_tokens and not self.hico_dir:
            raise ConfigError("payload", f"{self.opts.payload!r} needs HiCo tokens of {stage}, and none were found",
                              f"run the hico stage with hico.stage={stage}, pass hico=<out>/hico/{stage}, or use "
                              f"payload='frames'")
        rank, world = loader_shards.distributed_rank_world()
        self.rank = rank if self.opts.rank is None else self.opts.rank
        self.world_size = world if self.opts.world_size is None else self.opts.world_size
        if not 0 <= self.rank < self.world_size:
            raise ConfigError("rank", f"{self.rank} is outside [0, {self.world_size})", "check RANK and WORLD_SIZE")
        loader_stream.check_shards_for_ranks(len(self.urls), self.world_size, self.opts.resample)
        self.epoch = 0
        self.start_sample = 0
        self._hico_reader = None
        self._cache: dict = {}
        self._in_worker = False
        with contextlib.closing(loader_shards.scan_shard(self.urls[0])) as samples:
            first = next(samples, None)
        if first is not None:
            self._plan(first)  # a stage the build never planned fails here, not in a DataLoader worker
        if self.opts.frames_source == "jpeg":
            self._check_jpegs_serve(first)

    def _check_jpegs_serve(self, first: Optional[ShardSample]) -> None:
        """frames_source='jpeg' fails here on what it cannot serve, rather than mid-epoch in a worker."""
        fix = "use frames_source='auto' (JPEGs where they fit, else the video) or 'video'"
        clipped = sum(r.clipped for rs in (self.records or {}).values() for r in rs)
        if clipped:
            raise ConfigError("frames_source", f"'jpeg', but {clipped} records of the chosen tasks are clips, whose "
                              f"frames are sampled inside their window, not the carried stage frames",
                              f"choose tasks without clip records, or {fix}")
        if first is not None:
            why = self._jpegs_mismatch(first, self._plan(first)["frame_indices"])
            if why:
                raise ConfigError("frames_source", f"'jpeg', but sample {first.key} of {first.url}: {why}",
                                  f"write the shards with shard.payload=frames shard.frames_stage={self.opts.stage}, "
                                  f"or {fix}")

    def _multiplicity(self) -> Optional[dict[str, float]]:
        weights = self.opts.task_weights
        if weights is None:
            return None
        if self.records is None:
            raise ConfigError("task_weights", "given, but no stage mixture was found beside the shards",
                              "run the `mix` stage, or pass mixture=<out>/mixtures/<stage>")
        if weights == loader_schema.MIXTURE_WEIGHTS:
            weights = loader_mixture.mixture_weights(self.mixture_dir)
        return loader_mixture.task_multiplicity(self.records, weights)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_hico_reader"] = None  # thread pool and open files: each worker opens its own
        state["_cache"] = {}
        return state

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        """Select the epoch the next iteration yields, from position `start_sample` of the rank's stream (resume).
        Call it before creating the DataLoader iterator (not with persistent_workers, whose workers keep the
        dataset they started with)."""
        if start_sample < 0:
            raise ValueError(f"start_sample must be >= 0, got {start_sample}")
        self.epoch, self.start_sample = epoch, start_sample

    # -- the stream -------------------------------------------------------------------------------------------

    def _expand(self, sample: ShardSample) -> list[_Item]:
        if self.records is None:
            return [_Item(sample, None)]
        records = self.records.get(sample.key, ())
        if self.multiplicity is None:
            return [_Item(sample, r) for r in records]
        return [_Item(sample, r) for r in records
                for _ in range(loader_stream.copies(self.multiplicity[r.task], self.opts.seed, self.epoch, r.id))]

    def _stream(self):
        if storage.settings() != self._s3:
            storage.configure(self._s3.endpoint_url, self._s3.region)
        return loader_stream.rank_stream(self.urls, self.opts, self.epoch, self.rank, self.world_size,
                                         loader_shards.scan_shard, self._expand)

    def stream_keys(self):
        """(sample_index, video_id, record_id) of the epoch's rank stream, without fetching or decoding."""
        for index, item in enumerate(self._stream()):
            yield index, item.sample.key, item.record.id if item.record else None

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # In a DataLoader worker frames are decoded straight into shared memory (no copy on the way out).
        self._in_worker = info is not None
        for index, item in loader_stream.worker_share(self._stream(), self.start_sample, worker, num_workers):
            yield self._materialize(item, index)

    # -- one item ---------------------------------------------------------------------------------------------

    def _plan(self, sample: ShardSample) -> dict:
        plans = sample.doc.get("sampling") or {}
        if self.opts.stage not in plans:
            raise ConfigError("stage", f"{self.opts.stage!r} has no sampling plan in {sample.url} (plans: "
                              f"{', '.join(plans)})", "use a stage the build planned (sampling.stages)")
        return plans[self.opts.stage]

    def _frame_plan(self, sample: ShardSample, record: Optional[MixRecord]) -> tuple[list[int], list[float], float]:
        plan = self._plan(sample)
        if record is None or not record.clipped:
            return plan["frame_indices"], plan["timestamps_s"], plan["duration_s"]
        fps = sample.doc["reader_fps"]
        idx, duration = loader_decode.clip_frame_indices(
            sample.doc["reader_num_frames"], fps, record.start, record.end, plan["min_frames"], plan["max_frames"],
            plan["sample"], self.clip_len)
        return idx, [i / fps for i in idx], duration

    def _video_bytes(self, sample: ShardSample) -> bytes:
        key = ("bytes", sample.url, sample.key)
        if key in self._cache:
            return self._cache[key]
        offset, size = sample.video_member
        data = storage.read_range(sample.url, offset, size)
        if self.records is not None:  # the video's other records are likely to come to this worker soon
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "bytes"}
            self._cache[key] = data
        return data

    @staticmethod
    def _jpegs_mismatch(sample: ShardSample, indices: list[int]) -> Optional[str]:
        return loader_decode.carried_jpegs_mismatch(sample.doc, len(sample.jpeg_members), indices)

    def _from_jpegs(self, sample: ShardSample, record: Optional[MixRecord], indices: list[int]) -> bool:
        source = self.opts.frames_source
        if source == "video":
            return False
        why = "a clip record's frames are sampled inside its window" if record is not None and record.clipped \
            else self._jpegs_mismatch(sample, indices)
        if why and source == "jpeg":
            raise ValueError(f"frames_source='jpeg': sample {sample.key} of {sample.url} for record "
                             f"{record.id if record else None}: {why}")
        return why is None

    def _decode(self, sample: ShardSample, record: Optional[MixRecord], indices: list[int]):
        if self._from_jpegs(sample, record, indices):
            # Only the JPEG members are read: one range (one GET on S3) that skips the video.
            jpegs = loader_shards.read_members(sample.url, sample.jpeg_members)
            return loader_decode.decode_jpegs(jpegs, shared=self._in_worker)
        return loader_decode.decode_frames(self._video_bytes(sample), indices, self.opts.decode_threads,
                                           sample.doc.get("reader") or "decord", shared=self._in_worker)

    def _frames(self, sample: ShardSample, record: Optional[MixRecord], indices: list[int]):
        key = ("frames", sample.url, sample.key, tuple(indices))
        cached = self._cache.get(key)
        if cached is None:
            cached = self._decode(sample, record, indices)
            if self.records is None:
                return cached
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "frames"}
            self._cache[key] = cached
        # The trainer may write into an item's frames: the cached ones stay private.
        if isinstance(cached, torch.Tensor):
            return torch.empty_like(cached).share_memory_().copy_(cached)
        return cached.copy()

    def _tokens(self, video_id: str, record: Optional[MixRecord]) -> tuple[np.ndarray, np.ndarray]:
        if self._hico_reader is None:
            from compressors.token_store import HicoReader

            self._hico_reader = HicoReader(self.hico_dir, s3_endpoint_url=self._s3.endpoint_url)
        v = self._hico_reader.read(video_id)
        times = np.stack([v.t_start_s, v.t_end_s], axis=1)
        if record is not None and record.clipped:
            keep = (v.t_end_s > record.start) & (v.t_start_s < record.end)  # clips overlapping the window
            return v.tokens[keep], times[keep]
        return np.array(v.tokens), times  # a writable copy of the reader's (memory-mapped) buffer

    def _materialize(self, item: _Item, index: int) -> dict:
        sample, record = item.sample, item.record
        indices, timestamps, duration = self._frame_plan(sample, record)
        out = {
            "video_id": sample.doc["video_id"],
            "record_id": record.id if record else None,
            "task": record.task if record else None,
            "conversations": record.conversations if record else [],
            "stage": self.opts.stage,
            "epoch": self.epoch,
            "sample_index": index,
            "frame_indices": np.asarray(indices, dtype=np.int64),
            "timestamps": np.asarray(timestamps, dtype=np.float64),
            "duration": float(duration),
            "start": record.start if record and record.clipped else None,
            "end": record.end if record and record.clipped else None,
            "prompt": timestamp_prompt(duration, len(indices)),
            "shard": sample.url,
        }
        if self.opts.wants_frames:
            out["frames"] = self._frames(sample, record, indices)
        if self.opts.wants_tokens:
            out["tokens"], out["token_times"] = self._tokens(out["video_id"], record)
        return out

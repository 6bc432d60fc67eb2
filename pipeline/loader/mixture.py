"""The conversations the loader attaches to each video: a stage mixture's `<task>.jsonl` records, grouped by video.

Contract (schemas.mixture, written by the `mix` stage): `mixtures/<stage>/<task>.jsonl` holds one training record
per line, `{"id", "video", "video_id"?, "conversations", "duration"?, "start"?, "end"?}`, and `members.parquet`
maps every record id to its video and task.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Optional, Sequence

from pipeline.io import storage
from schemas import layout
from schemas.config import ConfigError
from schemas.mixture import TASKS


@dataclass(frozen=True)
class MixRecord:
    id: str
    task: str
    video_id: str
    conversations: list
    start: Optional[float] = None  # seconds: a clipped sample (the trainer samples frames inside [start, end])
    end: Optional[float] = None

    @property
    def clipped(self) -> bool:
        return self.start is not None and self.end is not None


def _task_file(mixture_dir: str, task: str) -> str:
    # The file name comes from the layout contract; only the folder is the caller's.
    return storage.join(mixture_dir, posixpath.basename(layout.mixture_task_path("_", task)))


def mixture_tasks(mixture_dir: str) -> list[str]:
    members = storage.read_parquet(storage.join(mixture_dir, layout.MIX_MEMBERS_NAME))
    present = set(members.column("task").to_pylist())
    return [t for t in TASKS if t in present] + sorted(present - set(TASKS))


def load_records(mixture_dir: str, tasks: Optional[Sequence[str]] = None) -> dict[str, list[MixRecord]]:
    """video_id -> its records of `tasks` (default: every task in the mixture), in task order then file order."""
    members = storage.read_parquet(storage.join(mixture_dir, layout.MIX_MEMBERS_NAME)).to_pylist()
    video_of = {m["record_id"]: m["video_id"] for m in members}
    present = mixture_tasks(mixture_dir)
    chosen = list(tasks) if tasks else present
    for task in chosen:
        if task not in present:
            raise ConfigError("tasks", f"the mixture {mixture_dir} has no {task!r} records",
                              f"use any of {', '.join(present)}")
    by_video: dict[str, list[MixRecord]] = {}
    for task in chosen:
        for line in storage.read_bytes(_task_file(mixture_dir, task)).decode("utf-8").splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            video_id = rec.get("video_id") or video_of.get(rec["id"])
            if video_id is None:
                raise ValueError(f"{_task_file(mixture_dir, task)}: record {rec['id']!r} has no video_id and is not "
                                 f"in {layout.MIX_MEMBERS_NAME}: rerun the `mix` stage")
            by_video.setdefault(video_id, []).append(
                MixRecord(rec["id"], task, video_id, rec["conversations"], rec.get("start"), rec.get("end")))
    return by_video


def mixture_weights(mixture_dir: str) -> dict[str, float]:
    """{task: weight} of the stage's weights.json (written by the `mix` stage from mix.stages.<stage>.tasks)."""
    doc = json.loads(storage.read_bytes(storage.join(mixture_dir, layout.MIX_WEIGHTS_JSON)))
    return {task: float(spec["weight"]) for task, spec in doc["tasks"].items()}


def task_multiplicity(by_video: dict[str, list[MixRecord]], weights: dict[str, float]) -> dict[str, float]:
    """Expected copies per record of each task so that task t makes up weights[t] / sum(weights) of the stream
    (over the tasks loaded) while an epoch keeps about as many items as there are records."""
    counts: dict[str, int] = {}
    for records in by_video.values():
        for r in records:
            counts[r.task] = counts.get(r.task, 0) + 1
    total_weight = sum(weights.get(t, 0.0) for t in counts)
    if total_weight <= 0:
        raise ConfigError("task_weights", f"no positive weight for the loaded tasks {', '.join(sorted(counts))}",
                          "give at least one of them a positive weight")
    total = sum(counts.values())
    return {t: weights.get(t, 0.0) / total_weight * total / n for t, n in counts.items()}

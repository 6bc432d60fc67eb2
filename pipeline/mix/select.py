"""Which annotation feeds which curriculum stage: candidates (a clip caption, a summary, a group of QA of one video),
their duration class, the stage's frame plan, and a seeded order with per-task caps. Pure: no I/O."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Optional

from pipeline.mix import text as mix_text
from schemas import mixture, sampling
from schemas.config import MixConfig, SamplingConfig


@dataclass(frozen=True)
class VideoInfo:
    video_id: str
    extension: str
    shard: str
    vlen: int  # the training reader's frame count and rate (decord), what every plan derives from
    fps: float

    @property
    def duration_s(self) -> float:
        return self.vlen / float(self.fps)


class Turn(NamedTuple):  # a tuple: one is made per annotation row
    source_table: str
    source_key: str
    question: str
    answer: str
    topic: str = ""  # the annotation's own question or query: one record never asks it twice (open and mc forms)


@dataclass(slots=True)
class Candidate:
    """One future training record, the same in every stage it feeds."""

    task: str
    video_id: str
    n: int  # its position among the video's candidates of this task: record ids stay put when caps change
    turns: list[Turn]
    clip: Optional[tuple[float, float]] = None  # (start, end) seconds as written into the record


@dataclass(slots=True)
class Sample:
    """A candidate placed in a stage: its record id, the duration the trainer sees and the stage's frames."""

    stage: str
    record_id: str
    candidate: Candidate
    duration_s: float
    frame_indices: list[int]
    order: str = field(repr=False, default="")

    @property
    def task(self) -> str:
        return self.candidate.task

    @property
    def video_id(self) -> str:
        return self.candidate.video_id


class AnnotationRow(NamedTuple):
    table: str  # captions | qa | grounding
    source_key: str
    row: dict


class ClipFrames(Sequence):
    """A clip's frame indices: the sampling rule's indices over the clip's own frames (shared, never changed),
    offset to the clip's first frame; listed only when iterated (decord stages only need how many)."""

    __slots__ = ("indices", "first")

    def __init__(self, indices: list[int], first: int):
        self.indices, self.first = indices, first

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.first + k for k in self.indices[i]]
        return self.first + self.indices[i]

    def __iter__(self):
        first = self.first
        return (first + k for k in self.indices)

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(list(self))


def candidates(rows: Iterable[AnnotationRow], videos: dict[str, VideoInfo], max_turns: int) -> list[Candidate]:
    """Clip captions become clipped samples, summaries whole-video ones; QA and grounding rows of one video and task
    are grouped into records of up to `max_turns` turns, never two with the same question in one record."""
    singles: dict[tuple[str, str], list[Candidate]] = {}
    grouped: dict[tuple[str, str], list[Turn]] = {}
    for r in rows:
        video = videos.get(r.row["video_id"])
        if video is None:
            raise ValueError(f"annotations/{r.table} row {r.source_key} names video {r.row['video_id']} that is not in "
                             "the manifest: rerun the `annotate` stage")
        task = mix_text.task_of(r.table, r.row)
        text = mix_text.turn_of(r.table, r.row)
        if text is None:
            continue
        topic = str(r.row.get("question") or r.row.get("query") or "").strip().lower()
        turn = Turn(r.table, r.source_key, *text, topic)
        key = (video.video_id, task)
        if task == mixture.CAPTION_TASK:
            clip = _clip(video, r.row["start_s"], r.row["end_s"])
            if clip is not None:
                singles.setdefault(key, []).append(Candidate(task, video.video_id, 0, [turn], clip))
        elif task == mixture.SUMMARY_TASK:
            singles.setdefault(key, []).append(Candidate(task, video.video_id, 0, [turn]))
        else:
            grouped.setdefault(key, []).append(turn)
    out = []
    for (video_id, task), cands in singles.items():
        for n, c in enumerate(cands):
            c.n = n
            out.append(c)
    for (video_id, task), turns in grouped.items():
        for n, group in enumerate(_group(turns, max_turns)):
            out.append(Candidate(task, video_id, n, group))
    out.sort(key=lambda c: (c.video_id, c.task, c.n))
    return out


def _clip(video: VideoInfo, start_s: float, end_s: float) -> Optional[tuple[float, float]]:
    """(start, end) rounded to milliseconds, the end kept where the trainer would clamp it; None when the clip
    holds no whole frame."""
    start = round(max(0.0, start_s), 3)
    end = round(min(end_s, video.duration_s - mixture.CLIP_END_MARGIN_S), 3)
    if end <= start:
        return None
    _, frames, _ = mixture.clip_window(video.vlen, video.fps, start, end)
    return (start, end) if frames >= 1 else None


def _group(turns: list[Turn], max_turns: int) -> list[list[Turn]]:
    groups: list[list[Turn]] = []
    for turn in turns:
        for g in groups:
            if len(g) < max_turns and all(t.topic != turn.topic for t in g):
                g.append(turn)
                break
        else:
            groups.append([turn])
    return groups


def duration_class(duration_s: float, mix: MixConfig) -> Optional[str]:
    if duration_s < mix.long_min_s:
        return "short"
    return "long" if duration_s <= mix.long_max_s else None


def plan(candidate: Candidate, video: VideoInfo, stage: str, smp: SamplingConfig,
         memo: Optional[dict] = None) -> tuple[float, Sequence[int]]:
    """(duration the trainer reports, frame indices it samples) for a candidate under a stage's sampling rule;
    a clip's frames follow the rule over the clip's own frames, offset to its first one. `memo` (a dict kept for
    one selection) reuses the rule's result for equal arguments; the lists it hands out are shared, never changed."""
    st = smp.stages[stage]
    if candidate.clip is None:
        return video.duration_s, _frame_indices(memo, video.vlen, video.fps, st, smp.clip_len)
    first, frames, duration = _clip_window(memo, video, candidate.clip)
    return duration, ClipFrames(_frame_indices(memo, frames, video.fps, st, smp.clip_len), first)


def _clip_window(memo: Optional[dict], video: VideoInfo, clip: tuple[float, float]) -> tuple[int, int, float]:
    if memo is None:
        return mixture.clip_window(video.vlen, video.fps, *clip)
    key = (video.vlen, video.fps, clip)  # every stage places the same clips
    window = memo.get(key)
    if window is None:
        window = memo[key] = mixture.clip_window(video.vlen, video.fps, *clip)
    return window


def _frame_indices(memo: Optional[dict], vlen: int, fps: float, st, clip_len: int) -> list[int]:
    args = (vlen, fps, st.min_frames, st.max_frames, st.sample, clip_len)
    if memo is None:
        return sampling.frame_indices(*args)
    idx = memo.get(args)
    if idx is None:
        idx = memo[args] = sampling.frame_indices(*args)
    return idx


def order_key(seed: int, record_id: str) -> str:
    return hashlib.sha256(f"{seed}:{record_id}".encode()).hexdigest()


def select(cands: list[Candidate], videos: dict[str, VideoInfo], mix: MixConfig,
           smp: SamplingConfig, capped: bool = True) -> dict[str, dict[str, list[Sample]]]:
    """stage -> task -> samples in the seeded order the files list them (caps keep the first max_records; a
    partition of the build selects uncapped and the driver applies the caps while merging partitions)."""
    out: dict[str, dict[str, list[Sample]]] = {}
    memo: dict = {}
    by_order = operator.attrgetter("order")
    for stage, st in mix.stages.items():
        per_task: dict[str, list[Sample]] = {}
        # every whole-video record of a video shares one plan: (duration, frame indices, feeds the stage)
        plans: dict[tuple, tuple[float, Sequence[int], bool]] = {}
        for c in cands:
            if c.task not in st.tasks:
                continue
            key = (c.video_id, c.clip)
            p = plans.get(key)
            if p is None:
                duration, idx = plan(c, videos[c.video_id], stage, smp, memo)
                p = plans[key] = (duration, idx, duration_class(duration, mix) in st.videos)
            if not p[2]:
                continue
            rid = mixture.record_id(stage, c.task, c.video_id, c.n)
            samples = per_task.get(c.task)
            if samples is None:
                samples = per_task[c.task] = []
            samples.append(Sample(stage, rid, c, p[0], p[1], order_key(mix.seed, rid)))
        for task in [t for t in st.tasks if t in per_task]:
            chosen = sorted(per_task[task], key=by_order)
            cap = st.tasks[task].max_records if capped else None
            per_task[task] = chosen[:cap] if cap is not None else chosen
        out[stage] = {t: per_task[t] for t in st.tasks if t in per_task}
    return out

"""Checks a stage's mixture files before anything is committed, by parsing back the bytes about to be written:
records well formed, one `<image>`, durations and inline timestamp prompts consistent with the video and the stage's
sampling rule, every referenced video or frame present, per-task counts equal to the membership table."""

from __future__ import annotations

import io
import json
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import orjson
import yaml

from pipeline.mix.records import data_root
from pipeline.mix.select import VideoInfo
from schemas import layout, mixture, sampling
from schemas.config import BuildConfig
from schemas.errors import LongVidError

MAX_LISTED = 12
REQUIRED_KEYS = ("id", "video", "conversations", "duration")
REQUIRED = frozenset(REQUIRED_KEYS)
RECORD_KEYS = frozenset(mixture.RECORD_KEYS)
MEMBER_COLUMNS = ("task", "record_id", "video_id", "start_s", "end_s", "num_frames")
DURATION_TOLERANCE_S = 1e-5
IMAGE_LINE = f"{mixture.IMAGE_TOKEN}\n"
PROMPT_LEAD = sampling.timestamp_prompt(0.0, 0).split("0", 1)[0]  # "The video lasts for "


class MixValidationError(LongVidError, RuntimeError):
    pass


@dataclass(frozen=True)
class Expected:
    """What the trainer will compute for one record: its duration and frame count."""

    duration_s: float
    num_frames: int


class StageCheck:
    def __init__(self, stage: str, files: dict[str, bytes], cfg: BuildConfig, videos: dict[str, VideoInfo],
                 plan_frames: dict[tuple[str, str], int], existing: set[str], members: pa.Table | None = None):
        self.stage, self.files, self.cfg, self.videos = stage, files, cfg, videos
        self.members = members  # members.parquet's table when it is not in `files` as bytes
        self.plan_frames = plan_frames  # (video_id, stage) -> frames of the manifest's sampling plan
        self.existing = existing  # files present under the output root (payloads and shards)
        self.mst = cfg.mix.stages[stage]
        self.smp = cfg.sampling.stages[stage]
        self.folder = layout.mixture_dir(stage)
        self.problems: list[str] = []
        self._dirs: dict[str, set[str]] | None = None  # folder -> its files, built on first need
        # Records of one video or one clip share these: computed once per stage check.
        self._expected_of: dict[tuple, Expected] = {}  # (video_id, start_s, end_s) -> Expected
        self._prompt_of: dict[tuple[float, int], str] = {}  # (duration, frames) -> the inline prompt's start
        self._payload_problems: dict[tuple[str, str, int], tuple[str, ...]] = {}  # (root, video, frames) -> problems
        self.img = self.mst.video_read_type == "img"
        self.inline = cfg.mix.timestamp_prompt == "inline"

    def files_in(self, folder: str) -> set[str]:
        if self._dirs is None:
            self._dirs = {}
            for path in self.existing:
                self._dirs.setdefault(posixpath.dirname(path), set()).add(posixpath.basename(path))
        return self._dirs.get(folder, set())

    def fail(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def resolve(self, folder: str, rel: str) -> str:
        return posixpath.normpath(posixpath.join(folder, rel))

    # -------------------------------------------------------------------------------------------------------------

    def run(self) -> list[str]:
        members = self._members()
        datasets = self._data_yaml()
        if members is None or datasets is None:
            return self.problems
        member_ids: dict[str, set[str]] = {}
        for task, record_id in zip(members[0], members[1]):
            ids = member_ids.get(task)
            if ids is None:
                ids = member_ids[task] = set()
            ids.add(record_id)
        # record_id -> its first row's (video_id, start_s, end_s, num_frames); dict() keeps the last of equal keys,
        # so the rows go in backwards
        first_member = dict(zip(reversed(members[1]), reversed(list(zip(*members[2:])))))
        tasks = {}
        for ds in datasets:
            path = self.resolve(self.folder, ds["json_path"])
            task = posixpath.basename(path).removesuffix(".jsonl")
            tasks[task] = self._task_file(path, ds, member_ids.get(task, set()), first_member)
        for task in set(member_ids) - set(tasks):
            self.fail(layout.mixture_members_path(self.stage), f"lists {len(member_ids[task])} records of task {task} "
                                                               f"but data.yaml has no {task}.jsonl")
        self._weights({t: len(r) for t, r in tasks.items()})
        self._shards()
        if self.cfg.mix.json_list:
            self._json_lists(tasks)
        if self.cfg.mix.internvideo2_5:
            self._internvideo(tasks)
        return self.problems

    def check_assembled(self, counts: dict[str, int]) -> list[str]:
        """The checks of files the driver assembles from partitions (data.yaml, weights.json, shards.txt); the
        records themselves were checked partition by partition. `self.files` needs only those three and the task
        file paths."""
        self._data_yaml()
        self._weights(counts)
        self._shards()
        return self.problems

    def _members(self) -> list[list] | None:
        """The members table's columns the checks use (MEMBER_COLUMNS), as lists."""
        path = layout.mixture_members_path(self.stage)
        table = self.members if self.members is not None else pq.read_table(io.BytesIO(self.files[path]))
        if table.schema != mixture.MIX_MEMBERS:
            self.fail(path, "schema differs from schemas.mixture.MIX_MEMBERS")
            return None
        return [table.column(c).to_pylist() for c in MEMBER_COLUMNS]

    def _data_yaml(self) -> list[dict] | None:
        path = layout.mixture_file_path(self.stage, layout.MIX_DATA_YAML)
        doc = yaml.safe_load(self.files[path])
        datasets = doc.get("datasets") if isinstance(doc, dict) else None
        if not isinstance(datasets, list):
            self.fail(path, "has no `datasets:` list")
            return None
        want_root = self.resolve(self.folder, _payload_root(self.stage, self.mst.video_read_type))
        for i, ds in enumerate(datasets):
            where = f"{path} datasets[{i}]"
            json_path = self.resolve(self.folder, str(ds.get("json_path")))
            if json_path not in self.files:
                self.fail(where, f"json_path {ds.get('json_path')!r} is not one of the stage's files")
            if self.resolve(self.folder, str(ds.get("data_root"))) != want_root:
                self.fail(where, f"data_root {ds.get('data_root')!r} does not resolve to {want_root}")
            problem = mixture.sampling_strategy_problem(str(ds.get("sampling_strategy")))
            if problem:
                self.fail(where, problem)
            if ds.get("video_read_type") != self.mst.video_read_type:
                self.fail(where, f"video_read_type {ds.get('video_read_type')!r} is not {self.mst.video_read_type}")
            ds["_root"] = want_root
        return [d for d in datasets if self.resolve(self.folder, str(d.get("json_path"))) in self.files]

    def _task_file(self, path: str, ds: dict, member_ids: set[str], first_member: dict) -> list[dict]:
        records = []
        root = ds["_root"]
        check = self._record
        # A newline byte is never part of a multi-byte UTF-8 character: the bytes' lines are the text's lines.
        for n, line in enumerate(self.files[path].split(b"\n")[:-1], 1):
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                self.fail(f"{path} line {n}", f"not JSON ({e})")
                continue
            if type(rec) is not dict:
                self.fail(f"{path} line {n}", "not a JSON object")
                continue
            records.append(rec)
            record_id = rec.get("id")
            member = first_member.get(record_id) if isinstance(record_id, str) else None
            if member is None:
                self.fail(f"{path} line {n}", f"record {record_id!r} is not in members.parquet")
                continue
            check(path, n, rec, member, root)
        ids = [r.get("id") for r in records]
        unique = set(ids)
        if len(unique) != len(ids):
            self.fail(path, "record ids repeat")
        if unique != member_ids or len(records) != len(member_ids):
            self.fail(path, f"{len(records)} records but members.parquet lists {len(member_ids)} of this task")
        return records

    def _expected_uncached(self, video_id: str, start_s: float | None, end_s: float | None) -> Expected:
        video = self.videos[video_id]
        st = self.smp
        if start_s is None:
            return Expected(video.duration_s, self.plan_frames[(video.video_id, self.stage)])
        _, frames, duration = mixture.clip_window(video.vlen, video.fps, start_s, end_s)
        n = sampling.num_frames_to_sample(frames, video.fps, st.min_frames, st.max_frames, st.sample,
                                          self.cfg.sampling.clip_len)
        return Expected(duration, n)

    def _record(self, path: str, n: int, rec: dict, member: tuple, root: str) -> None:
        """One parsed record against its first members row (video_id, start_s, end_s, num_frames)."""
        keys = rec.keys()
        if not (keys <= RECORD_KEYS and keys >= REQUIRED):
            extra = keys - RECORD_KEYS
            missing = [k for k in REQUIRED_KEYS if k not in rec]
            self.fail(f"{path} line {n}", f"keys {sorted(extra)} unexpected, {missing} missing")
            return
        video_id, start_s, end_s, num_frames = member
        if rec.get("video_id") != video_id:
            self.fail(f"{path} line {n}", f"video_id {rec.get('video_id')!r} is not the members' {video_id}")
            return
        where = f"{path} line {n}"
        convs = rec["conversations"]
        problem = _conversations_problem(convs)
        if problem:
            self.fail(where, problem)
        key = (video_id, start_s, end_s)
        exp = self._expected_of.get(key)
        if exp is None:
            exp = self._expected_of[key] = self._expected_uncached(video_id, start_s, end_s)
        if num_frames != exp.num_frames:
            self.fail(where, f"members.parquet says {num_frames} frames, the sampling rule {exp.num_frames}")
        duration = rec["duration"]
        if not isinstance(duration, (int, float)) or abs(duration - exp.duration_s) > DURATION_TOLERANCE_S:
            self.fail(where, f"duration {rec['duration']!r} is not the sample's {exp.duration_s:.6f} s")
        if self.img:
            if "start" in rec or "end" in rec:
                self.fail(where, "start/end on a frame directory (it holds only the clip's frames already)")
        elif rec.get("start") != start_s or rec.get("end") != end_s:
            self.fail(where, "start/end differ from the clip in members.parquet")
        problem = self._prompt(convs, exp)
        if problem:
            self.fail(where, problem)
        video = rec["video"]
        key = (root, video if type(video) is str else str(video), exp.num_frames)
        problems = self._payload_problems.get(key)
        if problems is None:
            problems = self._payload_problems[key] = self._payload(self.resolve(root, key[1]), exp.num_frames)
        for problem in problems:
            self.fail(where, problem)

    def _prompt(self, convs, exp: Expected) -> str | None:
        if not isinstance(convs, list) or not convs or not isinstance(convs[0], dict):
            return None
        value = convs[0].get("value", "")
        if type(value) is not str:
            value = str(value)
        start = len(IMAGE_LINE) if value.startswith(IMAGE_LINE) else 0  # the text after "<image>\n"
        if self.inline:
            key = (exp.duration_s, exp.num_frames)
            want = self._prompt_of.get(key)
            if want is None:
                want = self._prompt_of[key] = sampling.video_question("", exp.duration_s, exp.num_frames)
            if not value.startswith(want, start):
                return f"inline timestamp prompt is not {want!r} (duration and frames of the stage's rule)"
        elif value.find(PROMPT_LEAD, start) >= 0:
            return "holds a timestamp prompt although the trainer inserts one (timestamp_prompt: trainer)"
        return None

    def _payload(self, target: str, n: int) -> tuple[str, ...]:
        """What is wrong with the video file or frame directory `target` of a record of `n` frames (records of
        one video or clip share one: the stage check asks once per (payload, frames))."""
        if not self.img:
            return () if target in self.existing else (f"video {target} does not exist",)
        problems = []
        # The trainer reads a frame directory as a 1-fps video and samples it again with the stage's rule.
        st = self.smp
        again = sampling.frame_indices(n, 1.0, st.min_frames, st.max_frames, st.sample, self.cfg.sampling.clip_len)
        if again != list(range(n)):
            problems.append(f"the trainer would not take exactly the {n} frames in {target} (video_read_type img "
                            f"samples them again at 1 fps): use decord for {self.stage}, or make its max_frames a "
                            "multiple of sampling.clip_len")
        want = {mixture.frame_file_name(self.cfg.mix.frame_prefix, k) for k in range(n)}
        if self.files_in(target) != want:
            problems.append(f"frame directory {target} holds {len(self.files_in(target))} files, not the {n} "
                            f"frames {mixture.frame_file_name(self.cfg.mix.frame_prefix, 0)}..")
        return tuple(problems)

    def _weights(self, counts: dict[str, int]) -> None:
        path = layout.mixture_file_path(self.stage, layout.MIX_WEIGHTS_JSON)
        doc = json.loads(self.files[path])
        got = {t: v["records"] for t, v in doc.get("tasks", {}).items()}
        if got != counts:
            self.fail(path, f"records per task {got} differ from the files' {counts}")
        if counts and abs(sum(v["weight"] for v in doc["tasks"].values()) - 1.0) > 1e-9:
            self.fail(path, "weights do not sum to 1")

    def _shards(self) -> None:
        path = layout.mixture_file_path(self.stage, layout.MIX_SHARDS_TXT)
        for line in self.files[path].decode("utf-8").splitlines():
            shard = self.resolve(self.folder, line.strip())
            if shard not in self.existing:
                self.fail(path, f"shard {shard} does not exist")

    def _json_lists(self, tasks: dict[str, list[dict]]) -> None:
        for task, records in tasks.items():
            path = layout.mixture_task_path(self.stage, task, "json")
            if orjson.loads(self.files[path]) != records:
                self.fail(path, f"differs from {task}.jsonl")

    def _internvideo(self, tasks: dict[str, list[dict]]) -> None:
        folder = layout.mixture_file_path(self.stage, layout.MIX_INTERNVIDEO_DIR)
        meta = json.loads(self.files[f"{folder}/{layout.MIX_INTERNVIDEO_META}"])
        for task, records in tasks.items():
            path = f"{folder}/{task}.jsonl"
            lines = [orjson.loads(line) for line in self.files[path].splitlines()]
            if [r["id"] for r in lines] != [r["id"] for r in records]:
                self.fail(path, f"ids differ from {task}.jsonl")
            bad = [r["id"] for r in lines if set(r) - set(mixture.INTERNVIDEO_KEYS)
                   or not isinstance(r.get("duration"), (int, float)) or r["duration"] <= 0]
            if bad:
                self.fail(path, f"records without a positive duration or with extra keys, e.g. {bad[0]}")
            entry = meta.get(f"longvid_{self.stage}_{task}", {})
            if entry.get("length") != len(records) or self.resolve(folder, str(entry.get("root"))) != \
                    self.resolve(self.folder, _payload_root(self.stage, self.mst.video_read_type)):
                self.fail(f"{folder}/{layout.MIX_INTERNVIDEO_META}", f"entry of {task} has a wrong length or root")


def _conversations_problem(convs) -> str | None:
    if type(convs) is list and len(convs) == 2:  # one turn, as most records: the checks below, straight through
        human, gpt = convs
        if type(human) is dict and type(gpt) is dict and human.get("from") == "human" and gpt.get("from") == "gpt":
            question, answer = human.get("value"), gpt.get("value")
            if (type(question) is str and type(answer) is str and question.startswith(IMAGE_LINE)
                    and answer and not answer.isspace()
                    and question.count(mixture.IMAGE_TOKEN) + answer.count(mixture.IMAGE_TOKEN) == 1):
                return None
    if not isinstance(convs, list) or not convs or len(convs) % 2:
        return "conversations is not a non-empty list of human/gpt pairs"
    images = 0
    for k, turn in enumerate(convs):
        want = "gpt" if k % 2 else "human"
        if not isinstance(turn, dict) or turn.get("from") != want:
            return f"turn {k} is not a non-empty {want} turn"
        value = turn.get("value", "")
        if type(value) is not str:
            value = str(value)
        if not value or value.isspace():  # what `not value.strip()` says, without copying the text
            return f"turn {k} is not a non-empty {want} turn"
        images += value.count(mixture.IMAGE_TOKEN)
    if images != 1 or not convs[0]["value"].startswith(IMAGE_LINE):
        return f"needs exactly one {mixture.IMAGE_TOKEN}, opening the first human turn (found {images})"
    return None


def _payload_root(stage: str, read_type: str) -> str:
    return data_root(stage, read_type, layout.mixture_dir(stage))


def stage_problems(stage: str, files: dict[str, bytes], cfg: BuildConfig, videos: dict[str, VideoInfo],
                   plan_frames: dict[tuple[str, str], int], existing: set[str],
                   members: pa.Table | None = None) -> list[str]:
    """What is wrong with one curriculum stage's files (empty when nothing); `members` stands for members.parquet
    when that is not in `files`."""
    return StageCheck(stage, files, cfg, videos, plan_frames, existing, members).run()


def raise_problems(problems: list[str]) -> None:
    """Raise MixValidationError listing the problems of every stage; nothing may be committed then."""
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise MixValidationError(f"mixture validation failed, nothing was committed ({len(problems)} problems):\n  "
                                 f"{listed}{more}")


def validate(stage_files: dict[str, dict[str, bytes]], cfg: BuildConfig, videos: dict[str, VideoInfo],
             plan_frames: dict[tuple[str, str], int], existing: set[str]) -> None:
    problems = []
    for stage, files in stage_files.items():
        problems += stage_problems(stage, files, cfg, videos, plan_frames, existing)
    raise_problems(problems)

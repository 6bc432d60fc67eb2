"""A stage's mixture files as bytes: `<task>.jsonl` training records (LLaVA-NeXT / VideoChat-Flash format), the
optional `.json` lists and InternVideo2.5 variant, `data.yaml`, `weights.json`, `shards.txt` and `members.parquet`.
Paths inside them are relative to the folder of the file that holds them. Pure: nothing is written here."""

from __future__ import annotations

import json
import posixpath
from json import encoder as json_encoder
from dataclasses import dataclass, field

import pyarrow as pa
import yaml

from pipeline.io.storage import parquet_bytes
from pipeline.mix.select import Sample, VideoInfo
from schemas import layout, mixture, sampling
from schemas.config import BuildConfig

DURATION_DECIMALS = 6
_JSON = json.JSONEncoder(ensure_ascii=False)  # what json.dumps(r, ensure_ascii=False) builds on every call
_IMAGE_LINE = f"{mixture.IMAGE_TOKEN}\n"


def _record_encoder():
    """One record as JSON text, the bytes of `_JSON.encode`: the C encoder JSONEncoder.encode makes on every call,
    made once (records hold no cycles, so no circular-reference markers)."""
    if json_encoder.c_make_encoder is None:
        return _JSON.encode
    encode = json_encoder.c_make_encoder(None, _JSON.default, json_encoder.encode_basestring, None,
                                         _JSON.key_separator, _JSON.item_separator, False, False, True)
    return lambda record: "".join(encode(record, 0))


encode_record = _record_encoder()


@dataclass(frozen=True)
class FrameDir:
    """Frame payload of one `img` sample: JPEGs of `frame_indices`, named <prefix>_<k>.jpg for k = 0.. in order."""

    stage: str
    name: str
    video_id: str
    frame_indices: tuple[int, ...]

    def files(self, prefix: str) -> list[str]:
        return [layout.mixture_frames_path(self.stage, self.name, mixture.frame_file_name(prefix, k))
                for k in range(len(self.frame_indices))]


@dataclass
class StageFiles:
    stage: str
    files: dict[str, bytes] = field(default_factory=dict)  # path relative to the output root -> content
    counts: dict[str, int] = field(default_factory=dict)  # task -> records
    videos: set[str] = field(default_factory=set)  # video payloads its records reference
    frame_dirs: dict[str, FrameDir] = field(default_factory=dict)  # by name; records of one video share one
    members: pa.Table | None = None  # the rows of members.parquet (MIX_MEMBERS), also in `files` as Parquet bytes
    lines: dict[str, list[str]] = field(default_factory=dict)  # task -> its records as JSON text, one per line


def relative(target: str, folder: str) -> str:
    """`target` (relative to the output root) as seen from `folder` (relative to the output root)."""
    return posixpath.relpath(target, folder)


def frame_dir_name(sample: Sample) -> str:
    clip = sample.candidate.clip
    if clip is None:
        return sample.video_id
    return f"{sample.video_id}_{round(clip[0] * 1000)}-{round(clip[1] * 1000)}"


def conversations(sample: Sample, inline_prompt: bool) -> list[dict]:
    turns = sample.candidate.turns
    if not turns:
        return []
    first = turns[0]
    if inline_prompt:
        human = sampling.first_user_turn(first.question, sample.duration_s, len(sample.frame_indices))
    else:
        human = sampling.first_user_turn(first.question)
    out = [{"from": "human", "value": human}, {"from": "gpt", "value": first.answer}]
    for turn in turns[1:]:
        out.append({"from": "human", "value": turn.question})
        out.append({"from": "gpt", "value": turn.answer})
    return out


def training_record(sample: Sample, video: VideoInfo, read_type: str, inline_prompt: bool) -> dict:
    rec = {"id": sample.record_id,
           "video": f"{video.video_id}.{video.extension}" if read_type == "decord" else frame_dir_name(sample),
           "video_id": video.video_id,
           "conversations": conversations(sample, inline_prompt),
           "duration": round(sample.duration_s, DURATION_DECIMALS)}
    # A frame directory already holds just the clip's frames: start/end would make the trainer clip it again.
    if sample.candidate.clip is not None and read_type == "decord":
        rec["start"], rec["end"] = sample.candidate.clip
    return rec


def members_table(samples: list[Sample], records: list[dict], tokens_per_frame: int) -> pa.Table:
    """MIX_MEMBERS: a row per turn of each sample (and its training record), in the order given."""
    if all(len(s.candidate.turns) == 1 for s in samples):  # the usual case: a row per record
        rows, turn_no = samples, [0] * len(samples)
        turns = [s.candidate.turns[0] for s in samples]
        convs = [r["conversations"] for r in records]
        humans, gpts = [c[0]["value"] for c in convs], [c[1]["value"] for c in convs]
    else:
        at = [(i, k) for i, s in enumerate(samples) for k in range(len(s.candidate.turns))]
        rows, turn_no = [samples[i] for i, _ in at], [k for _, k in at]
        turns = [samples[i].candidate.turns[k] for i, k in at]
        humans = [records[i]["conversations"][2 * k]["value"] for i, k in at]
        gpts = [records[i]["conversations"][2 * k + 1]["value"] for i, k in at]
    cands = [s.candidate for s in rows]
    clips = [c.clip for c in cands]
    frames = [len(s.frame_indices) for s in rows]
    image_line = len(_IMAGE_LINE)
    columns = {"stage": [s.stage for s in rows],
               "task": [c.task for c in cands],
               "record_id": [s.record_id for s in rows],
               "video_id": [c.video_id for c in cands],
               "source_table": [t.source_table for t in turns],
               "source_key": [t.source_key for t in turns],
               "duration_s": [s.duration_s for s in rows],
               "start_s": [c[0] if c else None for c in clips],
               "end_s": [c[1] if c else None for c in clips],
               "num_frames": frames,
               "visual_tokens": [n * tokens_per_frame for n in frames],
               # characters of the turn's question and answer, without the first "<image>\n"
               "text_chars": [len(h) - (image_line if _IMAGE_LINE in h else 0) + len(g) for h, g in zip(humans, gpts)],
               "turn": turn_no}
    return pa.table(columns, schema=mixture.MIX_MEMBERS)


def jsonl(records: list[dict]) -> bytes:
    return jsonl_of_lines(list(map(encode_record, records)))


def jsonl_of_lines(lines: list[str]) -> bytes:
    """JSONL of records already encoded (one line each, without its newline)."""
    return "".join([line + "\n" for line in lines]).encode("utf-8")


def json_list_of_lines(lines: list[str]) -> bytes:
    """A JSON list with one record per line (valid JSON, still diffable)."""
    body = ",\n".join(lines)
    return f"[\n{body}\n]\n".encode("utf-8")


def data_root(stage: str, read_type: str, folder: str) -> str:
    target = layout.MIX_VIDEOS_DIR if read_type == "decord" else f"{layout.mixture_dir(stage)}/{layout.MIX_FRAMES_DIR}"
    return relative(target, folder)


def data_yaml(stage: str, cfg: BuildConfig, counts: dict[str, int]) -> bytes:
    mst = cfg.mix.stages[stage]
    smp = cfg.sampling.stages[stage]
    folder = layout.mixture_dir(stage)
    datasets = [{"json_path": posixpath.basename(layout.mixture_task_path(stage, task)),
                 "data_root": data_root(stage, mst.video_read_type, folder),
                 "sampling_strategy": mst.tasks[task].sampling_strategy,
                 "video_read_type": mst.video_read_type,
                 "media_type": "video"} for task in counts]
    prompt = ("the timestamp prompt is written into each first human turn" if cfg.mix.timestamp_prompt == "inline"
              else "the trainer inserts the timestamp prompt (--time_msg short)")
    header = [
        f"# LongVid curriculum {stage}: {sum(counts.values())} records. Paths are relative to this file's folder: run",
        f"# the trainer from here, or print an absolute copy: python -m pipeline.mix.consume {layout.MIX_DATA_YAML}",
        f"# Train with --frames_lowbound {smp.min_frames} --frames_upbound {smp.max_frames} "
        f"--sample_type {smp.sample} --local_num_frames {cfg.sampling.clip_len} at {smp.resolution} px; {prompt}.",
    ]
    body = yaml.safe_dump({"datasets": datasets}, sort_keys=False, allow_unicode=True)
    return ("\n".join(header) + "\n" + body).encode("utf-8")


def weights_json(stage: str, cfg: BuildConfig, counts: dict[str, int]) -> bytes:
    tasks = cfg.mix.stages[stage].tasks
    total = sum(tasks[t].weight for t in counts)
    doc = {"stage": stage, "seed": cfg.mix.seed,
           "tasks": {t: {"weight": tasks[t].weight / total, "records": n,
                         "json_path": posixpath.basename(layout.mixture_task_path(stage, t))}
                     for t, n in counts.items()}}
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def shards_txt(stage: str, shards: set[str]) -> bytes:
    folder = layout.mixture_dir(stage)
    return "".join(relative(f"{layout.SHARDS_DIR}/{s}", folder) + "\n" for s in sorted(shards)).encode("utf-8")


def internvideo_files(stage: str, cfg: BuildConfig, records: dict[str, list[dict]]) -> dict[str, bytes]:
    """InternVideo2.5 (XTuner) variant: records with only its keys (`duration` always present) plus the dataset meta
    file its trainer lists datasets in."""
    folder = internvideo_dir(stage)
    files = {}
    for task, recs in records.items():
        files[internvideo_task_path(stage, task)] = jsonl([internvideo_record(r) for r in recs])
    files[f"{folder}/{layout.MIX_INTERNVIDEO_META}"] = internvideo_meta(stage, cfg, {t: len(r) for t, r in
                                                                                    records.items()})
    return files


def internvideo_dir(stage: str) -> str:
    return layout.mixture_file_path(stage, layout.MIX_INTERNVIDEO_DIR)


def internvideo_task_path(stage: str, task: str) -> str:
    return f"{internvideo_dir(stage)}/{posixpath.basename(layout.mixture_task_path(stage, task))}"


def internvideo_record(record: dict) -> dict:
    return {k: record[k] for k in mixture.INTERNVIDEO_KEYS if k in record}


def internvideo_meta(stage: str, cfg: BuildConfig, counts: dict[str, int]) -> bytes:
    """The InternVideo2.5 dataset meta file: one entry per task file with its record count."""
    mst = cfg.mix.stages[stage]
    folder = internvideo_dir(stage)
    meta = {}
    for task, n in counts.items():
        meta[f"longvid_{stage}_{task}"] = {"root": data_root(stage, mst.video_read_type, folder),
                                           "annotation": posixpath.basename(layout.mixture_task_path(stage, task)),
                                           "length": n, "data_augment": False, "repeat_time": 1,
                                           "sampling_strategy": mst.tasks[task].sampling_strategy}
    return (json.dumps(meta, indent=1) + "\n").encode("utf-8")


def stage_files(stage: str, per_task: dict[str, list[Sample]], videos: dict[str, VideoInfo],
                cfg: BuildConfig, with_members_parquet: bool = True) -> StageFiles:
    """with_members_parquet=False leaves members.parquet out of `files` (a partition writes `members` as a part
    and checks the table itself)."""
    mst = cfg.mix.stages[stage]
    read_type = mst.video_read_type
    inline = cfg.mix.timestamp_prompt == "inline"
    out = StageFiles(stage)
    records: dict[str, list[dict]] = {}
    shards: set[str] = set()
    for task, samples in per_task.items():
        recs = [training_record(s, videos[s.candidate.video_id], read_type, inline) for s in samples]
        records[task] = recs
        lines = out.lines[task] = list(map(encode_record, recs))
        out.counts[task] = len(recs)
        out.files[layout.mixture_task_path(stage, task)] = jsonl_of_lines(lines)
        if cfg.mix.json_list:
            out.files[layout.mixture_task_path(stage, task, "json")] = json_list_of_lines(lines)
        shards.update({videos[v].shard for v in {s.candidate.video_id for s in samples}})
        if read_type == "decord":
            out.videos.update(s.candidate.video_id for s in samples)
        else:
            for s, rec in zip(samples, recs):
                if rec["video"] not in out.frame_dirs:
                    out.frame_dirs[rec["video"]] = FrameDir(stage, rec["video"], s.video_id, tuple(s.frame_indices))
    if cfg.mix.internvideo2_5:
        out.files.update(internvideo_files(stage, cfg, records))
    # members.parquet's order: by task, record_id, turn (a record's rows are its turns in order)
    by_id: list[Sample] = []
    by_id_records: list[dict] = []
    for task in sorted(per_task):
        ids = [s.record_id for s in per_task[task]]
        order = sorted(range(len(ids)), key=ids.__getitem__)
        by_id += [per_task[task][i] for i in order]
        by_id_records += [records[task][i] for i in order]
    out.members = members_table(by_id, by_id_records, cfg.hico.tokens_per_frame)
    if with_members_parquet:
        out.files[layout.mixture_members_path(stage)] = parquet_bytes(out.members)
    out.files[layout.mixture_file_path(stage, layout.MIX_WEIGHTS_JSON)] = weights_json(stage, cfg, out.counts)
    out.files[layout.mixture_file_path(stage, layout.MIX_SHARDS_TXT)] = shards_txt(stage, shards)
    out.files[layout.mixture_file_path(stage, layout.MIX_DATA_YAML)] = data_yaml(stage, cfg, out.counts)
    return out

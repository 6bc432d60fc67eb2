"""The build config: typed sections with defaults, loaded from YAML plus overrides, validated before any work.

Every problem is a ConfigError naming the dotted key, what is wrong and how to fix it; the job turns it into
`config error: <key>: <what> (<fix>)` and exit code 2.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml

from schemas import layout, mixture
from schemas import niah as niah_schema
from schemas.errors import ConfigProblem
from schemas.sample import VIDEO_EXTENSIONS

GiB = 1024**3


class ConfigError(ConfigProblem, ValueError):
    def __init__(self, key: str, problem: str, fix: str):
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"config error: {key}: {problem} ({fix})")


@dataclass
class RayConfig:
    address: Optional[str] = None  # None: $RAY_ADDRESS when set (ray job submit sets it), else an in-process Ray
    num_cpus: Optional[int] = None  # in-process Ray only; None = all cores


@dataclass
class StorageConfig:
    s3_endpoint_url: Optional[str] = None  # None: boto3's own resolution ($AWS_ENDPOINT_URL, profile, AWS)
    s3_region: Optional[str] = None
    s3_connect_timeout_s: float = 10.0
    s3_read_timeout_s: float = 60.0  # per socket read; a hanging endpoint fails after this times s3_max_attempts
    s3_max_attempts: int = 4  # botocore attempts per request (first try included)
    s3_retry_mode: str = "standard"  # standard | adaptive (botocore retry modes: throttling and 5xx, with backoff)
    tmp_dir: Optional[str] = None  # base of the per-job temporary folder; None: $TMPDIR (or the system default)


@dataclass
class CrawlConfig:
    extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    http_timeout_s: float = 60.0  # connect and per-read timeout of one HTTP request
    http_retries: int = 3  # extra attempts after 5xx, 408/429, timeouts and connection resets; nothing else
    http_backoff_s: float = 1.0  # first retry waits about this long, doubling per retry ...
    http_backoff_max_s: float = 30.0  # ... up to this
    http_jitter: float = 0.5  # each wait is randomly shortened by up to this fraction
    download_deadline_s: float = 3600.0  # total time for one download (all attempts) before download_failed
    download_min_bytes_per_s: int = 16 * 1024  # average throughput below this (after the window) is download_failed
    download_throughput_window_s: float = 30.0
    download_concurrency: int = 4  # downloads in flight per probe task, so one slow source does not hold back others
    allow_empty: bool = False  # a build whose sources hold no input exits 2 unless this is true
    allowed_roots: list[str] = field(default_factory=list)  # manifest paths may also point below these folders
    allow_paths_outside_manifest: bool = False  # true: manifest paths may point anywhere the job can read


@dataclass
class ProbeConfig:
    min_duration_s: float = 1.0
    max_duration_s: float = 4 * 3600.0
    max_pixels: int = 3840 * 2160
    max_bytes: int = 64 * GiB
    timeout_s: float = 600.0  # per file: probe + reader check, in an isolated process
    check_integrity: bool = True  # demux every packet to catch truncated files (no decoding)
    part_size: int = 16  # inputs per resumable work unit (one Ray task each)


@dataclass
class ScenesConfig:
    detector: str = "fast"  # fast | transnetv2 | content | adaptive | threshold | histogram | hash (PySceneDetect)
    threshold: Optional[float] = None  # None: the detector's own default (fast: cut ratio; transnetv2: probability)
    min_scene_len_s: float = 0.5
    downscale: Optional[int] = None  # None: PySceneDetect's automatic downscale
    timeout_s: float = 3600.0
    part_size: int = 4  # videos per resumable work unit; small, since one long video takes minutes
    segment_s: float = 300.0  # fast / transnetv2: a longer video is split at keyframes into tasks of about this
    num_gpus: float = 0.0  # transnetv2: GPUs per model actor (0: the model runs on the CPU)
    actors: int = 1  # transnetv2: model actors in the pool


@dataclass
class SamplingStageConfig:
    min_frames: int
    max_frames: int
    sample: str = "dynamic_fps1"  # dynamic_fps1 | middle
    resolution: int = 224


def _default_sampling_stages() -> dict[str, SamplingStageConfig]:
    return {
        "stage1": SamplingStageConfig(1, 4, "middle", 224),
        "stage2": SamplingStageConfig(1, 8, "dynamic_fps1", 224),
        "stage3": SamplingStageConfig(64, 512, "dynamic_fps1", 224),
        "stage4": SamplingStageConfig(64, 512, "dynamic_fps1", 448),
    }


SAMPLE_TYPES = ("dynamic_fps1", "middle")
SCENE_DETECTORS = ("fast", "transnetv2", "content", "adaptive", "threshold", "histogram", "hash")
PAYLOADS = ("video", "frames")


@dataclass
class SamplingConfig:
    clip_len: int = 4
    stages: dict[str, SamplingStageConfig] = field(default_factory=_default_sampling_stages)


@dataclass
class ShardConfig:
    target_bytes: int = 1 * GiB
    max_samples: int = 10_000
    payload: str = "video"  # video: original bytes + json; frames: also the sampled frames of frames_stage as JPEG
    frames_stage: str = "stage3"
    jpeg_quality: int = 90


ENCODER_PRESETS = ("umt_large_videochat_flash", "umt_large", "tiny")
DTYPES = ("auto", "float32", "bfloat16", "float16")
MERGE_DTYPES = ("float32", "bfloat16", "float16")
RESIZE_BACKENDS = ("pil", "torch")


@dataclass
class EncoderConfig:
    checkpoint: Optional[str] = None  # local .safetensors / .pt / .pth state dict of the UMT-L vision encoder
    # umt_large_videochat_flash: ViT-L/16 laid out like the released VideoChat-Flash UMT-L weights (joint 1-D sin-cos
    # table, q/v biases); umt_large: the same size with separable sin-cos; tiny: tests and demo
    preset: str = "umt_large_videochat_flash"
    # [] (default): recognise the layout (full VideoChat-Flash model, vision tower, standalone UMT-L encoder) and
    # read only the tower's keys; else these prefixes are stripped from every key
    key_prefixes: list[str] = field(default_factory=list)
    allow_random_init: bool = False  # tests and demo only: every output row records random_init
    seed: int = 0


@dataclass
class HicoConfig:
    stage: str = "stage3"  # curriculum stage whose sampled frames (and resolution) are encoded
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    tokens_per_frame: int = 16
    batch_clips: int = 8  # clips per encoder forward
    num_gpus: Optional[float] = None  # per actor; None: 1 when the cluster has GPUs, else 0 (CPU)
    pool_size: int = 1  # encoder actors
    dtype: str = "auto"  # encoder dtype; auto: bfloat16 on GPU, float32 on CPU
    # dtype of the ToMe merge: float32 (reproducible) | bfloat16 | float16 (the connector of a model run in that dtype)
    merge_dtype: str = "float32"
    # frame resize: pil (bit-identical to the model's UMTImageProcessor) | torch (faster, not identical: up to ~0.02
    # after normalisation, which changes merges)
    resize: str = "pil"
    row_group_bytes: int = 256 * 1024**2


BACKENDS = ("hico_mllm", "transformers")
QA_GENERATORS = ("template", "model", "off")
QA_FAMILIES = ("event_understanding", "event_count", "event_relationship", "temporal_grounding", "free_qa")


def _default_qa_generators() -> dict[str, str]:
    return {f: "template" for f in QA_FAMILIES}


@dataclass
class AnnotateConfig:
    backend: str = "hico_mllm"  # hico_mllm (uses the hico tokens when present) | transformers
    checkpoint: Optional[str] = None  # local checkpoint directory
    tiny_demo_model: bool = False  # build a tiny random-weight checkpoint on the fly (tests and demo only)
    device: str = "auto"  # auto: cuda when the actor has a GPU, else cpu
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    batch_size: int = 4
    num_gpus: Optional[float] = None  # per actor; None: 1 when the cluster has GPUs, else 0
    pool_size: int = 1
    max_new_tokens: int = 160
    do_sample: bool = False
    frames_stage: str = "stage2"  # frames per caption window = this stage's max_frames (middle sampling)
    min_window_s: float = 4.0
    max_window_s: float = 60.0
    caption_min_chars: int = 3
    caption_max_chars: int = 600
    qa_generators: dict[str, str] = field(default_factory=_default_qa_generators)
    qa_forms: list[str] = field(default_factory=lambda: ["open", "mc"])
    repair_attempts: int = 2
    qvh_clip_s: float = 2.0


@dataclass
class MixTaskConfig:
    weight: float = 1.0  # relative chance a streaming trainer draws this task (weights.json, normalised)
    max_records: Optional[int] = None  # cap on this task's records in the stage (a seeded random subset); null: all
    sampling_strategy: str = "all"  # data.yaml: all | first:N | first:P% | end:N | firstK:N


def _mix_tasks(names) -> dict[str, MixTaskConfig]:
    return {t: MixTaskConfig() for t in names}


@dataclass
class MixStageConfig:
    videos: list[str] = field(default_factory=lambda: list(mixture.DURATION_CLASSES))  # short and/or long samples
    tasks: dict[str, MixTaskConfig] = field(default_factory=lambda: _mix_tasks(mixture.TASKS))
    video_read_type: str = "decord"  # decord: video files | img: frame directories at the stage's sampled frames


def _default_mix_stages() -> dict[str, MixStageConfig]:
    captions = (mixture.CAPTION_TASK, mixture.SUMMARY_TASK)
    return {
        "stage1": MixStageConfig(["short"], _mix_tasks(captions)),
        "stage2": MixStageConfig(["short"], _mix_tasks(captions)),
        "stage3": MixStageConfig(["short", "long"], _mix_tasks(mixture.TASKS)),
        "stage4": MixStageConfig(["short", "long"], _mix_tasks(mixture.TASKS)),
    }


@dataclass
class MixConfig:
    seed: int = 0  # record order and capped subsets derive from it
    long_min_s: float = 60.0  # a sample (a clip caption: its clip) is long from here, short below
    long_max_s: float = 3600.0  # longer samples feed no stage
    timestamp_prompt: str = "trainer"  # trainer: VideoChat-Flash inserts it (--time_msg short) | inline: written
    max_turns: int = 1  # > 1: QA of one video and task grouped into multi-turn records of up to this many turns
    json_list: bool = False  # also write <task>.json (a JSON list) beside <task>.jsonl
    internvideo2_5: bool = False  # also write the InternVideo2.5 (XTuner) variant: internvideo2_5/<task>.jsonl
    frame_prefix: str = "frame"  # frame payloads of `img` stages: <prefix>_<n>.jpg
    jpeg_quality: int = 90
    partition_shards: int = 16  # shards per Ray task building record parts (memory per task grows with it)
    # curriculum stages, each named after a sampling stage (frames, sampling rule and resolution come from there)
    stages: dict[str, MixStageConfig] = field(default_factory=_default_mix_stages)


@dataclass
class ReportConfig:
    gallery_videos: int = 6  # videos in the report's sample gallery (picked deterministically from the seed)
    gallery_frames: int = 4  # frames shown per gallery video
    seed: int = 0
    histogram_bins: int = 30


@dataclass
class NiahConfig:
    """MH-NIAH-Video evaluation sets (the `niah` stage and jobs/build_niah.py)."""
    out: str = niah_schema.BUILD_SUBDIR  # relative: under the build's output root; or an absolute path / s3:// URI
    items: int = 10  # per (hops, haystack_frames) combination
    hops: list[int] = field(default_factory=lambda: [1, 2, 3])  # 1: single-hop needle in a haystack
    haystack_frames: list[int] = field(default_factory=lambda: [1000])  # frames at 1 fps, needles included
    distractor_hops: int = 0  # images of a distractor chain that points only among itself
    depths: Optional[list[float]] = None  # needle clip positions as fractions 0..1; null: evenly spread
    needles: Optional[str] = None  # folder of images + captions.jsonl; null: frames of corpus videos
    format: str = "frames"  # frames | video | both
    seed: int = 0
    width: int = 640  # every haystack and needle frame is letterboxed to width x height
    height: int = 360
    jpeg_quality: int = 90  # frame folders
    crf: int = 18  # haystack videos (libx264, single thread, bit-exact flags)
    needle_fraction: float = 0.25  # share of the corpus videos kept out of haystacks to give needle frames
    needle_spacing_s: float = 5.0  # corpus needles without clip captions: one frame every this many seconds
    caption_max_chars: int = 100  # longer captions are cut at a word boundary
    text_height: float = 0.06  # clue text size as a fraction of the frame height
    pool_videos: int = 2000  # at most this many corpus videos (a seeded choice) are considered
    ray_min_items: int = 4  # fewer items run in this process; more run as Ray tasks


@dataclass
class BuildConfig:
    sources: list[str] = field(default_factory=list)
    out: str = ""
    stages: list[str] = field(default_factory=lambda: ["ingest"])
    ray: RayConfig = field(default_factory=RayConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    hico: HicoConfig = field(default_factory=HicoConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    niah: NiahConfig = field(default_factory=NiahConfig)


# ---------------------------------------------------------------------------------------------------------------
# Generic dict → dataclass conversion with key-precise errors

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_size(text: str) -> int:
    """'1GiB' → 1073741824, '500MB' → 500000000, '123' → 123."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(text)
    unit = (m.group(2) or "").lower().rstrip("b")
    return int(float(m.group(1)) * _UNITS[unit])


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}", "write it as `key: value` lines")
        return _from_dict(tp, value, key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value] if not isinstance(value, str) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}", "write a YAML list")
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}", "write it as `name: {...}` lines")
        return {str(k): _convert(v, item, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}", "use true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, got {value!r}", "give a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and key.endswith(("bytes", "_bytes")):
            try:
                return parse_size(value)
            except ValueError:
                pass
            raise ConfigError(key, f"cannot read {value!r} as a size", "give bytes or a size like 512MiB or 1GiB")
        raise ConfigError(key, f"expected an integer, got {value!r}", "give a whole number")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, f"expected a number, got {value!r}", "give a number such as 1.5")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, f"expected a string, got {value!r}", "quote the value")
    raise ConfigError(key, f"unsupported type {_type_name(tp)}", "this is a bug in the config schema")


def _from_dict(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in known:
            raise ConfigError(key, "unknown key", f"known keys here: {', '.join(sorted(known))}")
        kwargs[k] = _convert(v, hints[k], key)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        key = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError(key, "missing", "this key is required here")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_override(data: dict, assignment: str) -> dict:
    """`a.b.c=value` (value read as YAML) into a nested dict."""
    if "=" not in assignment:
        raise ConfigError(assignment, "an override needs `key=value`", "write --set probe.timeout_s=120")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(key, f"cannot read value {raw!r}: {e}", "quote the value")
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(key, f"{p} is not a section", "override a key inside a section")
    node[parts[-1]] = value
    return data


def load_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {path}", "give the path of a YAML config")
    except yaml.YAMLError as e:
        raise ConfigError("--config", f"{path} is not valid YAML: {e}", "fix the YAML syntax")
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping at top level", "write `key: value` lines")
    return data


# ---------------------------------------------------------------------------------------------------------------
# Semantic checks


SOURCE_SCHEMES = ("http://", "https://", "s3://")
S3_RETRY_MODES = ("standard", "adaptive", "legacy")


def _check_uri(key: str, uri: str, must_exist: bool) -> None:
    if "://" in uri:
        if not uri.startswith(SOURCE_SCHEMES):
            scheme = uri.split("://", 1)[0]
            raise ConfigError(key, f"scheme {scheme!r} is not supported", "use a local path, s3://, http:// or https://")
        if uri.startswith("s3://") and len(uri) <= len("s3://"):
            raise ConfigError(key, "s3 URI has no bucket", "write s3://bucket/prefix")
    elif must_exist and not os.path.exists(uri):
        raise ConfigError(key, f"local path does not exist: {uri}", "check the path or create it")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}", "give a positive value")


def validate(cfg: BuildConfig) -> BuildConfig:
    if not cfg.out:
        raise ConfigError("out", "missing", "give an output path or s3:// URI with --out or `out:`")
    _check_uri("out", cfg.out, must_exist=False)
    if cfg.out.startswith(("http://", "https://")):
        raise ConfigError("out", "cannot write to an http URL", "use a local path or s3://bucket/prefix")
    for i, s in enumerate(cfg.sources):
        _check_uri(f"sources[{i}]", s, must_exist=True)
    if not cfg.stages:
        raise ConfigError("stages", "empty", "name at least one stage, e.g. ingest")

    p = cfg.probe
    _positive("probe.min_duration_s", p.min_duration_s, allow_zero=True)
    _positive("probe.max_duration_s", p.max_duration_s)
    if p.max_duration_s <= p.min_duration_s:
        raise ConfigError("probe.max_duration_s", f"{p.max_duration_s} is not above min_duration_s {p.min_duration_s}",
                          "raise max_duration_s or lower min_duration_s")
    for k in ("max_pixels", "max_bytes", "timeout_s", "part_size"):
        _positive(f"probe.{k}", getattr(p, k))

    c = cfg.crawl
    _positive("crawl.http_timeout_s", c.http_timeout_s)
    _positive("crawl.http_retries", c.http_retries, allow_zero=True)
    _positive("crawl.http_backoff_s", c.http_backoff_s, allow_zero=True)
    _positive("crawl.http_backoff_max_s", c.http_backoff_max_s, allow_zero=True)
    if not 0 <= c.http_jitter <= 1:
        raise ConfigError("crawl.http_jitter", f"{c.http_jitter} is outside 0..1", "give a fraction such as 0.5")
    _positive("crawl.download_deadline_s", c.download_deadline_s)
    _positive("crawl.download_min_bytes_per_s", c.download_min_bytes_per_s, allow_zero=True)
    _positive("crawl.download_throughput_window_s", c.download_throughput_window_s)
    _positive("crawl.download_concurrency", c.download_concurrency)
    c.allowed_roots = [os.path.abspath(os.path.expanduser(r)) for r in c.allowed_roots]
    st = cfg.storage
    _positive("storage.s3_connect_timeout_s", st.s3_connect_timeout_s)
    _positive("storage.s3_read_timeout_s", st.s3_read_timeout_s)
    _positive("storage.s3_max_attempts", st.s3_max_attempts)
    if st.s3_retry_mode not in S3_RETRY_MODES:
        raise ConfigError("storage.s3_retry_mode", f"unknown mode {st.s3_retry_mode!r}",
                          f"use one of {', '.join(S3_RETRY_MODES)}")
    if st.tmp_dir and os.path.exists(st.tmp_dir) and not os.path.isdir(st.tmp_dir):
        raise ConfigError("storage.tmp_dir", f"{st.tmp_dir} is not a folder", "give a folder for temporary files")
    if not c.extensions:
        raise ConfigError("crawl.extensions", "empty", "list the video extensions to pick up, e.g. [mp4, mkv]")
    c.extensions = [e.lower().lstrip(".") for e in c.extensions]

    s = cfg.scenes
    if s.detector not in SCENE_DETECTORS:
        raise ConfigError("scenes.detector", f"unknown detector {s.detector!r}", f"use one of {', '.join(SCENE_DETECTORS)}")
    _positive("scenes.threshold", s.threshold)
    _positive("scenes.min_scene_len_s", s.min_scene_len_s, allow_zero=True)
    _positive("scenes.downscale", s.downscale)
    _positive("scenes.timeout_s", s.timeout_s)
    _positive("scenes.part_size", s.part_size)
    _positive("scenes.segment_s", s.segment_s)
    if s.segment_s < 30:
        raise ConfigError("scenes.segment_s", f"{s.segment_s:g} is below 30 s", "use 30 or more, e.g. 300")
    _positive("scenes.num_gpus", s.num_gpus, allow_zero=True)
    _positive("scenes.actors", s.actors)
    if s.detector == "transnetv2" and s.threshold is not None and not 0 < s.threshold < 1:
        raise ConfigError("scenes.threshold", f"{s.threshold:g} is not a probability",
                          "use a value between 0 and 1 for transnetv2, e.g. 0.5")

    sm = cfg.sampling
    _positive("sampling.clip_len", sm.clip_len)
    if not sm.stages:
        raise ConfigError("sampling.stages", "empty", "define at least one curriculum stage")
    for name, st in sm.stages.items():
        key = f"sampling.stages.{name}"
        if st.sample not in SAMPLE_TYPES:
            raise ConfigError(f"{key}.sample", f"unknown sampling {st.sample!r}", f"use one of {', '.join(SAMPLE_TYPES)}")
        _positive(f"{key}.min_frames", st.min_frames)
        _positive(f"{key}.max_frames", st.max_frames)
        _positive(f"{key}.resolution", st.resolution)
        if st.max_frames < st.min_frames:
            raise ConfigError(f"{key}.max_frames", f"{st.max_frames} is below min_frames {st.min_frames}",
                              "make max_frames >= min_frames")

    sh = cfg.shard
    _positive("shard.target_bytes", sh.target_bytes)
    _positive("shard.max_samples", sh.max_samples)
    if sh.payload not in PAYLOADS:
        raise ConfigError("shard.payload", f"unknown payload {sh.payload!r}", f"use one of {', '.join(PAYLOADS)}")
    if sh.payload == "frames" and sh.frames_stage not in sm.stages:
        raise ConfigError("shard.frames_stage", f"no sampling stage named {sh.frames_stage!r}",
                          f"use one of {', '.join(sm.stages)}")
    if not 1 <= sh.jpeg_quality <= 100:
        raise ConfigError("shard.jpeg_quality", f"{sh.jpeg_quality} is outside 1..100", "use 1..100, e.g. 90")
    h = cfg.hico
    if h.stage not in sm.stages:
        raise ConfigError("hico.stage", f"no sampling stage named {h.stage!r}", f"use one of {', '.join(sm.stages)}")
    if h.encoder.preset not in ENCODER_PRESETS:
        raise ConfigError("hico.encoder.preset", f"unknown preset {h.encoder.preset!r}",
                          f"use one of {', '.join(ENCODER_PRESETS)}")
    if h.encoder.checkpoint:
        _check_uri("hico.encoder.checkpoint", h.encoder.checkpoint, must_exist=True)
    if h.dtype not in DTYPES:
        raise ConfigError("hico.dtype", f"unknown dtype {h.dtype!r}", f"use one of {', '.join(DTYPES)}")
    if h.merge_dtype not in MERGE_DTYPES:
        raise ConfigError("hico.merge_dtype", f"unknown dtype {h.merge_dtype!r}",
                          f"use one of {', '.join(MERGE_DTYPES)} (float32 unless you reproduce a model run in that "
                          f"dtype)")
    if h.resize not in RESIZE_BACKENDS:
        raise ConfigError("hico.resize", f"unknown resize {h.resize!r}",
                          f"use one of {', '.join(RESIZE_BACKENDS)} (pil: identical to the model's image processor)")
    if h.encoder.checkpoint and "://" in h.encoder.checkpoint:
        raise ConfigError("hico.encoder.checkpoint", "must be a local file (the encoder and its hash read it)",
                          "copy the checkpoint to every node and give its local path")
    for k in ("tokens_per_frame", "batch_clips", "pool_size", "row_group_bytes"):
        _positive(f"hico.{k}", getattr(h, k))
    _positive("hico.num_gpus", h.num_gpus, allow_zero=True)
    a = cfg.annotate
    if a.backend not in BACKENDS:
        raise ConfigError("annotate.backend", f"unknown backend {a.backend!r}", f"use one of {', '.join(BACKENDS)}")
    if a.checkpoint:
        _check_uri("annotate.checkpoint", a.checkpoint, must_exist=True)
    if a.frames_stage not in sm.stages:
        raise ConfigError("annotate.frames_stage", f"no sampling stage named {a.frames_stage!r}",
                          f"use one of {', '.join(sm.stages)}")
    if a.dtype not in DTYPES:
        raise ConfigError("annotate.dtype", f"unknown dtype {a.dtype!r}", f"use one of {', '.join(DTYPES)}")
    if a.device not in ("auto", "cpu", "cuda"):
        raise ConfigError("annotate.device", f"unknown device {a.device!r}", "use auto, cpu or cuda")
    for k in ("batch_size", "pool_size", "max_new_tokens", "min_window_s", "max_window_s", "caption_max_chars",
              "qvh_clip_s"):
        _positive(f"annotate.{k}", getattr(a, k))
    _positive("annotate.repair_attempts", a.repair_attempts, allow_zero=True)
    _positive("annotate.num_gpus", a.num_gpus, allow_zero=True)
    if a.max_window_s < a.min_window_s:
        raise ConfigError("annotate.max_window_s", f"{a.max_window_s} is below min_window_s {a.min_window_s}",
                          "make max_window_s >= min_window_s")
    for fam, gen in a.qa_generators.items():
        if fam not in QA_FAMILIES:
            raise ConfigError(f"annotate.qa_generators.{fam}", "unknown QA family", f"use {', '.join(QA_FAMILIES)}")
        if gen not in QA_GENERATORS:
            raise ConfigError(f"annotate.qa_generators.{fam}", f"unknown generator {gen!r}",
                              f"use one of {', '.join(QA_GENERATORS)}")
    for i, form in enumerate(a.qa_forms):
        if form not in ("open", "mc"):
            raise ConfigError(f"annotate.qa_forms[{i}]", f"unknown form {form!r}", "use open and/or mc")
    _validate_mix(cfg)
    r = cfg.report
    _positive("report.gallery_videos", r.gallery_videos, allow_zero=True)
    _positive("report.gallery_frames", r.gallery_frames)
    _positive("report.histogram_bins", r.histogram_bins)
    if cfg.ray.num_cpus is not None:
        _positive("ray.num_cpus", cfg.ray.num_cpus)
    validate_niah(cfg.niah)
    return cfg


def validate_niah(n: NiahConfig, prefix: str = "niah") -> NiahConfig:
    """The `niah` section (also used alone by jobs/build_niah.py)."""
    _positive(f"{prefix}.items", n.items)
    for key in ("hops", "haystack_frames"):
        values = getattr(n, key)
        if not values:
            raise ConfigError(f"{prefix}.{key}", "empty", "give at least one value, e.g. [1, 2, 3]")
        for i, v in enumerate(values):
            _positive(f"{prefix}.{key}[{i}]", v)
        if len(set(values)) != len(values):
            raise ConfigError(f"{prefix}.{key}", f"repeated values in {values}", "list each value once")
    _positive(f"{prefix}.distractor_hops", n.distractor_hops, allow_zero=True)
    needles = max(n.hops) + n.distractor_hops
    shortest = min(n.haystack_frames)
    if shortest <= needles * niah_schema.NEEDLE_CLIP_FRAMES:
        raise ConfigError(f"{prefix}.haystack_frames", f"{shortest} frames cannot hold {needles} needle clips of "
                          f"{niah_schema.NEEDLE_CLIP_FRAMES} frames and a haystack",
                          f"give more than {needles * niah_schema.NEEDLE_CLIP_FRAMES} frames or fewer hops")
    if n.depths is not None:
        if len(n.depths) != needles:
            raise ConfigError(f"{prefix}.depths", f"{len(n.depths)} depths for {needles} needles "
                              f"(max hops {max(n.hops)} + distractor_hops {n.distractor_hops})",
                              "give one fraction per needle, or null for evenly spread depths")
        for i, d in enumerate(n.depths):
            if not 0.0 <= d <= 1.0:
                raise ConfigError(f"{prefix}.depths[{i}]", f"{d} is outside 0..1", "give a fraction of the haystack")
        for length in n.haystack_frames:
            try:
                niah_schema.clip_starts(length, needles, n.depths)
            except ValueError as e:
                raise ConfigError(f"{prefix}.depths", str(e), "spread the depths further apart")
    if n.needles:
        _check_uri(f"{prefix}.needles", n.needles, must_exist=True)
        if n.needles.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}.needles", "cannot list an http URL", "use a local folder or s3:// prefix")
    if n.format not in niah_schema.FORMATS:
        raise ConfigError(f"{prefix}.format", f"unknown format {n.format!r}", f"use one of {', '.join(niah_schema.FORMATS)}")
    for k in ("width", "height", "caption_max_chars", "pool_videos", "needle_spacing_s", "text_height"):
        _positive(f"{prefix}.{k}", getattr(n, k))
    for k in ("width", "height"):
        if getattr(n, k) % 2:
            raise ConfigError(f"{prefix}.{k}", f"{getattr(n, k)} is odd", "give an even size (H.264 needs it)")
    if not 1 <= n.jpeg_quality <= 100:
        raise ConfigError(f"{prefix}.jpeg_quality", f"{n.jpeg_quality} is outside 1..100", "use 1..100, e.g. 90")
    if not 0 <= n.crf <= 51:
        raise ConfigError(f"{prefix}.crf", f"{n.crf} is outside 0..51", "use 0..51, e.g. 18")
    if not 0.0 < n.needle_fraction < 1.0:
        raise ConfigError(f"{prefix}.needle_fraction", f"{n.needle_fraction} is outside (0, 1)", "use e.g. 0.25")
    if n.text_height >= 0.5:
        raise ConfigError(f"{prefix}.text_height", f"{n.text_height} is too large", "use a fraction below 0.5, e.g. 0.06")
    _positive(f"{prefix}.ray_min_items", n.ray_min_items, allow_zero=True)
    if n.out:
        _check_uri(f"{prefix}.out", n.out, must_exist=False)
    return n


FRAME_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def _validate_mix(cfg: BuildConfig) -> None:
    mx = cfg.mix
    _positive("mix.long_min_s", mx.long_min_s)
    if mx.long_max_s <= mx.long_min_s:
        raise ConfigError("mix.long_max_s", f"{mx.long_max_s} is not above long_min_s {mx.long_min_s}",
                          "raise long_max_s or lower long_min_s")
    if mx.timestamp_prompt not in mixture.TIMESTAMP_PROMPT_MODES:
        raise ConfigError("mix.timestamp_prompt", f"unknown mode {mx.timestamp_prompt!r}",
                          "use trainer (VideoChat-Flash --time_msg inserts it) or inline (written into the text)")
    _positive("mix.max_turns", mx.max_turns)
    _positive("mix.partition_shards", mx.partition_shards)
    if not FRAME_PREFIX.match(mx.frame_prefix):
        raise ConfigError("mix.frame_prefix", f"{mx.frame_prefix!r} is not a plain name",
                          "use letters, digits and '-', e.g. frame")
    if not 1 <= mx.jpeg_quality <= 100:
        raise ConfigError("mix.jpeg_quality", f"{mx.jpeg_quality} is outside 1..100", "use 1..100, e.g. 90")
    for name, st in mx.stages.items():
        key = f"mix.stages.{name}"
        if name == layout.MIX_VIDEOS_NAME:
            raise ConfigError(key, f"{name!r} is reserved (mixtures/{name}/ holds the video payloads)",
                              "rename the curriculum stage")
        if name not in cfg.sampling.stages:
            raise ConfigError(key, f"no sampling stage named {name!r}",
                              f"add sampling.stages.{name} or drop this mixture with {key}=null "
                              f"(sampling stages: {', '.join(cfg.sampling.stages)})")
        if not st.videos:
            raise ConfigError(f"{key}.videos", "empty", "list short and/or long")
        for i, v in enumerate(st.videos):
            if v not in mixture.DURATION_CLASSES:
                raise ConfigError(f"{key}.videos[{i}]", f"unknown duration class {v!r}", "use short and/or long")
        if st.video_read_type not in mixture.VIDEO_READ_TYPES:
            raise ConfigError(f"{key}.video_read_type", f"unknown type {st.video_read_type!r}",
                              "use decord (video files) or img (frame directories)")
        if not st.tasks:
            raise ConfigError(f"{key}.tasks", "empty", f"name at least one of {', '.join(mixture.TASKS)}")
        for task, t in st.tasks.items():
            tkey = f"{key}.tasks.{task}"
            if task not in mixture.TASKS:
                raise ConfigError(tkey, "unknown task", f"use {', '.join(mixture.TASKS)}")
            _positive(f"{tkey}.weight", t.weight)
            _positive(f"{tkey}.max_records", t.max_records)
            problem = mixture.sampling_strategy_problem(t.sampling_strategy)
            if problem:
                raise ConfigError(f"{tkey}.sampling_strategy", problem, "e.g. all, first:1000, first:50% or end:200")


def _drop_nulls(data: dict, user: dict) -> None:
    """`null` removes a curriculum stage, a mixture stage or a mixture task. A default mixture stage whose sampling
    stage was removed goes with it; one the user configured must name a sampling stage (validate says so)."""
    stages = (data.get("sampling") or {}).get("stages")
    if isinstance(stages, dict):
        data["sampling"]["stages"] = stages = {k: v for k, v in stages.items() if v is not None}
    mix_stages = (data.get("mix") or {}).get("stages")
    if not isinstance(mix_stages, dict):
        return
    user_stages = (user.get("mix") or {}).get("stages") or {}
    kept = {}
    for name, st in mix_stages.items():
        if st is None or (name not in user_stages and isinstance(stages, dict) and name not in stages):
            continue
        if isinstance(st, dict) and isinstance(st.get("tasks"), dict):
            st = {**st, "tasks": {t: v for t, v in st["tasks"].items() if v is not None}}
        kept[name] = st
    data["mix"]["stages"] = kept


def build(data: dict, overrides: list[str] = ()) -> BuildConfig:
    """Defaults, then the file's values, then `--set` overrides. A curriculum stage, mixture stage or mixture task
    set to null is removed."""
    user = copy.deepcopy(data)
    data = merge(to_dict(BuildConfig()), data)
    for o in overrides:
        data = apply_override(data, o)
        user = apply_override(user, o)
    _drop_nulls(data, user)
    return validate(_from_dict(BuildConfig, data, ""))

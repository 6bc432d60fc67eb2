"""The build config's sections: typed dataclasses with their defaults (what `configs/example.yaml` documents), the
names each enumerated key accepts, and ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from schemas import mixture
from schemas import niah as niah_schema
from schemas.errors import ConfigProblem
from schemas.sample import VIDEO_EXTENSIONS
from schemas.tables import QA_FAMILIES

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
    merge_fan_in: int = 512  # parts one merge task reads at once (~0.9 GiB at 512); more are first merged into runs
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

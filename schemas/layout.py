"""File layout of a build's output folder (local path or s3:// URI). Paths are relative to the output root."""

MANIFEST_CRAWL = "manifest/crawl.parquet"
MANIFEST_VIDEOS = "manifest/videos.parquet"
MANIFEST_REJECTS = "manifest/rejects.parquet"
MANIFEST_BATCH_ROWS = 1024  # rows per batch when streaming manifest/videos.parquet
STATS_SUMMARY = "stats/summary.json"

SHARDS_DIR = "shards"
SHARD_PREFIX = "longvid"
SHARD_INDEX = "shards/index.json"
SHARD_RECORDS_DIR = "work/shards"  # one JSON per committed shard: the video_ids it holds, its size and sha256

PROBE_PARTS_DIR = "work/probe"
SCENES_PARTS_DIR = "work/scenes"

WIDS_KIND = "wids-shard-index-v1"
WIDS_VERSION = 1


def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}-{index:06d}.tar"


def shard_stem(name: str) -> str:
    """`longvid-000000.tar` -> `longvid-000000`: the name every per-shard output file is derived from."""
    return name.removesuffix(".tar")


def shard_path(index: int) -> str:
    return f"{SHARDS_DIR}/{shard_name(index)}"


def shard_record_path(index: int) -> str:
    return f"{SHARD_RECORDS_DIR}/{shard_stem(shard_name(index))}.json"


def part_name(index: int, digest: str) -> str:
    """A work part is named by its position and a digest of its inputs, so a changed input set never reuses it."""
    return f"part-{index:06d}-{digest[:12]}.parquet"


HICO_DIR = "hico"
HICO_INDEX_NAME = "index.parquet"
HICO_RECORDS_DIR = "work/hico"


def hico_dir(stage: str) -> str:
    return f"{HICO_DIR}/{stage}"


def hico_part_path(stage: str, shard_index_or_name) -> str:
    name = shard_index_or_name if isinstance(shard_index_or_name, str) else shard_name(shard_index_or_name)
    return f"{hico_dir(stage)}/{shard_stem(name)}.parquet"


def hico_index_path(stage: str) -> str:
    return f"{hico_dir(stage)}/{HICO_INDEX_NAME}"


def hico_records_dir(stage: str) -> str:
    return f"{HICO_RECORDS_DIR}/{stage}"


def hico_record_path(stage: str, shard_name_: str) -> str:
    return f"{hico_records_dir(stage)}/{shard_stem(shard_name_)}.json"


ANNOTATIONS_DIR = "annotations"
ANNOTATION_TABLES = ("captions", "qa", "grounding", "rejects")
ANNOTATION_RECORDS_DIR = "work/annotate"
GROUNDING_QVH = "annotations/grounding_qvhighlights.jsonl"


def annotation_dir(table: str) -> str:
    return f"{ANNOTATIONS_DIR}/{table}"


def annotation_path(table: str, shard_name_: str) -> str:
    return f"{annotation_dir(table)}/{shard_stem(shard_name_)}.parquet"


def annotation_record_path(shard_name_: str) -> str:
    return f"{ANNOTATION_RECORDS_DIR}/{shard_stem(shard_name_)}.json"


# The QVHighlights export's text of each group of shards, written by the Ray task that formats it and copied in order
# into GROUNDING_QVH by the driver; removed when the export ends.
QVH_PIECES_DIR = "work/annotate-qvh"


def qvh_piece_path(group: int) -> str:
    return f"{QVH_PIECES_DIR}/{group:06d}.jsonl"


# Curriculum mixtures (the `mix` stage): per stage, one annotation file per task family plus the trainer's data.yaml,
# the WebDataset shard list, per-task sampling weights, and the membership table (which annotation went where).
MIXTURES_DIR = "mixtures"
MIX_DATA_YAML = "data.yaml"
MIX_SHARDS_TXT = "shards.txt"
MIX_WEIGHTS_JSON = "weights.json"
MIX_MEMBERS_NAME = "members.parquet"
# Frame payloads (video_read_type: img): mixtures/<stage>/frames/<sample>/<prefix>_<n>.jpg, where <sample> is the
# video_id (whole-video records) or <video_id>_<start ms>-<end ms> (clip captions).
MIX_FRAMES_DIR = "frames"


def mixture_dir(stage: str) -> str:
    return f"{MIXTURES_DIR}/{stage}"


def mixture_task_path(stage: str, task: str, ext: str = "jsonl") -> str:
    return f"{mixture_dir(stage)}/{task}.{ext}"


def mixture_members_path(stage: str) -> str:
    return f"{mixture_dir(stage)}/{MIX_MEMBERS_NAME}"


def mixture_file_path(stage: str, name: str) -> str:
    return f"{mixture_dir(stage)}/{name}"


# Video payloads, materialised once from the shards for every `decord` stage (data_root of those stages' data.yaml).
MIX_VIDEOS_DIR = f"{MIXTURES_DIR}/videos"
MIX_VIDEOS_NAME = "videos"  # reserved: no curriculum stage may be called this


def mix_video_path(video_id: str, extension: str) -> str:
    return f"{MIX_VIDEOS_DIR}/{video_id}.{extension}"


def mixture_frames_path(stage: str, sample_dir: str, file_name: str) -> str:
    return f"{mixture_dir(stage)}/{MIX_FRAMES_DIR}/{sample_dir}/{file_name}"


# InternVideo2.5 (XTuner) variant, behind mix.internvideo2_5: <task>.jsonl records plus its dataset meta file.
MIX_INTERNVIDEO_DIR = "internvideo2_5"
MIX_INTERNVIDEO_META = "meta.json"
MIX_RECORDS_DIR = "work/mix"  # one JSON per shard whose payloads (videos, frames) are committed


def mix_record_path(shard_name_: str) -> str:
    return f"{MIX_RECORDS_DIR}/{shard_stem(shard_name_)}.json"


# Intermediate record parts of one `mix` run (a Ray task per partition of shards writes them, the driver merges them
# by streaming into the stage files, then removes them).
MIX_PARTS_DIR = "work/mix-parts"


def mix_records_part_path(stage: str, task: str, partition: int) -> str:
    return f"{MIX_PARTS_DIR}/{stage}/records/{task}/part-{partition:06d}.parquet"


def mix_members_part_path(stage: str, partition: int) -> str:
    return f"{MIX_PARTS_DIR}/{stage}/members/part-{partition:06d}.parquet"


def mix_payloads_part_path(partition: int) -> str:
    """The sorted payload paths (videos, frame files) a partition's chosen records point at, one per line."""
    return f"{MIX_PARTS_DIR}/payload-lists/part-{partition:06d}.txt"


def mix_run_path(part_path: str, level: int, index: int) -> str:
    """A sorted run merged from a group of parts, beside the parts it merges (`part_path`: any of them)."""
    return f"{part_path.rsplit('/', 1)[0]}/run-{level}-{index:06d}.parquet"


# The assembled files of one `mix` run before they are committed (Ray tasks write them here, at the path they will
# have under the output root, only when they differ from the committed file; the driver moves them into place).
MIX_SPOOL_DIR = "work/mix-spool"


def mix_spool_path(relative: str) -> str:
    return f"{MIX_SPOOL_DIR}/{relative}"


# Auditor tables (the `stats` stage) and the self-contained report (the `report` stage).
STATS_DIR = "stats"
STATS_TABLES = ("videos", "shards", "rejects", "stages")


def stats_table_path(name: str) -> str:
    return f"{STATS_DIR}/{name}.parquet"


# Per-video data one `stats` check hands to another (shard membership, random-weight HiCo videos, annotation counts
# per video, the stats/videos rows of a run of manifest rows), written by the Ray task that computed it and read back
# by the tasks or the driver that need it, so that it never waits in the driver's memory or its mapped object-store
# pages; removed when the stage's checks end.
STATS_SPOOL_DIR = "work/stats-spool"


def stats_spool_path(kind: str, group: str) -> str:
    """`group` names the unit of work whose payload this is (its first shard stem or record, or manifest row)."""
    return f"{STATS_SPOOL_DIR}/{kind}/{group}.pickle"


REPORT_HTML = "report.html"

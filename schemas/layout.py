"""File layout of a build's output folder (local path or s3:// URI). Paths are relative to the output root."""

MANIFEST_CRAWL = "manifest/crawl.parquet"
MANIFEST_VIDEOS = "manifest/videos.parquet"
MANIFEST_REJECTS = "manifest/rejects.parquet"
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


def shard_path(index: int) -> str:
    return f"{SHARDS_DIR}/{shard_name(index)}"


def shard_record_path(index: int) -> str:
    return f"{SHARD_RECORDS_DIR}/{SHARD_PREFIX}-{index:06d}.json"


def part_name(index: int, digest: str) -> str:
    """A work part is named by its position and a digest of its inputs, so a changed input set never reuses it."""
    return f"part-{index:06d}-{digest[:12]}.parquet"

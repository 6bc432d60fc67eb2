"""The WebDataset sample: key, field names and the per-sample JSON document."""

import re

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "ts", "mov", "m4v", "flv", "mpg", "mpeg", "wmv", "3gp", "ogv")
JSON_FIELD = "json"
FRAME_FIELD_TEMPLATE = "f{:06d}.jpg"  # k-th sampled frame of the frames stage, k = 0..N-1
FRAMES_STAGE_KEY = "frames_stage"  # per-sample JSON (payload frames): the stage whose frames the f*.jpg fields are

# Container format names from FFmpeg's demuxers mapped to the field extension used when the source name has none.
FORMAT_EXTENSIONS = {
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "matroska,webm": "mkv",
    "avi": "avi",
    "mpegts": "ts",
    "flv": "flv",
    "mpeg": "mpg",
    "asf": "wmv",
    "ogg": "ogv",
}

_KEY_OK = re.compile(r"^[0-9A-Za-z_-]+$")


def is_valid_key(key: str) -> bool:
    """WebDataset splits a member name at the first dot and at path separators, so keys must have neither."""
    return bool(_KEY_OK.match(key))


def frame_field(k: int) -> str:
    return FRAME_FIELD_TEMPLATE.format(k)

"""MH-NIAH-Video evaluation sets: file layout of an output folder, record fields and fixed rules shared by the
generator (pipeline/niah), the `niah` stage, `jobs/build_niah.py` and `longvid niah-score`.

    OUT/items.jsonl                       what a model sees: id, haystack, num_frames, prompt, questions, seed
    OUT/answers.jsonl                     the key, kept apart: id, answers, chain, distractors, needle_frame_indices
    OUT/haystacks/<id>/frame_000000.jpg   frame folders (format frames|both)
    OUT/haystacks/<id>.mp4                haystack videos at 1 fps (format video|both)
    OUT/work/<id>-<digest>.json           per-item record of a committed haystack (a rerun reuses it)
"""

from __future__ import annotations

ITEMS_JSONL = "items.jsonl"
ANSWERS_JSONL = "answers.jsonl"
HAYSTACKS_DIR = "haystacks"
WORK_DIR = "work"
NEEDLE_CAPTIONS = "captions.jsonl"  # in a --needles folder: {"file": <image name>, "caption": <text>} per line
BUILD_SUBDIR = "niah"  # the `niah` stage writes here under the build's output root unless niah.out says otherwise

FORMATS = ("frames", "video", "both")
FRAME_PREFIX = "frame_"
VIDEO_EXTENSION = "mp4"
HAYSTACK_FPS = 1  # haystacks are sampled at 1 fps, so frame index = second of the haystack video
NEEDLE_CLIP_FRAMES = 4  # a needle is one image repeated over this many consecutive frames
NUM_OPTIONS = 4
LETTERS = "ABCD"
NEEDLE_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")

CLUE_TEMPLATE = "Find a frame of {caption}"

# Question kinds (answers.jsonl `question_kinds`): which fact of the final image the second question asks about.
KIND_FINAL_CAPTION = "final_caption"
KIND_CAPTION_WORD = "caption_word"  # a word of the final image's caption among words of other captions
KIND_DOMINANT_COLOUR = "dominant_colour"  # when the captions give no usable word (e.g. captions made from file names)


def item_id(hops: int, haystack_frames: int, index: int) -> str:
    return f"h{hops}-l{haystack_frames}-{index:05d}"


def frame_name(index: int, extension: str) -> str:
    return f"{FRAME_PREFIX}{index:06d}.{extension}"


def haystack_frames_dir(item: str) -> str:
    return f"{HAYSTACKS_DIR}/{item}"


def haystack_video_path(item: str) -> str:
    return f"{HAYSTACKS_DIR}/{item}.{VIDEO_EXTENSION}"


def work_record_path(item: str, digest: str) -> str:
    return f"{WORK_DIR}/{item}-{digest[:12]}.json"


def frame_indices_of_clip(start: int) -> list[int]:
    return list(range(start, start + NEEDLE_CLIP_FRAMES))


def clip_starts(num_frames: int, count: int, depths: list[float] | None = None) -> list[int]:
    """First frames of `count` needle clips, ascending. Evenly spread: the haystack frames around the clips are
    split into count + 1 equal gaps. At `depths` (fractions of the haystack): clip j starts at depth_j x
    (num_frames - clip length). Raises ValueError when two clips would overlap."""
    clip = NEEDLE_CLIP_FRAMES
    if depths is None:
        background = num_frames - count * clip
        return [round((j + 1) * background / (count + 1)) + j * clip for j in range(count)]
    starts = sorted(round(d * (num_frames - clip)) for d in depths[:count])
    for a, b in zip(starts, starts[1:]):
        if b - a < clip:
            raise ValueError(f"at {num_frames} frames the needle clips at frames {a} and {b} overlap "
                             f"(each takes {clip})")
    return starts

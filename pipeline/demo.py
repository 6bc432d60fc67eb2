"""The embedded demo corpus: a few 1–5 minute videos with scene cuts at known times, one with audio, a duplicate
under another name, and a broken (truncated) file. Generated once with ffmpeg; reruns reuse it."""

from __future__ import annotations

import logging
import os
import shutil

from pipeline import synthetic

log = logging.getLogger(__name__)

DEMO_ROOT = "longvid-demo"
DEMO_STAGES = ("ingest", "hico", "annotate", "mix", "stats", "report")
# The demo has no real checkpoints: a tiny random-weight encoder and a tiny random-weight MLLM show the hico and
# annotate stages end to end; every row they write says random_init = true, and their output says so.
DEMO_SETTINGS = {"hico": {"encoder": {"preset": "tiny", "allow_random_init": True}},
                 "annotate": {"tiny_demo_model": True, "max_new_tokens": 24,
                              "qa_generators": {"free_qa": "model"}, "repair_attempts": 1}}
DEMO_VIDEOS = {
    "lecture_cuts.mp4": synthetic.SyntheticVideo([20, 25, 15, 30]),
    "street walk (audio).mp4": synthetic.SyntheticVideo([30, 45], audio=True),
    "nature/long_take.webm": synthetic.SyntheticVideo([40, 50, 30, 60], codec="libvpx"),
}
DUPLICATE = ("lecture_cuts.mp4", "copies/lecture_cuts (copy).mp4")
BROKEN = ("lecture_cuts.mp4", "broken_upload.mp4")


def ensure_corpus(root: str = DEMO_ROOT) -> str:
    """Create (if missing) and return the demo source folder."""
    sources = os.path.join(root, "sources")
    for name, video in DEMO_VIDEOS.items():
        path = os.path.join(sources, name)
        if not os.path.exists(path):
            log.info(f"[demo] generating {path} ({video.duration_s:.0f} s, cuts at {video.cut_times_s})")
            tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
            synthetic.write(video, tmp)
            os.replace(tmp, path)
    src, dup = (os.path.join(sources, p) for p in DUPLICATE)
    if not os.path.exists(dup):
        os.makedirs(os.path.dirname(dup), exist_ok=True)
        shutil.copyfile(src, dup)
    src, broken = (os.path.join(sources, p) for p in BROKEN)
    if not os.path.exists(broken):
        synthetic.write_truncated_copy(src, broken, 0.4)
    return sources

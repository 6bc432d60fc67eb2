"""Temporal-grounding labels from clip captions and scenes, and their QVHighlights-style export."""

from __future__ import annotations

import math


def grounding_rows(video_id: str, captions: list[dict], scenes: list[dict], duration_s: float) -> list[dict]:
    """One label per clip caption (query = the caption, window = its span)."""
    rows = []
    for c in captions:
        if c["level"] != "clip" or not c["end_s"] > c["start_s"]:
            continue
        rows.append({"video_id": video_id, "query": c["text"], "start_s": c["start_s"], "end_s": c["end_s"],
                     "duration_s": duration_s, "origin": "caption"})
    return rows


def qvhighlights_record(qid: int, row: dict, clip_s: float = 2.0) -> dict:
    """{qid, query, duration, vid, relevant_windows, relevant_clip_ids, saliency_scores} for one label."""
    first = int(math.floor(row["start_s"] / clip_s))
    last = max(first, int(math.ceil(row["end_s"] / clip_s)) - 1)
    clip_ids = list(range(first, last + 1))
    return {
        "qid": qid,
        "query": row["query"],
        "duration": round(row["duration_s"], 3),
        "vid": row["video_id"],
        "relevant_windows": [[round(row["start_s"], 2), round(row["end_s"], 2)]],
        "relevant_clip_ids": clip_ids,
        # No human raters: every relevant clip gets the same score on each of the three raters' 0..4 scale.
        "saliency_scores": [[4, 4, 4] for _ in clip_ids],
    }

"""A small fraction of LongVid's real size (benchmarks/scale_fabricate.py), built through the stages that follow the
model stages: the counts the fabricator wrote come out of every stage, and the build reconciles (shard, annotate,
mix, stats, report and the audit overview). Times are the benchmark's business (benchmarks/scale.py), not this."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from conftest import make_config  # noqa: E402

from pipeline import audit
from pipeline.core import runner
from pipeline.core.context import StageContext  # noqa: E402
from schemas import layout  # noqa: E402

FRACTION = 0.002
STAGES = ["shard", "annotate", "mix", "stats", "report"]


def test_a_fabricated_fraction_of_longvid_builds_and_reconciles(ray_local, tmp_path):
    from scale import OVERRIDES
    from scale_fabricate import fabricate, videos_for

    out = tmp_path / "out"
    cfg = make_config([tmp_path], out, OVERRIDES + ["mix.partition_shards=4"], stages=STAGES)
    counts = fabricate(StageContext(cfg), FRACTION, log=lambda m: None)
    assert counts["inputs"] == videos_for(FRACTION) == 228 and counts["shards"] > 8

    result = runner.run_build(cfg, quiet=True)
    s, stages = result["summary"], result["stages"]
    assert s["inputs"] == s["accepted"] + s["rejected"] == counts["inputs"]
    assert s["accepted"] == counts["videos"] == s["sharded_videos"]
    assert s["shards"] == s["shards_planned"] == stages["shard"]["shards"] == counts["shards"]
    assert (stages["annotate"]["captions"], stages["annotate"]["qa"], stages["annotate"]["grounding"]) == \
        (counts["captions"], counts["qa"], counts["grounding"])
    assert stages["stats"]["reconciled"] and stages["stats"]["videos"] == counts["videos"]
    # QA are whole-video samples: those of videos up to mix.long_max_s are one stage-3 record each (one turn each)
    manifest = pq.read_table(out / layout.MANIFEST_VIDEOS, columns=["video_id", "reader_num_frames", "reader_fps"])
    mixable = {v["video_id"] for v in manifest.to_pylist()
               if v["reader_num_frames"] / v["reader_fps"] <= cfg.mix.long_max_s}
    assert 0.9 * counts["videos"] < len(mixable) <= counts["videos"]
    assert stages["mix"]["videos"] == counts["videos"]  # clip captions are short samples, whatever the video's length
    qa = [v for p in sorted((out / layout.annotation_dir("qa")).glob("*.parquet"))
          for v in pq.read_table(p, columns=["video_id"])["video_id"].to_pylist()]
    stage3 = stages["mix"]["records"]["stage3"]
    families = ("event_understanding", "event_count", "event_relationship", "temporal_grounding", "free_qa")
    assert sum(stage3[f] for f in families) == sum(1 for v in qa if v in mixable) > 0.9 * counts["qa"]
    assert 0 < stage3["caption"] <= counts["captions"]
    members = pq.read_table(out / layout.mixture_members_path("stage3"), columns=["task"])
    assert members.num_rows == sum(stage3.values())
    lines = sum(1 for _ in open(out / layout.mixture_task_path("stage3", "free_qa"), encoding="utf-8"))
    assert lines == stage3["free_qa"]

    summary = json.loads((out / layout.STATS_SUMMARY).read_text())
    assert summary["accepted"] == counts["videos"] and summary["stats"]
    assert (out / layout.REPORT_HTML).stat().st_size > 0
    assert f"{counts['videos']}" in audit.overview(str(out))

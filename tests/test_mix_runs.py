"""When a stage has more parts than `mix.merge_fan_in`, Ray tasks first merge them into sorted runs, level by level,
and the driver's final merges read at most `merge_fan_in` files: the mixtures are the same bytes as with one merge
over every part. Built on a fabricated fraction of LongVid (benchmarks/scale_fabricate.py) with caps."""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from conftest import make_config  # noqa: E402

from pipeline.core import runner  # noqa: E402
from pipeline.core.context import StageContext  # noqa: E402
from schemas import layout  # noqa: E402

FRACTION = 0.002
CAPS = ["mix.stages.stage3.tasks.caption.max_records=500", "mix.stages.stage4.tasks.free_qa.max_records=20",
        "mix.json_list=true", "mix.internvideo2_5=true"]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_runs_merged_by_tasks_give_the_same_bytes(ray_local, tmp_path, caplog):
    from scale import OVERRIDES
    from scale_fabricate import fabricate

    out = tmp_path / "out"
    base = OVERRIDES + CAPS
    cfg = make_config([tmp_path], out, base + ["mix.partition_shards=16"], stages=["shard", "mix"])
    counts = fabricate(StageContext(cfg), FRACTION, log=lambda m: None)
    assert counts["shards"] >= 9
    runner.run_build(cfg, quiet=True)
    one_merge = _hashes(out / layout.MIXTURES_DIR)
    assert any(k.endswith("internvideo2_5/caption.jsonl") for k in one_merge)

    caplog.set_level(logging.INFO)
    cfg = make_config([tmp_path], out, base + ["mix.partition_shards=1", "mix.merge_fan_in=2"], stages=["mix"])
    result = runner.run_build(cfg, quiet=True)
    assert result["stages"]["mix"]["records"]["stage3"]["caption"] == 500
    merged_from = [int(n) for n in re.findall(r"records from (\d+) parts or runs merged", caplog.text)]
    assert merged_from and max(merged_from) <= 2  # the final merges read runs, not the >= 9 partitions' parts
    assert _hashes(out / layout.MIXTURES_DIR) == one_merge
    assert not (out / layout.MIX_PARTS_DIR).exists()

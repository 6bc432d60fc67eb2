"""The `mix` stage's final merges run as Ray tasks that write into a spool under work/ (local or S3): the committed
mixtures are the same bytes whatever the partitioning and fan-in, on a local folder and on S3; a rerun rewrites no
file; the spool is gone afterwards, and what a killed run left in it is never committed. Built on a fabricated
fraction of LongVid (benchmarks/scale_fabricate.py) with caps, JSON lists and InternVideo2.5 variants."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from conftest import make_config, s3_client  # noqa: E402

from pipeline.core import runner  # noqa: E402
from pipeline.core.context import StageContext  # noqa: E402
from pipeline.io import storage  # noqa: E402
from schemas import layout  # noqa: E402

FRACTION = 0.002
CAPS = ["mix.stages.stage3.tasks.caption.max_records=500", "mix.stages.stage4.tasks.free_qa.max_records=20",
        "mix.json_list=true", "mix.internvideo2_5=true"]
MANY_MERGES = ["mix.partition_shards=1", "mix.merge_fan_in=2"]


def _overrides(*extra: str) -> list[str]:
    from scale import OVERRIDES

    return OVERRIDES + CAPS + list(extra)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _fabricated(sources: Path, out: str, stages: list[str], *extra: str):
    from scale_fabricate import fabricate

    cfg = make_config([sources], out, _overrides(*extra), stages=stages)
    fabricate(StageContext(cfg), FRACTION, log=lambda m: None)
    return cfg


@pytest.fixture(scope="module")
def one_merge(ray_local, tmp_path_factory):
    """(sources, local build, sha256 of its mixtures) built with one partition per 16 shards and no runs."""
    root = tmp_path_factory.mktemp("final")
    sources, out = root / "sources", root / "out"
    sources.mkdir()
    cfg = _fabricated(sources, str(out), ["shard", "mix"], "mix.partition_shards=16")
    runner.run_build(cfg, quiet=True)
    return sources, out, _hashes(out / layout.MIXTURES_DIR)


def test_a_killed_runs_spool_is_not_committed_and_a_rerun_writes_nothing(one_merge):
    sources, out, expected = one_merge
    assert any(k.endswith("internvideo2_5/caption.jsonl") for k in expected)
    # What a run killed between its merges and its commit leaves: spooled files that differ from the committed ones.
    stale = out / layout.mix_spool_path(layout.mixture_task_path("stage3", "caption"))
    stale.parent.mkdir(parents=True)
    stale.write_text('{"id": "left by a killed run"}\n')
    (out / layout.mix_spool_path(layout.mixture_members_path("stage3"))).write_bytes(b"not parquet")
    mtimes = {p: p.stat().st_mtime_ns for p in (out / layout.MIXTURES_DIR).rglob("*") if p.is_file()}

    cfg = make_config([sources], out, _overrides(*MANY_MERGES), stages=["mix"])
    result = runner.run_build(cfg, quiet=True)["stages"]["mix"]
    assert result["records"]["stage3"]["caption"] == 500 and result["records"]["stage4"]["free_qa"] == 20
    assert _hashes(out / layout.MIXTURES_DIR) == expected
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # unchanged files are not rewritten
    assert not (out / layout.MIX_SPOOL_DIR).exists() and not (out / layout.MIX_PARTS_DIR).exists()


def test_s3_output_is_the_same_bytes_and_leaves_no_spool(one_merge, moto_endpoint, tmp_path):
    sources, _, expected = one_merge
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="mix-final")
    out = "s3://mix-final/build"
    endpoint = f"storage.s3_endpoint_url={moto_endpoint}"
    storage.configure(moto_endpoint)
    cfg = _fabricated(sources, out, ["shard", "mix"], *MANY_MERGES, endpoint)
    runner.run_build(cfg, quiet=True)

    def listing(prefix: str) -> dict[str, tuple]:
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="mix-final", Prefix=f"build/{prefix}"):
            found.update({o["Key"]: (o["ETag"], o["LastModified"]) for o in page.get("Contents", [])})
        return found

    mixtures = listing(f"{layout.MIXTURES_DIR}/")
    got = {key.removeprefix(f"build/{layout.MIXTURES_DIR}/"):
           hashlib.sha256(client.get_object(Bucket="mix-final", Key=key)["Body"].read()).hexdigest()
           for key in mixtures}
    assert got == expected
    assert not listing("work/mix-spool/") and not listing("work/mix-parts/")

    runner.run_build(make_config([sources], out, _overrides(*MANY_MERGES, endpoint), stages=["mix"]), quiet=True)
    assert listing(f"{layout.MIXTURES_DIR}/") == mixtures  # a rerun rewrites no object


@pytest.mark.parametrize("where", ["local", "s3"])
def test_stage_and_move_only_what_changed(where, moto_endpoint, tmp_path):
    """storage.stage_file_if_changed stages a file only when the committed one differs, and storage.move puts it in
    place; the local file is consumed either way."""
    if where == "s3":
        storage.configure(moto_endpoint)
        s3_client(moto_endpoint).create_bucket(Bucket="mix-move")
        root = "s3://mix-move/out"
    else:
        root = str(tmp_path / "out")
    final, spooled = storage.join(root, "mixtures/a.jsonl"), storage.join(root, "work/mix-spool/mixtures/a.jsonl")
    storage.write_bytes(final, b"committed\n")
    local = tmp_path / "a.jsonl"

    local.write_bytes(b"committed\n")
    assert not storage.stage_file_if_changed(str(local), final, spooled)
    assert not local.exists() and not storage.exists(spooled)

    local.write_bytes(b"changed\n")
    assert storage.stage_file_if_changed(str(local), final, spooled)
    assert not local.exists() and storage.read_bytes(final) == b"committed\n"
    storage.move(spooled, final)
    assert storage.read_bytes(final) == b"changed\n" and not storage.exists(spooled)

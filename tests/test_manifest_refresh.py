"""The manifest after `probe` and `scenes` and the runner's summary after them come from the shard stage's column
plan (pipeline/ingest/manifest_refresh.py): the probe and scene parts are read by Ray tasks, the committed shard
records are checked by Ray tasks, and the driver only lists. Checked on the session's annotated build (good, broken,
too short and duplicate inputs, two shards) against what the `shard` stage persisted and against the row-by-row
`manifest.assemble`."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import pytest
from conftest import copy_build, make_config

from pipeline.core import runner, summary
from pipeline.core.context import StageContext
from pipeline.ingest import manifest, manifest_refresh, shard_plan
from pipeline.io import storage
from schemas import layout

OUTPUTS = (layout.MANIFEST_VIDEOS, layout.MANIFEST_REJECTS, layout.STATS_SUMMARY)
STORAGE_CALLS = ("exists", "size", "read_bytes", "read_range", "open_read", "list_files", "list_committed",
                 "write_bytes", "write_bytes_if_changed", "remove_files", "read_parquet", "write_parquet",
                 "remove_stale_temporaries")


def _config(build, out: Path):
    return make_config(build.sources, out, list(build.overrides))


def _hashes(out: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((out / rel).read_bytes()).hexdigest() for rel in OUTPUTS}


def _record_driver_storage(monkeypatch) -> list[tuple[str, str]]:
    """(function, URI) of every storage call this process makes from here on (Ray workers are other processes)."""
    calls = []

    def wrap(name, fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            calls.append((name, str(args[0]) if args else ""))
            return fn(*args, **kwargs)
        return call

    for name in STORAGE_CALLS:
        monkeypatch.setattr(storage, name, wrap(name, getattr(storage, name)))
    return calls


@pytest.mark.parametrize("stage", ["probe", "scenes"])
def test_probe_and_scenes_rewrite_the_manifest_and_summary_byte_for_byte_reading_no_part_in_the_driver(
        annotated_build, tmp_path, monkeypatch, stage):
    out = copy_build(annotated_build, tmp_path / "out")
    before = _hashes(out)
    # every part committed: the stage has nothing to probe or scan and rewrites the manifest from the parts, one
    # part per read task and one shard per check task
    monkeypatch.setattr(shard_plan, "PARTS_PER_READ_TASK", 1)
    monkeypatch.setattr(manifest_refresh, "SHARDS_PER_TASK", 1)
    for rel in (layout.MANIFEST_VIDEOS, layout.MANIFEST_REJECTS, layout.STATS_SUMMARY):
        (out / rel).unlink()
    calls = _record_driver_storage(monkeypatch)
    result = runner.run_build(_config(annotated_build, out), [stage], quiet=True)
    driver_calls = len(calls)
    assert _hashes(out) == before
    assert result["summary"] == summary.summarize_persisted(str(out))
    assert result["summary"]["accepted"] == 4 and result["summary"]["shards"] == 2

    part_dirs = (layout.PROBE_PARTS_DIR, layout.SCENES_PARTS_DIR)
    in_driver = [(name, uri) for name, uri in calls
                 if any(f"/{d}/" in uri for d in part_dirs) or layout.SHARD_RECORDS_DIR in uri]
    assert in_driver == [], "the driver reads parts or shard records itself"
    listings = [uri for name, uri in calls if name in ("list_files", "list_committed")]
    assert all(any(uri.rstrip("/").endswith(d) for d in part_dirs) for uri in listings)
    # crawl list, three listings, the manifest and summary writes (nested calls counted too): none per part, video
    # or shard
    assert driver_calls <= 24


def test_several_read_and_check_tasks_give_the_summary_assemble_gives_with_probe_and_scenes_pending(
        annotated_build, tmp_path, monkeypatch):
    out = copy_build(annotated_build, tmp_path / "out")
    # a lost probe part (its inputs pending) and a lost scene part (its videos without scenes): the shard plan
    # changes, so the committed shards no longer match for some videos
    sorted((out / layout.SCENES_PARTS_DIR).iterdir())[0].unlink()
    ctx = StageContext(_config(annotated_build, out))
    expected = summary.summarize(manifest.assemble(ctx))
    assert expected["pending_scenes"] > 0
    for per_read, per_check in ((1, 1), (256, 16)):
        monkeypatch.setattr(shard_plan, "PARTS_PER_READ_TASK", per_read)
        monkeypatch.setattr(manifest_refresh, "SHARDS_PER_TASK", per_check)
        got, _ = manifest_refresh.refresh(ctx, "summary", write=False)
        assert got == expected

    sorted((out / layout.PROBE_PARTS_DIR).iterdir())[0].unlink()
    expected = summary.summarize(manifest.assemble(ctx))
    assert expected["pending_probe"] > 0
    assert manifest_refresh.refresh(ctx, "summary", write=False)[0] == expected
    with pytest.raises(Exception, match="have not been probed yet"):
        manifest_refresh.refresh(ctx, "probe")

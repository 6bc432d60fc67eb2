"""The hico stage end to end with a tiny encoder: token Parquet layout, exactness against the online computation,
idempotence, the reader (local and a real S3 endpoint), and checkpoint provenance."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from compressors import HicoReader, merge_clip_tokens
from compressors.encoder import VideoEncoderConfig, load_encoder
from compressors.preprocess import clip_batch, plan_clips, preprocess_frames
from pipeline.core import runner
from pipeline.io import frames as frame_io
from schemas import layout, tables
from tests.conftest import ROOT, make_config, s3_client

TINY = ["hico.encoder.preset=tiny", "hico.encoder.allow_random_init=true", "hico.stage=stage2",
        "sampling.stages.stage2.max_frames=12", "hico.batch_clips=2"]


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hico_build(corpus, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("hico")
    sources = [corpus.root / "cuts.mp4", corpus.root / "with audio and spaces.mp4", corpus.root / "sub dir"]
    cfg = make_config(sources, out, TINY + ["hico.row_group_bytes=40000"], stages=["ingest", "hico"])
    result = runner.run_build(cfg, quiet=True)
    return out, result


def _videos(out):
    return {v["video_id"]: v for v in pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()}


def test_token_files_layout(hico_build):
    out, result = hico_build
    assert result["stages"]["hico"]["random_init"] is True
    path = out / layout.hico_part_path("stage2", 0)
    pf = pq.ParquetFile(path)
    field = pf.schema_arrow.field(tables.HICO_TOKEN_COLUMN)
    assert str(field.type.value_type) == "halffloat" and list(field.type.shape) == [64, 64]
    assert pf.metadata.num_row_groups > 1  # row_group_bytes was set small
    token_chunk = next(pf.metadata.row_group(0).column(i) for i in range(pf.metadata.num_columns)
                       if pf.metadata.row_group(0).column(i).path_in_schema.startswith("tokens"))
    assert "BYTE_STREAM_SPLIT" in token_chunk.encodings and not token_chunk.has_dictionary_page
    assert token_chunk.compression == "ZSTD"
    table = pf.read()
    keys = list(zip(table.column("video_id").to_pylist(), table.column("clip_index").to_pylist()))
    assert keys == sorted(keys)
    videos = _videos(out)
    for vid, video in videos.items():
        plan = next(p for p in video["sampling"] if p["stage"] == "stage2")
        rows = [r for r in table.to_pylist() if r["video_id"] == vid]
        n = len(plan["frame_indices"])
        assert len(rows) == -(-n // 4)
        flat = [i for r in rows for i in r["frame_indices"]]
        assert flat[:n] == plan["frame_indices"]
        assert [r["padded"] for r in rows] == [False] * (n // 4) + [True] * (n % 4 != 0)
        assert rows[0]["t_start_s"] == pytest.approx(plan["timestamps_s"][0])
        assert all(r["random_init"] and r["encoder_id"].startswith("umt-vit-w64") for r in rows)
        assert all(r["merge_dtype"] == "float32" and r["resize"] == "pil" for r in rows)


def test_tokens_equal_the_online_computation(hico_build):
    """What a trainer's connector computes online from the same frames equals the stored tokens."""
    out, _ = hico_build
    model, _ = load_encoder(None, VideoEncoderConfig.tiny(), allow_random_init=True, seed=0)
    reader = HicoReader(str(out / layout.hico_dir("stage2")))
    for vid, video in _videos(out).items():
        plan = next(p for p in video["sampling"] if p["stage"] == "stage2")
        frames = frame_io.read_frames(video["source_uri"], plan["frame_indices"])
        clips = clip_batch(preprocess_frames(frames, plan["resolution"]), plan_clips(len(frames), 4))
        with torch.no_grad():
            expected = merge_clip_tokens(model(clips), 64, num_heads=4).to(torch.float16).numpy()
        got = reader.read(vid)
        assert got.tokens.shape == expected.shape and got.tokens.dtype == np.float16
        np.testing.assert_allclose(got.tokens.astype(np.float32), expected.astype(np.float32), rtol=1e-3, atol=1e-3)
        assert list(got.clip_index) == list(range(len(expected)))


def test_reader_reads_only_that_videos_row_groups(hico_build, monkeypatch):
    out, _ = hico_build
    # prefetch_depth=0: no scan decoding the following row groups ahead (a sequential reader would do that)
    reader = HicoReader(str(out / layout.hico_dir("stage2")), prefetch_depth=0)
    calls = []
    original = pq.ParquetFile.read_row_group

    def spy(self, i, *args, **kwargs):
        calls.append(i)
        return original(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    for vid in reader.video_ids():
        calls.clear()
        reader._cached = None  # a cold lookup: exactly this video's row groups
        reader._scan = None
        reader.read(vid)
        assert sorted(calls) == sorted(s["row_group"] for s in reader.segments[vid])
    assert len({tuple(s["row_group"] for s in segs) for segs in reader.segments.values()}) > 1
    with pytest.raises(KeyError):
        reader.read("0" * 20)


def test_reader_gives_the_same_tokens_in_any_order(hico_build):
    out, _ = hico_build
    folder = str(out / layout.hico_dir("stage2"))
    forward = HicoReader(folder)  # file order: row groups come from a read-ahead scan
    ids = forward.video_ids()
    assert max(s["row_group"] for segs in forward.segments.values() for s in segs) > 0  # several row groups
    expected = {vid: forward.read(vid) for vid in ids}
    backward = HicoReader(folder)  # reverse order: one row group at a time
    for vid in reversed(ids):
        got = backward.read(vid)
        np.testing.assert_array_equal(got.tokens, expected[vid].tokens)
        np.testing.assert_array_equal(got.clip_index, expected[vid].clip_index)
    again = HicoReader(folder)  # a scan interrupted by a lookup elsewhere, then resumed
    for vid in [ids[0], ids[-1], *ids]:
        np.testing.assert_array_equal(again.read(vid).tokens, expected[vid].tokens)


def test_hico_rerun_is_a_no_op(hico_build, corpus):
    out, _ = hico_build
    before = _snapshot(out)
    sources = [corpus.root / "cuts.mp4", corpus.root / "with audio and spaces.mp4", corpus.root / "sub dir"]
    runner.run_build(make_config(sources, out, TINY + ["hico.row_group_bytes=40000"], stages=["ingest", "hico"]),
                     quiet=True)
    assert _snapshot(out) == before


def test_checkpoint_provenance_and_s3_reader(corpus, ray_local, moto_endpoint, tmp_path):
    from safetensors.torch import save_file

    model, _ = load_encoder(None, VideoEncoderConfig.tiny(), allow_random_init=True, seed=7)
    ckpt = tmp_path / "umt_tiny.safetensors"
    save_file({f"vision_tower.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    endpoint = moto_endpoint
    s3_client(endpoint).create_bucket(Bucket="tok")
    overrides = [o for o in TINY if "allow_random_init" not in o] + [
        f"hico.encoder.checkpoint={ckpt}", f"storage.s3_endpoint_url={endpoint}"]
    runner.run_build(make_config([corpus.root / "cuts.mp4"], "s3://tok/build", overrides,
                                 stages=["ingest", "hico"]), quiet=True)
    reader = HicoReader("s3://tok/build/" + layout.hico_dir("stage2"), s3_endpoint_url=endpoint)
    (vid,) = reader.video_ids()
    got = reader.read(vid)
    assert got.random_init is False and got.tokens.shape[1:] == (64, 64)
    table = pq.read_table(reader._open(Path(layout.hico_part_path("stage2", 0)).name))
    assert set(table.column("weights_sha256").to_pylist()) == {hashlib.sha256(ckpt.read_bytes()).hexdigest()}


def test_hico_without_checkpoint_is_a_config_error(tmp_path, corpus):
    proc = subprocess.run([sys.executable, "jobs/build_longvid.py", "--source", str(corpus.root / "cuts.mp4"),
                           "--out", str(tmp_path / "o"), "--stages", "ingest,hico"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "config error: hico.encoder.checkpoint: missing" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_sequential_scan_with_prefetch_matches_cold_reads(hico_build):
    """Reading every video in file order (prefetching row groups in background threads) gives the same tokens."""
    out, _ = hico_build
    stage_dir = str(out / layout.hico_dir("stage2"))
    scanning = HicoReader(stage_dir, prefetch_depth=3)
    for _ in range(3):  # repeated scans: the prefetch threads must not share a Parquet reader
        for vid in scanning.video_ids():
            cold = HicoReader(stage_dir, prefetch_depth=0).read(vid)
            np.testing.assert_array_equal(scanning.read(vid).tokens, cold.tokens)

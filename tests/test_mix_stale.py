"""What is left under mixtures/ after a `mix` run: exactly the configured stages' files and the payloads their records
point at. Files of videos that left the build, of frame directories no record uses and of stages no longer
configured go; nothing a record uses does, however few listed files the stale check takes at a time."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import copy_build
from test_mix import run_mix, snapshot

from pipeline.mix import files as mix_files
from schemas import layout

IMG = "mix.stages.stage2.video_read_type=img"


def referenced_payloads(out: Path) -> set[str]:
    """Paths (relative to the output root) of the media the stages' data.yaml datasets point at, read as a trainer
    reads them: a decord record's `video` under the data_root, an img record's frame folder's files."""
    paths = set()
    for data_yaml in (out / layout.MIXTURES_DIR).glob(f"*/{layout.MIX_DATA_YAML}"):
        for ds in yaml.safe_load(data_yaml.read_text())["datasets"]:
            root = (data_yaml.parent / ds["data_root"]).resolve()
            for line in (data_yaml.parent / ds["json_path"]).read_text(encoding="utf-8").splitlines():
                target = root / json.loads(line)["video"]
                found = sorted(target.iterdir()) if target.is_dir() else [target]
                assert found, target
                paths.update(str(p.relative_to(out.resolve())) for p in found)
    return paths


def test_stale_payloads_go_and_referenced_ones_stay(annotated_build, tmp_path, monkeypatch):
    out = copy_build(annotated_build, tmp_path / "out")
    run_mix(annotated_build, out, IMG)
    expected = {k: v[0] for k, v in snapshot(out / layout.MIXTURES_DIR).items()}
    mixtures = out / layout.MIXTURES_DIR
    payloads = {f"{layout.MIXTURES_DIR}/{rel}" for rel in expected
                if rel.startswith(f"{layout.MIX_VIDEOS_NAME}/") or f"/{layout.MIX_FRAMES_DIR}/" in rel}
    assert payloads == referenced_payloads(out)
    assert any("/frames/" in p for p in payloads) and any(p.startswith(layout.MIX_VIDEOS_DIR) for p in payloads)

    strays = [f"{layout.MIX_VIDEOS_DIR}/00000000000000000000.mp4",  # a video no longer in the build
              layout.mixture_frames_path("stage2", "gone", "frame_000.jpg"),  # a sample no longer drawn
              layout.mixture_task_path("stage9", "caption")]  # a stage no longer configured
    for rel in strays:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"stale")
    monkeypatch.setattr(mix_files, "LISTING_BATCH", 2)
    run_mix(annotated_build, out, IMG)
    assert {k: v[0] for k, v in snapshot(mixtures).items()} == expected
    assert not (mixtures / "stage9").exists() and not (out / layout.mixture_dir("stage2") / "frames" / "gone").exists()

    # Back to video files for stage 2: its frame directories are referenced by no record any more.
    run_mix(annotated_build, out)
    assert not (out / layout.mixture_dir("stage2") / layout.MIX_FRAMES_DIR).exists()
    left = {str(p.relative_to(out)) for p in (out / layout.MIX_VIDEOS_DIR).iterdir()}
    assert left == {p for p in referenced_payloads(out) if p.startswith(layout.MIX_VIDEOS_DIR)}
    assert not (out / layout.MIX_PARTS_DIR).exists()

"""MH-NIAH-Video sets built from real ffmpeg-encoded videos with known content and needle images with known pixels.

Every check reads the outputs the way a user's evaluation would: frame folders with Pillow, videos with PyAV, the
JSON lines with json; nothing here decodes through the code under test.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_build, make_config, s3_client
from PIL import Image

from jobs import build_niah, cli
from pipeline import stages as registry
from pipeline import synthetic
from pipeline.core import runner
from schemas import config as config_schema

W, H = 256, 144
# Needle images drawn at the haystack frame size (no letterboxing), unlike anything the synthetic videos show.
NEEDLES = {
    "magenta.png": ((230, 30, 200), (0, 0, 0), 16, "a magenta checkerboard with large squares"),
    "orange.png": ((250, 150, 20), (255, 255, 255), 16, "an orange lattice on white paper"),
    "teal.png": ((20, 140, 140), (250, 250, 180), 32, "teal tiles beside cream stripes"),
    "violet.png": ((110, 40, 220), (240, 240, 240), 16, "violet blocks scattered across snow"),
    "olive.png": ((120, 130, 20), (30, 30, 90), 24, "olive squares over navy velvet"),
    "coral.png": ((250, 110, 100), (20, 80, 20), 20, "coral patches on dark moss"),
    "slate.png": ((90, 100, 120), (250, 200, 0), 20, "slate grid with golden seams"),
}
CLUE_FREE_ROWS = int(H * 0.6)  # clue text sits in a box at the bottom; rows above it show the needle image untouched
JPEG_TOLERANCE = 8.0  # mean absolute difference of a JPEG frame (quality 90, 4:2:0) from its source pixels
VIDEO_TOLERANCE = 12.0  # the same for a frame of the x264 haystack video (crf 18)
DIFFERENT = 25.0  # any frame that is not the needle differs from it by at least this much


def checkerboard(fg, bg, cell) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    mask = ((x // cell + y // cell) % 2).astype(bool)
    image = np.empty((H, W, 3), np.uint8)
    image[mask], image[~mask] = fg, bg
    return image


def write_needles(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    pixels = {}
    with open(folder / "captions.jsonl", "w") as f:
        for name, (fg, bg, cell, caption) in NEEDLES.items():
            pixels[caption] = checkerboard(fg, bg, cell)
            Image.fromarray(pixels[caption]).save(folder / name)
            f.write(json.dumps({"file": name, "caption": caption}) + "\n")
    return pixels


def write_haystack_videos(folder: Path) -> None:
    for name, scenes in {"a.mp4": [6, 6], "b.mp4": [5, 5, 5], "c dir/c.mp4": [8]}.items():
        synthetic.write(synthetic.SyntheticVideo(scenes, width=320, height=180), str(folder / name))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("niah-inputs")
    write_haystack_videos(root / "videos")
    pixels = write_needles(root / "needles")
    return root, pixels


def build_args(inputs, out, *extra) -> list[str]:
    root, _ = inputs
    return ["--source", str(root / "videos"), "--out", str(out), "--items", "2", "--hops", "1,3",
            "--haystack-frames", "40,64", "--needles", str(root / "needles"), "--distractor-hops", "2",
            "--seed", "7", "--format", "both", "--set", f"niah.width={W}", "--set", f"niah.height={H}",
            "--set", "niah.text_height=0.07", *extra]


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("niah-set")
    assert build_niah.main(build_args(inputs, out, "--no-ray")) == 0
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def decode_video(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


def diff(a: np.ndarray, b: np.ndarray, rows: int = H) -> float:
    return float(np.abs(a[:rows].astype(np.int16) - b[:rows].astype(np.int16)).mean())


def hops_of(answer: dict) -> list[dict]:
    return answer["chain"] + answer["distractors"]


# ---------------------------------------------------------------------------------------------------------------


def test_items_and_key_have_the_documented_fields(built):
    items, answers = read_jsonl(built / "items.jsonl"), read_jsonl(built / "answers.jsonl")
    assert [i["id"] for i in items] == [a["id"] for a in answers]
    assert len(items) == 2 * 2 * 2  # items x hops x lengths
    assert {(a["hops"], a["num_frames"]) for a in answers} == {(1, 40), (1, 64), (3, 40), (3, 64)}
    for item, answer in zip(items, answers):
        assert set(item) == {"id", "haystack", "num_frames", "prompt", "questions", "seed"}
        assert item["seed"] == 7
        assert item["haystack"] == {"frames": f"haystacks/{item['id']}", "video": f"haystacks/{item['id']}.mp4"}
        assert len(item["questions"]) == 2
        for q in item["questions"]:
            assert set(q) == {"question", "options"} and len(q["options"]) == 4 and len(set(q["options"])) == 4
        assert all(re.fullmatch("[ABCD]", a) for a in answer["answers"])
        assert len(answer["chain"]) == answer["hops"] and len(answer["distractors"]) == 2
        assert len(answer["needle_frame_indices"]) == 4 * (answer["hops"] + 2)
        assert "answers" not in item and "chain" not in item  # the key stays apart


def test_every_haystack_has_its_frames_and_each_needle_only_at_its_indices(built, inputs):
    _, pixels = inputs
    for item, answer in zip(read_jsonl(built / "items.jsonl"), read_jsonl(built / "answers.jsonl")):
        folder = built / item["haystack"]["frames"]
        files = sorted(folder.iterdir())
        assert [f.name for f in files] == [f"frame_{i:06d}.jpg" for i in range(item["num_frames"])]
        jpeg_bytes = [f.read_bytes() for f in files]
        decoded = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpeg_bytes]
        video = decode_video(built / item["haystack"]["video"])
        assert len(video) == item["num_frames"]
        assert all(f.shape == (H, W, 3) for f in decoded + video)
        all_needle_frames = set()
        for hop in hops_of(answer):
            indices = hop["frame_indices"]
            assert indices == list(range(indices[0], indices[0] + 4))  # a whole 4-frame clip
            all_needle_frames.update(indices)
            source = pixels[hop["caption"]]
            rows = CLUE_FREE_ROWS if hop["clue"] else H
            clip_bytes = {jpeg_bytes[i] for i in indices}
            assert len(clip_bytes) == 1  # the image repeated, byte for byte
            (needle_jpeg,) = clip_bytes
            assert [i for i, b in enumerate(jpeg_bytes) if b == needle_jpeg] == indices  # exactly there, only there
            for i in range(item["num_frames"]):
                if i in indices:
                    assert diff(decoded[i], source, rows) < JPEG_TOLERANCE, (item["id"], i)
                    assert diff(video[i], source, rows) < VIDEO_TOLERANCE, (item["id"], i)
                else:
                    assert diff(decoded[i], decoded[indices[0]]) > DIFFERENT, (item["id"], hop["caption"], i)
                    assert diff(video[i], video[indices[0]]) > DIFFERENT, (item["id"], hop["caption"], i)
            if not hop["clue"]:
                assert diff(decoded[indices[0]], source) < JPEG_TOLERANCE  # a plain image: no text anywhere
        assert sorted(all_needle_frames) == answer["needle_frame_indices"]


def test_clue_frames_carry_text_on_a_contrasting_box(built, inputs):
    _, pixels = inputs
    answers = read_jsonl(built / "answers.jsonl")
    clues = [(a, hop) for a in answers for hop in hops_of(a) if hop["clue"]]
    assert clues
    for answer, hop in clues:
        frame = np.asarray(Image.open(built / "haystacks" / answer["id"] / f"frame_{hop['frame_indices'][0]:06d}.jpg"))
        bottom = frame[-H // 5:].astype(np.int16).max(axis=2)
        assert (bottom < 60).mean() > 0.6  # a dark box ...
        assert (bottom > 200).mean() > 0.02  # ... with light text on it
        assert diff(frame, pixels[hop["caption"]], H) > diff(frame, pixels[hop["caption"]], CLUE_FREE_ROWS)


def test_evenly_spread_clips_never_overlap_even_in_the_shortest_haystack():
    from schemas.niah import clip_starts

    for count in range(1, 8):
        for frames in range(4 * count + 1, 4 * count + 40):
            starts = clip_starts(frames, count)
            assert starts[0] >= 0 and starts[-1] + 4 <= frames
            assert all(b - a >= 4 for a, b in zip(starts, starts[1:]))
    assert clip_starts(1000, 3) == [247, 498, 749]  # 988 haystack frames in four gaps of 247


def test_text_size_follows_the_frame_height():
    from pipeline.niah.overlay import render_clue

    def text_rows(height):
        image = np.zeros((height, height * 16 // 9, 3), np.uint8)
        bright = render_clue(image, "a red kite", 0.05).max(axis=(1, 2)) > 128
        rows = np.nonzero(bright)[0]
        return rows.max() - rows.min() + 1

    small, large = text_rows(360), text_rows(1080)
    assert 2.5 < large / small < 3.5


def test_chains_are_acyclic_end_at_the_final_image_and_distractors_stay_apart(built):
    for item, answer in zip(read_jsonl(built / "items.jsonl"), read_jsonl(built / "answers.jsonl")):
        chain = answer["chain"]
        assert f"Find a frame of {chain[0]['caption']}." in item["prompt"]
        by_caption = {hop["caption"]: hop for hop in chain}
        assert len(by_caption) == len(chain)
        seen, hop = [], chain[0]
        while hop["clue"]:
            assert hop["caption"] not in seen
            seen.append(hop["caption"])
            hop = by_caption[hop["clue"].removeprefix("Find a frame of ")]
        seen.append(hop["caption"])
        assert seen == [h["caption"] for h in chain] and hop is chain[-1]  # every hop visited once, ends plain
        chain_captions = set(by_caption)
        distractor_captions = {d["caption"] for d in answer["distractors"]}
        assert not distractor_captions & chain_captions
        for d in answer["distractors"]:
            if d["clue"]:
                assert d["clue"].removeprefix("Find a frame of ") in distractor_captions
        for h in chain:
            assert h["clue"] is None or h["clue"].removeprefix("Find a frame of ") in chain_captions
        q1, q2 = item["questions"]
        assert q1["options"]["ABCD".index(answer["answers"][0])] == chain[-1]["caption"]
        assert answer["question_kinds"][1] == "caption_word"
        assert q2["options"]["ABCD".index(answer["answers"][1])] in chain[-1]["caption"].split()


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_in_process_or_as_ray_tasks(built, inputs, tmp_path, ray_local):
    again = tmp_path / "again"
    assert build_niah.main(build_args(inputs, again, "--set", "niah.ray_min_items=1")) == 0
    assert tree_digest(again) == tree_digest(built)
    other = tmp_path / "other-seed"
    assert build_niah.main(build_args(inputs, other, "--seed", "8", "--no-ray")) == 0
    assert (other / "answers.jsonl").read_bytes() != (built / "answers.jsonl").read_bytes()


def test_a_rerun_reuses_committed_items(built, inputs, tmp_path):
    out = tmp_path / "rerun"
    shutil.copytree(built, out)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    assert build_niah.main(build_args(inputs, out, "--no-ray")) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == stamp
    assert tree_digest(out) == tree_digest(built)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_scoring_the_key_against_itself_gives_full_marks(built, tmp_path, capsys):
    answers = read_jsonl(built / "answers.jsonl")
    perfect = tmp_path / "perfect.jsonl"
    perfect.write_text("".join(json.dumps({"id": a["id"], "answers": a["answers"]}) + "\n" for a in answers))
    code, out, _ = run_cli(["niah-score", str(built), str(perfect), "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["overall"]["question_accuracy"] == 1.0 and result["overall"]["item_accuracy"] == 1.0
    assert [(r["hops"], r["items"], r["question_accuracy"]) for r in result["by_hops"]] == [(1, 4, 1.0), (3, 4, 1.0)]
    assert [(r["haystack_frames"], r["question_accuracy"]) for r in result["by_haystack_frames"]] == [(40, 1.0),
                                                                                                      (64, 1.0)]
    code, table, _ = run_cli(["niah-score", str(built), str(perfect)], capsys)
    assert code == 0 and "hops=3" in table and "haystack frames=64" in table and "100.0%" in table


def test_scoring_counts_wrong_and_missing_answers(built, tmp_path, capsys):
    answers = read_jsonl(built / "answers.jsonl")
    guesses = tmp_path / "all-a.jsonl"
    guesses.write_text("".join(json.dumps({"id": a["id"], "answers": ["A", "A"]}) + "\n" for a in answers[1:]))
    code, out, _ = run_cli(["niah-score", str(built), str(guesses), "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    expected = sum(x == "A" for a in answers[1:] for x in a["answers"]) / (2 * len(answers))
    assert result["overall"]["question_accuracy"] == pytest.approx(expected)
    assert result["overall"]["missing"] == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "nope", "answers": ["A"]}) + "\n")
    code, _, err = run_cli(["niah-score", str(built), str(bad)], capsys)
    assert code == 2 and "'nope' is not an item" in err


@pytest.mark.parametrize("extra, message", [
    (["--hops", "0"], "config error: --hops[0]: must be > 0"),
    (["--haystack-frames", "20"], "config error: --haystack-frames: 20 frames cannot hold 5 needle clips"),
    (["--format", "gif"], "config error: --format: unknown format 'gif'"),
    (["--depths", "0.1,0.2"], "config error: --depths: 2 depths for 5 needles"),
    (["--set", "niah.hopz=2"], "config error: niah.hopz: unknown key"),
    (["--set", "mix.seed=2"], "config error: mix.seed: only niah.* and storage.* keys apply here"),
    (["--source", "/no/such/folder"], "config error: --source[1]: local path does not exist"),
])
def test_bad_arguments_exit_2_naming_the_flag(inputs, tmp_path, capsys, extra, message):
    assert build_niah.main(build_args(inputs, tmp_path / "out", "--no-ray", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "items.jsonl").exists()


def test_unusable_needles_and_overlapping_depths_exit_2(inputs, tmp_path, capsys):
    root, _ = inputs
    needles = tmp_path / "needles"
    shutil.copytree(root / "needles", needles)
    (needles / "captions.jsonl").write_text('{"file": "missing.png", "caption": "x"}\n')
    assert build_niah.main(build_args(inputs, tmp_path / "o1", "--no-ray", "--needles", str(needles))) == 2
    assert "line 1: image 'missing.png' not found" in capsys.readouterr().err
    (needles / "captions.jsonl").unlink()
    assert build_niah.main(build_args(inputs, tmp_path / "o2", "--no-ray", "--needles", str(needles))) == 2
    assert "no captions.jsonl" in capsys.readouterr().err
    crowded = ["--depths", "0.1,0.11,0.5,0.7,0.9"]
    assert build_niah.main(build_args(inputs, tmp_path / "o3", "--no-ray", *crowded)) == 2
    assert "config error: --depths: at 40 frames the needle clips at frames 4 and 4 overlap" in capsys.readouterr().err


def test_niah_config_section_is_validated_with_the_build_config(tmp_path):
    with pytest.raises(config_schema.ConfigError, match=r"niah\.format: unknown format 'gif'"):
        make_config([], tmp_path, ["niah.format=gif"])
    with pytest.raises(config_schema.ConfigError, match=r"niah\.width: 255 is odd"):
        make_config([], tmp_path, ["niah.width=255"])
    assert "niah" not in registry.resolve(config_schema.BuildConfig().stages)
    assert "niah" not in registry.resolve(["ingest", "hico", "annotate", "mix", "stats", "report"])


def test_s3_sources_needles_and_output(inputs, moto_endpoint, tmp_path, capsys):
    root, pixels = inputs
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="niah-src")
    client.create_bucket(Bucket="niah-out")
    for path in sorted((root / "videos").rglob("*.mp4")) + sorted((root / "needles").iterdir()):
        client.put_object(Bucket="niah-src", Key=str(path.relative_to(root)), Body=path.read_bytes())
    args = ["--source", "s3://niah-src/videos", "--out", "s3://niah-out/set", "--items", "1", "--hops", "2",
            "--haystack-frames", "30", "--needles", "s3://niah-src/needles", "--format", "video",
            "--set", f"niah.width={W}", "--set", f"niah.height={H}", "--s3-endpoint-url", moto_endpoint, "--no-ray"]
    assert build_niah.main(args) == 0
    get = lambda key: client.get_object(Bucket="niah-out", Key=key)["Body"].read()  # noqa: E731
    (item,) = [json.loads(x) for x in get("set/items.jsonl").decode().splitlines()]
    (answer,) = [json.loads(x) for x in get("set/answers.jsonl").decode().splitlines()]
    assert item["haystack"] == {"video": f"haystacks/{item['id']}.mp4"}
    (tmp_path / "h.mp4").write_bytes(get(f"set/{item['haystack']['video']}"))
    video = decode_video(tmp_path / "h.mp4")
    assert len(video) == 30
    final = answer["chain"][-1]
    assert diff(video[final["frame_indices"][0]], pixels[final["caption"]]) < VIDEO_TOLERANCE
    assert all(h["video"].startswith("s3://niah-src/videos/") for h in answer["haystack_sources"])


def test_stage_on_an_annotated_build(annotated_build, tmp_path, ray_local):
    import pyarrow.parquet as pq

    out = copy_build(annotated_build, tmp_path / "build")
    overrides = annotated_build.overrides + [
        "niah.items=2", "niah.hops=[1,2]", "niah.haystack_frames=[24]", f"niah.width={W}", f"niah.height={H}",
        "niah.needle_fraction=0.75", "niah.ray_min_items=1", "niah.format=both"]
    cfg = make_config(annotated_build.sources, out, overrides, stages=["niah"])
    result = runner.run_build(cfg, quiet=True)
    assert result["stages"]["niah"]["items"] == 4
    items, answers = read_jsonl(out / "niah" / "items.jsonl"), read_jsonl(out / "niah" / "answers.jsonl")
    videos = pq.read_table(out / "manifest" / "videos.parquet").to_pylist()
    captions = [r for p in sorted((out / "annotations" / "captions").glob("*.parquet"))
                for r in pq.read_table(p).to_pylist()]
    # documented cleaning: control characters become spaces, whitespace collapses, long text is cut at a word
    readable = {(r["video_id"], " ".join("".join(c if c.isprintable() else " " for c in r["text"]).split()))
                for r in captions}
    sharded = {v["video_id"] for v in videos if v["shard"]}
    for item, answer in zip(items, answers):
        assert len(decode_video(out / "niah" / item["haystack"]["video"])) == item["num_frames"] == 24
        assert len(list((out / "niah" / item["haystack"]["frames"]).iterdir())) == 24
        needle_videos = {h["source"]["video"] for h in hops_of(answer)}
        haystack_videos = {h["video"] for h in answer["haystack_sources"]}
        assert needle_videos <= sharded and haystack_videos <= sharded
        assert not needle_videos & haystack_videos  # needles come from videos kept out of haystacks
        for hop in hops_of(answer):
            assert any(vid == hop["source"]["video"] and text.startswith(hop["caption"]) for vid, text in readable)


def test_without_needles_corpus_frames_kept_out_of_haystacks_become_needles(inputs, tmp_path):
    root, _ = inputs
    out = root / "videos" / "set"  # inside a source folder: its own haystacks must never become sources
    args = ["--source", str(root / "videos"), "--out", str(out), "--items", "2", "--hops", "2",
            "--haystack-frames", "30", "--format", "both", "--set", f"niah.width={W}", "--set", f"niah.height={H}",
            "--set", "niah.needle_spacing_s=2", "--no-ray"]
    assert build_niah.main(args) == 0
    first = tree_digest(out)
    assert build_niah.main(args) == 0
    assert tree_digest(out) == first  # the first run's haystack videos did not join the sources
    try:
        for item, answer in zip(read_jsonl(out / "items.jsonl"), read_jsonl(out / "answers.jsonl")):
            needle_videos = {h["source"]["video"] for h in hops_of(answer)}
            haystack_videos = {h["video"] for h in answer["haystack_sources"]}
            assert len(needle_videos) == 1 and not needle_videos & haystack_videos
            assert all("/set/" not in v for v in haystack_videos)
            name = Path(next(iter(needle_videos))).stem
            for hop in hops_of(answer):
                seconds = int(hop["source"]["time_s"])
                assert hop["caption"] == f"{name} at {seconds // 60}:{seconds % 60:02d}"
            assert answer["question_kinds"] == ["final_caption", "dominant_colour"]
            assert item["questions"][1]["options"][0] in ("black", "white", "gray", "red", "orange", "yellow", "green",
                                                           "cyan", "blue", "purple", "pink", "brown")
            frames = [np.asarray(Image.open(p)) for p in sorted((out / item["haystack"]["frames"]).iterdir())]
            assert len(frames) == 30
            for hop in hops_of(answer):
                first = hop["frame_indices"][0]
                assert all(diff(frames[i], frames[first]) < 1.0 for i in hop["frame_indices"])
                if hop["clue"]:  # plain frames may repeat: the synthetic videos share their flat-colour scenes
                    assert all(diff(frames[i], frames[first]) > 2.0 for i in range(30) if i not in hop["frame_indices"])
    finally:
        shutil.rmtree(out)


def test_an_undecodable_haystack_video_is_skipped_and_recorded(inputs, tmp_path):
    root, _ = inputs
    videos = tmp_path / "videos"
    shutil.copytree(root / "videos", videos)
    synthetic.write_random_bytes(str(videos / "broken.mp4"))
    out = tmp_path / "set"
    args = ["--source", str(videos), "--out", str(out), "--items", "1", "--hops", "1", "--haystack-frames", "64",
            "--needles", str(root / "needles"), "--format", "frames", "--set", f"niah.width={W}",
            "--set", f"niah.height={H}", "--no-ray"]
    assert build_niah.main(args) == 0  # the three good videos (35 frames a cycle) fill 60 frames: all are read
    (answer,) = read_jsonl(out / "answers.jsonl")
    skipped = [s for s in answer["haystack_sources"] if "skipped" in s]
    assert [s["video"] for s in skipped] == [str(videos / "broken.mp4")] and skipped[0]["frames"] == 0
    assert len(list((out / "haystacks" / answer["id"]).iterdir())) == 64

"""Duration-based frame sampling and the timestamp prompt (DESIGN.md, "Duration-based frame sampling").

Expected index lists below were worked out by hand from the rule: d = vlen / fps; N = L * floor(d / L) (L if 0);
N = min(N, T_max); N = max(N, T_min) with T_min first lowered to L * floor(vlen / L) when T_min > vlen; edges =
linspace(0, vlen, min(N, vlen) + 1) cast to int; index = (a + b) // 2 with b = next edge - 1; pad with the last index.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from pipeline import sampling
from schemas import config as config_schema


# ---------------------------------------------------------------------------------------------------------------
# Hand-computed cases


def test_dynamic_10s_video_takes_8_frames():
    # d = 300 / 30 = 10 s; N = 4 * floor(10 / 4) = 8; edges 0,37,75,112,150,187,225,262,300
    assert sampling.frame_indices(300, 30, 1, 8, "dynamic_fps1") == [18, 55, 93, 130, 168, 205, 243, 280]


def test_dynamic_is_the_default_sample_type():
    assert sampling.frame_indices(300, 30, 1, 8) == [18, 55, 93, 130, 168, 205, 243, 280]


def test_short_video_falls_back_to_one_clip():
    # d = 2 s: floor(2 / 4) = 0 -> N = L = 4; edges 0,12,25,37,50
    assert sampling.frame_indices(50, 25, 1, 8, "dynamic_fps1") == [5, 18, 30, 43]


def test_dynamic_capped_by_max_frames():
    # d = 12 s -> N = 12, capped at T_max = 8; edges 0,1,3,4,6,7,9,10,12 (1.5-frame steps truncated)
    assert sampling.frame_indices(12, 1, 1, 8, "dynamic_fps1") == [0, 1, 3, 4, 6, 7, 9, 10]


def test_duration_just_below_a_clip_boundary_rounds_down():
    # 399 / 25 = 15.96 s -> N = 4 * 3 = 12 (not 16); 400 / 25 = 16 s -> N = 16
    assert len(sampling.frame_indices(399, 25, 1, 512)) == 12
    assert len(sampling.frame_indices(400, 25, 1, 512)) == 16


def test_non_integer_fps():
    # 1000 / 29.97 = 33.37 s -> N = 32 -> capped at 8; edges every 125 frames
    assert sampling.frame_indices(1000, 29.97, 1, 8) == [62, 187, 312, 437, 562, 687, 812, 937]


def test_stage3_min_frames_raises_a_short_clip_to_64():
    # 10 s clip: N = 8, raised to T_min = 64; 64 intervals of 250 / 64 = 3.90625 frames
    expected = [1, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 43, 47, 51, 55, 59, 63, 67, 71, 75, 79, 83, 86, 90, 94, 98,
                102, 106, 110, 114, 118, 122, 126, 129, 133, 137, 141, 145, 149, 153, 157, 161, 165, 168, 172, 176, 180,
                184, 188, 192, 196, 200, 204, 208, 211, 215, 219, 223, 227, 231, 235, 239, 243, 247]
    got = sampling.frame_indices(250, 25, 64, 512)
    assert len(got) == 64
    assert got == expected


def test_min_frames_above_vlen_is_lowered_to_whole_clips():
    # vlen = 10 < T_min = 64 -> T_min = 4 * floor(10 / 4) = 8; d = 0.4 s -> N = 4 -> max(4, 8) = 8
    # edges linspace(0, 10, 9) = 0,1.25,2.5,3.75,5,6.25,7.5,8.75,10 -> 0,1,2,3,5,6,7,8,10
    assert sampling.frame_indices(10, 25, 64, 512) == [0, 1, 2, 3, 5, 6, 7, 8]


def test_min_frames_lowered_to_zero_and_padded():
    # vlen = 3: T_min = 4 * floor(3 / 4) = 0; N = 4 (one clip) > vlen -> 3 intervals, pad with the last index
    assert sampling.frame_indices(3, 25, 64, 512) == [0, 1, 2, 2]


def test_middle_uses_max_frames():
    # stage1: N = T_max = 4 regardless of duration; edges 0,75,150,225,300
    assert sampling.frame_indices(300, 30, 1, 4, "middle") == [37, 112, 187, 262]
    assert sampling.frame_indices(30000, 30, 1, 4, "middle") == [3749, 11249, 18749, 26249]


def test_middle_pads_when_vlen_below_n():
    assert sampling.frame_indices(3, 25, 1, 4, "middle") == [0, 1, 2, 2]
    assert sampling.frame_indices(1, 25, 1, 4, "middle") == [0, 0, 0, 0]


def test_edges_follow_float_linspace_not_exact_division():
    # linspace(0, 30, 23)[11] is 14.999999999999998, which casts to 14 (exact 30 * 11 / 22 would give 15):
    # index 11 = (14 + 16 - 1) // 2 = 14. The trainer uses numpy's linspace, so the pipeline must too.
    idx = sampling.frame_indices(30, 1, 1, 22, "middle")
    assert len(idx) == 22
    assert idx[10:13] == [13, 14, 16]


def test_one_hour_video_is_capped_at_max_frames():
    vlen = 3600 * 25
    idx = sampling.frame_indices(vlen, 25, 64, 512)
    assert len(idx) == 512
    assert all(b > a for a, b in zip(idx, idx[1:]))
    # first interval [0, 174] (edge 90000/512 = 175.78 -> 175), last [89824, 89999]
    assert idx[0] == 87
    assert idx[-1] == 89911
    assert 0 <= idx[0] and idx[-1] < vlen


def test_clip_len_parameter():
    # L = 8: d = 10 s -> N = 8 * floor(10 / 8) = 8
    assert len(sampling.frame_indices(300, 30, 1, 64, clip_len=8)) == 8
    # L = 8, d = 2 s -> N = L = 8
    assert len(sampling.frame_indices(50, 25, 1, 64, clip_len=8)) == 8


@pytest.mark.parametrize("bad", [dict(vlen=0, fps=25), dict(vlen=-5, fps=25), dict(vlen=100, fps=0),
                                 dict(vlen=100, fps=-1)])
def test_rejects_non_positive_vlen_or_fps(bad):
    with pytest.raises(ValueError):
        sampling.frame_indices(bad["vlen"], bad["fps"], 1, 8)


def test_unknown_sample_type():
    with pytest.raises(ValueError, match="unknown sample type"):
        sampling.frame_indices(100, 25, 1, 8, "uniform")


# ---------------------------------------------------------------------------------------------------------------
# Independent naive reference, compared on random inputs


def reference_indices(vlen, fps, t_min, t_max, sample, clip_len=4):
    """Written from DESIGN.md alone, with plain loops."""
    if sample == "middle":
        n = t_max
    else:
        duration = vlen / fps
        clips = 0
        while (clips + 1) * clip_len <= duration:
            clips += 1
        n = clip_len * clips
        if n == 0:
            n = clip_len
        if n > t_max:
            n = t_max
        lowered_min = t_min
        if lowered_min > vlen:
            lowered_min = clip_len * (vlen // clip_len)
        if n < lowered_min:
            n = lowered_min
    intervals = n if n < vlen else vlen
    edges = []
    for x in np.linspace(0, vlen, intervals + 1):
        edges.append(int(x))
    out = []
    for i in range(intervals):
        a = edges[i]
        b = edges[i + 1] - 1
        out.append((a + b) // 2)
    while len(out) < n:
        out.append(out[-1])
    return out


def _random_cases(count, seed):
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        fps = rng.choice([1, 10, 23.976, 24, 25, 29.97, 30, 50, 59.94, 60, rng.uniform(0.5, 120)])
        kind = rng.random()
        if kind < 0.2:
            vlen = rng.randint(1, 20)
        elif kind < 0.7:
            vlen = rng.randint(1, 3000)
        else:
            vlen = rng.randint(1, 400_000)
        t_min, t_max = rng.choice([(1, 4), (1, 8), (64, 512), (8, 64), (1, 1), (16, 16)] +
                                  [tuple(sorted((rng.randint(1, 600), rng.randint(1, 600))))])
        sample = rng.choice(["dynamic_fps1", "dynamic_fps1", "middle"])
        cases.append((vlen, fps, t_min, t_max, sample))
    return cases


def test_matches_naive_reference_on_random_inputs():
    mismatches = []
    for vlen, fps, t_min, t_max, sample in _random_cases(3000, seed=1234):
        got = sampling.frame_indices(vlen, fps, t_min, t_max, sample)
        want = reference_indices(vlen, fps, t_min, t_max, sample)
        if got != want:
            mismatches.append((vlen, fps, t_min, t_max, sample))
    assert not mismatches, f"{len(mismatches)} mismatches, e.g. {mismatches[:5]}"


def test_structural_properties_on_random_inputs():
    for vlen, fps, t_min, t_max, sample in _random_cases(1000, seed=99):
        idx = sampling.frame_indices(vlen, fps, t_min, t_max, sample)
        assert all(isinstance(i, int) for i in idx)
        assert all(0 <= i < vlen for i in idx)
        distinct = min(len(idx), vlen)
        assert all(b > a for a, b in zip(idx[:distinct], idx[1:distinct])), (vlen, fps, t_min, t_max, sample)
        assert all(i == idx[distinct - 1] for i in idx[distinct:])
        if sample == "middle":
            assert len(idx) == t_max
        else:
            assert len(idx) <= max(t_max, t_min)
            if t_min <= vlen:
                assert len(idx) >= t_min
            if t_max >= 4 and t_min <= 4 and len(idx) < t_max:
                # not capped: the count is a whole number of clips, and covers the duration in whole seconds
                assert len(idx) % 4 == 0
                assert len(idx) == max(4, 4 * math.floor(vlen / fps / 4))


# ---------------------------------------------------------------------------------------------------------------
# Timestamp prompt and the per-stage plan


def test_timestamp_prompt_exact_text():
    assert sampling.timestamp_prompt(12.345, 8) == (
        "The video lasts for 12.35 seconds, and 8 frames are uniformly sampled from it. ")


def test_timestamp_prompt_formats_two_decimals_and_ends_with_space():
    text = sampling.timestamp_prompt(10, 64)
    assert text == "The video lasts for 10.00 seconds, and 64 frames are uniformly sampled from it. "
    assert text.endswith(". ")
    assert sampling.timestamp_prompt(3599.999, 512).startswith("The video lasts for 3600.00 seconds, and 512 ")


def test_plan_covers_every_default_stage(tmp_path):
    cfg = config_schema.build({"sources": [], "out": str(tmp_path / "out")})
    rows = sampling.plan(300, 30.0, cfg.sampling.stages, cfg.sampling.clip_len)
    by_stage = {r["stage"]: r for r in rows}
    assert list(by_stage) == ["stage1", "stage2", "stage3", "stage4"]

    s1 = by_stage["stage1"]
    assert s1["sample"] == "middle" and (s1["min_frames"], s1["max_frames"]) == (1, 4) and s1["resolution"] == 224
    assert s1["frame_indices"] == [37, 112, 187, 262]
    assert s1["prompt"] == "The video lasts for 10.00 seconds, and 4 frames are uniformly sampled from it. "

    s2 = by_stage["stage2"]
    assert s2["frame_indices"] == [18, 55, 93, 130, 168, 205, 243, 280]
    assert s2["prompt"] == "The video lasts for 10.00 seconds, and 8 frames are uniformly sampled from it. "

    for name in ("stage3", "stage4"):
        r = by_stage[name]
        assert len(r["frame_indices"]) == 64
        assert r["frame_indices"] == sampling.frame_indices(300, 30.0, 64, 512)
        assert r["prompt"] == "The video lasts for 10.00 seconds, and 64 frames are uniformly sampled from it. "
    assert by_stage["stage3"]["resolution"] == 224
    assert by_stage["stage4"]["resolution"] == 448

    for r in rows:
        assert r["duration_s"] == pytest.approx(10.0)
        assert r["timestamps_s"] == [i / 30.0 for i in r["frame_indices"]]
        assert len(r["timestamps_s"]) == len(r["frame_indices"])


def test_plan_timestamps_use_reader_fps():
    stages = {"only": config_schema.SamplingStageConfig(1, 8, "dynamic_fps1", 224)}
    (row,) = sampling.plan(1000, 29.97, stages)
    assert row["frame_indices"] == [62, 187, 312, 437, 562, 687, 812, 937]
    assert row["timestamps_s"] == pytest.approx([62 / 29.97, 187 / 29.97, 312 / 29.97, 437 / 29.97,
                                                 562 / 29.97, 687 / 29.97, 812 / 29.97, 937 / 29.97])
    assert row["duration_s"] == pytest.approx(1000 / 29.97)
    assert row["prompt"] == "The video lasts for 33.37 seconds, and 8 frames are uniformly sampled from it. "


def test_plan_honours_clip_len():
    stages = {"s": config_schema.SamplingStageConfig(1, 64, "dynamic_fps1", 224)}
    (row,) = sampling.plan(300, 30.0, stages, clip_len=8)
    assert len(row["frame_indices"]) == 8
    assert row["prompt"].endswith("and 8 frames are uniformly sampled from it. ")

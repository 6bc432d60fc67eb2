"""The build config: defaults, `--set` overrides, sizes, and key-precise errors; the job CLI's exit code 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import config as config_schema
from schemas.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = re.compile(r"^config error: (?P<key>[^:\s]+): (?P<problem>.+) \((?P<fix>.+)\)$")


def build(tmp_path, overrides=(), **data):
    data = {"sources": [str(tmp_path)], "out": str(tmp_path / "out"), **data}
    return config_schema.build(data, list(overrides))


def config_error(tmp_path, overrides=(), **data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, overrides, **data)
    err = info.value
    m = MESSAGE.match(str(err))
    assert m, f"message not in `config error: <key>: <problem> (<fix>)` form: {err}"
    assert m.group("key") == err.key
    assert m.group("problem") == err.problem and m.group("fix") == err.fix
    assert err.fix.strip(), "a config error must say how to fix it"
    return err


# ---------------------------------------------------------------------------------------------------------------
# Defaults


def test_default_curriculum_matches_design_table(tmp_path):
    cfg = build(tmp_path)
    got = {name: (st.min_frames, st.max_frames, st.sample, st.resolution) for name, st in cfg.sampling.stages.items()}
    assert got == {
        "stage1": (1, 4, "middle", 224),
        "stage2": (1, 8, "dynamic_fps1", 224),
        "stage3": (64, 512, "dynamic_fps1", 224),
        "stage4": (64, 512, "dynamic_fps1", 448),
    }
    assert cfg.sampling.clip_len == 4


def test_other_defaults(tmp_path):
    cfg = build(tmp_path)
    assert cfg.stages == ["ingest"]
    assert cfg.sources == [str(tmp_path)]
    assert cfg.out == str(tmp_path / "out")
    assert cfg.scenes.detector == "fast"
    assert cfg.probe.min_duration_s == 1.0 and cfg.probe.max_duration_s == 4 * 3600.0
    assert "mp4" in cfg.crawl.extensions and "webm" in cfg.crawl.extensions
    assert cfg.shard.target_bytes == 1024**3


def test_defaults_are_not_shared_between_builds(tmp_path):
    a = build(tmp_path, ["sampling.stages.stage1.max_frames=2"])
    b = build(tmp_path)
    assert a.sampling.stages["stage1"].max_frames == 2
    assert b.sampling.stages["stage1"].max_frames == 4


# ---------------------------------------------------------------------------------------------------------------
# Overrides


def test_scalar_overrides_are_read_as_yaml(tmp_path):
    cfg = build(tmp_path, ["probe.timeout_s=120", "probe.check_integrity=false", "shard.max_samples=100",
                           "scenes.detector=adaptive", "scenes.threshold=3.5"])
    assert cfg.probe.timeout_s == 120.0 and isinstance(cfg.probe.timeout_s, float)
    assert cfg.probe.check_integrity is False
    assert cfg.shard.max_samples == 100
    assert cfg.scenes.detector == "adaptive"
    assert cfg.scenes.threshold == 3.5


def test_override_wins_over_file_values(tmp_path):
    cfg = build(tmp_path, ["probe.timeout_s=5"], probe={"timeout_s": 60, "part_size": 7})
    assert cfg.probe.timeout_s == 5.0
    assert cfg.probe.part_size == 7


def test_nested_stage_override_keeps_other_fields(tmp_path):
    cfg = build(tmp_path, ["sampling.stages.stage3.max_frames=256"])
    st = cfg.sampling.stages["stage3"]
    assert (st.min_frames, st.max_frames, st.sample, st.resolution) == (64, 256, "dynamic_fps1", 224)
    assert cfg.sampling.stages["stage4"].max_frames == 512


def test_file_stage_override_keeps_other_fields(tmp_path):
    cfg = build(tmp_path, sampling={"stages": {"stage4": {"resolution": 336}}})
    assert set(cfg.sampling.stages) == {"stage1", "stage2", "stage3", "stage4"}
    st = cfg.sampling.stages["stage4"]
    assert (st.min_frames, st.max_frames, st.sample, st.resolution) == (64, 512, "dynamic_fps1", 336)


def test_new_stage_via_override(tmp_path):
    cfg = build(tmp_path, ["sampling.stages.stage5={min_frames: 8, max_frames: 16}"])
    st = cfg.sampling.stages["stage5"]
    assert (st.min_frames, st.max_frames, st.sample, st.resolution) == (8, 16, "dynamic_fps1", 224)


def test_null_removes_a_stage(tmp_path):
    cfg = build(tmp_path, ["sampling.stages.stage1=null"])
    assert list(cfg.sampling.stages) == ["stage2", "stage3", "stage4"]
    cfg = build(tmp_path, sampling={"stages": {"stage4": None}})
    assert list(cfg.sampling.stages) == ["stage1", "stage2", "stage3"]


def test_removing_every_stage_is_an_error(tmp_path):
    err = config_error(tmp_path, [f"sampling.stages.stage{i}=null" for i in range(1, 5)])
    assert err.key == "sampling.stages"


def test_extensions_from_a_comma_string(tmp_path):
    cfg = build(tmp_path, ["crawl.extensions=MP4, .mkv"])
    assert cfg.crawl.extensions == ["mp4", "mkv"]


def test_override_value_with_equals_sign(tmp_path):
    cfg = build(tmp_path, ["storage.s3_endpoint_url=http://127.0.0.1:9000/?a=b"])
    assert cfg.storage.s3_endpoint_url == "http://127.0.0.1:9000/?a=b"


# ---------------------------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize("text,expected", [
    ("2GiB", 2 * 1024**3),
    ("512MiB", 512 * 1024**2),
    ("500MB", 500_000_000),
    ("1.5GiB", int(1.5 * 1024**3)),
    ("10k", 10_000),
    ("123", 123),
    ("7 b", 7),
])
def test_parse_size(text, expected):
    assert config_schema.parse_size(text) == expected


def test_size_strings_in_byte_keys(tmp_path):
    cfg = build(tmp_path, ["shard.target_bytes=2GiB", "probe.max_bytes=500MB"])
    assert cfg.shard.target_bytes == 2 * 1024**3
    assert cfg.probe.max_bytes == 500_000_000
    cfg = build(tmp_path, shard={"target_bytes": "256MiB"})
    assert cfg.shard.target_bytes == 256 * 1024**2


def test_bad_size(tmp_path):
    err = config_error(tmp_path, ["shard.target_bytes=lots"])
    assert err.key == "shard.target_bytes"
    assert "lots" in err.problem


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_unknown_key(tmp_path):
    err = config_error(tmp_path, ["probe.foo=1"])
    assert err.key == "probe.foo"
    assert err.problem == "unknown key"
    assert "timeout_s" in err.fix  # names the keys that do exist
    assert str(err).startswith("config error: probe.foo: unknown key (")


def test_unknown_top_level_key(tmp_path):
    err = config_error(tmp_path, sourcez=["x"])
    assert err.key == "sourcez"
    assert "sources" in err.fix


def test_unknown_key_inside_a_stage(tmp_path):
    err = config_error(tmp_path, ["sampling.stages.stage2.fps=2"])
    assert err.key == "sampling.stages.stage2.fps"


@pytest.mark.parametrize("override,key,problem", [
    ("probe.timeout_s=abc", "probe.timeout_s", "expected a number"),
    ("shard.max_samples=1.5", "shard.max_samples", "expected an integer"),
    ("shard.max_samples=true", "shard.max_samples", "expected an integer"),
    ("probe.check_integrity=maybe", "probe.check_integrity", "expected true or false"),
    ("probe=3", "probe", "expected a mapping"),
    ("sampling.stages.stage1.min_frames=[1]", "sampling.stages.stage1.min_frames", "expected an integer"),
])
def test_wrong_type(tmp_path, override, key, problem):
    err = config_error(tmp_path, [override])
    assert err.key == key
    assert err.problem.startswith(problem)


def test_max_frames_below_min_frames(tmp_path):
    err = config_error(tmp_path, ["sampling.stages.stage3.max_frames=8"])
    assert err.key == "sampling.stages.stage3.max_frames"
    assert "8" in err.problem and "64" in err.problem


def test_new_stage_missing_required_field(tmp_path):
    err = config_error(tmp_path, ["sampling.stages.stage9={max_frames: 16}"])
    assert err.key == "sampling.stages.stage9.min_frames"
    assert err.problem == "missing"


def test_unknown_sample_type(tmp_path):
    err = config_error(tmp_path, ["sampling.stages.stage2.sample=uniform"])
    assert err.key == "sampling.stages.stage2.sample"
    assert "dynamic_fps1" in err.fix and "middle" in err.fix


def test_bad_source_scheme(tmp_path):
    err = config_error(tmp_path, sources=[str(tmp_path), "ftp://host/videos"])
    assert err.key == "sources[1]"
    assert "ftp" in err.problem


def test_bad_out_scheme(tmp_path):
    err = config_error(tmp_path, out="ftp://host/out")
    assert err.key == "out"
    err = config_error(tmp_path, out="https://example.com/out")
    assert err.key == "out"


def test_missing_local_source(tmp_path):
    err = config_error(tmp_path, sources=[str(tmp_path / "nope")])
    assert err.key == "sources[0]"


def test_missing_out(tmp_path):
    with pytest.raises(ConfigError) as info:
        config_schema.build({"sources": [str(tmp_path)]})
    assert info.value.key == "out"
    assert info.value.problem == "missing"
    assert MESSAGE.match(str(info.value))


def test_bad_detector(tmp_path):
    err = config_error(tmp_path, ["scenes.detector=magic"])
    assert err.key == "scenes.detector"
    assert "magic" in err.problem
    for name in ("content", "adaptive", "hash"):
        assert name in err.fix


@pytest.mark.parametrize("override,key", [
    ("probe.max_duration_s=0.5", "probe.max_duration_s"),
    ("probe.timeout_s=0", "probe.timeout_s"),
    ("probe.min_duration_s=-1", "probe.min_duration_s"),
    ("shard.jpeg_quality=101", "shard.jpeg_quality"),
    ("shard.payload=audio", "shard.payload"),
    ("sampling.clip_len=0", "sampling.clip_len"),
    ("mix.merge_fan_in=1", "mix.merge_fan_in"),
    ("sampling.stages.stage2.min_frames=0", "sampling.stages.stage2.min_frames"),
])
def test_out_of_range_values(tmp_path, override, key):
    assert config_error(tmp_path, [override]).key == key


def test_override_without_equals(tmp_path):
    with pytest.raises(ConfigError) as info:
        build(tmp_path, ["probe.timeout_s"])
    assert "key=value" in info.value.problem


# ---------------------------------------------------------------------------------------------------------------
# The job CLI: config errors exit 2 before any work


def run_job(*args):
    return subprocess.run([sys.executable, "jobs/build_longvid.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("extra,key,problem", [
    (["--set", "probe.foo=1"], "probe.foo", "unknown key"),
    (["--stages", "bogus"], "stages", "unknown stage 'bogus'"),
    (["--set", "sampling.stages.stage3.max_frames=8"], "sampling.stages.stage3.max_frames", "8 is below min_frames 64"),
])
def test_cli_config_error_exits_2_before_work(tmp_path, extra, key, problem):
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "out"
    proc = run_job("--source", str(src), "--out", str(out), *extra)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("config error:")]
    assert lines, proc.stderr
    m = MESSAGE.match(lines[0])
    assert m, lines[0]
    assert m.group("key") == key
    assert m.group("problem").startswith(problem)
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "the job did work before rejecting its config"
    assert list(src.iterdir()) == []


@pytest.mark.slow
def test_cli_unlistable_source_and_missing_stage_input_are_clear_errors(tmp_path):
    """Errors found once Ray is up still end in one clear line, not a traceback."""
    manifest = tmp_path / "list.csv"
    manifest.write_text("name,lang\nclip.mp4,en\n")  # no url/path column
    proc = subprocess.run([sys.executable, "jobs/build_longvid.py", "--source", str(manifest), "--out",
                           str(tmp_path / "out"), "--set", "ray.num_cpus=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config error: sources:" in proc.stderr and "no `url` or `path`" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "jobs/build_longvid.py", "--source", str(manifest), "--out",
                           str(tmp_path / "out2"), "--stages", "shard", "--set", "ray.num_cpus=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "run the `crawl` stage first" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_annotate_without_checkpoint_is_a_config_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    proc = subprocess.run([sys.executable, "jobs/build_longvid.py", "--source", str(src), "--out",
                           str(tmp_path / "o"), "--stages", "ingest,annotate"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "config error: annotate.checkpoint: missing" in proc.stderr and "tiny_demo_model" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("override, key", [
    ("scenes.segment_s=10", "scenes.segment_s"),
    ("scenes.num_gpus=-1", "scenes.num_gpus"),
    ("scenes.actors=0", "scenes.actors"),
])
def test_bad_scene_segment_and_pool_settings(tmp_path, override, key):
    assert config_error(tmp_path, [override]).key == key


def test_transnetv2_threshold_is_a_probability(tmp_path):
    err = config_error(tmp_path, ["scenes.detector=transnetv2", "scenes.threshold=3"])
    assert err.key == "scenes.threshold"
    assert build(tmp_path, ["scenes.detector=transnetv2", "scenes.threshold=0.3"]).scenes.threshold == 0.3

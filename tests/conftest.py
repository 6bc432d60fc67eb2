"""Shared fixtures: a corpus of real ffmpeg-encoded videos with known content and broken files, an in-process Ray,
and a config builder. S3 tests talk to a real moto_server on 127.0.0.1 (see test_s3.py)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Fake credentials for the local S3 endpoint, set before Ray starts so its workers inherit them.
for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ[_k] = _v
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

from pipeline import synthetic  # noqa: E402
from schemas import config as config_schema  # noqa: E402


@dataclass(frozen=True)
class Corpus:
    root: Path
    good: dict  # file name -> SyntheticVideo (known duration and cuts)
    broken: dict  # file name -> expected reject reason
    duplicate: tuple  # two names holding the same bytes (the one first by URI is kept)


GOOD = {
    "cuts.mp4": synthetic.SyntheticVideo([4, 3, 5]),
    "with audio and spaces.mp4": synthetic.SyntheticVideo([3, 3], audio=True),
    "ünïcode.name.v2.mp4": synthetic.SyntheticVideo([2.5, 2.5], width=256, height=144),
    "sub dir/clip.webm": synthetic.SyntheticVideo([3, 2], codec="libvpx"),
}
BROKEN = {
    "zero.mp4": "unreadable",
    "random.mp4": "unreadable",
    "page.mp4": "unreadable",
    "truncated.mp4": "unreadable",
    "audio_only.mp4": "no_video_stream",
    "short.mp4": "too_short",
}


def build_corpus(root: Path) -> Corpus:
    for name, video in GOOD.items():
        synthetic.write(video, str(root / name))
    (root / "zero.mp4").write_bytes(b"")
    synthetic.write_random_bytes(str(root / "random.mp4"))
    synthetic.write_html_named_video(str(root / "page.mp4"))
    synthetic.write_truncated_copy(str(root / "cuts.mp4"), str(root / "truncated.mp4"), 0.5)
    synthetic.write_audio_only(str(root / "audio_only.mp4"))
    synthetic.write(synthetic.SyntheticVideo([0.5]), str(root / "short.mp4"))
    (root / "copies").mkdir()
    shutil.copyfile(root / "cuts.mp4", root / "copies" / "cuts copy.mp4")
    (root / "notes.txt").write_text("not a video: the crawler skips it\n")
    return Corpus(root, GOOD, BROKEN, ("copies/cuts copy.mp4", "cuts.mp4"))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def moto_log(tmp_path_factory) -> Path:
    """The session moto_server's log: one line per request it served (`"GET /bucket/key HTTP/1.1" 200 -`)."""
    return tmp_path_factory.mktemp("moto") / "moto_server.log"


@pytest.fixture(scope="session")
def moto_endpoint(moto_log):
    """One real moto_server on 127.0.0.1 for the session; each test module uses its own buckets."""
    import servers

    with servers.moto_server(moto_log) as url:
        yield url


@pytest.fixture(scope="module", autouse=True)
def _restore_storage_settings():
    """Builds pointed at moto change this process's S3 settings; every module leaves them as it found them."""
    from pipeline.io import storage

    before = storage.settings()
    yield
    storage.configure(before.endpoint_url, before.region)


def s3_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                          config=Config(retries={"max_attempts": 3}))


@pytest.fixture(scope="session")
def ray_local():
    """One in-process Ray for the whole session (starting Ray costs seconds on 2 cores)."""
    import ray

    from pipeline.core import ray_runtime

    ray_runtime.init(num_cpus=2)
    yield ray
    ray.shutdown()


def make_config(sources, out, overrides=(), **data) -> config_schema.BuildConfig:
    data = {"sources": [str(s) for s in sources], "out": str(out), **data}
    return config_schema.build(data, list(overrides))


@pytest.fixture
def config_factory():
    return make_config


# Tiny random-weight models and short windows so the whole build runs in well under a minute on 2 cores.
TINY_MODEL_SETTINGS = [
    "annotate.tiny_demo_model=true", "annotate.max_new_tokens=12", "annotate.batch_size=8",
    "annotate.min_window_s=2", "annotate.max_window_s=6", "sampling.stages.stage2.max_frames=4",
    "annotate.qa_generators.free_qa=model", "annotate.repair_attempts=1",
    "hico.encoder.preset=tiny", "hico.encoder.allow_random_init=true", "hico.stage=stage2",
]


@dataclass(frozen=True)
class AnnotatedBuild:
    out: Path  # read-only for tests: copy it (copy_build) before running stages that write into it
    sources: list
    overrides: list


@pytest.fixture(scope="session")
def annotated_build(corpus, ray_local, tmp_path_factory) -> AnnotatedBuild:
    """ingest + hico + annotate over the whole test corpus (good and broken files), built once per session, with two
    videos per shard so there are two shards."""
    from pipeline.core import runner

    out = tmp_path_factory.mktemp("annotated-build")
    sources = [corpus.root]
    overrides = TINY_MODEL_SETTINGS + ["shard.max_samples=2"]
    cfg = make_config(sources, out, overrides, stages=["ingest", "hico", "annotate"])
    runner.run_build(cfg, quiet=True)
    return AnnotatedBuild(out, sources, overrides)


def copy_build(build: AnnotatedBuild, dest: Path) -> Path:
    """A private, writable copy of a session build."""
    shutil.copytree(build.out, dest, dirs_exist_ok=True)
    return dest


# `make test-fast` runs `-m "not slow"`: a test is slow when it needs the in-process Ray cluster (directly or through
# a build fixture); tests that start their own job processes or spend seconds in model code are marked in their file.
SLOW_FIXTURES = {"ray_local", "annotated_build"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

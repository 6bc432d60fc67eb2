"""A failing S3 endpoint (this module's own moto_server on 127.0.0.1, paused with SIGSTOP or killed): the job ends
within the configured timeouts with one line naming the endpoint, the operation and the object, exit 1, and a hint
that rerunning resumes; a missing output bucket is a config error (exit 2); nothing is left in the temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import servers
from conftest import ROOT, make_config, s3_client

from pipeline.core import runner, tempdirs
from pipeline.io import fetch, storage
from schemas import layout

SRC = "hostile-src"
FAST_FAIL = ["storage.s3_connect_timeout_s=1", "storage.s3_read_timeout_s=1", "storage.s3_max_attempts=2"]


@pytest.fixture
def moto(tmp_path):
    """A moto_server of this test alone (the session one must keep answering)."""
    with servers.moto_server_process(tmp_path / "moto.log") as (endpoint, proc):
        client = s3_client(endpoint)
        client.create_bucket(Bucket=SRC)
        yield endpoint, proc, client


def job(args: list[str], cwd, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, RAY_IGNORE_UNHANDLED_ERRORS="1")
    env.pop("RAY_ADDRESS", None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "build_longvid.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)
    return proc, time.monotonic() - t0


def sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


def test_missing_output_bucket_is_a_config_error(moto, corpus, tmp_path):
    endpoint, _, _ = moto
    proc, took = job(["--source", str(corpus.root / "cuts.mp4"), "--out", "s3://no-such-bucket/corpus",
                      *sets(f"storage.s3_endpoint_url={endpoint}", f"storage.tmp_dir={tmp_path / 'tmp'}")], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"config error: out: bucket 'no-such-bucket' does not exist at {endpoint} "
                                   f"(create the bucket or fix its name in out)")
    assert "Started a local Ray" not in proc.stderr, "checked before Ray starts"


@pytest.mark.parametrize("how", ["killed", "paused"])
def test_endpoint_down_before_the_build(moto, corpus, tmp_path, how):
    endpoint, server, _ = moto
    if how == "killed":
        server.kill()
        server.wait()
    else:
        os.kill(server.pid, signal.SIGSTOP)
    tmp = tmp_path / "tmp"
    proc, took = job(["--source", str(corpus.root / "cuts.mp4"), "--out", f"s3://{SRC}/out",
                      *sets(f"storage.s3_endpoint_url={endpoint}", f"storage.tmp_dir={tmp}", *FAST_FAIL)], tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: storage: S3 endpoint {endpoint} failed HeadBucket of s3://{SRC} (")
    assert lines[0].endswith("rerun the same command to resume")
    assert took < 30, f"{took:.0f} s: connect/read timeouts of 1 s and 2 attempts bound the wait"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def test_endpoint_hanging_mid_build_stops_the_job_not_the_inputs(moto, corpus, ray_local, tmp_path):
    """Sources on S3, output local: crawl runs, then the endpoint hangs. The probe stage's workers time out on
    GetObject: the job stops with one line (exit 1) instead of rejecting every input as download_failed, and a
    rerun after the endpoint is back resumes and accepts them."""
    endpoint, server, client = moto
    for name in ("cuts.mp4", "with audio and spaces.mp4"):
        client.put_object(Bucket=SRC, Key=f"v/{name}", Body=(corpus.root / name).read_bytes())
    out = tmp_path / "out"
    tmp = tmp_path / "tmp"
    settings = [f"storage.s3_endpoint_url={endpoint}", f"storage.tmp_dir={tmp}", *FAST_FAIL]
    runner.run_build(make_config([f"s3://{SRC}/v/"], out, settings, stages=["crawl"]), quiet=True)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        proc, took = job(["--source", f"s3://{SRC}/v/", "--out", str(out), "--stages", "probe", *sets(*settings)],
                         tmp_path)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: storage: S3 endpoint {endpoint} failed GetObject of s3://{SRC}/v/"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert took < 120, took
    assert not (out / layout.MANIFEST_REJECTS).exists(), "an outage is not a reject"
    assert not tmp.exists() or list(tmp.iterdir()) == []
    proc, _ = job(["--source", f"s3://{SRC}/v/", "--out", str(out), "--stages", "probe", *sets(*settings)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert pq.read_table(out / layout.MANIFEST_VIDEOS).num_rows == 2


def test_fetch_from_a_hanging_endpoint_raises_storage_unavailable(moto, tmp_path):
    endpoint, server, client = moto
    client.put_object(Bucket=SRC, Key="a.mp4", Body=b"x" * 1000)
    before = storage.settings()
    storage.configure(endpoint, "us-east-1", connect_timeout_s=1, read_timeout_s=1, max_attempts=2)
    scratch = tmp_path / "job-tmp"
    scratch.mkdir()
    tempdirs._current = str(scratch)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(storage.StorageUnavailable) as e:
            with fetch.fetch(f"s3://{SRC}/a.mp4", 1 << 20):
                pass
        took = time.monotonic() - t0
    finally:
        os.kill(server.pid, signal.SIGCONT)
        storage.configure(before.endpoint_url, before.region)
        tempdirs._current = None
    assert (e.value.endpoint, e.value.operation, e.value.uri) == (endpoint, "GetObject", f"s3://{SRC}/a.mp4")
    assert took < 10
    assert os.listdir(scratch) == []


def test_missing_object_is_a_reject_not_an_outage(moto, tmp_path):
    endpoint, _, _ = moto
    before = storage.settings()
    storage.configure(endpoint, "us-east-1")
    tempdirs._current = str(tmp_path)
    try:
        with pytest.raises(fetch.FetchError) as e:
            with fetch.fetch(f"s3://{SRC}/gone.mp4", 1 << 20):
                pass
    finally:
        storage.configure(before.endpoint_url, before.region)
        tempdirs._current = None
    assert e.value.reason == "download_failed" and "NoSuchKey" in e.value.message


def test_s3_object_over_the_limit_is_refused_by_its_size(moto, tmp_path):
    endpoint, _, client = moto
    client.put_object(Bucket=SRC, Key="big.mp4", Body=b"x" * 5000)
    before = storage.settings()
    storage.configure(endpoint, "us-east-1")
    tempdirs._current = str(tmp_path)
    try:
        with pytest.raises(fetch.FetchError) as e:
            with fetch.fetch(f"s3://{SRC}/big.mp4", 4096):
                pass
    finally:
        storage.configure(before.endpoint_url, before.region)
        tempdirs._current = None
    assert e.value.reason == "too_large" and "is 5000 bytes, above the limit of 4096" in e.value.message


@contextlib.contextmanager
def endpoint_failing(server, how: str):
    """The module's moto_server killed, or paused (SIGSTOP) until the block ends."""
    if how == "killed":
        server.kill()
        server.wait()
    else:
        os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if how == "paused":
            os.kill(server.pid, signal.SIGCONT)


def _empty_build(client, out_key: str) -> None:
    """The three manifest tables of a build that accepted nothing, under s3://SRC/<out_key>/."""
    from schemas import tables

    for rel, schema in ((layout.MANIFEST_CRAWL, tables.CRAWL), (layout.MANIFEST_VIDEOS, tables.VIDEOS),
                        (layout.MANIFEST_REJECTS, tables.REJECTS)):
        client.put_object(Bucket=SRC, Key=f"{out_key}/{rel}", Body=storage.parquet_bytes(tables.to_table([], schema)))


@pytest.mark.parametrize("how", ["killed", "paused"])
def test_stats_reading_a_build_on_a_failing_endpoint_is_one_line(moto, tmp_path, how):
    """The stats stage lists and scans the output itself (listings, pyarrow's own S3 client): an endpoint that is
    down or hanging there ends in the job's one `error: storage:` line naming endpoint, operation and key."""
    from pipeline.core.context import StageContext, configure_worker
    from pipeline.core.entry import systemic_failure
    from pipeline.stages import stats as stats_stage
    from pipeline.stats import videos as stats_videos
    from pipeline.stats.sources import BuildOutput, arrow_s3_operation

    endpoint, server, client = moto
    _empty_build(client, "out")
    out = f"s3://{SRC}/out"
    cfg = make_config([f"s3://{SRC}/videos/"], out, [f"storage.s3_endpoint_url={endpoint}", *FAST_FAIL])
    configure_worker(cfg)
    assert BuildOutput(out).listing("manifest").files == ["crawl.parquet", "rejects.parquet", "videos.parquet"]
    with endpoint_failing(server, how):
        t0 = time.monotonic()
        with pytest.raises(storage.StorageUnavailable) as listed:
            BuildOutput(out).listing("shards")
        with pytest.raises(Exception) as staged:
            stats_stage.run(StageContext(cfg))
        took = time.monotonic() - t0
        with pytest.raises(storage.StorageUnavailable) as scanned:  # pyarrow's own S3 client, same timeouts
            with arrow_s3_operation("GetObject", f"{out}/{layout.MANIFEST_VIDEOS}"):
                stats_videos.read_manifest_videos(BuildOutput(out))
    assert (listed.value.endpoint, listed.value.operation, listed.value.uri) == (
        endpoint, "ListObjectsV2", f"{out}/shards/")
    assert scanned.value.uri == f"{out}/{layout.MANIFEST_VIDEOS}" and scanned.value.endpoint == endpoint
    line = systemic_failure(staged.value)
    assert line is not None and line.startswith(f"storage: S3 endpoint {endpoint} failed "), staged.value
    assert f"of {out}/" in line and "\n" not in line
    assert took < 30, f"{took:.0f} s: connect/read timeouts of 1 s and 2 attempts bound the wait"


@pytest.mark.parametrize("how", ["killed", "paused"])
def test_mix_merge_reading_parts_on_a_failing_endpoint_is_storage_unavailable(moto, tmp_path, how):
    """The `mix` stage's merge reads the manifest and its record parts through pyarrow's own S3 client: an endpoint
    that is down or hanging there is the same StorageUnavailable (endpoint, operation, object) as for boto3."""
    from pipeline.core.context import StageContext, configure_worker
    from pipeline.core.entry import systemic_failure
    from pipeline.mix import assemble

    endpoint, server, client = moto
    _empty_build(client, "out")
    out = f"s3://{SRC}/out"
    cfg = make_config([f"s3://{SRC}/videos/"], out, [f"storage.s3_endpoint_url={endpoint}", *FAST_FAIL])
    configure_worker(cfg)
    ctx = StageContext(cfg)
    assert sum(t.num_rows for t in assemble._row_groups(ctx, layout.MANIFEST_VIDEOS, ["video_id"])) == 0  # readable
    with endpoint_failing(server, how):
        t0 = time.monotonic()
        with pytest.raises(storage.StorageUnavailable) as scanned:
            list(assemble._row_groups(ctx, layout.MANIFEST_VIDEOS, ["video_id"]))
        took = time.monotonic() - t0
    assert (scanned.value.endpoint, scanned.value.operation, scanned.value.uri) == (
        endpoint, "GetObject", f"{out}/{layout.MANIFEST_VIDEOS}")
    line = systemic_failure(scanned.value)
    assert line is not None and line.startswith(f"storage: S3 endpoint {endpoint} failed GetObject ") and "\n" not in line
    assert took < 30, f"{took:.0f} s: connect/read timeouts of 1 s and 2 attempts bound the wait"


@pytest.mark.slow  # runs the job in its own process
def test_output_bucket_the_credentials_cannot_write_is_a_config_error(tmp_path, corpus, monkeypatch):
    """A bucket these credentials may read but not write (an IAM policy denying s3:PutObject, enforced by a
    moto_server with authentication on): refused before Ray starts, exit 2."""
    import json

    import boto3
    from botocore.exceptions import ClientError

    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "10")  # the setup below runs unauthenticated, then auth is on
    with servers.moto_server_process(tmp_path / "moto.log") as (endpoint, _):
        monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        boto3.client("s3", **admin).create_bucket(Bucket="read-only")
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="no-writes", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                                                   {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        bogus = boto3.client("s3", aws_access_key_id="nobody", aws_secret_access_key="nobody", **admin)
        for _ in range(20):  # spend the unauthenticated requests left
            try:
                bogus.list_buckets()
            except ClientError:
                break
        else:
            pytest.fail("moto_server did not turn authentication on")
        env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        monkeypatch.setattr(os, "environ", dict(os.environ, **env))
        proc, _ = job(["--source", str(corpus.root / "cuts.mp4"), "--out", "s3://read-only/corpus",
                       *sets(f"storage.s3_endpoint_url={endpoint}", f"storage.tmp_dir={tmp_path / 'tmp'}")],
                      tmp_path)
        reader = boto3.client("s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                              **admin)
        assert reader.list_objects_v2(Bucket="read-only").get("KeyCount", 0) == 0, "no marker left behind"
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("config error: out: cannot write to s3://read-only/corpus: PutObject of "
                                          "s3://read-only/corpus/.longvid-write-check-"), proc.stderr
    assert "refused (AccessDenied)" in proc.stderr and "\n" not in proc.stderr.strip()
    assert "Started a local Ray" not in proc.stderr, "checked before Ray starts"

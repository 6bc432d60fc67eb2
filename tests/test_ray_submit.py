"""The documented way to run a build: `ray job submit --working-dir . -- python jobs/build_longvid.py ...` against a
real Ray head started with `ray start --head`, all on 127.0.0.1.

Isolation from other Ray instances on the machine (the in-process `ray_local` of this session, other users):
- every port is picked free, including the ones Ray would otherwise take by default (client server 10001,
  dashboard agent 52365, autoscaler / dashboard metrics 44217 / 44227, set by env var);
- the session lives in its own short temp dir (`--temp-dir /tmp/rt-XXXX`; Unix socket paths must stay short);
- RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray keep 127.0.0.1 as the node IP (otherwise `ray start` replaces a
  loopback --node-ip-address with the machine's routable address), so all cluster traffic stays on loopback;
- teardown does NOT use `ray stop`, which kills every Ray process of the user on the machine. `ray start` runs in a
  new session (start_new_session=True) and the daemons it spawns (gcs_server, raylet, dashboard, monitor, agents,
  workers) keep that session id after `ray start` exits. We stop exactly the processes in that session, those whose
  command line names our temp dir, and all their descendants (the job supervisor starts the driver and a watcher in
  sessions of their own, but as its children), each by pid: SIGTERM, then SIGKILL after a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import servers
from conftest import ROOT
from schemas import layout, reasons

pytestmark = pytest.mark.slow  # runs the job in its own processes

RAY = str(Path(sys.executable).with_name("ray"))
PYTHON = str(Path(sys.executable).absolute())


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = servers.free_port()
        if p not in ports:
            ports.append(p)
    return ports


def _client_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 in its own session and temp dir; yields the dashboard (job API) URL."""
    temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    gcs, dash, client, agent, autoscaler_metrics, dash_metrics = _free_ports(6)
    env = _client_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", AUTOSCALER_METRIC_PORT=str(autoscaler_metrics),
                      DASHBOARD_METRIC_PORT=str(dash_metrics), RAY_USAGE_STATS_ENABLED="0")
    cmd = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
           "--port", str(gcs), "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
           "--dashboard-agent-listen-port", str(agent), "--num-cpus", "2", "--disable-usage-stats",
           "--temp-dir", temp_dir]
    log_path = Path(temp_dir) / "ray-start.log"
    session_id = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            session_id = proc.pid  # start_new_session: the new session's id is the child's pid
            try:
                rc = proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                servers.stop_process(proc)
                rc = None
        if rc != 0:
            pytest.fail(f"`ray start --head` failed (rc={rc}):\n{log_path.read_text(errors='replace')[-4000:]}")
        yield f"http://127.0.0.1:{dash}"
    finally:
        pids = servers.processes_of(session_id=session_id, cmdline_marker=temp_dir)
        survivors = servers.stop_pids(pids)
        if survivors:
            warnings.warn(f"Ray head processes still alive after SIGKILL: {sorted(survivors)}")
        shutil.rmtree(temp_dir, ignore_errors=True)


# What the job API answers while the head's job agent has not registered yet (seconds after `ray start` returns):
# nothing was submitted, and Ray asks to try again.
AGENT_NOT_READY = "No available agent to submit job"


def _submit(cmd: list[str], env: dict, ready_within_s: float = 60.0) -> tuple[int, str]:
    """`ray job submit` as a user runs it, submitted again while the head's job agent is still starting."""
    deadline = time.monotonic() + ready_within_s
    while True:
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=300)
        log = done.stdout.decode(errors="replace")
        if done.returncode == 0 or AGENT_NOT_READY not in log or time.monotonic() > deadline:
            return done.returncode, log
        time.sleep(2)


def test_ray_job_submit_builds_the_corpus(ray_head, corpus, tmp_path):
    out = tmp_path / "out"
    cmd = [RAY, "job", "submit", "--address", ray_head, "--working-dir", str(ROOT), "--",
           PYTHON, "jobs/build_longvid.py", "--source", str(corpus.root), "--out", str(out)]
    # Ray 2.60 enables token auth by default: the client reads the token (~/.ray/auth_token) when told to.
    returncode, log = _submit(cmd, _client_env(RAY_AUTH_MODE="token"))
    assert returncode == 0, log[-6000:]
    assert "succeeded" in log, log[-6000:]
    # The driver joined the submitted cluster (via $RAY_ADDRESS) instead of starting an in-process Ray.
    assert "Connecting to existing Ray cluster at address: 127.0.0.1:" in log, log[-6000:]

    videos = pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()
    rejects = pq.read_table(out / layout.MANIFEST_REJECTS).to_pylist()
    assert len(videos) == len(corpus.good)
    assert len(rejects) == len(corpus.broken) + 1
    assert sorted(r["reason"] for r in rejects) == sorted(list(corpus.broken.values()) + [reasons.DUPLICATE])
    assert all(v["shard"] == layout.shard_name(0) for v in videos)

    index = json.loads((out / layout.SHARD_INDEX).read_text())
    assert index["__kind__"] == "wids-shard-index-v1"
    assert sum(s["nsamples"] for s in index["shardlist"]) == len(corpus.good)
    for s in index["shardlist"]:
        assert (out / layout.SHARDS_DIR / s["url"]).stat().st_size == s["filesize"]

    summary = json.loads((out / layout.STATS_SUMMARY).read_text())
    assert summary["accepted"] == len(corpus.good) and summary["rejected"] == len(corpus.broken) + 1

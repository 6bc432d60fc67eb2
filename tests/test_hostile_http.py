"""Hostile http sources against a real ThreadingHTTPServer on 127.0.0.1: every download is bounded in time (deadline,
throughput floor) and size (declared length, streamed length), only what can succeed is retried, and one slow source
does not hold back the other inputs of its part. Each case asserts the reject reason, the time bound and that no
temporary file is left behind."""

from __future__ import annotations

import os
import time
from urllib.parse import quote

import pytest
import servers
from conftest import make_config

from pipeline.core import log, tempdirs
from pipeline.core.context import StageContext, configure_worker
from pipeline.io import fetch as fetch_module
from pipeline.io import storage
from pipeline.io.fetch import FetchError, HttpPolicy, fetch
from pipeline.stages import probe as probe_stage
from schemas import layout, reasons

BIG = 1 << 30


@pytest.fixture(scope="module")
def http(corpus):
    with servers.http_file_server(corpus.root) as (base, server):
        yield base, server


@pytest.fixture
def scratch(tmp_path):
    """This test's own temporary folder (as a job has): whatever a download leaves there is a leak."""
    folder = tmp_path / "job-tmp"
    folder.mkdir()
    tempdirs._current = str(folder)
    yield folder
    tempdirs._current = None


def leftovers(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def fails(url: str, policy: HttpPolicy, max_bytes: int = BIG) -> tuple[FetchError, float]:
    t0 = time.monotonic()
    with pytest.raises(FetchError) as e:
        with fetch(url, max_bytes, policy):
            pass
    return e.value, time.monotonic() - t0


def test_trickling_source_hits_the_deadline(http, scratch):
    base, _ = http
    policy = HttpPolicy(timeout_s=5, retries=3, backoff_s=0.05, deadline_s=2.0)
    err, took = fails(f"{base}/trickle/0.5/cuts.mp4", policy)
    assert err.reason == reasons.DOWNLOAD_FAILED
    assert "deadline of 2 s" in err.message
    assert took < 2.0 + 1.0, f"{took:.1f} s: the deadline bounds the whole download"
    assert leftovers(scratch) == []


def test_slow_source_below_the_throughput_floor(http, scratch):
    base, _ = http
    policy = HttpPolicy(timeout_s=5, retries=3, deadline_s=60, min_bytes_per_s=1000, throughput_window_s=1.0)
    err, took = fails(f"{base}/trickle/0.2/cuts.mp4", policy)
    assert err.reason == reasons.DOWNLOAD_FAILED
    assert "below the minimum of 1000 bytes/s" in err.message
    assert took < 1.0 + 1.0
    assert leftovers(scratch) == []


def test_stalled_source_times_out_within_the_deadline(http, scratch):
    # 1000 bytes, then silence: every attempt ends at the read timeout and retries stop at the deadline.
    base, server = http
    policy = HttpPolicy(timeout_s=0.5, retries=10, backoff_s=0.05, deadline_s=2.5)
    err, took = fails(f"{base}/stall/cuts.mp4", policy)
    assert err.reason == reasons.DOWNLOAD_FAILED
    assert "deadline of 2.5 s" in err.message and "Timeout" in err.message
    assert took < 2.5 + 1.0
    assert 2 <= server.hits["/stall/cuts.mp4"] <= 5
    assert leftovers(scratch) == []


def test_endless_body_stops_at_the_limit(http, scratch):
    base, server = http
    limit = 3 << 20
    err, took = fails(f"{base}/endless", HttpPolicy(timeout_s=5, retries=3), max_bytes=limit)
    assert err.reason == reasons.TOO_LARGE
    assert str(limit) in err.message
    assert server.hits["/endless"] == 1, "a body over the limit is not retried"
    assert took < 5
    assert leftovers(scratch) == []


def test_declared_length_over_the_limit_is_refused_before_the_body(http, scratch):
    base, server = http
    err, took = fails(f"{base}/huge", HttpPolicy(timeout_s=5, retries=3), max_bytes=1 << 20)
    assert err.reason == reasons.TOO_LARGE
    assert "declares 1099511627776 bytes" in err.message
    assert server.hits["/huge"] == 1 and took < 2
    assert leftovers(scratch) == []


def test_redirect_to_a_file_url_fails_at_once(http, scratch):
    base, server = http
    err, took = fails(f"{base}/redirect-file", HttpPolicy(timeout_s=5, retries=4, backoff_s=1.0))
    assert err.reason == reasons.DOWNLOAD_FAILED
    assert "file:///etc/passwd" in err.message
    assert server.hits["/redirect-file"] == 1, "a redirect to a non-http(s) scheme is never retried"
    assert took < 1.0
    assert leftovers(scratch) == []


def test_connection_reset_is_retried(http, corpus, scratch):
    base, server = http
    data = (corpus.root / "cuts.mp4").read_bytes()
    with fetch(f"{base}/reset/2/cuts.mp4", BIG, HttpPolicy(timeout_s=5, retries=3, backoff_s=0.01)) as got:
        assert got.bytes == len(data)
    assert server.hits["/reset/2/cuts.mp4"] == 3
    assert leftovers(scratch) == []


def test_backoff_is_exponential_capped_and_jittered():
    policy = HttpPolicy(backoff_s=1.0, backoff_max_s=5.0, jitter=0.5)
    for retry, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        waits = {policy.backoff(retry) for _ in range(200)}
        assert all(full * 0.5 <= w <= full for w in waits), (retry, min(waits), max(waits))
        assert len(waits) > 100, "jitter spreads the waits"
    assert HttpPolicy(backoff_s=1.0, jitter=0.0).backoff(3) == 4.0


def test_slow_download_prints_progress(http, scratch, monkeypatch, capsys):
    base, _ = http
    log.configure()  # as every entry point and Ray worker does: the progress line is a logged warning
    monkeypatch.setattr(fetch_module, "PROGRESS_EVERY_S", 0.5)
    fails(f"{base}/trickle/0.1/cuts.mp4", HttpPolicy(timeout_s=5, deadline_s=1.6))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[fetch]")]
    assert len(lines) >= 2 and "/trickle/0.1/cuts.mp4" in lines[0] and "bytes after" in lines[0]


def test_one_slow_source_does_not_hold_back_its_part(http, corpus, tmp_path):
    """A probe part with a stalled source first: the other inputs are fetched while it stalls, and the stalled one
    becomes a download_failed row at its deadline."""
    base, server = http
    names = ["cuts.mp4", "with audio and spaces.mp4", "ünïcode.name.v2.mp4"]
    stalled = f"{base}/stall/sub%20dir/clip.webm"
    urls = [stalled] + [f"{base}/{quote(n)}" for n in names]
    cfg = make_config(urls, tmp_path / "out", ["crawl.download_deadline_s=4", "crawl.http_timeout_s=10",
                                               "crawl.download_concurrency=4", f"storage.tmp_dir={tmp_path / 'tmp'}"])
    ctx = StageContext(cfg)
    configure_worker(cfg)
    items = [{"source_uri": u, "source": u, "source_metadata": "{}", "size_hint": None} for u in urls]
    part = ctx.uri(f"{layout.PROBE_PARTS_DIR}/part-test.parquet")
    t0 = time.monotonic()
    try:
        probe_stage.probe_part((part, items), ctx)
    finally:
        tempdirs._current = None
    took = time.monotonic() - t0
    rows = {r["source_uri"]: r for r in storage.read_parquet(part).to_pylist()}
    assert rows[stalled]["reason"] == reasons.DOWNLOAD_FAILED and "deadline of 4 s" in rows[stalled]["message"]
    assert all(rows[u]["ok"] for u in urls[1:])
    stall_start = server.started["/stall/sub%20dir/clip.webm"][0]
    for n in names:
        started = server.started["/" + quote(n)][-1]
        assert started - stall_start < 2.0, f"{n} waited {started - stall_start:.1f} s behind the stalled source"
    assert took < 4 + 10, took
    job_tmp = tempdirs.job_dir(cfg.out, cfg.storage.tmp_dir)
    assert not os.path.exists(job_tmp) or os.listdir(job_tmp) == [], "downloads are removed when probed"


def test_manifest_over_http_has_the_download_deadline(ray_local, corpus, tmp_path):
    """A manifest served one byte a second is cut off at crawl.download_deadline_s: one config-error line, exit 2,
    and nothing left in the temporary folder."""
    import contextlib
    import io
    import json

    from jobs import build_longvid

    (tmp_path / "site" / "lists").mkdir(parents=True)
    (tmp_path / "site" / "lists" / "m.jsonl").write_text(json.dumps({"path": "../cuts.mp4"}) * 20 + "\n")
    tmp = tmp_path / "tmp"
    with servers.http_file_server(tmp_path / "site") as (base, _):
        err = io.StringIO()
        t0 = time.monotonic()
        with contextlib.redirect_stderr(err):
            code = build_longvid.main(["--source", f"{base}/trickle/1/lists/m.jsonl", "--out", str(tmp_path / "out"),
                                       "--set", "crawl.download_deadline_s=2", "--set", "crawl.http_timeout_s=10",
                                       "--set", f"storage.tmp_dir={tmp}"])
        took = time.monotonic() - t0
    lines = err.getvalue().strip().splitlines()
    assert code == 2, err.getvalue()
    assert len(lines) == 1 and lines[0].startswith("config error: sources: cannot read manifest: "), lines
    assert "/trickle/1/lists/m.jsonl: deadline of 2 s passed" in lines[0]
    assert took < 2 + 8, f"{took:.1f} s: the manifest read is not bounded by the download deadline"
    assert not tmp.exists() or leftovers(tmp) == []

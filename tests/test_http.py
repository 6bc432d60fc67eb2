"""http(s) inputs against a real ThreadingHTTPServer on 127.0.0.1: fetch + hash, retries with backoff, size limits,
and an in-process build whose sources are URLs."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest
import servers
from conftest import make_config

from pipeline.core import runner
from pipeline.io.fetch import FetchError, HttpPolicy, fetch
from schemas import layout, reasons

POLICY = HttpPolicy(timeout_s=5, retries=2, backoff_s=0.05)
BIG = 1 << 30


@pytest.fixture(scope="module")
def http(corpus):
    """(base URL, server) of a file server over the corpus directory."""
    with servers.http_file_server(corpus.root) as (base, server):
        yield base, server


def url_of(base: str, name: str, prefix: str = "") -> str:
    return f"{base}{prefix}/{quote(name)}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", ["cuts.mp4", "with audio and spaces.mp4", "ünïcode.name.v2.mp4", "sub dir/clip.webm"])
def test_fetch_hashes_the_served_bytes(http, corpus, name):
    base, _ = http
    data = (corpus.root / name).read_bytes()
    with fetch(url_of(base, name), BIG, POLICY) as got:
        assert got.sha256 == sha256(data)
        assert got.bytes == len(data)
        with open(got.path, "rb") as f:
            assert f.read() == data
        path = got.path
    assert not os.path.exists(path), "the temporary download must be deleted when the context exits"


def test_fetch_without_content_length(http, corpus):
    base, _ = http
    data = (corpus.root / "cuts.mp4").read_bytes()
    with fetch(url_of(base, "cuts.mp4", "/nolength"), BIG, POLICY) as got:
        assert got.sha256 == sha256(data) and got.bytes == len(data)


def test_fetch_404_is_download_failed_without_retry(http):
    base, server = http
    url = url_of(base, "no such video.mp4")
    with pytest.raises(FetchError) as e:
        with fetch(url, BIG, POLICY):
            pass
    assert e.value.reason == reasons.DOWNLOAD_FAILED
    assert "404" in e.value.message
    assert server.hits["/" + quote("no such video.mp4")] == 1, "a 404 is final: it must not be retried"


def test_fetch_retries_a_flaky_server_with_backoff(http, corpus):
    base, server = http
    data = (corpus.root / "cuts.mp4").read_bytes()
    url = url_of(base, "cuts.mp4", "/flaky/2")  # 500, 500, then the file: needs both retries
    t0 = time.monotonic()
    with fetch(url, BIG, POLICY) as got:
        assert got.sha256 == sha256(data)
    elapsed = time.monotonic() - t0
    assert server.hits["/flaky/2/cuts.mp4"] == 3
    # Backoff before retry k is backoff_s * 2**(k-1): 0.05 + 0.1, each shortened by up to the jitter fraction.
    assert elapsed >= 0.15 * (1 - POLICY.jitter) * 0.9, elapsed


def test_fetch_gives_up_after_the_configured_retries(http):
    base, server = http
    url = url_of(base, "cuts.mp4", "/flaky/5")
    with pytest.raises(FetchError) as e:
        with fetch(url, BIG, POLICY):
            pass
    assert e.value.reason == reasons.DOWNLOAD_FAILED
    assert "500" in e.value.message
    assert server.hits["/flaky/5/cuts.mp4"] == POLICY.retries + 1


def test_fetch_truncated_body_is_retried_then_download_failed(http):
    # The server declares the full length but closes after half: never a "successful" half file.
    base, server = http
    with pytest.raises(FetchError) as e:
        with fetch(url_of(base, "cuts.mp4", "/truncate"), BIG, POLICY):
            pass
    assert e.value.reason == reasons.DOWNLOAD_FAILED
    assert server.hits["/truncate/cuts.mp4"] == POLICY.retries + 1


def test_fetch_timeout_is_retried_then_download_failed(http):
    base, server = http
    policy = HttpPolicy(timeout_s=0.3, retries=1, backoff_s=0.01)
    t0 = time.monotonic()
    with pytest.raises(FetchError) as e:
        with fetch(url_of(base, "cuts.mp4", "/slow/1.5"), BIG, policy):
            pass
    assert e.value.reason == reasons.DOWNLOAD_FAILED
    assert "Timeout" in e.value.message
    assert time.monotonic() - t0 < 1.5 * 2, "each attempt must give up after timeout_s"
    assert server.hits["/slow/1.5/cuts.mp4"] == 2


@pytest.mark.parametrize("prefix", ["", "/nolength"], ids=["content-length", "no-content-length"])
def test_fetch_larger_than_max_bytes_is_too_large(http, corpus, prefix):
    base, _ = http
    size = (corpus.root / "cuts.mp4").stat().st_size
    with pytest.raises(FetchError) as e:
        with fetch(url_of(base, "cuts.mp4", prefix), size - 1, POLICY):
            pass
    assert e.value.reason == reasons.TOO_LARGE
    # Exactly at the limit is fine.
    with fetch(url_of(base, "cuts.mp4", prefix), size, POLICY) as got:
        assert got.bytes == size


def test_build_from_urls(ray_local, http, corpus, tmp_path):
    base, server = http
    good = {
        url_of(base, "cuts.mp4"): "cuts.mp4",
        url_of(base, "with audio and spaces.mp4"): "with audio and spaces.mp4",
        # A signed-URL style query string: not part of the name or extension.
        url_of(base, "ünïcode.name.v2.mp4") + "?sig=abc&expires=1": "ünïcode.name.v2.mp4",
        # Fails once, then succeeds: http_retries=1 is enough.
        url_of(base, "sub dir/clip.webm", "/flaky/1"): "sub dir/clip.webm",
    }
    missing = url_of(base, "gone.mp4")
    broken = url_of(base, "random.mp4")
    out = tmp_path / "out"
    result = runner.run_build(make_config(list(good) + [missing, broken], out,
                                          overrides=["crawl.http_backoff_s=0.05", "crawl.http_retries=1",
                                                     "crawl.http_timeout_s=5"]), quiet=True)

    videos = pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()
    rejects = pq.read_table(out / layout.MANIFEST_REJECTS).to_pylist()
    assert {r["source_uri"]: r["reason"] for r in rejects} == {missing: reasons.DOWNLOAD_FAILED,
                                                               broken: reasons.UNREADABLE}
    miss = next(r for r in rejects if r["source_uri"] == missing)
    assert "404" in miss["message"] and miss["source"] == missing and miss["stage"] == "probe"
    assert {v["source_uri"] for v in videos} == set(good)
    for v in videos:
        data = (corpus.root / good[v["source_uri"]]).read_bytes()
        assert v["source"] == v["source_uri"]
        assert v["sha256"] == sha256(data) and v["bytes"] == len(data)
        assert v["extension"] == good[v["source_uri"]].rsplit(".", 1)[-1]
        assert v["shard"] == layout.shard_name(0)
    assert result["summary"]["inputs"] == len(good) + 2

    with tarfile.open(out / layout.shard_path(0)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for v in videos:
        data = (corpus.root / good[v["source_uri"]]).read_bytes()
        assert members[f"{v['video_id']}.{v['extension']}"] == data
        assert json.loads(members[f"{v['video_id']}.json"])["source_uri"] == v["source_uri"]
    index = json.loads((out / layout.SHARD_INDEX).read_text())
    assert index["__kind__"] == "wids-shard-index-v1"
    assert index["shardlist"][0]["nsamples"] == len(good)


def test_http_manifest_resolves_relative_urls(tmp_path, corpus):
    """A manifest served over http lists videos relative to its own URL; extra columns are carried."""
    import json as _json

    from pipeline.ingest import crawl

    (tmp_path / "lists").mkdir()
    (tmp_path / "videos").mkdir()
    for name in ("cuts.mp4", "with audio and spaces.mp4"):
        (tmp_path / "videos" / name).write_bytes((corpus.root / name).read_bytes())
    lines = [{"path": "../videos/cuts.mp4", "split": "train"}, {"url": "../videos/with%20audio%20and%20spaces.mp4"}]
    (tmp_path / "lists" / "m.jsonl").write_text("\n".join(_json.dumps(x) for x in lines) + "\n")
    with servers.http_file_server(tmp_path) as (base, _):
        rows = crawl.crawl([f"{base}/lists/m.jsonl"], ["mp4"])
        assert [r["source_uri"] for r in rows] == [f"{base}/videos/cuts.mp4",
                                                  f"{base}/videos/with%20audio%20and%20spaces.mp4"]
        assert _json.loads(rows[0]["source_metadata"]) == {"split": "train"}
        with pytest.raises(crawl.SourceError, match="HTTP 404"):
            crawl.crawl([f"{base}/lists/missing.csv"], ["mp4"])

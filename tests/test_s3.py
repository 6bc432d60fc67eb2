"""S3 end to end against a real moto_server on 127.0.0.1: S3 sources, S3 outputs, S3 manifests, idempotent reruns.

Credentials are the fake ones conftest.py sets at import; the endpoint reaches the pipeline only through the config
key `storage.s3_endpoint_url`, exactly as a user would pass it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import make_config, s3_client

from pipeline.core import runner
from pipeline.ingest import crawl
from pipeline.io import storage
from schemas import layout, reasons

SRC = "src"
OUT = "out"
# What goes to s3://src/videos/: all good videos, two broken ones and the byte-identical copy of cuts.mp4.
BROKEN_UPLOADED = ("random.mp4", "short.mp4")


@pytest.fixture(scope="module")
def endpoint(moto_endpoint):
    return moto_endpoint


@pytest.fixture(scope="module")
def s3(endpoint):
    client = s3_client(endpoint)
    client.create_bucket(Bucket=SRC)
    client.create_bucket(Bucket=OUT)
    return client


@pytest.fixture(scope="module")
def uploaded(s3, corpus) -> dict[str, bytes]:
    """s3:// URI -> the bytes uploaded there."""
    names = list(corpus.good) + list(BROKEN_UPLOADED) + [corpus.duplicate[0]]
    out = {}
    for name in names:
        data = (corpus.root / name).read_bytes()
        key = f"videos/{name}"
        s3.put_object(Bucket=SRC, Key=key, Body=data)
        out[f"s3://{SRC}/{key}"] = data
    # A non-video object under the prefix: the crawler must skip it (not a reject, not an input).
    s3.put_object(Bucket=SRC, Key="videos/notes.txt", Body=b"not a video\n")
    return out


def overrides(endpoint, *extra):
    return [f"storage.s3_endpoint_url={endpoint}", "probe.part_size=2", *extra]


# ---------------------------------------------------------------------------------------------------------------
# Readers of a build's output that do not go through the code under test


class S3Out:
    def __init__(self, client, uri: str):
        assert uri.startswith("s3://")
        self.client = client
        self.bucket, _, self.prefix = uri[len("s3://"):].partition("/")

    def read(self, rel: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{rel}")["Body"].read()

    def exists(self, rel: str) -> bool:
        resp = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/{rel}")
        return any(o["Key"] == f"{self.prefix}/{rel}" for o in resp.get("Contents", []))

    def snapshot(self) -> dict[str, tuple]:
        """key -> (ETag, LastModified, Size) of every object under the output prefix."""
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + "/"):
            for o in page.get("Contents", []):
                found[o["Key"]] = (o["ETag"], o["LastModified"], o["Size"])
        return found


class LocalOut:
    def __init__(self, root: Path):
        self.root = Path(root)

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()


def table(out, rel: str) -> list[dict]:
    return pq.read_table(io.BytesIO(out.read(rel))).to_pylist()


def check_build(out, inputs: dict[str, bytes], expected_reasons: dict[str, str],
                dup_pair: tuple[str, str] | None = None) -> tuple[list[dict], list[dict]]:
    """The invariants every finished build must satisfy; returns (videos, rejects).

    inputs: source URI -> bytes of every input; expected_reasons: source URI -> reject reason for the inputs that
    must be rejected (duplicates excluded); dup_pair: two URIs with the same bytes, of which exactly one must be
    kept and the other rejected as `duplicate`. Every other input must be accepted.
    """
    assert out.exists(layout.MANIFEST_VIDEOS) and out.exists(layout.MANIFEST_REJECTS)
    videos = table(out, layout.MANIFEST_VIDEOS)
    rejects = table(out, layout.MANIFEST_REJECTS)
    accepted = [v["source_uri"] for v in videos]
    rejected = [r["source_uri"] for r in rejects]
    # Nothing silently lost: each input in exactly one table, nothing else in them.
    assert sorted(accepted + rejected) == sorted(inputs), (accepted, rejected)
    got_reasons = {r["source_uri"]: r["reason"] for r in rejects}
    if dup_pair:
        assert (dup_pair[0] in got_reasons) != (dup_pair[1] in got_reasons), f"exactly one of {dup_pair} is kept"
        dup = dup_pair[0] if dup_pair[0] in got_reasons else dup_pair[1]
        assert got_reasons.pop(dup) == reasons.DUPLICATE
    assert got_reasons == expected_reasons
    for r in rejects:
        assert r["message"], r

    by_uri = {v["source_uri"]: v for v in videos}
    for uri, v in by_uri.items():
        digest = hashlib.sha256(inputs[uri]).hexdigest()
        assert v["sha256"] == digest and v["video_id"] == digest[:20] and v["bytes"] == len(inputs[uri])
        assert v["shard"] == layout.shard_name(0)
    for r in rejects:
        if r["reason"] == reasons.DUPLICATE:
            digest = hashlib.sha256(inputs[r["source_uri"]]).hexdigest()
            kept = [v for v in videos if v["sha256"] == digest]
            assert len(kept) == 1 and r["duplicate_of"] == kept[0]["video_id"], (r, kept)

    # The shard: original bytes + metadata JSON per accepted video, keyed by video_id.
    assert out.exists(layout.shard_path(0))
    with tarfile.open(fileobj=io.BytesIO(out.read(layout.shard_path(0)))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    expected_members = set()
    for uri, v in by_uri.items():
        vid, ext = v["video_id"], v["extension"]
        expected_members |= {f"{vid}.{ext}", f"{vid}.json"}
        assert members[f"{vid}.{ext}"] == inputs[uri], f"shard bytes of {uri} differ from the input"
        doc = json.loads(members[f"{vid}.json"])
        assert doc["key"] == vid and doc["source_uri"] == uri
    assert set(members) == expected_members

    index = json.loads(out.read(layout.SHARD_INDEX))
    assert index["__kind__"] == "wids-shard-index-v1"
    assert [s["url"] for s in index["shardlist"]] == [layout.shard_name(0)]
    assert index["shardlist"][0]["nsamples"] == len(videos)
    return videos, rejects


def expected_reject_reasons(corpus, uri_of) -> dict[str, str]:
    """Reject reasons of the uploaded set's broken files (the duplicate pair is checked apart)."""
    return {uri_of(name): corpus.broken[name] for name in BROKEN_UPLOADED}


def dup_pair(corpus, uri_of) -> tuple[str, str]:
    return uri_of(corpus.duplicate[0]), uri_of(corpus.duplicate[1])


# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_build(ray_local, endpoint, s3, uploaded):
    """One S3 → S3 build, shared by the tests that inspect it and the rerun test."""
    out_uri = f"s3://{OUT}/build1"
    result = runner.run_build(make_config([f"s3://{SRC}/videos/"], out_uri, overrides=overrides(endpoint)), quiet=True)
    return out_uri, result


def test_s3_source_to_s3_output(s3_build, s3, corpus, uploaded):
    out_uri, result = s3_build
    out = S3Out(s3, out_uri)
    uri_of = lambda n: f"s3://{SRC}/videos/{n}"  # noqa: E731
    pair = dup_pair(corpus, uri_of)
    videos, rejects = check_build(out, uploaded, expected_reject_reasons(corpus, uri_of), pair)
    assert len(videos) == len(corpus.good)
    assert result["summary"]["inputs"] == len(uploaded)
    assert result["summary"]["accepted"] == len(corpus.good)

    # The copy and the original are one video: one is kept, the other is a duplicate reject naming the kept one.
    dup = next(r for r in rejects if r["reason"] == reasons.DUPLICATE)
    kept = next(v for v in videos if v["source_uri"] in pair)
    assert {dup["source_uri"], kept["source_uri"]} == set(pair)
    assert dup["duplicate_of"] == kept["video_id"] and kept["source_uri"] in dup["message"]
    assert dup["sha256"] == kept["sha256"]

    summary = json.loads(out.read(layout.STATS_SUMMARY))
    assert summary["inputs"] == len(uploaded) and summary["accepted"] + summary["rejected"] == len(uploaded)
    # Nothing but committed objects under the output prefix (no temporaries left behind on S3).
    assert not [k for k in out.snapshot() if ".tmp-" in k or k.endswith(".part")]


def test_s3_rerun_changes_no_object(s3_build, s3, endpoint):
    out_uri, first = s3_build
    out = S3Out(s3, out_uri)
    before = out.snapshot()
    assert before
    time.sleep(1.1)  # LastModified has one-second resolution: a rewrite must show up
    again = runner.run_build(make_config([f"s3://{SRC}/videos/"], out_uri, overrides=overrides(endpoint)), quiet=True)
    after = out.snapshot()
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}
    assert again["summary"] == first["summary"]


def test_local_source_to_s3_output(ray_local, endpoint, s3, corpus):
    out_uri = f"s3://{OUT}/from-local"
    runner.run_build(make_config([corpus.root], out_uri, overrides=overrides(endpoint)), quiet=True)
    inputs = {str(p): p.read_bytes() for p in sorted(corpus.root.rglob("*"))
              if p.is_file() and p.suffix in (".mp4", ".webm")}
    expected = {str(corpus.root / n): reason for n, reason in corpus.broken.items()}
    check_build(S3Out(s3, out_uri), inputs, expected, dup_pair(corpus, lambda n: str(corpus.root / n)))


def test_s3_source_to_local_output(ray_local, endpoint, s3, corpus, uploaded, tmp_path):
    out_dir = tmp_path / "out"
    runner.run_build(make_config([f"s3://{SRC}/videos"], out_dir, overrides=overrides(endpoint)), quiet=True)
    uri_of = lambda n: f"s3://{SRC}/videos/{n}"  # noqa: E731
    check_build(LocalOut(out_dir), uploaded, expected_reject_reasons(corpus, uri_of), dup_pair(corpus, uri_of))
    assert not [p for p in out_dir.rglob("*") if ".tmp-" in p.name]


def test_s3_manifest_resolves_relative_paths_against_its_prefix(ray_local, endpoint, s3, corpus, uploaded):
    # A manifest in s3://src/lists/ naming: a sibling object, one in a sub-prefix, one via `..`, and one absolute URL.
    s3.put_object(Bucket=SRC, Key="lists/here.mp4", Body=(corpus.root / "cuts.mp4").read_bytes())
    audio = (corpus.root / "with audio and spaces.mp4").read_bytes()
    s3.put_object(Bucket=SRC, Key="lists/sub dir/with audio and spaces.mp4", Body=audio)
    records = [
        {"path": "here.mp4", "lang": "en"},
        {"path": "sub dir/with audio and spaces.mp4", "lang": "de"},
        {"path": "../videos/ünïcode.name.v2.mp4", "lang": "fr"},
        {"url": f"s3://{SRC}/videos/sub dir/clip.webm", "lang": "it"},
    ]
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n"
    manifest_uri = f"s3://{SRC}/lists/batch.jsonl"
    s3.put_object(Bucket=SRC, Key="lists/batch.jsonl", Body=body.encode("utf-8"))

    out_uri = f"s3://{OUT}/from-manifest"
    runner.run_build(make_config([manifest_uri], out_uri, overrides=overrides(endpoint)), quiet=True)
    expected_uris = {
        f"s3://{SRC}/lists/here.mp4": "en",
        f"s3://{SRC}/lists/sub dir/with audio and spaces.mp4": "de",
        f"s3://{SRC}/videos/ünïcode.name.v2.mp4": "fr",
        f"s3://{SRC}/videos/sub dir/clip.webm": "it",
    }
    inputs = {
        f"s3://{SRC}/lists/here.mp4": (corpus.root / "cuts.mp4").read_bytes(),
        f"s3://{SRC}/lists/sub dir/with audio and spaces.mp4": audio,
        f"s3://{SRC}/videos/ünïcode.name.v2.mp4": uploaded[f"s3://{SRC}/videos/ünïcode.name.v2.mp4"],
        f"s3://{SRC}/videos/sub dir/clip.webm": uploaded[f"s3://{SRC}/videos/sub dir/clip.webm"],
    }
    videos, rejects = check_build(S3Out(s3, out_uri), inputs, {})
    assert {v["source_uri"]: json.loads(v["source_metadata"])["lang"] for v in videos} == expected_uris
    assert {v["source"] for v in videos} == {manifest_uri}


def test_s3_source_forms_at_crawl_level(endpoint, s3, uploaded):
    storage.configure(endpoint)
    exts = ["mp4", "webm"]
    # A single object, a prefix with and without the trailing slash (the same listing).
    (one,) = crawl.crawl([f"s3://{SRC}/videos/cuts.mp4"], exts)
    assert one["source_uri"] == f"s3://{SRC}/videos/cuts.mp4" and one["size_hint"] == len(uploaded[one["source_uri"]])
    with_slash = crawl.crawl([f"s3://{SRC}/videos/"], exts)
    assert [r["source_uri"] for r in with_slash] == sorted(uploaded)
    assert [r["source_uri"] for r in crawl.crawl([f"s3://{SRC}/videos"], exts)] == sorted(uploaded)
    # A CSV manifest on S3: `path` relative to the manifest's prefix, other columns carried as metadata.
    s3.put_object(Bucket=SRC, Key="csv/list.csv", Body="path,lang\n../videos/cuts.mp4,en\n".encode())
    (row,) = crawl.crawl([f"s3://{SRC}/csv/list.csv"], exts)
    assert row["source_uri"] == f"s3://{SRC}/videos/cuts.mp4"
    assert json.loads(row["source_metadata"]) == {"lang": "en"} and row["source"] == f"s3://{SRC}/csv/list.csv"
    # A bucket that does not exist is a source error naming the source, not an empty listing.
    with pytest.raises(crawl.SourceError, match="s3://no-such-bucket/x/"):
        crawl.crawl(["s3://no-such-bucket/x/"], exts)


def test_s3_manifest_dotdot_never_leaves_the_bucket(endpoint, s3):
    storage.configure(endpoint)
    refs = ["../x.mp4", "../../x.mp4", "../../../x.mp4"]
    body = "\n".join(json.dumps({"path": r}) for r in refs) + "\n"
    s3.put_object(Bucket=SRC, Key="lists/escape.jsonl", Body=body.encode())
    try:
        rows = crawl.crawl([f"s3://{SRC}/lists/escape.jsonl"], ["mp4"])
    except crawl.SourceError:
        return  # refusing such a manifest with a clear error is fine too
    # URL semantics (the bucket is the host): `..` stops at the bucket root, so all three name s3://src/x.mp4.
    uris = sorted(r["source_uri"] for r in rows)
    assert all(u.startswith(f"s3://{SRC}/") for u in uris), uris

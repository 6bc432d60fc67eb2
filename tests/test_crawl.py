"""Crawling local directories, single files, manifests (CSV / JSONL / Parquet) and http(s) URLs (no network)."""

from __future__ import annotations

import csv
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.ingest import crawl
from schemas.sample import VIDEO_EXTENSIONS

EXTS = list(VIDEO_EXTENSIONS)


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "videos"
    names = ["b.mp4", "a clip.with.dots.mp4", "ünïcode 名前.webm", "sub dir/deeper/c.MKV", "sub dir/d.mov",
             "notes.txt", "README", "archive.mp4.part", "no_ext_mp4"]
    for i, n in enumerate(names):
        touch(root / n, b"v" * (i + 1))
    return root


def uris(rows):
    return [r["source_uri"] for r in rows]


def test_directory_listed_recursively_by_extension(tree):
    rows = crawl.crawl([str(tree)], EXTS)
    expected = sorted(str(tree / n) for n in ["b.mp4", "a clip.with.dots.mp4", "ünïcode 名前.webm",
                                              "sub dir/deeper/c.MKV", "sub dir/d.mov"])
    assert uris(rows) == expected
    for r in rows:
        assert os.path.isabs(r["source_uri"])
        assert r["source"] == str(tree)
        assert json.loads(r["source_metadata"]) == {}
        assert r["size_hint"] == os.path.getsize(r["source_uri"])


def test_directory_on_the_corpus(corpus):
    rows = crawl.crawl([str(corpus.root)], EXTS)
    names = {os.path.relpath(u, corpus.root) for u in uris(rows)}
    assert names == set(corpus.good) | set(corpus.broken) | {corpus.duplicate[0]}
    assert "notes.txt" not in names
    assert uris(rows) == sorted(uris(rows))


def test_extension_filter(tree):
    rows = crawl.crawl([str(tree)], ["webm"])
    assert uris(rows) == [str(tree / "ünïcode 名前.webm")]
    rows = crawl.crawl([str(tree)], ["MKV"])
    assert uris(rows) == [str(tree / "sub dir/deeper/c.MKV")]


def test_relative_directory_gives_absolute_paths(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    rows = crawl.crawl(["videos"], EXTS)
    assert len(rows) == 5
    assert all(os.path.isabs(u) and os.path.exists(u) for u in uris(rows))


def test_single_file_source(tree, monkeypatch):
    path = tree / "a clip.with.dots.mp4"
    rows = crawl.crawl([str(path)], EXTS)
    assert uris(rows) == [str(path)]
    assert rows[0]["size_hint"] == path.stat().st_size
    monkeypatch.chdir(tree)
    rows = crawl.crawl(["a clip.with.dots.mp4"], EXTS)
    assert uris(rows) == [str(path)]


def test_missing_local_source(tmp_path):
    with pytest.raises(crawl.SourceError):
        crawl.crawl([str(tmp_path / "nothing here")], EXTS)


def test_empty_directory(tmp_path):
    assert crawl.crawl([str(tmp_path)], EXTS) == []


# ---------------------------------------------------------------------------------------------------------------
# Manifests


def test_csv_manifest_with_relative_paths_and_extra_columns(tmp_path):
    base = tmp_path / "data"
    touch(base / "clips" / "one.mp4")
    touch(base / "two words.mp4")
    manifest = base / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "title", "license"])
        w.writerow(["clips/one.mp4", "First", "cc-by"])
        w.writerow(["two words.mp4", "Über zwei", "cc0"])
    rows = crawl.crawl([str(manifest)], EXTS)
    assert uris(rows) == sorted([str(base / "clips" / "one.mp4"), str(base / "two words.mp4")])
    meta = {r["source_uri"]: json.loads(r["source_metadata"]) for r in rows}
    assert meta[str(base / "clips" / "one.mp4")] == {"title": "First", "license": "cc-by"}
    assert meta[str(base / "two words.mp4")] == {"title": "Über zwei", "license": "cc0"}
    assert all(r["source"] == str(manifest) for r in rows)


def test_manifest_paths_resolve_against_manifest_folder_not_cwd(tmp_path, monkeypatch):
    base = tmp_path / "m"
    touch(base / "v" / "x.mp4")
    manifest = base / "list.csv"
    manifest.write_text("path\nv/x.mp4\n../m/v/x.mp4\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    rows = crawl.crawl([os.path.join("m", "list.csv")], EXTS)
    # both rows name the same file: one input
    assert uris(rows) == [str(base / "v" / "x.mp4")]


def test_jsonl_manifest_with_urls_and_paths(tmp_path):
    touch(tmp_path / "local.mp4")
    manifest = tmp_path / "inputs.jsonl"
    lines = [
        {"url": "https://example.com/a.mp4?sig=1", "lang": "en", "n": 3},
        {"path": "local.mp4", "tags": ["x", "y"]},
        {"url": "s3://bucket/key/b.mp4", "path": "ignored.mp4"},
    ]
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    rows = crawl.crawl([str(manifest)], EXTS)
    meta = {r["source_uri"]: json.loads(r["source_metadata"]) for r in rows}
    assert set(meta) == {"https://example.com/a.mp4?sig=1", str(tmp_path / "local.mp4"), "s3://bucket/key/b.mp4"}
    assert meta["https://example.com/a.mp4?sig=1"] == {"lang": "en", "n": 3}
    assert meta[str(tmp_path / "local.mp4")] == {"tags": ["x", "y"]}
    assert meta["s3://bucket/key/b.mp4"] == {}


def test_parquet_manifest(tmp_path):
    touch(tmp_path / "sub" / "p.mp4")
    table = pa.table({
        "path": ["sub/p.mp4", None],
        "url": [None, "http://example.org/q.webm"],
        "duration_hint": [12.5, 60.0],
        "label": ["a", "ß"],
    })
    manifest = tmp_path / "inputs.parquet"
    pq.write_table(table, manifest)
    rows = crawl.crawl([str(manifest)], EXTS)
    meta = {r["source_uri"]: json.loads(r["source_metadata"]) for r in rows}
    assert meta == {
        str(tmp_path / "sub" / "p.mp4"): {"duration_hint": 12.5, "label": "a"},
        "http://example.org/q.webm": {"duration_hint": 60.0, "label": "ß"},
    }


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_row_without_path_or_url(tmp_path, fmt):
    manifest = tmp_path / f"bad.{fmt}"
    if fmt == "csv":
        manifest.write_text("path,title\na.mp4,ok\n,missing\n", encoding="utf-8")
    elif fmt == "jsonl":
        manifest.write_text('{"path": "a.mp4"}\n{"title": "no uri"}\n', encoding="utf-8")
    else:
        pq.write_table(pa.table({"title": ["x"], "video": ["a.mp4"]}), manifest)
    with pytest.raises(crawl.SourceError):
        crawl.crawl([str(manifest)], EXTS)


def test_invalid_jsonl_line(tmp_path):
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"path": "a.mp4"}\n{not json\n', encoding="utf-8")
    with pytest.raises(crawl.SourceError, match="line 2"):
        crawl.crawl([str(manifest)], EXTS)


# ---------------------------------------------------------------------------------------------------------------
# Deduplication and http


def test_same_uri_from_two_sources_once(tree):
    one = tree / "b.mp4"
    manifest = tree / "m.csv"
    manifest.write_text("path\nb.mp4\n", encoding="utf-8")
    rows = crawl.crawl([str(tree), str(one), str(manifest)], EXTS)
    assert uris(rows).count(str(one)) == 1
    assert len(rows) == 5
    assert uris(rows) == sorted(uris(rows))
    # the same source listed twice
    assert crawl.crawl([str(one), str(one)], EXTS) == crawl.crawl([str(one)], EXTS)


def test_http_url_source_is_one_row():
    url = "https://example.com/videos/talk%20one.mp4?token=abc"
    rows = crawl.crawl([url], EXTS)
    assert rows == [{"source_uri": url, "source": url, "source_metadata": "{}", "size_hint": None}]
    rows = crawl.crawl([url, "http://example.com/b.webm", url], EXTS)
    assert uris(rows) == ["http://example.com/b.webm", url]


def test_question_mark_in_local_file_name(tmp_path):
    touch(tmp_path / "Q&A? part 1.mp4")
    touch(tmp_path / "take#2.mp4")
    rows = crawl.crawl([str(tmp_path)], EXTS)
    assert uris(rows) == sorted([str(tmp_path / "Q&A? part 1.mp4"), str(tmp_path / "take#2.mp4")])

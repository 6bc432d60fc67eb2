"""Weights are identified by their content: resume keys (`annotate`, `hico`) change when the bytes change even with
the same names and sizes, and a file's hash is computed once per machine (cached by path, size and mtime)."""

from __future__ import annotations

import hashlib
import os
import tempfile

import pytest

from compressors import weights_hash
from pipeline.stages import annotate, hico
from tests.conftest import make_config


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(weights_hash.CACHE_ENV, str(tmp_path / "cache"))
    elsewhere = tmp_path / "tmp"  # checkpoints under tmp_path must not count as temporary files here
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    return tmp_path / "cache"


def _rewrite_same_size(path, data: bytes) -> None:
    stat = os.stat(path)
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_file_hash_is_cached_by_path_size_and_mtime(tmp_path, cache):
    ckpt = tmp_path / "enc.safetensors"
    ckpt.write_bytes(b"a" * 1000)
    assert weights_hash.file_sha256(ckpt) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(list(cache.iterdir())) == 1
    # same path, size and mtime: the cached hash is used (the bytes are not read again)
    _rewrite_same_size(ckpt, b"b" * 1000)
    assert weights_hash.file_sha256(ckpt) == hashlib.sha256(b"a" * 1000).hexdigest()
    # a new mtime (what any real rewrite gives) is hashed again
    os.utime(ckpt, ns=(0, os.stat(ckpt).st_mtime_ns + 1_000_000))
    assert weights_hash.file_sha256(ckpt) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_annotate_resume_key_follows_the_weights_content(tmp_path, cache):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x01" * 4096)
    (folder / "config.json").write_text("{}")
    cfg = make_config([], tmp_path / "out", [f"annotate.checkpoint={folder}"], stages=["annotate"])
    first = annotate.model_digest(cfg)
    file_sha = hashlib.sha256(b"\x01" * 4096).hexdigest()
    want = hashlib.sha256(f"model.safetensors\0{file_sha}\n".encode()).hexdigest()
    assert first == want
    # fine-tuned weights: same names, same sizes, other bytes (a new mtime, as any write gives)
    (folder / "model.safetensors").write_bytes(b"\x02" * 4096)
    os.utime(folder / "model.safetensors", ns=(0, os.stat(folder / "model.safetensors").st_mtime_ns + 1_000_000))
    assert annotate.model_digest(cfg) != first


def test_hico_resume_key_is_the_checkpoint_sha256(tmp_path, cache):
    ckpt = tmp_path / "umt.pt"
    ckpt.write_bytes(b"weights")
    cfg = make_config([], tmp_path / "out", [f"hico.encoder.checkpoint={ckpt}"], stages=["hico"])
    assert hico.weights_digest(cfg) == hashlib.sha256(b"weights").hexdigest()


def test_temporary_files_are_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(weights_hash.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "w.bin").write_bytes(b"x")
    assert weights_hash.file_sha256(tmp_path / "w.bin") == hashlib.sha256(b"x").hexdigest()
    assert not (tmp_path / "cache").exists()

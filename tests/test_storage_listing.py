"""`storage.list_files` lists a local folder in the order of its sorted paths (the order S3 returns keys in), one
directory at a time, on names where a directory's place is not its name's: `a` sorts after `a-b` and `a.txt`
(their characters sort before `/`) and before `a0`."""

from __future__ import annotations

import os

import pytest
from conftest import s3_client

from pipeline.io import storage

NAMES = ["a/b", "a/c/d", "a-b", "a.txt", "a0", "ab/x", "b", "a/b.d/e", "a/b-e", "Z", "a/c.txt", "deep/1/2/3/f",
         "a b/c", "a_/c"]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    for i, name in enumerate(NAMES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * i)
    (root / "empty").mkdir()
    os.symlink(root / "a", root / "link-to-dir")
    os.symlink(root / "b", root / "link-to-file")
    os.symlink(root / "missing", root / "broken-link")
    return root


def test_local_listing_is_sorted_by_path_with_sizes(tree):
    listed = list(storage.list_files(str(tree)))
    expected = sorted(str(tree / name) for name in NAMES + ["link-to-file"])
    assert [path for path, _ in listed] == expected
    assert [size for _, size in listed] == [os.path.getsize(path) for path in expected]
    assert [path for path, _ in storage.list_files(str(tree) + "/")] == expected
    assert list(storage.list_files(str(tree / "b"))) == [] == list(storage.list_files(str(tree / "nowhere")))


def test_local_and_s3_listings_come_in_the_same_order(tree, moto_endpoint):
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="listing")
    for name in NAMES:
        client.put_object(Bucket="listing", Key=f"tree/{name}", Body=(tree / name).read_bytes())
    storage.configure(moto_endpoint)
    s3 = [(uri.removeprefix("s3://listing/tree/"), size) for uri, size in storage.list_files("s3://listing/tree")]
    local = [(os.path.relpath(path, tree), size) for path, size in storage.list_files(str(tree))
             if not os.path.islink(path)]
    assert s3 == local and len(local) == len(NAMES)

"""What the stats checks leave in Ray's object store: the bucket pieces a part returns take the part's own size
together (a slice would carry its whole buffers into the store, once per bucket), and the payload mode of
`ray_runtime.imap_units` hands results back in unit order with the payloads left in the store by reference."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import ray_runtime
from pipeline.stats import buckets
from pipeline.stats.mixture_parts import PER_RECORD


def record_ids(n: int) -> pa.Array:
    return pa.array([None if i % 97 == 0 else f"stage3-qa-{i * 7919 % 100003:08x}-ü{i % 13}" for i in range(n)])


def stored_bytes(value) -> int:
    return len(pickle.dumps(value, protocol=5))


def test_bucket_pieces_hold_each_value_once():
    ids = record_ids(50_000)
    table = pa.table({"record_id": ids, "duration_us": pa.array(np.arange(50_000), pa.int64()),
                      "visual_tokens": pa.array(np.arange(50_000), pa.int64()),
                      "text_chars": pa.array(np.arange(50_000), pa.int64())}).cast(PER_RECORD)
    which = buckets.bucket_of(ids, 16)
    for whole in (ids, table):
        pieces = buckets.split(whole, ids, 16)
        assert len(pieces) == 16
        assert sum(stored_bytes(p) for p in pieces) < 1.2 * stored_bytes(whole)
        for b, piece in enumerate(pieces):  # each bucket's values, in their order
            assert piece.equals(whole.filter(pa.array(which == b)))


def test_bucket_of_ids_does_not_depend_on_how_many_are_hashed_at_once(monkeypatch):
    ids = record_ids(20_000)
    expected = buckets.bucket_of(ids, 7)
    monkeypatch.setattr(buckets, "HASH_CHUNK", 333)
    assert np.array_equal(buckets.bucket_of(ids, 7), expected)
    assert np.array_equal(buckets.bucket_of(pa.chunked_array([ids.slice(0, 5), ids.slice(5)]), 7), expected)


def summary_and_payload(unit: int, scale: int) -> tuple[dict, pa.Array]:
    return {"unit": unit}, pa.array(np.full(1000, unit * scale, np.int64))


def test_imap_units_payload_mode_yields_results_in_order_and_payload_refs():
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    ray_runtime.init()
    for in_flight in (1, 3, None):
        seen = list(ray_runtime.imap_units("test", summary_and_payload, iter(range(7)), (10,), "units", 7,
                                           in_flight=in_flight, payload=True))
        assert [result for result, _ in seen] == [{"unit": u} for u in range(7)]
        assert all(isinstance(ref, ray.ObjectRef) for _, ref in seen)
        assert [pc.max(ray.get(ref)).as_py() for _, ref in seen] == [u * 10 for u in range(7)]
    plain = list(ray_runtime.imap_units("test", summary_and_payload, range(3), (1,), "units", 3))
    assert [r[0] for r in plain] == [{"unit": u} for u in range(3)]


def summary_and_two_payloads(unit: int, scale: int) -> tuple[dict, pa.Array, dict]:
    return {"unit": unit}, pa.array(np.full(1000, unit * scale, np.int64)), {"big": np.full(50_000, unit)}


def test_two_payloads_are_two_objects_fetched_apart_with_and_without_ray(monkeypatch):
    """The annotation groups leave their row lookup and their per-video counts as two objects, so that a task
    reading one never deserialises the other (stats/videos tasks fetch every group's counts)."""
    import ray
    from ray import cloudpickle

    from pipeline.stats import remote

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray_runtime.init()
    seen = list(remote.imap_with_payload("test", summary_and_two_payloads, iter(range(5)), (10,), "units", 5,
                                         in_flight=2, payloads=2))
    assert [result for result, _ in seen] == [{"unit": u} for u in range(5)]
    assert all(len(refs) == 2 and all(isinstance(r, ray.ObjectRef) for r in refs) for _, refs in seen)
    assert [pc.max(ray.get(first)).as_py() for _, (first, _) in seen] == [u * 10 for u in range(5)]
    assert [int(ray.get(second)["big"][0]) for _, (_, second) in seen] == list(range(5))
    monkeypatch.setattr(ray_runtime, "ray_running", lambda: False)  # as in a command outside a job
    local = list(remote.imap_with_payload("test", summary_and_two_payloads, iter(range(3)), (10,), "units", 3,
                                          payloads=2))
    assert [(r, pc.max(a).as_py(), int(b["big"][0])) for r, (a, b) in local] == [({"unit": u}, u * 10, u)
                                                                               for u in range(3)]


def slow_marker(unit: int, folder: str) -> int:
    import os
    import time

    if unit > 0:
        time.sleep(3)  # still running when the caller gives up after unit 0
    with open(os.path.join(folder, f"unit-{unit}"), "w") as f:
        f.write("done")
    return unit


def test_imap_units_closed_early_leaves_no_task_running(tmp_path):
    """A caller that stops after the first result (an error in its loop, `contextlib.closing`) gets back control only
    once the tasks still in flight have stopped: nothing they would have written appears afterwards."""
    import contextlib
    import time

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray_runtime.init()
    results = ray_runtime.imap_units("test", slow_marker, iter(range(4)), (str(tmp_path),), "units", 4, in_flight=3)
    with contextlib.closing(results):
        assert next(results) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    time.sleep(4)  # longer than the cancelled tasks would have taken
    assert sorted(p.name for p in tmp_path.iterdir()) == written
    assert "unit-3" not in written  # never submitted: the window was full

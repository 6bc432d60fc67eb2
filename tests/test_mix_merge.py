"""The mix stage's batch-at-a-time merge gives exactly what a row-at-a-time `heapq.merge` of the same sorted parts
gives: same rows, same order, ties in part order, whatever the batch sizes."""

import heapq
import random

import pyarrow as pa
import pytest

from pipeline.mix import assemble
from pipeline.mix.merge import merge_sorted


def _batches(rows: list[tuple], names: list[str], size: int):
    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        yield pa.RecordBatch.from_pydict({n: [r[i] for r in chunk] for i, n in enumerate(names)})


def _merged(parts: list[list[tuple]], names: list[str], key_of, sizes: list[int]) -> list[tuple]:
    out = []
    for table in merge_sorted([_batches(p, names, s) for p, s in zip(parts, sizes)], key_of):
        out += list(zip(*(table[n].to_pylist() for n in names)))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_order_merge_matches_heapq(seed):
    rng = random.Random(seed)
    names = ["order", "part", "i"]
    parts = []
    for p in range(rng.randint(1, 7)):
        keys = sorted(rng.choice(["", "a", "ab", "b", "ba", "é", "z", "zz"]) + format(rng.randint(0, 40), "x")
                      for _ in range(rng.randint(0, 60)))  # many ties, across and within parts
        parts.append([(k, p, i) for i, k in enumerate(keys)])
    sizes = [rng.choice([1, 2, 3, 7, 256]) for _ in parts]
    expected = list(heapq.merge(*parts, key=lambda r: r[0]))
    assert _merged(parts, names, lambda t: t["order"], sizes) == expected


def test_members_key_sorts_like_the_tuple():
    """(task, record_id, turn): a task that is a prefix of another, record ids that are prefixes, turns past 9."""
    rng = random.Random(0)
    rows = [(task, rid, turn) for task in ("qa", "qa_x", "q") for rid in ("r", "r-1", "r1", "s") for turn in
            (0, 2, 9, 10, 11, 100)]
    rng.shuffle(rows)
    parts = [sorted(rows[k::3]) for k in range(3)]
    names = ["task", "record_id", "turn"]
    merged = _merged(parts, names, assemble._members_key, [4, 5, 1000])
    assert merged == sorted(rows)


def test_empty_streams_and_no_streams():
    names = ["order"]
    assert _merged([[], [("a",)], []], names, lambda t: t["order"], [3, 3, 3]) == [("a",)]
    assert list(merge_sorted([], lambda t: t["order"])) == []

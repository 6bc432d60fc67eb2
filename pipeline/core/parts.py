"""Deterministic work units: inputs sorted by key, cut into fixed-size parts, each named by a digest of its keys
and of the settings that shape its result. A committed part is skipped on rerun; a changed input set or changed
settings give new names, so stale results are never reused. Resume never depends on Ray's block layout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from schemas import layout


@dataclass(frozen=True)
class Part:
    index: int
    name: str
    keys: tuple[str, ...]


def settings_digest(settings: Any) -> str:
    """sha256 of the settings as sorted-key JSON: the name of a unit's inputs and settings in its committed record."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _part_name(index: int, salt: str, chunk: Sequence[str]) -> str:
    return layout.part_name(index, hashlib.sha256((salt + "\n" + "\n".join(chunk)).encode()).hexdigest())


def plan_parts(keys: Sequence[str], part_size: int, settings: Any) -> list[Part]:
    keys = sorted(keys)
    salt = settings_digest(settings)
    parts = []
    for i, start in enumerate(range(0, len(keys), part_size)):
        chunk = tuple(keys[start:start + part_size])
        parts.append(Part(i, _part_name(i, salt, chunk), chunk))
    return parts


def part_spans(sorted_keys, part_size: int, settings: Any) -> list[tuple[str, int, int]]:
    """(name, start, stop) of the parts `plan_parts` would make of the keys of a sorted Arrow string array: the same
    names, without a Python string per key (one part's keys at a time)."""
    return list(iter_part_spans(sorted_keys, part_size, settings))


def iter_part_spans(sorted_keys, part_size: int, settings: Any) -> Iterator[tuple[str, int, int]]:
    """`part_spans` one part at a time."""
    salt = settings_digest(settings)
    for i, start in enumerate(range(0, len(sorted_keys), part_size)):
        yield _part_name(i, salt, sorted_keys.slice(start, part_size).to_pylist()), start, min(
            start + part_size, len(sorted_keys))

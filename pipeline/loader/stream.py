"""The loader's sample order: one deterministic stream per (seed, epoch, rank), independent of the worker count.

For epoch E on rank r of R:
1. shards: the URL list shuffled with (seed, E) when shuffle_shards (the same order on every rank), rank r taking
   every R-th from position r; with resample, an endless draw with replacement from all URLs seeded (seed, E, r).
2. items: each shard's samples in tar order, each expanded to its items (one per mixture record of the chosen
   tasks, in task then file order, repeated or dropped per `copies` when task weights apply; one per video
   without a mixture).
3. a shuffle buffer of `shuffle_buffer` items seeded (seed, E, r), then a cut at `epoch_length` items.
The result is the rank's stream S = S[0], S[1], ... Worker w of W yields S[N + w], S[N + w + W], ... when resumed
at N, so a DataLoader, which takes one item from each worker in turn and drops exhausted workers, yields exactly
S[N], S[N + 1], ... whatever W is. Every worker walks the headers of every shard of its rank (cheap: member data
is skipped); only the items it yields are fetched and decoded.
"""

from __future__ import annotations

import itertools
import random
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from schemas.errors import UsageError
from schemas.loader import LoaderOptions

T = TypeVar("T")
# With resample, this many shard draws in a row without an item means the shards hold nothing for the stage.
MAX_EMPTY_DRAWS_PER_SHARD = 20


class NoShardsForRank(UsageError, ValueError):
    pass


def _rng(*parts) -> random.Random:
    # A string seed goes through SHA-512, so every process (and every Python run) draws the same sequence.
    return random.Random(":".join(str(p) for p in parts))


def check_shards_for_ranks(num_urls: int, world: int, resample: bool) -> None:
    """Without resampling, a rank without shards would end its epoch at once while the others train on."""
    if not resample and num_urls < world:
        raise NoShardsForRank(f"{num_urls} shards for world_size {world}: every rank needs at least one shard "
                              f"(use resample=True with an epoch_length, or write more, smaller shards with "
                              f"shard.max_samples)")


def epoch_shards(urls: Sequence[str], opts: LoaderOptions, epoch: int, rank: int, world: int) -> Iterator[str]:
    if opts.resample:
        rng = _rng(opts.seed, "resample", epoch, rank)
        while True:
            yield urls[rng.randrange(len(urls))]
    check_shards_for_ranks(len(urls), world, opts.resample)
    order = list(urls)
    if opts.shuffle_shards:
        _rng(opts.seed, "shards", epoch).shuffle(order)
    yield from order[rank::world]


def copies(multiplicity: float, seed: int, epoch: int, record_id: str) -> int:
    """How often a record appears in an epoch: floor(m), plus one with probability frac(m), drawn from
    (seed, epoch, record id) so every worker and every rerun agrees."""
    whole = int(multiplicity)
    extra = _rng(seed, "copies", epoch, record_id).random() < multiplicity - whole
    return whole + int(extra)


def shuffled(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    """Hold up to `size` items; each new one pushes out a uniformly chosen held one; the rest leave shuffled."""
    buf: list[T] = []
    for item in items:
        buf.append(item)
        if len(buf) >= size:
            k = rng.randrange(len(buf))
            buf[k], buf[-1] = buf[-1], buf[k]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def _expanded(shards: Iterator[str], scan: Callable, expand: Callable, resample: bool,
              num_urls: int) -> Iterator:
    empty_draws = 0
    for url in shards:
        produced = False
        for sample in scan(url):
            for item in expand(sample):
                produced = True
                yield item
        empty_draws = 0 if produced else empty_draws + 1
        if resample and empty_draws > MAX_EMPTY_DRAWS_PER_SHARD * num_urls:
            raise ValueError(f"{empty_draws} shard draws in a row gave no items: the shards hold no samples of "
                             f"this stage and tasks")


def rank_stream(urls: Sequence[str], opts: LoaderOptions, epoch: int, rank: int, world: int,
                scan: Callable, expand: Callable) -> Iterator:
    """The rank's stream S for `epoch` (see the module doc); `scan(url)` gives samples, `expand(sample)` items."""
    items = _expanded(epoch_shards(urls, opts, epoch, rank, world), scan, expand, opts.resample, len(urls))
    if opts.shuffle_buffer > 1:
        items = shuffled(items, opts.shuffle_buffer, _rng(opts.seed, "samples", epoch, rank))
    if opts.epoch_length is not None:
        items = itertools.islice(items, opts.epoch_length)
    return items


def worker_share(stream: Iterable[T], start: int, worker: int, num_workers: int) -> Iterator[tuple[int, T]]:
    """(position in the rank's stream, item) of the items worker `worker` of `num_workers` yields, from `start`."""
    for index, item in enumerate(stream):
        if index >= start and (index - start) % num_workers == worker:
            yield index, item

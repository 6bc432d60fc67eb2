"""Where the loader's shards are and how it reads them: shard lists (URLs, shards.txt, an output root), the node
split, and a tar scan that reads member headers and JSON documents only.

Video bytes are never streamed past: a scan notes each member's (offset, size) and skips its data (a seek on a
local file, no request on S3), and the worker that yields a sample fetches just that byte range. S3 goes through
boto3 (pipeline.io.storage's client and endpoint settings) with ranged GETs; no shell pipes.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

from pipeline.io import storage
from schemas import layout
from schemas import sample as sample_schema

# webdataset's rule: the key is the member path up to the first dot of its last component, the field the rest.
_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
S3_READ_AHEAD = 64 * 1024  # bytes per ranged GET while scanning: a member header plus a JSON document


@dataclass(frozen=True)
class ShardSource:
    urls: list[str]
    mixture_dir: Optional[str] = None  # mixtures/<stage>/ holding <task>.jsonl and members.parquet
    hico_dir: Optional[str] = None  # hico/<stage>/ holding the token files and index.parquet


@dataclass
class ShardSample:
    url: str
    key: str
    doc: dict  # the per-sample JSON (pipeline.ingest.manifest.sample_metadata)
    members: dict[str, tuple[int, int]] = field(default_factory=dict)  # field -> (data offset, size) in the tar

    @property
    def video_member(self) -> tuple[int, int]:
        name = self.doc.get("video_field")
        if name not in self.members:
            raise ValueError(f"{self.url}: sample {self.key} has no {name!r} member (fields: {sorted(self.members)})")
        return self.members[name]

    @property
    def jpeg_members(self) -> list[tuple[int, int]]:
        """(offset, size) of the sampled-frame JPEGs a `frames` payload carries, in sampling order; [] without."""
        spans = []
        while sample_schema.frame_field(len(spans)) in self.members:
            spans.append(self.members[sample_schema.frame_field(len(spans))])
        return spans


def _absolute(uri: str) -> str:
    return uri if storage.is_s3(uri) else storage.normalize_local(uri)


def read_shard_list(uri: str) -> list[str]:
    """URLs of a shards.txt: one per line, blank lines and `#` comments skipped, relative ones from its folder."""
    base = storage.parent(uri)
    lines = storage.read_bytes(uri).decode("utf-8").splitlines()
    urls = [storage.resolve_from(base, s.strip()) for s in lines if s.strip() and not s.strip().startswith("#")]
    if not urls:
        raise ValueError(f"{uri} lists no shards")
    return urls


def _existing(uri: str, marker: str) -> Optional[str]:
    return uri if storage.exists(storage.join(uri, marker)) else None


def _root_of_mixture(mixture_dir: str, stage: str) -> Optional[str]:
    """The output root when `mixture_dir` is `<root>/mixtures/<stage>`."""
    suffix = layout.mixture_dir(stage)
    trimmed = mixture_dir.rstrip("/")
    if trimmed.endswith("/" + suffix):
        return trimmed[: -len(suffix) - 1]
    return None


def _hico_dir(root: Optional[str], stage: str) -> Optional[str]:
    if root is None:
        return None
    return _existing(storage.join(root, layout.hico_dir(stage)), layout.HICO_INDEX_NAME)


def resolve(source: Union[str, Sequence[str]], stage: str) -> ShardSource:
    """Shard URLs from a list of URLs, a single `.tar`, a shards.txt, or a build's output root (its stage mixture's
    shards.txt, else every shard of `shards/index.json`), with the mixture and HiCo folders found beside them."""
    if not isinstance(source, (str, os.PathLike)):
        urls = [_absolute(str(u)) for u in source]
        if not urls:
            raise ValueError("no shard URLs given")
        return ShardSource(urls)
    source = _absolute(str(source))
    if source.endswith(".tar"):
        return ShardSource([source])
    if source.endswith(".txt"):
        folder = storage.parent(source)
        mixture = _existing(folder, layout.MIX_MEMBERS_NAME)
        return ShardSource(read_shard_list(source), mixture, _hico_dir(_root_of_mixture(folder, stage), stage))
    mix_dir = storage.join(source, layout.mixture_dir(stage))
    shards_txt = storage.join(mix_dir, layout.MIX_SHARDS_TXT)
    if storage.exists(shards_txt):
        mixture = _existing(mix_dir, layout.MIX_MEMBERS_NAME)
        return ShardSource(read_shard_list(shards_txt), mixture, _hico_dir(source, stage))
    index_uri = storage.join(source, layout.SHARD_INDEX)
    if not storage.exists(index_uri):
        raise FileNotFoundError(f"{source} has neither {layout.mixture_dir(stage)}/{layout.MIX_SHARDS_TXT} nor "
                                f"{layout.SHARD_INDEX}: run the `shard` stage (and `mix` for stage mixtures) first")
    index = json.loads(storage.read_bytes(index_uri))
    base = storage.parent(index_uri)
    urls = [storage.resolve_from(base, s["url"]) for s in index["shardlist"]]
    return ShardSource(urls, None, _hico_dir(source, stage))


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) of this training process: torch.distributed when initialised, else $RANK / $WORLD_SIZE."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class S3RangeFile:
    """A read-only, seekable view of an S3 object: each read outside the current window is one ranged GET, so a
    seek over a member's data downloads nothing."""

    def __init__(self, uri: str, read_ahead: Optional[int] = None):
        self.uri = uri
        self.read_ahead = read_ahead or S3_READ_AHEAD
        self.size = storage.size(uri)
        self.pos = 0
        self._buf = b""
        self._buf_start = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        buf_end = self._buf_start + len(self._buf)
        if not (self._buf_start <= self.pos and end <= buf_end):
            fetch_end = min(self.size, max(end, self.pos + self.read_ahead))
            self._buf = storage.read_range(self.uri, self.pos, fetch_end - self.pos)
            self._buf_start = self.pos
        out = self._buf[self.pos - self._buf_start : end - self._buf_start]
        self.pos = end
        return out

    def close(self) -> None:
        self._buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_shard(url: str):
    return S3RangeFile(url) if storage.is_s3(url) else open(url, "rb")


def read_members(url: str, spans: Sequence[tuple[int, int]]) -> list[bytes]:
    """The data of several members of one shard with a single read (one ranged GET on S3) spanning them: members of
    a sample are consecutive in the tar, so the span holds little besides them (their 512-byte headers)."""
    if not spans:
        return []
    start = min(offset for offset, _ in spans)
    block = storage.read_range(url, start, max(offset + size for offset, size in spans) - start)
    return [block[offset - start : offset - start + size] for offset, size in spans]


def split_member_name(name: str) -> tuple[Optional[str], Optional[str]]:
    m = _MEMBER.match(name)
    return (m.group(1), m.group(2)) if m else (None, None)


def scan_shard(url: str) -> Iterator[ShardSample]:
    """The samples of one shard in tar order, with their JSON documents parsed and their members located."""
    with open_shard(url) as f:
        tar = tarfile.open(fileobj=f, mode="r:")
        current: Optional[ShardSample] = None
        for member in tar:
            if not member.isfile():
                continue
            key, field_name = split_member_name(member.name)
            if key is None:
                continue
            if current is None or current.key != key:
                if current is not None:
                    yield _checked(current)
                current = ShardSample(url, key, {})
            current.members[field_name] = (member.offset_data, member.size)
            if field_name == sample_schema.JSON_FIELD:
                with tar.extractfile(member) as doc:
                    current.doc = json.loads(doc.read())
        if current is not None:
            yield _checked(current)


def _checked(sample: ShardSample) -> ShardSample:
    if not sample.doc:
        raise ValueError(f"{sample.url}: sample {sample.key} has no {sample_schema.JSON_FIELD!r} member: "
                         f"not a LongVid shard")
    return sample

"""Hugging Face `datasets` features for LongVid shards, for its "webdataset" builder.

The builder infers features from the first few samples of the first shard and refuses shards whose samples carry
different field names, which LongVid shards do when they mix containers (`.mp4` and `.webm` video fields). Given
these features it loads any LongVid shards:

    datasets.load_dataset("webdataset", data_files={"train": urls}, split="train", features=hf_features(urls))

Video and frame fields stay undecoded (`{"path", "bytes"}`); decoding them needs torchcodec, which this project
does not use.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa

from pipeline.loader import shards as loader_shards
from schemas import sample as sample_schema


def hf_features(urls: Sequence[str]):
    """Features covering every sample of `urls` (their JSON documents are read; video data is skipped)."""
    import datasets

    docs, fields = [], set()
    for url in urls:
        for sample in loader_shards.scan_shard(url):
            docs.append(sample.doc)
            fields.update(f for f in sample.members if f != sample_schema.JSON_FIELD)
    doc_type = pa.Table.from_pylist(docs).schema
    features = datasets.Features.from_arrow_schema(pa.schema([pa.field(sample_schema.JSON_FIELD,
                                                                       pa.struct(list(doc_type)))]))
    for name in sorted(fields):
        ext = name.rsplit(".", 1)[-1].lower()
        if ext in sample_schema.VIDEO_EXTENSIONS:
            features[name] = datasets.Video(decode=False)
        elif ext == "jpg":  # sampled frames of a `frames` payload
            features[name] = datasets.Image(decode=False)
        else:
            features[name] = datasets.Value("binary")
    features["__key__"] = datasets.Value("string")
    features["__url__"] = datasets.Value("string")
    return features

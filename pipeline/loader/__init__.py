"""The streaming loader trainers import: `from pipeline.loader import LongVidDataset` (pipeline/loader/dataset.py),
with shard listing, decoding, mixture reading and the WebDataset stream in their own modules."""

from pipeline.loader.dataset import LongVidDataset

__all__ = ["LongVidDataset"]

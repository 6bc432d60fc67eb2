"""Options of the streaming loader (pipeline.loader.dataset.LongVidDataset), validated with key-precise errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from schemas.config import ConfigError
from schemas.mixture import TASKS
from schemas.sample import FRAMES_STAGE_KEY

# What an item carries besides the text: decoded frames, the precomputed HiCo clip tokens, or both.
PAYLOADS = ("frames", "tokens", "both")
MIXTURE_WEIGHTS = "mixture"  # task_weights read from the stage mixture's weights.json
# Where `frames` come from. auto: the sample's JPEG frames (shard.payload=frames) when they are exactly the item's
# planned frames, else the video; video: always decode the video; jpeg: always the JPEGs (an error where they
# are not the item's frames).
FRAMES_SOURCES = ("auto", "video", "jpeg")
# The per-sample JSON key naming the stage whose frames the sample carries as JPEGs (schemas.sample). Shards
# that lack it are matched by JPEG count against the sampling plans.
SAMPLE_FRAMES_STAGE_KEY = FRAMES_STAGE_KEY


@dataclass(frozen=True)
class LoaderOptions:
    stage: str  # curriculum stage whose sampling plan (and mixture, and HiCo tokens) the items follow
    tasks: Optional[tuple[str, ...]] = None  # mixture task families to yield; None: every task the mixture has
    # None: every record once per epoch; "mixture": the stage's weights.json; {task: weight}: these. Records of a
    # task are repeated or thinned so that task makes up its normalised weight of the stream.
    task_weights: Union[None, str, dict] = None
    payload: str = "frames"
    shuffle_shards: bool = True  # reshuffled every epoch from (seed, epoch)
    shuffle_buffer: int = 256  # items held for the sample shuffle; 0 or 1: no sample shuffle
    seed: int = 0
    resample: bool = False  # draw shards with replacement, per rank, instead of one pass over the rank's share
    epoch_length: Optional[int] = None  # items per rank and epoch; required with resample, a cap otherwise
    rank: Optional[int] = None  # None: torch.distributed when initialised, else $RANK, else 0
    world_size: Optional[int] = None  # None: torch.distributed when initialised, else $WORLD_SIZE, else 1
    decode_threads: int = 1  # decord threads per DataLoader worker
    frames_source: str = "auto"  # one of FRAMES_SOURCES

    @property
    def wants_frames(self) -> bool:
        return self.payload in ("frames", "both")

    @property
    def wants_tokens(self) -> bool:
        return self.payload in ("tokens", "both")


def validate(opts: LoaderOptions) -> LoaderOptions:
    if not opts.stage:
        raise ConfigError("stage", "empty", "name a curriculum stage, e.g. stage3")
    if opts.payload not in PAYLOADS:
        raise ConfigError("payload", f"{opts.payload!r} is not supported", f"use one of {', '.join(PAYLOADS)}")
    for task in opts.tasks or ():
        if task not in TASKS:
            raise ConfigError("tasks", f"unknown task {task!r}", f"use any of {', '.join(TASKS)}")
    if opts.tasks is not None and not opts.tasks:
        raise ConfigError("tasks", "empty", "name at least one task, or pass None for every task")
    if isinstance(opts.task_weights, str) and opts.task_weights != MIXTURE_WEIGHTS:
        raise ConfigError("task_weights", f"{opts.task_weights!r} is not supported",
                          f"use None, {MIXTURE_WEIGHTS!r} (weights.json) or a {{task: weight}} mapping")
    if isinstance(opts.task_weights, dict):
        for task, weight in opts.task_weights.items():
            if task not in TASKS:
                raise ConfigError(f"task_weights.{task}", "unknown task", f"use any of {', '.join(TASKS)}")
            if not isinstance(weight, (int, float)) or weight < 0:
                raise ConfigError(f"task_weights.{task}", f"{weight!r} is not a number >= 0", "use a weight >= 0")
        if not any(opts.task_weights.values()):
            raise ConfigError("task_weights", "all weights are 0", "give at least one task a positive weight")
    if opts.shuffle_buffer < 0:
        raise ConfigError("shuffle_buffer", f"{opts.shuffle_buffer} is negative", "use 0 (off) or a positive size")
    if opts.epoch_length is not None and opts.epoch_length <= 0:
        raise ConfigError("epoch_length", f"{opts.epoch_length} is not positive", "use a positive item count")
    if opts.resample and opts.epoch_length is None:
        raise ConfigError("epoch_length", "missing with resample=True (the stream would never end)",
                          "set epoch_length to the items each rank yields per epoch")
    if opts.world_size is not None and opts.world_size < 1:
        raise ConfigError("world_size", f"{opts.world_size} is below 1", "use the number of training processes")
    if opts.rank is not None and (opts.rank < 0 or (opts.world_size is not None and opts.rank >= opts.world_size)):
        raise ConfigError("rank", f"{opts.rank} is outside [0, world_size)", "use 0 .. world_size - 1")
    if opts.frames_source not in FRAMES_SOURCES:
        raise ConfigError("frames_source", f"{opts.frames_source!r} is not supported",
                          f"use one of {', '.join(FRAMES_SOURCES)}")
    if opts.frames_source == "jpeg" and not opts.wants_frames:
        raise ConfigError("frames_source", f"'jpeg' with payload={opts.payload!r}, which yields no frames",
                          "use payload='frames' or 'both', or leave frames_source at 'auto'")
    if opts.decode_threads < 0:
        raise ConfigError("decode_threads", f"{opts.decode_threads} is negative", "use 1 (or 0: decord's default)")
    return opts

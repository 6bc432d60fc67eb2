"""The backend interface: prompts + sampled frames + timestamps in, text out, batched.

Every backend loads a local checkpoint directory once (per Ray actor) and answers `generate(requests)`. What the
model sees before the question is the timestamp sentence and a newline (schemas.sampling.video_question) for
the frames given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

import numpy as np

from compressors.weights_hash import directory_sha256


@dataclass
class GenerationParams:
    max_new_tokens: int = 256
    do_sample: bool = False  # greedy by default
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def as_dict(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


@dataclass
class Request:
    """One generation: `prompt` is the user text (question/instruction) without `<image>` or timestamp prompt."""

    prompt: str
    frames: Optional[np.ndarray] = None  # uint8 [T, H, W, 3], the sampled frames in order
    timestamps_s: Sequence[float] = ()  # one per frame
    duration_s: float = 0.0  # of the whole video, or of the clip when frames come from a window
    video_id: str = ""
    hico_tokens: Optional[np.ndarray] = None  # float16 [n_clips, 64, C] precomputed tokens (hico_mllm only)
    system: Optional[str] = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BackendInfo:
    """Provenance recorded on every annotation row."""

    backend: str  # "transformers" | "hico_mllm"
    model: str  # checkpoint path or id
    weights_sha256: str  # content hash of the checkpoint's weight files (checkpoint_sha256)
    random_init: bool = False  # tiny random-weight test/demo checkpoints say so


class Backend(Protocol):
    info: BackendInfo
    params: GenerationParams

    def generate(self, requests: Sequence[Request]) -> list[str]:
        """One decoded answer per request (special tokens stripped), in request order."""
        ...


def checkpoint_sha256(directory: str) -> str:
    """Content hash of a checkpoint directory's weight files (compressors.weights_hash.directory_sha256, cached per
    machine by path, size and mtime)."""
    return directory_sha256(directory)

"""Backend 1: any local transformers-native video-capable checkpoint (Qwen2.5-VL, Qwen2-VL, LLaVA-OneVision, ...).

Loads `AutoProcessor` + `AutoModelForImageTextToText` from a local directory (`local_files_only=True`, nothing is
downloaded) and answers batches of `Request`s:

* each request becomes one chat: an optional system turn, then one user turn holding the video (when the request has
  frames) followed by the text `video_question(prompt, duration, T)` (schemas.sampling) -- the timestamp sentence,
  a newline, then the question, as VideoChat-Flash trains
  (DESIGN.md, "Timestamp prompt"). Requests without frames (video-level summaries, LLM-driven QA from captions) are
  plain text turns with no timestamp prompt;
* the prompt text comes from the processor's own chat template; the frames go to the processor's video processor as
  an already-sampled uint8 [T, H, W, 3] array (`do_sample_frames=False`: the pipeline chose the frames), together with
  `video_metadata` whose `timestamps` are the request's frame times and whose `sampled_fps` is T / duration, so
  families that encode time (Qwen2.5-VL's absolute-time M-RoPE, Qwen3-VL's per-frame timestamps) see the real times;
* `model.generate` runs in batches of `batch_size` with left padding, greedy unless `params.do_sample`, at most
  `params.max_new_tokens` new tokens, seeded with `params.seed` before every batch; only the new tokens are decoded,
  with special tokens skipped.

Decoding settings not covered by `GenerationParams` (e.g. a `repetition_penalty` in the checkpoint's
generation_config.json) are kept from the checkpoint; the sampling knobs (`temperature`, `top_p`, `top_k`) are
always those of `GenerationParams`.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Optional, Sequence

import numpy as np

from annotators.backends.base import BackendInfo, GenerationParams, Request, checkpoint_sha256
from compressors.dtypes import torch_dtype
from schemas.sampling import video_question

RANDOM_INIT_MARKER = "longvid_tiny.json"  # written by annotators.tiny_transformers_vlm next to random weights
_METADATA_FPS = 1000.0  # metadata time base: frame "indices" are milliseconds, so timestamps keep ms precision


def _torch_dtype(dtype: str):
    """`auto` stays `auto` here: transformers then loads the checkpoint in its own dtype."""
    return "auto" if dtype == "auto" else torch_dtype(dtype)


def _random_init(checkpoint_dir: str) -> bool:
    path = os.path.join(checkpoint_dir, RANDOM_INIT_MARKER)
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            return bool(json.load(f).get("random_init", True))
    except (OSError, ValueError):
        return True  # a marker that cannot be read still marks the checkpoint as a test one


class TransformersBackend:
    """`annotators.backends.base.Backend` over a local transformers checkpoint directory."""

    def __init__(self, checkpoint_dir: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 4,
                 params: GenerationParams | None = None, attn_implementation: Optional[str] = None,
                 processor_kwargs: Optional[dict] = None, cpu_threads: Optional[int] = None):
        checkpoint_dir = os.fspath(checkpoint_dir)
        if not os.path.isdir(checkpoint_dir):
            raise FileNotFoundError(f"transformers checkpoint directory not found: {checkpoint_dir} "
                                    "(give a local directory holding config.json, the weights and the processor files)")
        if not os.path.isfile(os.path.join(checkpoint_dir, "config.json")):
            raise FileNotFoundError(f"no config.json in transformers checkpoint directory {checkpoint_dir}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        torch_dtype = _torch_dtype(dtype)

        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if cpu_threads is not None and device == "cpu":
            # process-wide: tiny models run fastest on one thread, and a Ray actor should match its num_cpus
            torch.set_num_threads(max(int(cpu_threads), 1))

        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.params = params or GenerationParams()
        # extra keyword arguments for every processor call, e.g. {"size": {...}} to bound video resolution
        self.processor_kwargs = dict(processor_kwargs or {})
        self.info = BackendInfo("transformers", checkpoint_dir, checkpoint_sha256(checkpoint_dir),
                                random_init=_random_init(checkpoint_dir))

        self.processor = AutoProcessor.from_pretrained(checkpoint_dir, local_files_only=True)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError(f"the processor in {checkpoint_dir} has no tokenizer")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.video_token = getattr(self.processor, "video_token", None)
        video_processor = getattr(self.processor, "video_processor", None)
        self._packs_videos = "video_grid_thw" in (getattr(video_processor, "model_input_names", None) or ())
        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError(f"the processor in {checkpoint_dir} has no chat template (chat_template.jinja)")

        load_kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch_dtype}
        if attn_implementation:
            load_kwargs["attn_implementation"] = attn_implementation
        if device != "cpu":
            load_kwargs["device_map"] = {"": device}
        self.model = AutoModelForImageTextToText.from_pretrained(checkpoint_dir, **load_kwargs).eval()
        if device == "cpu":
            self.model.to("cpu")
        self._torch = torch

    # ------------------------------------------------------------------ prompt
    def user_text(self, request: Request) -> str:
        """The user text: the timestamp prompt for the frames given (if any), then the question."""
        if request.frames is None:
            return request.prompt
        return video_question(request.prompt, self._duration(request), len(request.frames))

    def conversation(self, request: Request) -> list[dict]:
        """The chat for one request: optional system turn, then one user turn (video block first, then text)."""
        messages: list[dict] = []
        if request.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
        content: list[dict] = []
        if request.frames is not None:
            content.append({"type": "video"})
        content.append({"type": "text", "text": self.user_text(request)})
        messages.append({"role": "user", "content": content})
        return messages

    def render(self, request: Request) -> str:
        """The prompt string the model sees before video-placeholder expansion (the processor's chat template)."""
        self._check_request(request)
        return self.processor.apply_chat_template(self.conversation(request), add_generation_prompt=True,
                                                  tokenize=False)

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[Request]) -> list[str]:
        """One decoded answer per request (special tokens skipped, surrounding whitespace stripped), in order."""
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                for ids in self.generate_tokens(requests)]

    def generate_tokens(self, requests: Sequence[Request]) -> list[list[int]]:
        """The new token ids per request (up to and including the first end-of-sequence token), in order."""
        requests = list(requests)
        out: list[Optional[list[int]]] = [None] * len(requests)
        for group in self._groups(requests):
            for start in range(0, len(group), self.batch_size):
                chunk = group[start:start + self.batch_size]
                for i, ids in zip(chunk, self._generate_batch([requests[i] for i in chunk])):
                    out[i] = ids
        return out  # type: ignore[return-value]

    def _groups(self, requests: list[Request]) -> list[list[int]]:
        """Request indices to batch together. Families whose video processor packs variable-length videos into one
        sequence (Qwen-VL: `video_grid_thw`) batch in request order; others (e.g. LLaVA-OneVision stacks videos into
        one [B, T, C, H, W] tensor) batch videos of equal frame count together, text-only requests apart."""
        if self._packs_videos:
            return [list(range(len(requests)))]
        groups: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(0 if req.frames is None else len(req.frames), []).append(i)
        return list(groups.values())

    def _generate_batch(self, batch: list[Request]) -> list[list[int]]:
        torch = self._torch
        texts, videos, metadata = [], [], []
        for req in batch:
            texts.append(self.render(req))
            if req.frames is not None:
                videos.append(np.ascontiguousarray(req.frames))
                metadata.append(self._video_metadata(req))
        kwargs: dict[str, Any] = {"padding": True, "padding_side": "left", "return_tensors": "pt"}
        if videos:
            kwargs.update(videos=videos, video_metadata=metadata, do_sample_frames=False,
                          input_data_format="channels_last")
        kwargs.update(self.processor_kwargs)
        inputs = self.processor(text=texts, **kwargs).to(self.model.device)

        torch.manual_seed(self.params.seed)
        with torch.inference_mode():
            generated = self.model.generate(**inputs, generation_config=self._generation_config())
        new_tokens = generated[:, inputs["input_ids"].shape[1]:].tolist()
        eos = self._eos_ids()
        result = []
        for row in new_tokens:
            cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            result.append(row[:cut])
        return result

    def _generation_config(self):
        gc = copy.deepcopy(self.model.generation_config)
        p = self.params
        gc.max_new_tokens = int(p.max_new_tokens)
        gc.max_length = None
        gc.do_sample = bool(p.do_sample)
        gc.num_beams = 1
        if p.do_sample:
            gc.temperature, gc.top_p, gc.top_k = float(p.temperature), float(p.top_p), None
        else:
            gc.temperature = gc.top_p = gc.top_k = None
        if gc.pad_token_id is None:
            gc.pad_token_id = self.tokenizer.pad_token_id
        if gc.eos_token_id is None:
            gc.eos_token_id = self.tokenizer.eos_token_id
        return gc

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        ids = set(eos) if isinstance(eos, (list, tuple)) else {eos}
        return {int(i) for i in ids if i is not None}

    # ------------------------------------------------------------------ frames
    def _check_request(self, request: Request) -> None:
        for token in (getattr(self.processor, "video_token", None), getattr(self.processor, "image_token", None)):
            if token and (token in request.prompt or token in (request.system or "")):
                raise ValueError(f"request {request.video_id!r}: the prompt contains the model's placeholder token "
                                 f"{token!r}; the backend adds the video placeholder itself")
        self._check_frames(request)

    @staticmethod
    def _check_frames(request: Request) -> None:
        f = request.frames
        if f is None:
            return
        if not isinstance(f, np.ndarray) or f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] < 1:
            shape = getattr(f, "shape", type(f).__name__)
            raise ValueError(f"request {request.video_id!r}: frames must be a uint8 array [T, H, W, 3] with T >= 1, "
                             f"got {shape}")
        if f.dtype != np.uint8:
            raise ValueError(f"request {request.video_id!r}: frames must be uint8, got {f.dtype}")
        if request.timestamps_s and len(request.timestamps_s) != f.shape[0]:
            raise ValueError(f"request {request.video_id!r}: {len(request.timestamps_s)} timestamps for "
                             f"{f.shape[0]} frames")

    @staticmethod
    def _duration(request: Request) -> float:
        if request.duration_s and request.duration_s > 0:
            return float(request.duration_s)
        raise ValueError(f"request {request.video_id!r} has frames but no duration_s (> 0); the timestamp prompt "
                         "needs the video's (or clip's) duration in seconds")

    def _video_metadata(self, request: Request) -> dict:
        """Metadata for already-sampled frames: `timestamps` are the frame times, `sampled_fps` is T / duration."""
        n = len(request.frames)
        duration = self._duration(request)
        times = list(request.timestamps_s) or [(i + 0.5) * duration / n for i in range(n)]
        total = max(int(round(duration * _METADATA_FPS)), 1)
        return {"total_num_frames": total, "fps": _METADATA_FPS, "duration": duration,
                "frames_indices": [int(round(t * _METADATA_FPS)) for t in times],
                "height": int(request.frames.shape[1]), "width": int(request.frames.shape[2])}

    def __repr__(self) -> str:
        return (f"TransformersBackend({self.checkpoint_dir!r}, device={self.device!r}, dtype={self.dtype!r}, "
                f"batch_size={self.batch_size}, random_init={self.info.random_init})")

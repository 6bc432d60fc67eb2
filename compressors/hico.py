"""Frames → HiCo clip tokens: preprocess, group into clips, encode with the video encoder, merge to 16 tokens per
frame. The one code path used by the `hico` stage and by annotators that compute tokens online. With the defaults
(PIL resize, float32 merge) the pixels are bit-identical to VideoChat-Flash's image processor and the merge is the
connector's, computed in float32; ``merge_dtype="bfloat16"`` reproduces the connector of a model run in bfloat16."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from compressors.encoder.checkpoint import LoadReport
from compressors.encoder.config import VideoEncoderConfig, encoder_id
from compressors.encoder.model import UMTVideoEncoder
from compressors.preprocess import clip_batch, plan_clips, preprocess_frames
from compressors.token_merging import merge_clip_tokens


@dataclass
class ClipTokens:
    tokens: np.ndarray  # float16 [n_clips, tokens_per_clip, C]
    positions: list[list[int]]  # per clip, positions into the sampled-frame list
    padded: list[bool]


class ClipEncoder:
    def __init__(self, model: UMTVideoEncoder, config: VideoEncoderConfig, report: LoadReport,
                 tokens_per_frame: int = 16, batch_clips: int = 8, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, merge_dtype: str = "float32", resize: str = "pil"):
        self.model, self.config, self.report = model, config, report
        self.tokens_per_frame, self.batch_clips = tokens_per_frame, batch_clips
        self.device, self.dtype = torch.device(device), dtype
        self.merge_dtype, self.resize = merge_dtype, resize
        self.clip_len = config.num_frames
        self.encoder_id = encoder_id(config)

    @property
    def tokens_per_clip(self) -> int:
        return self.tokens_per_frame * self.clip_len

    @torch.inference_mode()
    def encode(self, frames: np.ndarray, size: int) -> ClipTokens:
        """frames: uint8 [N, H, W, 3] sampled frames in order; size: the square input resolution (224 / 448)."""
        specs = plan_clips(len(frames), self.clip_len)
        pixels = preprocess_frames(frames, size, device=self.device, dtype=self.dtype, resize=self.resize)
        clips = clip_batch(pixels, specs)
        out = []
        for start in range(0, clips.shape[0], self.batch_clips):
            features = self.model(clips[start:start + self.batch_clips])
            merged = merge_clip_tokens(features, self.tokens_per_clip, self.config.num_heads, self.merge_dtype)
            out.append(merged.to(torch.float16).cpu())
        tokens = torch.cat(out).numpy() if out else np.zeros((0, self.tokens_per_clip, self.config.width), np.float16)
        return ClipTokens(tokens, [list(s.positions) for s in specs], [s.padded for s in specs])


def clip_rows(video_id: str, stage: str, frame_indices: Sequence[int], timestamps_s: Sequence[float], fps: float,
              encoded: ClipTokens, encoder: ClipEncoder) -> list[dict]:
    """HICO table rows (without the token column) for one video's clips."""
    rows = []
    for k, (positions, padded) in enumerate(zip(encoded.positions, encoded.padded)):
        idx = [int(frame_indices[p]) for p in positions]
        rows.append({
            "video_id": video_id,
            "stage": stage,
            "clip_index": k,
            "frame_indices": idx,
            "t_start_s": float(timestamps_s[positions[0]]),
            "t_end_s": float(timestamps_s[positions[-1]]) + 1.0 / fps,
            "padded": padded,
            "encoder_id": encoder.encoder_id,
            "weights_sha256": encoder.report.weights_sha256,
            "random_init": encoder.report.random_init,
            "merge_dtype": encoder.merge_dtype,
            "resize": encoder.resize,
        })
    return rows

"""Public sampling API for trainers: `frame_indices`, `timestamp_prompt` (the rule itself lives in schemas.sampling,
the contract every package shares)."""

from schemas.sampling import SAMPLE_TYPES, frame_indices, num_frames_to_sample, plan, timestamp_prompt

__all__ = ["SAMPLE_TYPES", "frame_indices", "num_frames_to_sample", "plan", "timestamp_prompt"]

"""Public sampling API for trainers: `frame_indices`, `timestamp_prompt` (the rule itself lives in schemas.sampling,
the contract every package shares)."""

from schemas.sampling import (SAMPLE_TYPES, first_user_turn, frame_indices, num_frames_to_sample, plan,
                              timestamp_prompt, video_question)

__all__ = ["SAMPLE_TYPES", "first_user_turn", "frame_indices", "num_frames_to_sample", "plan", "timestamp_prompt",
           "video_question"]

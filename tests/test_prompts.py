"""The first human turn of a video sample is the text VideoChat-Flash trains on, wherever it is rendered: the
mixtures' inline prompt, the hico_mllm backend's user turn and the transformers backend's text.

``trained_first_turn`` transcribes the trainer: the dataset's value ``"<image>\\n" + question`` goes through
``preprocess_multimodal`` with the ``--time_msg short`` message ``"\\nThe video lasts for {duration:.2f} seconds, and
{T} frames are uniformly sampled from it. "``: the image token is replaced by itself + the message right-stripped +
one space.
"""

from __future__ import annotations

import pytest

from pipeline.mix.records import conversations
from pipeline.mix.select import Candidate, Sample, Turn
from schemas.sampling import first_user_turn, video_question


def trained_first_turn(question: str, duration: float, num_frames: int, value: str | None = None) -> str:
    value = "<image>\n" + question if value is None else value
    msg = f"\nThe video lasts for {duration:.2f} seconds, and {num_frames} frames are uniformly sampled from it. "
    return value.replace("<image>", "<image>" + msg.rstrip() + " ")


def test_the_issue_example_verbatim():
    assert first_user_turn("Describe the video.", 12.0, 8) == (
        "<image>\nThe video lasts for 12.00 seconds, and 8 frames are uniformly sampled from it. \nDescribe the video.")


@pytest.mark.parametrize("question, duration, frames", [
    ("Describe the video in detail.", 12.0, 8),
    ("What happens between 3.0 and 7.5 seconds?\nAnswer with the option's letter.", 3601.456, 512),
    ("How many distinct shots does the video consist of?", 0.995, 1),
])
def test_rendered_turns_equal_the_training_text(question, duration, frames):
    want = trained_first_turn(question, duration, frames)
    assert first_user_turn(question, duration, frames) == want
    assert "<image>\n" + video_question(question, duration, frames) == want
    # the mixtures: inline prompt writes the training text; with the trainer's own prompt only "<image>\n" + question
    sample = Sample("stage3", "r0", Candidate("qa_open", "vid", 0, [Turn("qa", "k", question, "an answer"),
                                                                   Turn("qa", "k2", "And then?", "more")]),
                    duration, list(range(frames)))
    inline = conversations(sample, inline_prompt=True)
    assert [t["value"] for t in inline] == [want, "an answer", "And then?", "more"]
    as_written = conversations(sample, inline_prompt=False)[0]["value"]
    assert trained_first_turn(question, duration, frames, value=as_written) == want  # after the trainer's insert

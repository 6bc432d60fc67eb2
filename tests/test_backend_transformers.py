"""Backend 1 (transformers) on a tiny random-weight Qwen2.5-VL checkpoint built on the fly, loaded through the same
AutoProcessor / AutoModelForImageTextToText path (local files only) that a real checkpoint takes."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded; loading is local_files_only anyway

import numpy as np
import pytest

from annotators.backends.base import GenerationParams, Request, checkpoint_sha256
from annotators.backends.transformers_backend import TransformersBackend
from annotators.tiny_transformers_vlm import MARKER_FILE, build_tiny_checkpoint
from pipeline.sampling import timestamp_prompt

MAX_NEW = 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return build_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny_qwen2_5_vl")), seed=0)


@pytest.fixture(scope="module")
def backend(checkpoint):
    import torch

    threads = torch.get_num_threads()
    # one thread: a tiny model gains nothing from more, and a busy CI box makes OpenMP threads spin and crawl
    yield TransformersBackend(checkpoint, device="cpu", dtype="float32", batch_size=4,
                              params=GenerationParams(max_new_tokens=MAX_NEW), cpu_threads=1)
    torch.set_num_threads(threads)


def _frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def requests() -> list[Request]:
    return [
        Request("What happens in the video?", frames=_frames(8, 48, 64, 1),
                timestamps_s=[0.5 + i for i in range(8)], duration_s=8.0, video_id="vid_a"),
        Request("How many times does the man open the door?", frames=_frames(5, 40, 40, 2),
                timestamps_s=[2.0 + 4 * i for i in range(5)], duration_s=20.0, video_id="vid_b",
                system="Answer briefly."),
        Request("Summarize these captions: a man opens the door. A dog runs into the garden."),
    ]


def test_checkpoint_is_a_transformers_native_video_model(checkpoint, backend):
    from transformers import AutoConfig

    names = set(os.listdir(checkpoint))
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", MARKER_FILE} <= names
    assert AutoConfig.from_pretrained(checkpoint, local_files_only=True).model_type == "qwen2_5_vl"
    assert type(backend.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(backend.processor).__name__ == "Qwen2_5_VLProcessor"
    assert backend.processor.video_processor is not None
    assert backend.tokenizer.padding_side == "left"


def test_info_reports_random_init_and_weights_hash(checkpoint, backend):
    assert backend.info.backend == "transformers"
    assert backend.info.model == checkpoint
    assert backend.info.random_init is True
    assert backend.info.weights_sha256 == checkpoint_sha256(checkpoint)


def test_generate_batch_of_three(backend, requests):
    out = backend.generate(requests)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)


def test_greedy_is_deterministic(backend, requests):
    assert backend.params.do_sample is False
    assert backend.generate(requests) == backend.generate(requests)


def test_max_new_tokens_bounds_generated_tokens(backend, requests):
    saved = backend.params
    try:
        backend.params = GenerationParams(max_new_tokens=3)
        ids = backend.generate_tokens(requests)
        texts = backend.generate(requests)
    finally:
        backend.params = saved
    assert all(1 <= len(row) <= 3 for row in ids)
    for row, text in zip(ids, texts):
        assert backend.tokenizer.decode(row, skip_special_tokens=True).strip() == text
    assert all(len(row) <= MAX_NEW for row in backend.generate_tokens(requests))


def test_batched_equals_one_by_one(checkpoint, backend, requests):
    batched = backend.generate(requests)
    singles = [backend.generate([r])[0] for r in requests]
    assert batched == singles
    assert backend.generate_tokens(requests) == [backend.generate_tokens([r])[0] for r in requests]
    # batches that split the request list (3 requests, batch_size 2) give the same answers, in request order
    saved = backend.batch_size
    try:
        backend.batch_size = 2
        assert backend.generate(requests) == batched
        assert backend.generate(requests[::-1]) == batched[::-1]
    finally:
        backend.batch_size = saved


def test_equal_frame_count_grouping_keeps_request_order(backend, requests):
    # the batching used for families that stack videos into one tensor (LLaVA-OneVision): videos of equal frame
    # count batch together, text-only apart; answers still come back in request order
    expected = backend.generate(requests)
    saved = backend._packs_videos
    try:
        backend._packs_videos = False
        assert backend._groups(requests + requests[:1]) == [[0, 3], [1], [2]]
        assert backend.generate(requests + requests[:1]) == expected + expected[:1]
    finally:
        backend._packs_videos = saved


def test_sampling_is_seeded(backend, requests):
    saved = backend.params
    try:
        backend.params = GenerationParams(max_new_tokens=MAX_NEW, do_sample=True, temperature=1.0, seed=7)
        assert backend.generate(requests) == backend.generate(requests)
    finally:
        backend.params = saved


def test_rendered_prompt_has_timestamp_prompt_once_before_question(backend, requests):
    video_token = backend.processor.video_token
    for req in requests[:2]:
        text = backend.render(req)
        ts = timestamp_prompt(req.duration_s, len(req.frames))
        assert text.count(ts) == 1
        assert ts + "\n" + req.prompt in text  # sentence, newline, question: the training text
        assert text.count(video_token) == 1
        assert text.index(video_token) < text.index(ts)
    assert ("The video lasts for 20.00 seconds, and 5 frames are uniformly sampled from it. \n"
            + requests[1].prompt) in backend.render(requests[1])
    assert "Answer briefly." in backend.render(requests[1])
    # text-only requests carry neither a video placeholder nor a timestamp prompt
    text_only = backend.render(requests[2])
    assert video_token not in text_only and "The video lasts for" not in text_only
    assert requests[2].prompt in text_only


def test_video_timing_reaches_the_processor(backend, requests):
    meta = backend._video_metadata(requests[1])
    from transformers.video_utils import VideoMetadata

    md = VideoMetadata(**meta)
    assert md.timestamps == pytest.approx(list(requests[1].timestamps_s))
    assert md.sampled_fps == pytest.approx(5 / 20.0)


def test_missing_checkpoint_dir_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint"):
        TransformersBackend(str(missing))


def test_bad_requests_are_rejected_with_clear_errors(backend):
    bad = Request("What happens?", frames=_frames(4, 32, 32, 3), video_id="vid_c")
    with pytest.raises(ValueError, match="vid_c"):
        backend.generate([bad])
    with pytest.raises(ValueError, match="uint8"):
        backend.render(Request("q", frames=np.zeros((4, 32, 32, 3), np.float32), duration_s=2.0))
    with pytest.raises(ValueError, match="placeholder"):
        backend.render(Request("look at " + backend.processor.video_token, video_id="vid_d"))
    with pytest.raises(ValueError, match="timestamps"):
        backend.render(Request("q", frames=_frames(4, 32, 32, 3), timestamps_s=[0.0, 1.0], duration_s=2.0))

"""The default frame preprocessing is bit-identical to VideoChat-Flash's ``UMTImageProcessor``.

The expected pixels are transcribed from the processor's steps (its ``preprocess``: ``resize(size, BICUBIC)`` of the
uint8 image with PIL, ``rescale(1/255)`` = float64 multiply then float32, ``normalize`` = ``(x - mean) / std`` in
float32 with mean/std cast to float32, channels first), once with plain PIL + numpy and once by composing
``transformers.image_transforms`` the way the processor does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from compressors.preprocess import preprocess_frames

UMT_MEAN = (0.485, 0.456, 0.406)
UMT_STD = (0.229, 0.224, 0.225)


def transcribed_processor(frame: np.ndarray, size: int) -> np.ndarray:
    resized = np.array(Image.fromarray(frame).resize((size, size), resample=Image.BICUBIC))  # [size, size, 3] uint8
    chw = resized.transpose(2, 0, 1)
    scaled = (chw.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array(UMT_MEAN, dtype=np.float32)
    std = np.array(UMT_STD, dtype=np.float32)
    return ((scaled.T - mean) / std).T


def processor_via_transformers(frame: np.ndarray, size: int) -> np.ndarray:
    from transformers.image_transforms import normalize, rescale, resize
    from transformers.image_utils import ChannelDimension, PILImageResampling

    first = ChannelDimension.FIRST
    x = resize(frame, size=(size, size), resample=PILImageResampling.BICUBIC, data_format=first)
    x = rescale(x, scale=1 / 255, data_format=first)
    return normalize(x, mean=UMT_MEAN, std=UMT_STD, data_format=first)


def video_frames(seed: int, n: int, height: int, width: int) -> np.ndarray:
    """Smooth-ish content with edges and saturated regions (values 0 and 255 hit the clamp of the resampler)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    frames = np.stack([np.asarray(Image.fromarray(c).resize((width, height), Image.BILINEAR)) for c in coarse])
    frames[:, : height // 5, : width // 5] = 255
    frames[:, -height // 6:, -width // 7:] = 0
    noise = rng.integers(-20, 21, size=frames.shape)
    return np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [224, 448])
@pytest.mark.parametrize("height, width", [(360, 640), (1080, 1920), (224, 224), (100, 150), (481, 271)])
def test_default_preprocessing_is_the_umt_image_processor(size, height, width):
    frames = video_frames(height + width, 3, height, width)
    got = preprocess_frames(frames, size)
    assert got.dtype == torch.float32 and got.shape == (3, 3, size, size)
    for k, frame in enumerate(frames):
        want = transcribed_processor(frame, size)
        assert np.array_equal(got[k].numpy(), want), f"frame {k}: pixels differ from the processor's"
    if (height, width) == (360, 640):
        assert np.array_equal(got[0].numpy(), processor_via_transformers(frames[0], size))


def test_model_dtype_is_a_cast_of_the_processor_output():
    frames = video_frames(1, 5, 180, 320)
    fp32 = preprocess_frames(frames, 224, chunk_size=2)
    assert torch.equal(preprocess_frames(frames, 224, dtype=torch.bfloat16, chunk_size=3), fp32.to(torch.bfloat16))


def test_torch_resize_is_not_identical():
    # Why it is not the default: antialiased torch bicubic on floats is not PIL's 8-bit resampling.
    frames = video_frames(2, 2, 360, 640)
    want = np.stack([transcribed_processor(f, 224) for f in frames])
    fast = preprocess_frames(frames, 224, resize="torch").numpy()
    assert not np.array_equal(fast, want)
    assert np.abs(fast - want).max() < 0.2  # a few 8-bit levels (1 level = 1/255/std ~ 0.017)
    with pytest.raises(ValueError, match="resize must be one of pil, torch"):
        preprocess_frames(frames, 224, resize="cv2")

"""The encoder's positional table at other resolutions and for single frames follows VideoChat-Flash's UMT tower.

Reference steps (``umt/vit.py``, transcribed here with plain Python and numpy): the pretraining table is the 1-D
sinusoid over the 4 x 14 x 14 positions of a 224 px clip (channel j: sin (even j) / cos (odd j) of
``pos / 10000 ** (2 * (j // 2) / C)``); a tower built for another image size resizes each frame's 14 x 14 grid with
bicubic interpolation (a = -0.75, half-pixel centres, edges clamped); a single frame (``use_image``) uses the first
frame's positions (the table of the first 196 positions, resized the same way).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compressors.encoder import UMTVideoEncoder, VideoEncoderConfig

WIDTH = 64  # a narrow tower is enough: the table is computed per channel


def pretraining_table(width: int, frames: int = 4, grid: int = 14) -> np.ndarray:
    table = np.zeros((frames * grid * grid, width))
    for pos in range(frames * grid * grid):
        for j in range(width):
            angle = pos / 10000 ** (2 * (j // 2) / width)
            table[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table.astype(np.float32).astype(np.float64).reshape(frames, grid, grid, width)


def _cubic(x: float, a: float = -0.75) -> float:
    x = abs(x)
    if x <= 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


def bicubic_resize(grid: np.ndarray, out: int) -> np.ndarray:
    """[n, n, C] -> [out, out, C], one output position at a time."""
    n = grid.shape[0]
    scale = n / out

    def taps(o: int) -> list[tuple[int, float]]:
        src = (o + 0.5) * scale - 0.5
        base = math.floor(src)
        frac = src - base
        return [(min(max(base + k, 0), n - 1), _cubic(frac - k)) for k in (-1, 0, 1, 2)]

    result = np.zeros((out, out, grid.shape[2]))
    for r in range(out):
        for c in range(out):
            for ri, wr in taps(r):
                for ci, wc in taps(c):
                    result[r, c] += wr * wc * grid[ri, ci]
    return result


def tower(img_size: int = 224) -> UMTVideoEncoder:
    return UMTVideoEncoder(VideoEncoderConfig.umt_large_videochat_flash(width=WIDTH, depth=2, num_heads=4,
                                                                        img_size=img_size))


@pytest.mark.parametrize("img_size", [224, 448])  # the config's img_size does not move the pretraining grid
def test_448px_table_interpolates_the_14x14_pretraining_table(img_size):
    base = pretraining_table(WIDTH)
    want = np.stack([bicubic_resize(base[t], 28) for t in range(4)]).reshape(4 * 28 * 28, WIDTH)
    got = tower(img_size).pos_embed_for(4, 28, 28, device="cpu", dtype=torch.float32).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    fresh_28x28 = pretraining_table(WIDTH, grid=28).reshape(-1, WIDTH)  # what building on the new grid would give
    assert np.abs(got - fresh_28x28).max() > 0.1


def test_224px_table_is_the_pretraining_table():
    got = tower().pos_embed_for(4, 14, 14, device="cpu", dtype=torch.float32).numpy()
    assert np.array_equal(got, pretraining_table(WIDTH).reshape(-1, WIDTH).astype(np.float32))


@pytest.mark.parametrize("grid", [14, 28])
def test_single_frame_uses_the_first_frames_positions(grid):
    first = pretraining_table(WIDTH)[0]
    want = (first if grid == 14 else bicubic_resize(first, grid)).reshape(-1, WIDTH)
    got = tower().pos_embed_for(1, grid, grid, device="cpu", dtype=torch.float32).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    # and the forward pass of a one-frame clip adds exactly that table
    model = tower()
    clip = torch.zeros(1, 1, 3, 16 * grid, 16 * grid)
    with torch.no_grad():
        embedded = model.embed(clip)[0] - model.patch_embed(clip)[0]
    np.testing.assert_allclose(embedded.numpy(), want, rtol=0, atol=2e-6)

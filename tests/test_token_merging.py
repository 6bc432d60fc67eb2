"""HiCo clip-level token merging (compressors/token_merging.py) against a deliberately naive reference.

The reference below shares no code with the library: plain Python loops over tokens, numpy float64 vectors, sizes
as Python floats, written straight from DESIGN.md ("HiCo clip-level compression"); only the ranking calls
``torch.argsort(descending=True)``, whose tie order the connector inherits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compressors.token_merging import bipartite_soft_matching_step, merge_clip_tokens, merge_schedule


# ----------------------------------------------------------------------------------------------- naive reference
def naive_merge_clip(clip: np.ndarray, target: int, heads: int) -> tuple[np.ndarray, list[float]]:
    """One clip [P, C] -> ([target, C] tokens, their sizes), one token at a time.

    Scores and averages in float64; like the library, tokens are stored as float32 between steps.
    """
    tokens = [np.array(row, dtype=np.float64) for row in clip]
    sizes = [1.0 for _ in tokens]
    dim = clip.shape[1] // heads
    while len(tokens) > target:
        p = len(tokens)
        r = p // 2 if p - target > p // 2 else p - target

        metrics = []
        for tok in tokens:
            m = np.zeros(dim)
            for h in range(heads):
                m = m + tok[h * dim:(h + 1) * dim]
            m = m / heads
            norm = math.sqrt(sum(float(v) * float(v) for v in m))
            metrics.append(m / norm)

        a_ids = [i for i in range(p) if i % 2 == 0]
        b_ids = [i for i in range(p) if i % 2 == 1]
        b_metrics = np.stack([metrics[j] for j in b_ids])
        best_b, best_score = [], []
        for i in a_ids:
            row = [float(s) for s in b_metrics @ metrics[i]]  # each entry: one independent dot product
            k_best = 0
            for k in range(1, len(row)):
                if row[k] > row[k_best]:  # strict: the first (lowest) B index wins a tie
                    k_best = k
            best_b.append(k_best)
            best_score.append(row[k_best])

        # The connector ranks with torch.argsort(descending=True): by descending score; the order among exact
        # ties is torch's own (index order up to 16 entries, not beyond), so the ranking uses that primitive.
        ranked = torch.tensor(best_score, dtype=torch.float64).argsort(descending=True).tolist()
        merged, kept = ranked[:r], ranked[r:]

        b_num = [tokens[j] * sizes[j] for j in b_ids]
        b_size = [sizes[j] for j in b_ids]
        for k in merged:
            i = a_ids[k]
            b_num[best_b[k]] = b_num[best_b[k]] + tokens[i] * sizes[i]
            b_size[best_b[k]] = b_size[best_b[k]] + sizes[i]

        new_tokens = [tokens[a_ids[k]] for k in kept]
        new_sizes = [sizes[a_ids[k]] for k in kept]
        for num, s in zip(b_num, b_size):
            new_tokens.append((num / s).astype(np.float32).astype(np.float64))
            new_sizes.append(s)
        tokens, sizes = new_tokens, new_sizes
    return np.stack(tokens), sizes


def naive_merge(features: torch.Tensor, target: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    outs, sizes = [], []
    for clip in features.float().numpy():
        tok, size = naive_merge_clip(clip, target, heads)
        outs.append(tok)
        sizes.append(size)
    return torch.tensor(np.stack(outs)), torch.tensor(sizes, dtype=torch.float64)


def library_merge_with_sizes(features: torch.Tensor, target: int, heads: int):
    x = features.float()
    size = torch.ones(x.shape[0], x.shape[1], 1)
    for r in merge_schedule(x.shape[1], target):
        x, size = bipartite_soft_matching_step(x, size, r, heads)
    return x, size


def assert_matches_naive(features: torch.Tensor, target: int, heads: int, atol: float = 1e-5) -> None:
    expected, expected_sizes = naive_merge(features, target, heads)
    tokens, sizes = library_merge_with_sizes(features, target, heads)
    torch.testing.assert_close(sizes.squeeze(-1).double(), expected_sizes, rtol=0, atol=0)
    torch.testing.assert_close(tokens.double(), expected, rtol=1e-5, atol=atol)
    out = merge_clip_tokens(features, target, heads)
    assert out.shape == (features.shape[0], target, features.shape[2])
    assert out.dtype == features.dtype
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=atol)


def palette_tokens(gen: torch.Generator, batch: int, num_tokens: int, dim: int, heads: int,
                   palette: int) -> torch.Tensor:
    """[batch, num_tokens, heads * dim] tokens copied from a few colours: many exact duplicates, hence exact ties.

    A colour's head average is ``c * s`` (``c`` in 1..4, ``s`` a sign pattern, no two colours (anti)parallel) and
    ``dim`` is 4 or 16, so its normalised metric is +-1/2 or +-1/4: every score between colours is exact in any
    implementation (all self-scores are exactly 1 and ties stay ties), and small-integer values keep the averages of
    duplicates exact. Keep ``palette`` well below the target so that merges stay within colours.
    """
    assert dim in (4, 16) and palette <= 2 ** (dim - 1)
    scale = torch.randint(1, 5, (batch, palette, 1), generator=gen)
    codes = torch.stack([torch.randperm(2 ** (dim - 1), generator=gen)[:palette] for _ in range(batch)])
    bits = (codes.unsqueeze(-1) >> torch.arange(dim)) & 1  # last bit 0: distinct directions up to sign
    flip = torch.randint(0, 2, (batch, palette, 1), generator=gen) * 2 - 1
    sign = (bits * 2 - 1) * flip
    mean = (scale * sign).unsqueeze(2).expand(-1, -1, heads, -1).clone()  # [batch, palette, heads, dim]
    noise = torch.randint(-3, 4, (batch, palette, heads - 1, dim), generator=gen)
    mean[:, :, :-1] += noise  # the heads differ, their average stays c * s
    mean[:, :, -1] -= noise.sum(dim=2)
    colours = mean.reshape(batch, palette, heads * dim).float()
    pick = torch.randint(0, palette, (batch, num_tokens), generator=gen)
    return colours.gather(1, pick.unsqueeze(-1).expand(-1, -1, heads * dim))


# ---------------------------------------------------------------------------------------------------- schedule
def test_schedule_224px():
    assert merge_schedule(784, 64) == [392, 196, 98, 34]


def test_schedule_448px():
    assert merge_schedule(3136, 64) == [1568, 784, 392, 196, 98, 34]


def test_schedule_edge_cases():
    assert merge_schedule(64, 64) == []
    assert merge_schedule(20, 6) == [10, 4]
    assert merge_schedule(21, 5) == [10, 5, 1]
    assert merge_schedule(8, 4) == [4]
    assert merge_schedule(5, 1) == [2, 1, 1]
    for p, t in [(784, 64), (3136, 64), (21, 5), (1000, 1), (7, 6)]:
        sched = merge_schedule(p, t)
        assert sum(sched) == p - t
        remaining = p
        for r in sched:
            assert 0 < r <= remaining // 2
            remaining -= r


@pytest.mark.parametrize("num_tokens, counts", [
    (784, [784, 392, 196, 98, 64]),
    (3136, [3136, 1568, 784, 392, 196, 98, 64]),
])
def test_token_count_per_step(num_tokens, counts):
    x = torch.randn(2, num_tokens, 32, generator=torch.Generator().manual_seed(0))
    size = torch.ones(2, num_tokens, 1)
    seen = [x.shape[1]]
    for r in merge_schedule(num_tokens, 64):
        x, size = bipartite_soft_matching_step(x, size, r, num_heads=16)
        assert size.shape == (2, x.shape[1], 1)
        seen.append(x.shape[1])
    assert seen == counts
    assert torch.all(size.sum(dim=1) == num_tokens)


# ------------------------------------------------------------------------------------------ against the reference
@pytest.mark.parametrize("batch, num_tokens, channels, heads, target, seed", [
    (3, 784, 32, 4, 64, 0),
    (1, 3136, 16, 2, 64, 1),
    (5, 20, 12, 3, 6, 2),
    (4, 21, 8, 1, 5, 3),
    (2, 98, 64, 16, 16, 4),
    (2, 64, 8, 2, 64, 5),  # nothing to merge
])
def test_random_inputs_match_naive(batch, num_tokens, channels, heads, target, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, num_tokens, channels, generator=gen) + 0.3 * torch.randn(1, 1, channels, generator=gen)
    assert_matches_naive(x, target, heads)


@pytest.mark.parametrize("num_tokens, dim, heads, target, palette, seed", [
    (784, 16, 2, 64, 5, 10),
    (784, 4, 4, 64, 8, 11),
    (784, 16, 16, 64, 16, 12),
    (3136, 16, 2, 64, 12, 13),
    (20, 4, 2, 6, 2, 14),
    (33, 16, 1, 7, 3, 15),
])
def test_repeated_tokens_match_naive(num_tokens, dim, heads, target, palette, seed):
    batch = 3 if num_tokens < 3000 else 1
    x = palette_tokens(torch.Generator().manual_seed(seed), batch, num_tokens, dim, heads, palette)
    assert_matches_naive(x, target, heads)


def test_all_identical_tokens_tie_breaking():
    # Every score ties: every A token picks B 0, A tokens are ranked by index, the first r merge into B 0.
    x = torch.tensor([1.0, -2.0, 3.0, 0.5]).repeat(2, 12, 1)
    out, size = bipartite_soft_matching_step(x, torch.ones(2, 12, 1), 4, num_heads=2)
    assert out.shape == (2, 8, 4)
    assert torch.equal(out, x[:, :8])
    # kept A tokens 8, 10 (sizes 1), then B tokens 1 (absorbed A 0, 2, 4, 6) and 3, 5, 7, 9, 11
    assert size.squeeze(-1).tolist() == [[1, 1, 5, 1, 1, 1, 1, 1]] * 2
    assert_matches_naive(x, 3, 2)


def test_hand_checked_small_case():
    # 1 head, 2 channels. A = tokens 0, 2, 4; B = tokens 1, 3, 5 (normalised B: (1, 0), (.6, .8), (0, 1)).
    x = torch.tensor([[[1.0, 0.0],   # A0 (size 3): best B0, score 1
                       [2.0, 0.0],   # B0
                       [1.0, 1.0],   # A1: best B1, score .99
                       [3.0, 4.0],   # B1
                       [0.0, 1.0],   # A2: best B2, score 1 -- ties with A0, ranked after it (higher A index)
                       [0.0, 5.0]]])  # B2
    size = torch.tensor([[[3.0], [1.0], [1.0], [1.0], [1.0], [1.0]]])
    out, size = bipartite_soft_matching_step(x, size, 1, num_heads=1)
    # A0 merges into B0 with weights 3 : 1; kept A in score order (A2 before A1), then B0, B1, B2
    torch.testing.assert_close(out, torch.tensor([[[0.0, 1.0], [1.0, 1.0], [1.25, 0.0], [3.0, 4.0], [0.0, 5.0]]]))
    assert size.squeeze(-1).tolist() == [[1, 1, 4, 1, 1]]
    # next step: A = (0, 1), (1.25, 0) [size 4], (0, 5); B = (1, 1), (3, 4). Both (0, 1) and (0, 5) score .8
    # against (3, 4) (tie, ranked by index) and .707 against (1, 1); (1.25, 0) scores .707 against (1, 1).
    out2, size2 = bipartite_soft_matching_step(out, size, 2, num_heads=1)
    torch.testing.assert_close(out2, torch.tensor([[[1.25, 0.0], [1.0, 1.0], [1.0, 10.0 / 3.0]]]))
    assert size2.squeeze(-1).tolist() == [[4, 1, 3]]


def test_two_clusters():
    gen = torch.Generator().manual_seed(20)
    centres = torch.randn(2, 24, generator=gen) * 3
    labels = torch.randint(0, 2, (4, 200), generator=gen)
    # noise large enough that within-cluster scores are not float32 near-ties (those are decided by rounding)
    x = centres[labels] + 0.3 * torch.randn(4, 200, 24, generator=gen)
    assert_matches_naive(x, 16, 4)
    # far-apart clusters: tokens only merge within their cluster, so every output stays near a centre
    out = merge_clip_tokens(x, 16, num_heads=4)
    distance = torch.cdist(out, centres.expand(4, -1, -1)).min(dim=-1).values
    assert distance.max() < 3.0  # a single token lies ~0.3 * sqrt(24) ≈ 1.5 from its centre; centres are ~20 apart


def test_weighted_sum_and_sizes_preserved():
    gen = torch.Generator().manual_seed(30)
    x = torch.randn(3, 784, 32, generator=gen)
    tokens, sizes = library_merge_with_sizes(x, 64, 4)
    assert tokens.shape == (3, 64, 32) and sizes.shape == (3, 64, 1)
    assert torch.all(sizes.sum(dim=1) == 784)
    torch.testing.assert_close((tokens * sizes).sum(dim=1), x.sum(dim=1), rtol=1e-4, atol=1e-3)


def test_clips_are_independent():
    gen = torch.Generator().manual_seed(32)
    x = torch.randn(5, 196, 32, generator=gen)
    together = merge_clip_tokens(x, 16, num_heads=4)
    alone = torch.cat([merge_clip_tokens(x[i:i + 1], 16, num_heads=4) for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=0, atol=0)


def test_untouched_tokens_are_copied_exactly():
    gen = torch.Generator().manual_seed(31)
    x = torch.randn(2, 40, 16, generator=gen)
    out, size = bipartite_soft_matching_step(x, torch.ones(2, 40, 1), 5, num_heads=4)
    single = size.squeeze(-1) == 1
    # every size-1 output token is an input token, bit for bit
    for clip in range(2):
        for tok in out[clip][single[clip]]:
            assert (x[clip] == tok).all(dim=-1).any()


# ------------------------------------------------------------------------------------------------- dtypes, shapes
def test_bfloat16_input():
    gen = torch.Generator().manual_seed(40)
    x = torch.randn(3, 784, 64, generator=gen).to(torch.bfloat16)
    out = merge_clip_tokens(x, 64, num_heads=16)
    assert out.dtype == torch.bfloat16 and out.shape == (3, 64, 64)
    reference = merge_clip_tokens(x.float(), 64, num_heads=16)
    assert reference.dtype == torch.float32
    torch.testing.assert_close(out, reference.to(torch.bfloat16), rtol=0, atol=0)
    expected, _ = naive_merge(x.float(), 64, 16)
    torch.testing.assert_close(out.double(), expected, rtol=1.6e-2, atol=1e-2)


def test_float64_input_keeps_dtype():
    x = torch.randn(2, 20, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(41))
    out = merge_clip_tokens(x, 6, num_heads=2)
    assert out.dtype == torch.float64 and out.shape == (2, 6, 8)
    torch.testing.assert_close(out, merge_clip_tokens(x.float(), 6, num_heads=2).double())


def test_no_merge_returns_a_copy():
    x = torch.randn(2, 64, 16)
    out = merge_clip_tokens(x, 64, num_heads=4)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_default_heads_is_16():
    x = torch.randn(2, 196, 32, generator=torch.Generator().manual_seed(42))
    torch.testing.assert_close(merge_clip_tokens(x, 16), merge_clip_tokens(x, 16, num_heads=16), rtol=0, atol=0)
    assert not torch.equal(merge_clip_tokens(x, 16), merge_clip_tokens(x, 16, num_heads=1))


def test_gradient_flows_through_merge():
    x = torch.randn(2, 40, 8, generator=torch.Generator().manual_seed(43), requires_grad=True)
    merge_clip_tokens(x, 10, num_heads=2).sum().backward()
    # every input token ends up in exactly one output token, as a fraction size_in / size_out of it
    torch.testing.assert_close(x.grad.sum(dim=(1, 2)), torch.full((2,), 10.0 * 8))


# ---------------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_tokens", [784, 3136])
def test_cuda_matches_cpu(dtype, num_tokens):
    gen = torch.Generator().manual_seed(50)
    x = torch.randn(4, num_tokens, 1024, generator=gen).to(dtype)
    repeated = palette_tokens(gen, 2, num_tokens, 64, 16, 7).to(dtype)
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # the result must not depend on the trainer's TF32 setting
    try:
        for inp in (x, repeated):
            cpu = merge_clip_tokens(inp, 64)
            gpu = merge_clip_tokens(inp.cuda(), 64)
            assert gpu.device.type == "cuda" and gpu.dtype == dtype
            torch.testing.assert_close(gpu.cpu(), cpu)  # dtype-aware default tolerances
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32


# -------------------------------------------------------------------------------------------------------- errors
def test_errors():
    x = torch.randn(2, 20, 12)
    with pytest.raises(ValueError, match="divisible by num_heads=5"):
        merge_clip_tokens(x, 6, num_heads=5)
    with pytest.raises(ValueError, match="exceeds"):
        merge_clip_tokens(x, 21, num_heads=4)
    with pytest.raises(ValueError, match="positive"):
        merge_clip_tokens(x, 0, num_heads=4)
    with pytest.raises(ValueError, match="positive"):
        merge_clip_tokens(x, -3, num_heads=4)
    with pytest.raises(ValueError, match="num_heads"):
        merge_clip_tokens(x, 6, num_heads=0)
    with pytest.raises(ValueError, match=r"\[clips, tokens, channels\]"):
        merge_clip_tokens(x[0], 6, num_heads=4)
    with pytest.raises(ValueError, match="floating-point"):
        merge_clip_tokens(torch.ones(2, 20, 12, dtype=torch.int64), 6, num_heads=4)
    with pytest.raises(ValueError, match="must be an int"):
        merge_schedule(20, 6.0)
    with pytest.raises(ValueError, match="exceeds"):
        merge_schedule(5, 6)
    with pytest.raises(AssertionError):
        bipartite_soft_matching_step(x, torch.ones(2, 20, 1), 11, num_heads=4)
    with pytest.raises(ValueError, match="size"):
        bipartite_soft_matching_step(x, torch.ones(2, 20), 5, num_heads=4)

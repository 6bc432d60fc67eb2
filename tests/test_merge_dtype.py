"""`hico.merge_dtype`: the merge computed in float32 / bfloat16 / float16 equals the connector's merge run in that
dtype (VideoChat-Flash ``ToMe16_mlp_hd64.merge_tokens`` + ``bipartite_soft_matching`` + ``merge_wavg``).

The transcription below is written from the reference's steps, one token at a time in Python loops, every value
kept in the merge dtype: the head-averaged metric divided by its norm, each A token's scores against all B tokens,
its best B (first maximum), the ranking by ``torch.argsort(descending=True)`` (the connector's primitive, whose tie
order it inherits), then tokens multiplied by their sizes, merged A rows added onto their B row one after the other
in ranking order (as torch's CPU ``scatter_add`` does: in float32, rounded once), every row divided by its size,
output ``[kept A in ranking order, B]``.
"""

from __future__ import annotations

import pytest
import torch

from compressors.token_merging import merge_clip_tokens, merge_schedule


def transcribed_merge(clip: torch.Tensor, target: int, heads: int, dtype: torch.dtype) -> torch.Tensor:
    tokens = [row.to(dtype) for row in clip]
    sizes = [torch.ones((), dtype=dtype) for _ in tokens]
    for r in merge_schedule(len(tokens), target):
        metric = []
        for tok in tokens:
            m = tok.reshape(heads, -1).mean(dim=0)
            metric.append(m / m.norm())
        a_ids, b_ids = list(range(0, len(tokens), 2)), list(range(1, len(tokens), 2))
        b_matrix = torch.stack([metric[j] for j in b_ids])
        scores = torch.stack([metric[i] for i in a_ids]) @ b_matrix.T  # [nA, nB] in dtype
        best_b, best = [], []
        for k in range(len(a_ids)):
            row = scores[k].tolist()
            j_best = 0
            for j in range(1, len(row)):
                if row[j] > row[j_best]:
                    j_best = j
            best_b.append(j_best)
            best.append(scores[k, j_best])
        ranked = torch.stack(best).argsort(descending=True).tolist()
        merged, kept = ranked[:r], ranked[r:]
        weighted = [t * s for t, s in zip(tokens, sizes)]
        # scatter_add on the CPU: each B row accumulates in float32, starting from its own value, then is rounded
        # to the dtype once
        b_num = [weighted[j].float() for j in b_ids]
        b_size = [sizes[j].float() for j in b_ids]
        for k in merged:
            i = a_ids[k]
            b_num[best_b[k]] = b_num[best_b[k]] + weighted[i].float()
            b_size[best_b[k]] = b_size[best_b[k]] + sizes[i].float()
        b_num = [v.to(dtype) for v in b_num]
        b_size = [v.to(dtype) for v in b_size]
        num = [weighted[a_ids[k]] for k in kept] + b_num
        sizes = [sizes[a_ids[k]] for k in kept] + b_size
        tokens = [n / s for n, s in zip(num, sizes)]
    return torch.stack(tokens)


def clips(seed: int, batch: int, num_tokens: int, channels: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(1, 1, channels, generator=gen)
    return torch.randn(batch, num_tokens, channels, generator=gen) + 0.5 * shared


@pytest.mark.parametrize("merge_dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("num_tokens, channels, heads", [(784, 64, 16), (196, 32, 4)])
def test_merge_equals_transcription_in_its_dtype(merge_dtype, num_tokens, channels, heads):
    dtype = getattr(torch, merge_dtype)
    x = clips(7, 2, num_tokens, channels).to(dtype)  # features as the encoder hands them over in that dtype
    target = 64 if num_tokens == 784 else 16
    got = merge_clip_tokens(x, target, num_heads=heads, merge_dtype=merge_dtype)
    assert got.dtype == dtype
    for c in range(x.shape[0]):
        want = transcribed_merge(x[c], target, heads, dtype)
        assert torch.equal(got[c], want), f"clip {c}: {merge_dtype} merge differs from the transcription"


def test_bfloat16_merge_picks_other_pairs_than_float32():
    # The reason the key exists: the released model merges in bfloat16, and that is not the float32 result rounded.
    x = clips(8, 2, 784, 64).to(torch.bfloat16)
    in_bf16 = merge_clip_tokens(x, 64, num_heads=16, merge_dtype="bfloat16")
    in_fp32 = merge_clip_tokens(x, 64, num_heads=16, merge_dtype="float32")
    assert not torch.equal(in_bf16, in_fp32)
    for c in range(2):
        assert torch.equal(in_bf16[c], transcribed_merge(x[c], 64, 16, torch.bfloat16))
        want_fp32 = transcribed_merge(x[c], 64, 16, torch.float32)  # of the upcast features, then rounded
        assert torch.equal(in_fp32[c], want_fp32.to(torch.bfloat16))


def test_merge_dtype_is_checked():
    with pytest.raises(ValueError, match="merge_dtype must be one of float32, bfloat16, float16"):
        merge_clip_tokens(torch.randn(1, 20, 8), 6, num_heads=2, merge_dtype="float64")

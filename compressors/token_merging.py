"""HiCo clip-level token merging (ToMe bipartite soft matching), see DESIGN.md "HiCo clip-level compression".

A clip of 4 frames gives ``P`` encoder tokens (784 at 224 px, 3136 at 448 px); :func:`merge_clip_tokens` reduces
them to ``target_tokens`` (64) with repeated bipartite soft matching steps, computed as VideoChat-Flash's
``ToMe16_mlp_hd64`` connector computes them, operation for operation, in the merge dtype:

* schedule: while ``p - target > p // 2`` remove ``p // 2`` tokens; then remove ``p - target``;
* metric: the tokens viewed as ``[heads, C / heads]`` and averaged over heads, divided by its L2 norm;
* set A = even-indexed tokens, set B = odd-indexed tokens, cosine scores ``A @ B^T``;
* every A token's best B (``max`` over B); A tokens ordered by best score with ``argsort(descending=True)``; the
  first ``r`` are merged into their partner;
* merge: size-weighted average -- every token is multiplied by its size (initially 1), the merged A rows are
  ``scatter_add``-ed onto their B rows, sizes likewise, then every row is divided by its size;
* output order: ``[unmerged A tokens in that order, then all B tokens in their original order]``.

``merge_dtype`` (config ``hico.merge_dtype``) is the dtype of all of this: float32 (default, the reproducible
computation) or bfloat16 / float16, which reproduce the connector of a model run in that dtype (the released model
runs in bfloat16, and a bfloat16 merge picks other pairs than a float32 merge of the same features).

Ties: equal best scores are ordered by ``torch.argsort(descending=True)`` exactly as in the connector; that order is
not defined by torch (it is not index order on the CPU beyond 16 entries, and CUDA differs), so bit-identical tokens
need the same merge dtype, device type and torch version. In float32 exact ties do not occur with real features; in
bfloat16 they are frequent. The weighted sums use ``scatter_add`` as the connector does: on the CPU torch
accumulates each row in float32 and rounds once; on CUDA it adds atomically in the dtype in no fixed order, so a
bfloat16 merge on a GPU is not bit-reproducible even by the connector itself. The one deliberate difference from
the connector: an all-zero metric row is divided by 1e-12 instead of 0 (no NaN).

Everything is batched over clips (no Python loop over clips or tokens; one loop over the few merge steps) and runs
on the input's device.
"""

from __future__ import annotations

import torch

from compressors.dtypes import torch_dtypes

__all__ = ["MERGE_DTYPES", "merge_schedule", "bipartite_soft_matching_step", "merge_clip_tokens"]

# Guards the L2 normalisation of an all-zero metric row (plain division would give NaN scores and an undefined
# matching); any non-degenerate row is divided by its exact norm.
_NORM_EPS = 1e-12


def merge_schedule(num_tokens: int, target_tokens: int) -> list[int]:
    """Tokens removed at each merge step to go from ``num_tokens`` to ``target_tokens``.

    ``merge_schedule(784, 64) == [392, 196, 98, 34]``; ``[]`` when nothing is to be removed.
    """
    for name, value in (("num_tokens", num_tokens), ("target_tokens", target_tokens)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if target_tokens <= 0:
        raise ValueError(f"target_tokens must be positive, got {target_tokens}")
    if target_tokens > num_tokens:
        raise ValueError(f"target_tokens ({target_tokens}) exceeds the number of tokens ({num_tokens})")
    schedule: list[int] = []
    p = num_tokens
    while p - target_tokens > p // 2:
        schedule.append(p // 2)
        p -= p // 2
    if p > target_tokens:
        schedule.append(p - target_tokens)
    return schedule


def _head_averaged_metric(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, p, C] tokens -> L2-normalised [B, p, C / num_heads] matching metric in x's dtype (no gradient)."""
    batch, p, channels = x.shape
    metric = x.detach().reshape(batch, p, num_heads, channels // num_heads).mean(dim=2)
    return metric / metric.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)


def bipartite_soft_matching_step(x: torch.Tensor, size: torch.Tensor, r: int,
                                 num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One ToMe step: merge ``r`` tokens of ``x`` [B, p, C] with sizes ``size`` [B, p, 1] (both in the merge dtype).

    Returns the merged tokens [B, p - r, C] and their sizes [B, p - r, 1], ordered
    ``[unmerged A tokens by descending best score, then all B tokens]``.
    """
    if x.dim() != 3 or size.shape != (*x.shape[:2], 1):
        raise ValueError(f"expected x [B, p, C] and size [B, p, 1], got {tuple(x.shape)} and {tuple(size.shape)}")
    batch, p, channels = x.shape
    if num_heads <= 0 or channels % num_heads != 0:
        raise ValueError(f"channel count {channels} is not divisible by num_heads={num_heads}")
    assert 0 <= r <= p // 2, f"cannot remove r={r} of {p} tokens in one bipartite step (at most {p // 2})"
    if r == 0:
        return x, size

    with torch.no_grad():
        metric = _head_averaged_metric(x, num_heads)
        scores = metric[:, 0::2] @ metric[:, 1::2].transpose(-1, -2)  # [B, nA, nB] cosine scores
        best_score, best_b = scores.max(dim=-1)  # [B, nA]
        order = best_score.argsort(dim=-1, descending=True)  # the connector's (unstable) order, see module doc
        merged_a, kept_a = order[:, :r], order[:, r:]
        dst = best_b.gather(1, merged_a)  # [B, r] B partner of each merged A token

    def merge(t: torch.Tensor) -> torch.Tensor:
        a, b = t[:, 0::2], t[:, 1::2]
        width = t.shape[-1]
        kept = a.gather(1, kept_a.unsqueeze(-1).expand(-1, -1, width))
        src = a.gather(1, merged_a.unsqueeze(-1).expand(-1, -1, width))
        b = b.scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, width), src)
        return torch.cat([kept, b], dim=1)

    summed = merge(x * size)
    new_size = merge(size)
    return summed / new_size, new_size


MERGE_DTYPES = torch_dtypes()


def merge_clip_tokens(features: torch.Tensor, target_tokens: int, num_heads: int = 16,
                      merge_dtype: torch.dtype | str = torch.float32) -> torch.Tensor:
    """Merge each clip's tokens ``features`` [B, P, C] down to ``target_tokens``: returns [B, target_tokens, C].

    ``num_heads`` is the encoder's attention head count (UMT-L: 16); ``C`` must be divisible by it. The merge runs
    in ``merge_dtype`` (float32, bfloat16 or float16; see the module doc) on the input's device; the result has the
    input's dtype. Differentiable with respect to ``features`` (the matching itself is not).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must be a tensor [clips, tokens, channels], got {shape}")
    if not features.is_floating_point():
        raise ValueError(f"features must be a floating-point tensor, got {features.dtype}")
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if isinstance(merge_dtype, str):
        if merge_dtype not in MERGE_DTYPES:
            raise ValueError(f"merge_dtype must be one of {', '.join(MERGE_DTYPES)}, got {merge_dtype!r}")
        merge_dtype = MERGE_DTYPES[merge_dtype]
    if merge_dtype not in MERGE_DTYPES.values():
        raise ValueError(f"merge_dtype must be one of {', '.join(MERGE_DTYPES)}, got {merge_dtype}")
    batch, num_tokens, channels = features.shape
    if channels % num_heads != 0:
        raise ValueError(f"feature width {channels} is not divisible by num_heads={num_heads}; pass the encoder's "
                         f"attention head count (UMT-L: 16)")
    schedule = merge_schedule(num_tokens, target_tokens)
    if not schedule:
        return features.clone()

    x = features.to(merge_dtype)
    size = torch.ones(batch, num_tokens, 1, dtype=merge_dtype, device=features.device)
    for r in schedule:
        x, size = bipartite_soft_matching_step(x, size, r, num_heads)
    return x.to(features.dtype)

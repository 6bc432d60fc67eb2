"""HiCo clip-level token merging (ToMe bipartite soft matching), see DESIGN.md "HiCo clip-level compression".

A clip of 4 frames gives ``P`` encoder tokens (784 at 224 px, 3136 at 448 px); :func:`merge_clip_tokens` reduces
them to ``target_tokens`` (64) with repeated bipartite soft matching steps:

* schedule: while ``p - target > p // 2`` remove ``p // 2`` tokens; then remove ``p - target``;
* metric: the tokens viewed as ``[heads, C / heads]`` and averaged over heads (float32), L2-normalised;
* set A = even-indexed tokens, set B = odd-indexed tokens, cosine scores ``A @ B^T``;
* every A token's best B (argmax, lowest B index on ties); A tokens ordered by best score, descending, ties by
  lower A index (stable sort); the first ``r`` are merged into their partner;
* merge: size-weighted average (every token carries a size, initially 1, sizes add up across steps);
* output order: ``[unmerged A tokens in that order, then all B tokens in their original order]``.

Everything is batched over clips (no Python loop over clips or tokens; one loop over the few merge steps) and runs
on the input's device. Tokens, the matching metric and the weighted sums are float32 whatever the input dtype (the
result has the input dtype), as the issue asks: bfloat16 input gives the float32 result of its upcast values.
Near-ties (e.g. a static shot, where a padded clip repeats its last frame) are decided by float32 rounding, as they
are in the model's own connector.
"""

from __future__ import annotations

import torch

__all__ = ["merge_schedule", "bipartite_soft_matching_step", "merge_clip_tokens"]

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
    """[B, p, C] float32 tokens -> L2-normalised [B, p, C / num_heads] float32 matching metric (no gradient)."""
    batch, p, channels = x.shape
    metric = x.detach().reshape(batch, p, num_heads, channels // num_heads).mean(dim=2)
    return metric / metric.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)


def bipartite_soft_matching_step(x: torch.Tensor, size: torch.Tensor, r: int,
                                 num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One ToMe step: merge ``r`` tokens of ``x`` [B, p, C] (float32) with sizes ``size`` [B, p, 1] (float32).

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

    metric = _head_averaged_metric(x, num_heads)
    metric_a, metric_b = metric[:, 0::2], metric[:, 1::2]
    scores = torch.matmul(metric_a, metric_b.transpose(1, 2))  # [B, nA, nB] cosine scores
    best_score, best_b = scores.max(dim=-1)  # [B, nA]; the first (lowest) B index among equal maxima
    # Stable descending sort: equal scores keep ascending A index.
    order = torch.sort(best_score, dim=-1, descending=True, stable=True).indices  # [B, nA]
    merged_a, kept_a = order[:, :r], order[:, r:]

    x_a, x_b = x[:, 0::2], x[:, 1::2]
    size_a, size_b = size[:, 0::2], size[:, 1::2]
    dst = best_b.gather(1, merged_a)  # [B, r] B partner of each merged A token

    def rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))

    def scatter_rows(t: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return t.scatter_add(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]), src)

    # Size-weighted average: (size_b * b + sum(size_a * a)) / (size_b + sum(size_a)); sizes are exact integers.
    src_size = rows(size_a, merged_a)  # [B, r, 1]
    src_weighted = rows(x_a, merged_a) * src_size  # [B, r, C]
    new_size_b = scatter_rows(size_b, dst, src_size)
    new_x_b = scatter_rows(x_b * size_b, dst, src_weighted) / new_size_b

    out_x = torch.cat([rows(x_a, kept_a), new_x_b], dim=1)
    out_size = torch.cat([rows(size_a, kept_a), new_size_b], dim=1)
    return out_x, out_size


def merge_clip_tokens(features: torch.Tensor, target_tokens: int, num_heads: int = 16) -> torch.Tensor:
    """Merge each clip's tokens ``features`` [B, P, C] down to ``target_tokens``: returns [B, target_tokens, C].

    ``num_heads`` is the encoder's attention head count (UMT-L: 16); ``C`` must be divisible by it. Runs on the
    input's device; tokens, matching metric and weighted sums are float32 and the result
    has the input's dtype. Differentiable with respect to ``features`` (the matching itself is not).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must be a tensor [clips, tokens, channels], got {shape}")
    if not features.is_floating_point():
        raise ValueError(f"features must be a floating-point tensor, got {features.dtype}")
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    batch, num_tokens, channels = features.shape
    if channels % num_heads != 0:
        raise ValueError(f"feature width {channels} is not divisible by num_heads={num_heads}; pass the encoder's "
                         f"attention head count (UMT-L: 16)")
    schedule = merge_schedule(num_tokens, target_tokens)
    if not schedule:
        return features.clone()

    x = features.to(torch.float32)
    size = torch.ones(batch, num_tokens, 1, dtype=torch.float32, device=features.device)
    for r in schedule:
        x, size = bipartite_soft_matching_step(x, size, r, num_heads)
    return x.to(features.dtype)

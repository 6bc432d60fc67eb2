"""torch dtypes by the names a config gives (`hico.dtype`, `hico.merge_dtype`, `annotate.dtype`; the names are
schemas.config.DTYPES): one table, one rule for `auto` (bfloat16 on a GPU, float32 on the CPU). torch is imported
only when a dtype object is asked for, so a driver can resolve names without it."""

from __future__ import annotations

from schemas.config.sections import DTYPES, MERGE_DTYPES

AUTO = "auto"


def device_type(device) -> str:
    """"cuda" for "cuda", "cuda:1" or torch.device("cuda", 1); likewise "cpu", "mps"."""
    return getattr(device, "type", None) or str(device).split(":")[0]


def dtype_name(dtype: str, device) -> str:
    """The concrete dtype name of a configured one: `auto` becomes bfloat16 on a GPU, float32 elsewhere."""
    if dtype != AUTO:
        return dtype
    return "bfloat16" if device_type(device) == "cuda" else "float32"


def torch_dtypes() -> dict:
    """{name: torch dtype} of the concrete names (float32, bfloat16, float16)."""
    import torch

    return {name: getattr(torch, name) for name in MERGE_DTYPES}


def torch_dtype(dtype, device="cpu"):
    """The torch dtype of a configured name (`auto` resolved for `device`); a torch dtype is returned as it is."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    table = torch_dtypes()
    name = dtype_name(dtype, device)
    if name not in table:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    return table[name]


__all__ = ["AUTO", "device_type", "dtype_name", "torch_dtype", "torch_dtypes"]

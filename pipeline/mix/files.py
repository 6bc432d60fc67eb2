"""What is under `mixtures/`, and removal of what no configured stage references any more (the folder belongs to the
`mix` stage, so after a config change it still describes exactly the configured curriculum)."""

from __future__ import annotations

from pipeline.core.context import StageContext
from pipeline.io import storage
from schemas import layout


def listing(ctx: StageContext) -> set[str]:
    """Paths (relative to the output root) of every file under mixtures/, temporaries of killed runs excluded."""
    return {f"{layout.MIXTURES_DIR}/{rel}" for rel, _, _ in storage.list_committed(ctx.uri(layout.MIXTURES_DIR))}


def remove_stale(ctx: StageContext, keep: set[str]) -> int:
    """Delete every file under mixtures/ not in `keep`; returns how many went."""
    stale = sorted(listing(ctx) - keep)
    storage.remove_files([ctx.uri(rel) for rel in stale], prune_below=ctx.uri(layout.MIXTURES_DIR))
    return len(stale)

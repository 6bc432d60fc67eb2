"""Where this checkout lives, for child processes (Ray workers, the isolated probe worker) that must import it."""

from __future__ import annotations

import os

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pythonpath_with_project(current: str | None) -> str:
    """A PYTHONPATH value with the project root first, keeping what was there."""
    return PROJECT_ROOT if not current else f"{PROJECT_ROOT}{os.pathsep}{current}"

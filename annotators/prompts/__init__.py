"""Versioned prompt templates, one YAML file each (id, version, system, template). Code never inlines prompts."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional

import yaml

PROMPT_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Prompt:
    id: str
    version: int
    template: str
    system: Optional[str] = None

    def render(self, **values) -> str:
        return self.template.format(**values)


@functools.lru_cache(maxsize=None)
def load(prompt_id: str) -> Prompt:
    path = os.path.join(PROMPT_DIR, f"{prompt_id}.yaml")
    if not os.path.exists(path):
        known = sorted(n[:-5] for n in os.listdir(PROMPT_DIR) if n.endswith(".yaml"))
        raise KeyError(f"no prompt {prompt_id!r}; known: {', '.join(known)}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data.get("id") != prompt_id:
        raise ValueError(f"{path}: id {data.get('id')!r} does not match the file name")
    return Prompt(data["id"], int(data["version"]), data["template"], data.get("system"))

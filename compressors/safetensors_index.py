"""Lazy access to the tensors of one or more .safetensors files: keys and shapes from the headers, each tensor read
only when asked for, so a 15 GB checkpoint is never loaded whole. Used by the encoder's checkpoint loader and by the
hico_mllm annotator backend (sharded checkpoints)."""

from __future__ import annotations

from typing import Sequence

import torch

from schemas.errors import UsageError


class SafetensorsReadError(UsageError):
    """A file could not be opened as safetensors; `cause` is the reader's own exception."""

    def __init__(self, path: str, cause: BaseException):
        super().__init__(f"cannot read {path}: {cause}")
        self.path, self.cause = path, cause


class DuplicateKeyError(UsageError, ValueError):
    """A tensor key stands in two of the files."""

    def __init__(self, key: str, first: str, second: str):
        super().__init__(f"key {key!r} is in both {first} and {second}")
        self.key, self.first, self.second = key, first, second


class SafetensorsIndex:
    """Every tensor key of `paths` (unique across them), with its shape and tensor on demand."""

    def __init__(self, paths: Sequence[str]):
        from safetensors import safe_open

        self._handles = {}
        self.file_of: dict[str, str] = {}  # key -> path of the file holding it
        for path in paths:
            try:
                handle = safe_open(path, framework="pt", device="cpu")
            except Exception as exc:  # noqa: BLE001 - any reader failure names the file
                raise SafetensorsReadError(path, exc) from exc
            self._handles[path] = handle
            for key in handle.keys():
                if key in self.file_of:
                    raise DuplicateKeyError(key, self.file_of[key], path)
                self.file_of[key] = path

    def __contains__(self, key: str) -> bool:
        return key in self.file_of

    def keys(self) -> list[str]:
        return list(self.file_of)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self.file_of[key]].get_slice(key).get_shape())

    def tensor(self, key: str) -> torch.Tensor:
        return self._handles[self.file_of[key]].get_tensor(key)


__all__ = ["DuplicateKeyError", "SafetensorsIndex", "SafetensorsReadError"]

"""Loading encoder weights from a local checkpoint: recognising its layout (or stripping given prefixes), matching
its keys and shapes against the model, and refusing random weights unless they are allowed (see
:func:`load_encoder`)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from compressors.dtypes import torch_dtype
from compressors.encoder.config import VideoEncoderConfig, encoder_id
from compressors.encoder.model import UMTVideoEncoder, init_random_weights
from compressors.safetensors_index import SafetensorsIndex, SafetensorsReadError
from compressors.weights_hash import file_sha256
from schemas.errors import UsageError

log = logging.getLogger("compressors.encoder")

DEFAULT_KEY_PREFIXES = ()  # no prefixes given: recognise the checkpoint layout (CHECKPOINT_LAYOUTS)
# Where the UMT-L vision encoder sits in the checkpoints people have, most specific first: (layout name, key prefix).
CHECKPOINT_LAYOUTS = (
    ("llava_model", "model.vision_tower.vision_tower.encoder."),  # a full VideoChat-Flash (LLaVA) model
    ("llava_inner_model", "vision_tower.vision_tower.encoder."),  # that model's inner `model` saved alone
    ("vision_tower", "vision_tower.encoder."),  # the UMT vision tower module's own state dict
    ("umt_encoder", "encoder."),  # the standalone UMT-L encoder (UMT-L_f4_vision.pt)
    ("prefixed", "vision_tower."),  # this encoder's key names under `vision_tower.`
    ("bare", ""),  # this encoder's own key names
)
_ENCODER_KEY_STARTS = ("patch_embed.", "blocks.")  # keys only a vision encoder has
_WRAPPER_PREFIX = "module."  # DistributedDataParallel's wrapper, stripped before the layout is recognised
# Checkpoint key prefix -> our key prefix, applied after prefix stripping (UMT names its final norm this way).
KEY_ALIASES = {"vision_layernorm.": "norm."}
_WRAPPER_KEYS = ("model", "state_dict", "module")




class EncoderWeightsError(UsageError, RuntimeError):
    """The encoder cannot get real weights (no checkpoint, unreadable file, missing or mis-shaped keys)."""


@dataclass
class LoadReport:
    missing: list[str]
    unexpected: list[str]
    weights_sha256: str | None
    random_init: bool
    checkpoint: str | None
    unused: list[str] = field(default_factory=list)  # keys of blocks after feature_block (not built, not run)
    layout: str | None = None  # which CHECKPOINT_LAYOUTS entry (or which given prefixes) the weights came from

    def to_dict(self) -> dict:
        return asdict(self)


def _as_prefixes(key_prefix: str | Sequence[str] | None) -> tuple[str, ...]:
    if key_prefix is None:
        return ()
    if isinstance(key_prefix, str):
        return (key_prefix,) if key_prefix else ()
    return tuple(p for p in key_prefix if p)


def normalize_key(key: str, prefixes: Sequence[str]) -> str:
    """Strip any of ``prefixes`` from the front of ``key`` repeatedly, then apply :data:`KEY_ALIASES`."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix) and len(key) > len(prefix):
                key = key[len(prefix):]
                changed = True
    return _alias(key)


def detect_layout(keys: Iterable[str]) -> tuple[str, str]:
    """(layout name, key prefix) of the first :data:`CHECKPOINT_LAYOUTS` entry whose prefix holds encoder keys."""
    keys = list(keys)
    for name, prefix in CHECKPOINT_LAYOUTS:
        starts = tuple(prefix + s for s in _ENCODER_KEY_STARTS)
        if any(k.startswith(starts) for k in keys):
            return name, prefix
    known = ", ".join(f"{name} ({prefix}blocks.*)" for name, prefix in CHECKPOINT_LAYOUTS)
    raise EncoderWeightsError(f"no vision encoder keys found (first keys: {first_names(keys)}); known layouts: {known}. "
                              f"Give hico.encoder.key_prefixes for another layout")


def _alias(key: str) -> str:
    for old, new in KEY_ALIASES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _check_norm_source(raw: str, key: str) -> None:
    """Refuse to take a language model's final norm (``model.norm.*``) for the vision encoder's ``norm.*``."""
    if not key.startswith("norm."):
        return
    head = raw[:len(raw) - len(key)]
    if "vision_layernorm" in raw or head == "" or head.endswith("encoder."):
        return
    raise EncoderWeightsError(f"checkpoint key {raw!r} would load as the vision encoder's final norm {key!r}, but "
                              f"it is not an encoder key (a language model's final norm?). Leave "
                              f"hico.encoder.key_prefixes empty to recognise the layout, or give the encoder's own "
                              f"prefix")


def _unwrap(obj: Any) -> Mapping[str, Any]:
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None or any(isinstance(v, Tensor) for v in obj.values()):
            return obj
        obj = inner
    raise EncoderWeightsError(f"checkpoint does not hold a state dict (found {type(obj).__name__})")


class _Checkpoint:
    """Keys of a checkpoint plus lazy tensor access (safetensors is read per tensor, never whole)."""

    def __init__(self, path: Path):
        self.path = path
        self._index: SafetensorsIndex | None = None
        self._tensors: Mapping[str, Tensor] | None = None
        try:
            if path.suffix == ".safetensors":
                self._index = SafetensorsIndex([str(path)])
                self.keys = self._index.keys()
            else:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
                self._tensors = {k: v for k, v in _unwrap(state).items() if isinstance(v, Tensor)}
                self.keys = list(self._tensors)
        except EncoderWeightsError:
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure is a weights error with the path in it
            cause = exc.cause if isinstance(exc, SafetensorsReadError) else exc
            raise EncoderWeightsError(
                f"cannot read encoder checkpoint {path}: {type(cause).__name__}: {cause}. Expected a .safetensors "
                f"file or a torch .pt/.pth state dict loadable with weights_only=True") from cause

    def shape(self, key: str) -> tuple[int, ...]:
        if self._index is not None:
            return self._index.shape(key)
        return tuple(self._tensors[key].shape)

    def tensor(self, key: str) -> Tensor:
        if self._index is not None:
            return self._index.tensor(key)
        return self._tensors[key]


_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


class KeyCollision(UsageError, ValueError):
    """Two checkpoint keys name the same model weight after prefix stripping."""

    def __init__(self, first: str, second: str, key: str):
        self.first, self.second, self.key = first, second, key
        super().__init__(f"keys {first!r} and {second!r} both map to {key!r}")


@dataclass
class KeyMatch:
    """Checkpoint keys sorted against an encoder's state dict (see :func:`match_checkpoint_keys`)."""

    loaded: dict[str, Tensor] = field(default_factory=dict)  # model key -> tensor
    mismatched: list[tuple[str, str, list, list]] = field(default_factory=list)  # (raw, key, ckpt shape, model shape)
    unexpected: list[tuple[str, str]] = field(default_factory=list)  # (raw, key)
    unused: list[str] = field(default_factory=list)  # keys of blocks after feature_block


def match_checkpoint_keys(raw_keys: Iterable[str], to_key, shape_of, tensor_of, expected: Mapping[str, Tensor],
                          config: VideoEncoderConfig) -> KeyMatch:
    """Map checkpoint keys (`to_key`: raw -> model key) onto `expected`; loads tensors whose shapes fit.

    Raises KeyCollision when two raw keys map to one model key. Used by every loader of encoder weights.
    """
    match = KeyMatch()
    sources: dict[str, str] = {}
    for raw in raw_keys:
        key = to_key(raw)
        if key in sources:
            raise KeyCollision(sources[key], raw, key)
        sources[key] = raw
        if key in expected:
            shape = tuple(shape_of(raw))
            if shape != tuple(expected[key].shape):
                match.mismatched.append((raw, key, list(shape), list(expected[key].shape)))
            else:
                match.loaded[key] = tensor_of(raw)
            continue
        block = _BLOCK_KEY.match(key)
        if block and config.num_blocks_run <= int(block.group(1)) < config.depth:
            match.unused.append(key)
        else:
            match.unexpected.append((raw, key))
    return match


def first_names(names: Iterable[str], n: int = 5) -> str:
    """The first `n` of `names`, comma-separated, with how many more there are (for error messages)."""
    names = list(names)
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def load_encoder(checkpoint: str | os.PathLike | None, config: VideoEncoderConfig,
                 key_prefix: str | Sequence[str] | None = DEFAULT_KEY_PREFIXES, allow_random_init: bool = False,
                 device: torch.device | str = "cpu", dtype: torch.dtype | str = torch.float32,
                 seed: int = 0) -> tuple[UMTVideoEncoder, LoadReport]:
    """Build a :class:`UMTVideoEncoder` for ``config`` and load ``checkpoint`` into it.

    ``checkpoint``: a local ``.safetensors`` file, or a torch ``.pt/.pth`` file holding a state dict or a dict with a
    ``model`` / ``state_dict`` / ``module`` entry (loaded with ``weights_only=True``). With no ``key_prefix`` (the
    default) the layout is recognised (:data:`CHECKPOINT_LAYOUTS`: a full VideoChat-Flash model, the vision tower's
    own state dict, the standalone UMT-L encoder, or bare keys; a ``module.`` wrapper is dropped first), only keys
    under the tower's prefix are read, and ``report.layout`` names the layout. Given prefixes are stripped from the
    front of each key, repeatedly (``vision_tower.encoder.blocks.0...`` -> ``blocks.0...``); a key that would
    become the final ``norm`` without being an encoder key (e.g. an LLM's ``model.norm``) is refused. Keys of blocks
    after ``feature_block`` go to ``report.unused``; keys the model does not know go to ``report.unexpected``
    (logged, not fatal). A tensor whose shape disagrees with the model is always an error.

    Without a checkpoint, or with missing keys, this raises :class:`EncoderWeightsError` unless
    ``allow_random_init`` is true, in which case the model gets a seeded random init (``seed``) under whatever the
    checkpoint provides and ``report.random_init`` is True. The model comes back in eval mode, with
    ``requires_grad=False``, on ``device`` in ``dtype``.
    """
    dtype = torch_dtype(dtype)
    prefixes = _as_prefixes(key_prefix)
    layout = None
    with torch.device("meta"):
        model = UMTVideoEncoder(config)
    model = model.to_empty(device="cpu")  # assemble on the CPU (deterministic init), then move once
    expected = model.state_dict()

    missing: list[str] = list(expected)
    unexpected: list[str] = []
    unused: list[str] = []
    sha = None
    ckpt_str = None
    loaded: dict[str, Tensor] = {}

    if checkpoint is not None:
        path = Path(checkpoint)
        ckpt_str = str(checkpoint)
        if not path.is_file():
            raise EncoderWeightsError(f"encoder checkpoint not found: {path}")
        ckpt = _Checkpoint(path)
        sha = file_sha256(path)
        if prefixes:
            raw_keys, layout = ckpt.keys, f"prefixes {list(prefixes)}"

            def to_key(raw: str) -> str:
                key = normalize_key(raw, prefixes)
                _check_norm_source(raw, key)
                return key
        else:
            unwrapped = {k[len(_WRAPPER_PREFIX):] if k.startswith(_WRAPPER_PREFIX) else k: k for k in ckpt.keys}
            layout, tower = detect_layout(unwrapped)
            raw_keys = [raw for k, raw in unwrapped.items() if k.startswith(tower)]  # nothing outside the tower
            strip = {raw: k[len(tower):] for k, raw in unwrapped.items()}

            def to_key(raw: str) -> str:
                return _alias(strip[raw])
            log.info("encoder checkpoint %s: layout %s (keys under %r)", path, layout, tower)
        try:
            match = match_checkpoint_keys(raw_keys, to_key, ckpt.shape, ckpt.tensor, expected, config)
        except KeyCollision as e:
            raise EncoderWeightsError(
                f"encoder checkpoint {path}: keys {e.first!r} and {e.second!r} both map to {e.key!r} after "
                f"stripping prefixes {list(prefixes)}; pass a narrower key_prefix")
        loaded, unused = match.loaded, match.unused
        unexpected = [key for _, key in match.unexpected]
        mismatched = [f"{key}: checkpoint {shape} vs model {want}" for _, key, shape, want in match.mismatched]
        if mismatched:
            raise EncoderWeightsError(
                f"encoder checkpoint {path} does not fit the encoder config ({encoder_id(config)}, "
                f"img_size={config.img_size}, num_frames={config.num_frames}): {len(mismatched)} shape mismatch(es): "
                f"{first_names(mismatched, 3)}")
        missing = [k for k in expected if k not in loaded]
        if unexpected:
            log.warning("encoder checkpoint %s: %d unexpected key(s) ignored: %s", path, len(unexpected),
                        first_names(unexpected))

    random_init = bool(missing)
    if random_init and not allow_random_init:
        if checkpoint is None:
            raise EncoderWeightsError(
                "no encoder checkpoint given: the video encoder would run with random weights. Point the config at "
                "a local .safetensors/.pt checkpoint, or (tests and demos only) set `allow_random_init: true`")
        raise EncoderWeightsError(
            f"encoder checkpoint {checkpoint} is missing {len(missing)} of {len(expected)} weight(s) the model "
            f"needs: {first_names(missing)} (checkpoint layout: {layout}). Check the checkpoint, key_prefix and "
            f"encoder config, or (tests and demos only) set `allow_random_init: true`")
    if random_init:
        init_random_weights(model, seed)
        log.warning("video encoder %s runs with RANDOM weights (seed %d, %d missing key(s)); allow_random_init is "
                    "set - outputs are meaningless beyond tests and demos", encoder_id(config), seed, len(missing))
    if loaded:
        result = model.load_state_dict(loaded, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model, LoadReport(missing=missing, unexpected=unexpected, weights_sha256=sha, random_init=random_init,
                             checkpoint=ckpt_str, unused=unused, layout=layout)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

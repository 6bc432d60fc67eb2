"""The checkpoint's weights: an index over its top-level .safetensors files and the loaders of the projector, the
vision tower and the LM, each checking its keys and shapes against the config and naming the prefix to fix."""

from __future__ import annotations

import json
import logging
import os

import torch
from torch import nn

from annotators.backends.hico_mllm.config import (CONFIG_FILE, PROJECTOR_KEYS, VISION_EXTRA_PREFIXES,
                                                  HicoMllmCheckpointError, HicoMllmConfig)
from compressors.encoder.checkpoint import first_names
from compressors.safetensors_index import DuplicateKeyError, SafetensorsIndex, SafetensorsReadError

log = logging.getLogger("annotators.backends.hico_mllm")


class WeightIndex(SafetensorsIndex):
    """Every tensor key of the directory's top-level .safetensors files, read lazily (never a whole file)."""

    def __init__(self, directory: str):
        self.directory = directory
        names = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
        if not names:
            raise HicoMllmCheckpointError(f"no .safetensors weight files in {directory}")
        try:
            super().__init__([os.path.join(directory, name) for name in names])
        except SafetensorsReadError as exc:
            raise HicoMllmCheckpointError(str(exc)) from exc.cause
        except DuplicateKeyError as exc:
            raise HicoMllmCheckpointError(f"{directory}: key {exc.key!r} is in both {os.path.basename(exc.first)} "
                                          f"and {os.path.basename(exc.second)}") from exc


def build_projector(in_dim: int, hidden: int) -> nn.Sequential:
    """LLaVA's mlp2x_gelu: Linear(C, H), GELU (exact), Linear(H, H)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))


def load_projector(weights: WeightIndex, cfg: HicoMllmConfig) -> nn.Sequential:
    prefix = cfg.key_prefixes["projector"]
    with torch.device("meta"):
        proj = build_projector(cfg.projector_in, cfg.projector_hidden)
    expected = {k: tuple(v.shape) for k, v in proj.state_dict().items()}
    state = {}
    for key in PROJECTOR_KEYS:
        raw = prefix + key
        if raw not in weights:
            present = [k for k in weights.keys() if k.startswith(prefix)]
            raise HicoMllmCheckpointError(
                f"hico_mllm checkpoint {weights.directory}: projector weight {raw!r} is missing (key {key!r} under "
                f"projector prefix {prefix!r}); projector keys found under that prefix: "
                f"{first_names(present) if present else 'none'}. Set key_prefixes.projector in {CONFIG_FILE} to where "
                f"the checkpoint keeps its projector")
        shape = weights.shape(raw)
        if shape != expected[key]:
            raise HicoMllmCheckpointError(
                f"hico_mllm checkpoint {weights.directory}: projector weight {raw!r} has shape {list(shape)}, "
                f"expected {list(expected[key])} (projector in_dim {cfg.projector_in}, hidden_dim "
                f"{cfg.projector_hidden} in {CONFIG_FILE})")
        state[key] = weights.tensor(raw)
    proj.load_state_dict(state, strict=True, assign=True)
    return proj


def load_vision_encoder(weights: WeightIndex, cfg: HicoMllmConfig, weights_sha256: str, device, dtype, seed: int = 0):
    """The UMT encoder from the keys under the vision prefix (any number of shards) -> (model, LoadReport)."""
    from compressors.encoder.checkpoint import KeyCollision, LoadReport, match_checkpoint_keys, normalize_key
    from compressors.encoder.config import encoder_id
    from compressors.encoder.model import UMTVideoEncoder, init_random_weights

    prefix = cfg.key_prefixes["vision"]
    vcfg = cfg.vision_encoder
    with torch.device("meta"):
        model = UMTVideoEncoder(vcfg)
    model = model.to_empty(device="cpu")
    expected = model.state_dict()
    try:
        match = match_checkpoint_keys([k for k in weights.keys() if k.startswith(prefix)],
                                      lambda raw: normalize_key(raw[len(prefix):], VISION_EXTRA_PREFIXES),
                                      weights.shape, weights.tensor, expected, vcfg)
    except KeyCollision as e:
        raise HicoMllmCheckpointError(f"hico_mllm checkpoint {weights.directory}: vision keys {e.first!r} "
                                      f"and {e.second!r} both map to {e.key!r}; narrow key_prefixes.vision")
    loaded, unused = match.loaded, match.unused
    unexpected = [raw for raw, _ in match.unexpected]
    mismatched = [f"{raw}: {shape} vs {want}" for raw, _, shape, want in match.mismatched]
    if mismatched:
        raise HicoMllmCheckpointError(
            f"hico_mllm checkpoint {weights.directory}: vision weights do not fit the vision_encoder config "
            f"({encoder_id(vcfg)}): {first_names(mismatched, 3)}")
    missing = [k for k in expected if k not in loaded]
    if missing and not cfg.random_init:
        raise HicoMllmCheckpointError(
            f"hico_mllm checkpoint {weights.directory}: {len(missing)} of {len(expected)} vision weight(s) missing "
            f"under vision prefix {prefix!r}: {first_names([prefix + k for k in missing])}. Set key_prefixes.vision in "
            f"{CONFIG_FILE} to where the checkpoint keeps its vision tower")
    if unexpected:
        log.warning("hico_mllm %s: %d unexpected vision key(s) ignored: %s", weights.directory, len(unexpected),
                    first_names(unexpected))
    if missing:
        log.warning("hico_mllm %s: %d vision weight(s) missing; random init (random_init checkpoint)",
                    weights.directory, len(missing))
        init_random_weights(model, seed)
    model.load_state_dict(loaded, strict=False)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    report = LoadReport(missing=missing, unexpected=unexpected, weights_sha256=weights_sha256,
                        random_init=cfg.random_init or bool(missing), checkpoint=weights.directory, unused=unused)
    return model, report


def read_lm_config(directory: str, cfg: HicoMllmConfig):
    """The LM's Qwen2Config (``lm_config``, default config.json), checked against the projector's output size."""
    from transformers import Qwen2Config

    path = os.path.join(directory, cfg.lm_config)
    if not os.path.isfile(path):
        raise HicoMllmCheckpointError(f"hico_mllm checkpoint {directory}: LM config {cfg.lm_config} not found "
                                      f"(lm_config in {CONFIG_FILE})")
    try:
        with open(path) as f:
            lm_config = Qwen2Config.from_dict(json.load(f))
    except (OSError, ValueError, TypeError) as exc:
        raise HicoMllmCheckpointError(f"hico_mllm checkpoint {directory}: cannot read LM config {path}: "
                                      f"{exc}") from exc
    if lm_config.hidden_size != cfg.projector_hidden:
        raise HicoMllmCheckpointError(
            f"hico_mllm checkpoint {directory}: projector.hidden_dim {cfg.projector_hidden} in {CONFIG_FILE} "
            f"differs from the LM hidden_size {lm_config.hidden_size} in {cfg.lm_config}")
    return lm_config


def load_lm(weights: WeightIndex, cfg: HicoMllmConfig, lm_config, dtype: torch.dtype):
    """Qwen2ForCausalLM for ``lm_config`` with the LM keys (every key outside the vision / projector prefixes)."""
    from transformers import Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    with torch.device("meta"):
        skeleton = Qwen2ForCausalLM(lm_config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    del skeleton
    tied = bool(getattr(lm_config, "tie_word_embeddings", False))
    lm_prefix = cfg.key_prefixes["lm"]
    other = (cfg.key_prefixes["vision"], cfg.key_prefixes["projector"])
    state, unexpected, mismatched = {}, [], []
    for raw in weights.keys():
        if raw.startswith(other) or not raw.startswith(lm_prefix):
            continue
        key = raw[len(lm_prefix):]
        if key not in expected:
            unexpected.append(raw)
            continue
        if weights.shape(raw) != expected[key]:
            mismatched.append(f"{raw}: {list(weights.shape(raw))} vs {list(expected[key])}")
            continue
        state[key] = weights.tensor(raw)
    if mismatched:
        raise HicoMllmCheckpointError(f"hico_mllm checkpoint {weights.directory}: LM weights do not fit "
                                      f"{cfg.lm_config}: {first_names(mismatched, 3)}")
    missing = [k for k in expected if k not in state and not (tied and k == "lm_head.weight")]
    if missing:
        raise HicoMllmCheckpointError(
            f"hico_mllm checkpoint {weights.directory}: {len(missing)} LM weight(s) missing under LM prefix "
            f"{lm_prefix!r}: {first_names([lm_prefix + k for k in missing])}. Set key_prefixes.lm in {CONFIG_FILE}")
    if unexpected:
        log.warning("hico_mllm %s: %d key(s) outside the vision/projector prefixes are not LM weights, ignored: %s",
                    weights.directory, len(unexpected), first_names(unexpected))
    bars_were_disabled = hf_logging.is_progress_bar_enabled() is False
    hf_logging.disable_progress_bar()
    try:
        model = Qwen2ForCausalLM.from_pretrained(None, config=lm_config, state_dict=state, dtype=dtype)
    finally:
        if not bars_were_disabled:
            hf_logging.enable_progress_bar()
    return model

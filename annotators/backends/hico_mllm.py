r"""hico_mllm: the compressed video MLLM assembled from this project's parts.

HiCo clip tokens (precomputed by the `hico` stage and read from its Parquet, or computed here from the frames with
:class:`compressors.hico.ClipEncoder`) -> MLP projector (``Linear C->H, GELU, Linear H->H``) -> a Qwen2 causal LM
(``transformers.Qwen2ForCausalLM``) fed with ``inputs_embeds``: the projected visual tokens stand where ``<image>``
stands in the qwen_2 chat prompt, right before the timestamp prompt and the question. With precomputed tokens,
annotating costs no second vision pass: the vision tower is only run for requests that bring frames and no tokens.

Per request (:class:`annotators.backends.base.Request`): the visual tokens are ``hico_tokens`` (float16
``[n_clips, 64, C]``, e.g. read by the caller from the hico Parquet with ``compressors.token_store.HicoReader``)
when given, else ``ClipEncoder.encode(frames, frame_size)``; flattened in clip order to ``[n_clips * 64, C]`` and
projected to ``[N, H]``. The user turn is ``<image>\n`` + ``video_question(question, duration_s, T)``
(schemas.sampling: the timestamp sentence, a newline, the question -- the text VideoChat-Flash trains on), with
T = ``extra['num_frames']`` if set, else ``len(frames)`` if frames are given, else ``n_clips * 4``. Requests with
neither frames nor tokens are text-only (no ``<image>``, no timestamp prompt). Batches are left-padded
(``attention_mask``) and decoded with ``model.generate(inputs_embeds=...)``; the answer is the new tokens up to the
first ``<|im_end|>`` / ``<|endoftext|>``, special tokens skipped, whitespace stripped.

Checkpoint directory layout
---------------------------
One flat directory, the layout of a LLaVA / VideoChat-Flash release plus one small file of ours::

    longvid_hico_mllm.json    our config (below); the file that marks the directory as a hico_mllm checkpoint
    config.json               the Qwen2 LM config (Qwen2Config fields; extra fields such as mm_* are ignored)
    *.safetensors             ALL weights, in one file (model.safetensors) or several shards
                              (model-00001-of-00004.safetensors, ...); every top-level .safetensors file is read,
                              and the set of them is what BackendInfo.weights_sha256 covers (checkpoint_sha256)
    tokenizer.json, tokenizer_config.json, chat_template.jinja, ...   a transformers tokenizer (AutoTokenizer)
    generation_config.json    optional, not used (generation settings come from GenerationParams)

Weights are told apart by key prefix (``key_prefixes`` in our config):

* ``vision`` (default ``"model.vision_tower."``): the UMT video encoder, keys as documented in
  :mod:`compressors.encoder` after stripping this prefix and then, repeatedly, ``vision_tower.`` / ``module.`` /
  ``encoder.`` (``vision_layernorm.*`` is read as ``norm.*``). Only needed for requests without precomputed tokens.
* ``projector`` (default ``"model.mm_projector."``): ``0.weight [H, C]``, ``0.bias [H]``, ``2.weight [H, H]``,
  ``2.bias [H]`` (LLaVA's ``mlp2x_gelu`` ``nn.Sequential`` layout).
* ``lm`` (default ``""``): everything else is the LM, under its transformers names after stripping this prefix
  (``model.embed_tokens.weight``, ``model.layers.{i}...``, ``model.norm.weight``, ``lm_head.weight`` unless
  ``tie_word_embeddings``). Keys under the vision or projector prefix are never LM keys.

``longvid_hico_mllm.json`` (every key optional except ``projector``; unknown keys are an error)::

    {
      "format_version": 1,
      "vision_encoder": {"config": {...VideoEncoderConfig fields...}}     # or {"preset": "umt_large_videochat_flash",
                                                                           #     "overrides": {...}}
      "tokens_per_frame": 16,            # HiCo tokens per frame after merging (64 per 4-frame clip)
      "frame_size": 224,                 # vision input resolution for requests that bring frames (448: stage 4)
      "projector": {"type": "mlp2x_gelu", "in_dim": C, "hidden_dim": H},   # H must equal the LM hidden size
      "key_prefixes": {"vision": "model.vision_tower.", "projector": "model.mm_projector.", "lm": ""},
      "lm_config": "config.json",        # relative to the directory
      "image_token": "<image>",
      "chat_template": "qwen_2",         # "qwen_2" (built in, = LLaVA-NeXT conv_qwen_2, the training format) or
                                         # "tokenizer" (the tokenizer's own chat template)
      "system_prompt": "You are a helpful assistant.",
      "random_init": false               # true for tiny random-weight test/demo checkpoints (recorded in provenance)
    }

Loading a real VideoChat-Flash-style checkpoint: keep its files as they are (config.json, the safetensors shards,
the Qwen2 tokenizer) and add a ``longvid_hico_mllm.json`` such as::

    {"vision_encoder": {"preset": "umt_large_videochat_flash"},
     "projector": {"in_dim": 1024, "hidden_dim": 3584},
     "key_prefixes": {"vision": "model.vision_tower.vision_tower.", "projector": "model.mm_projector.mlp.",
                      "lm": ""}}

(VideoChat-Flash's ``tome16_mlp_hd64`` projector keeps its MLP under ``mm_projector.mlp.{0,2}``; its token merging
is what the `hico` stage precomputes. For the 448 px model set ``"frame_size": 448``.) Check the prefixes against
the checkpoint's key names (``safetensors.safe_open(...).keys()``): a missing projector or LM key is an error that
names the key and the prefix, and vision keys are checked when the vision tower is loaded. Qwen2 tokenizers have
no ``<image>`` token: then the prompt is tokenised in two pieces around ``<image>`` (LLaVA's
``tokenizer_image_token``); when ``<image>`` is a single token (tiny checkpoints) the ids are split at it.

Tiny random-weight checkpoints for tests and the demo: :func:`annotators.tiny_hico_mllm.build_tiny_checkpoint`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from annotators.backends.base import BackendInfo, GenerationParams, Request, checkpoint_sha256
from schemas.errors import UsageError
from schemas.sampling import video_question

log = logging.getLogger(__name__)

CONFIG_FILE = "longvid_hico_mllm.json"
FORMAT_VERSION = 1
IMAGE_TOKEN = "<image>"
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
QWEN2_SYSTEM = "You are a helpful assistant."
DEFAULT_KEY_PREFIXES = {"vision": "model.vision_tower.", "projector": "model.mm_projector.", "lm": ""}
PROJECTOR_KEYS = ("0.weight", "0.bias", "2.weight", "2.bias")
VISION_EXTRA_PREFIXES = ("vision_tower.", "module.", "encoder.")  # stripped after the vision prefix
VISION_PRESETS = ("umt_large", "umt_large_videochat_flash", "tiny")  # VideoEncoderConfig class methods

# The qwen_2 conversation (LLaVA-NeXT conv_qwen_2, SeparatorStyle.CHATML) as a jinja chat template, for tokenizers
# built by this project; qwen2_chat_prompt() renders the same text without jinja. HF renders templates with
# trim_blocks, so every newline lives inside a {{ '...' }} expression.
QWEN2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CONFIG_KEYS = {"format_version", "vision_encoder", "tokens_per_frame", "frame_size", "projector", "key_prefixes",
                "lm_config", "image_token", "chat_template", "system_prompt", "random_init", "seed", "note"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HicoMllmCheckpointError(UsageError, RuntimeError):
    """The checkpoint directory cannot be loaded (missing files, bad config, missing or mis-shaped weights)."""


def qwen2_chat_prompt(user: str, system: str = QWEN2_SYSTEM) -> str:
    """One user turn in the qwen_2 conversation format, ending with the assistant's generation prompt."""
    return (f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n")


# --------------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class HicoMllmConfig:
    vision_encoder: Any  # compressors.encoder.VideoEncoderConfig
    projector_in: int
    projector_hidden: int
    tokens_per_frame: int = 16
    frame_size: int = 224
    key_prefixes: Mapping[str, str] = None  # type: ignore[assignment]
    lm_config: str = "config.json"
    image_token: str = IMAGE_TOKEN
    chat_template: str = "qwen_2"
    system_prompt: str = QWEN2_SYSTEM
    random_init: bool = False

    @property
    def clip_len(self) -> int:
        return self.vision_encoder.num_frames

    @property
    def tokens_per_clip(self) -> int:
        return self.tokens_per_frame * self.clip_len

    @classmethod
    def load(cls, directory: str) -> "HicoMllmConfig":
        from compressors.encoder import VideoEncoderConfig

        path = os.path.join(directory, CONFIG_FILE)
        if not os.path.isfile(path):
            raise HicoMllmCheckpointError(
                f"{directory} is not a hico_mllm checkpoint: {CONFIG_FILE} not found (see the layout in "
                f"annotators/backends/hico_mllm.py; tiny test checkpoints: annotators.tiny_hico_mllm)")
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise HicoMllmCheckpointError(f"{path}: cannot read JSON: {exc}") from exc

        def bad(key: str, why: str) -> HicoMllmCheckpointError:
            return HicoMllmCheckpointError(f"{path}: {key}: {why}")

        if not isinstance(data, dict):
            raise bad("(top level)", "must be a JSON object")
        unknown = sorted(set(data) - _CONFIG_KEYS)
        if unknown:
            raise bad(", ".join(unknown), f"unknown key(s); valid keys: {', '.join(sorted(_CONFIG_KEYS))}")
        if data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise bad("format_version", f"{data['format_version']!r} is not supported (expected {FORMAT_VERSION})")

        venc = data.get("vision_encoder", {"preset": "umt_large_videochat_flash"})
        try:
            if not isinstance(venc, dict) or ("config" in venc) == ("preset" in venc):
                raise ValueError('must be {"config": {...}} or {"preset": NAME, "overrides": {...}}')
            if "config" in venc:
                vision = VideoEncoderConfig.from_dict(venc["config"])
            else:
                if venc["preset"] not in VISION_PRESETS:
                    raise ValueError(f"unknown preset {venc['preset']!r}; one of {', '.join(VISION_PRESETS)}")
                overrides = venc.get("overrides", {})
                if not isinstance(overrides, dict) or set(venc) - {"preset", "overrides"}:
                    raise ValueError('must be {"preset": NAME, "overrides": {...}}')
                vision = getattr(VideoEncoderConfig, venc["preset"])(**overrides)
        except (TypeError, ValueError) as exc:
            raise bad("vision_encoder", str(exc)) from exc

        proj = data.get("projector")
        if not isinstance(proj, dict) or not all(isinstance(proj.get(k), int) and proj[k] > 0
                                                 for k in ("in_dim", "hidden_dim")):
            raise bad("projector", 'must be {"type": "mlp2x_gelu", "in_dim": C, "hidden_dim": H} with positive ints')
        if proj.get("type", "mlp2x_gelu") != "mlp2x_gelu":
            raise bad("projector.type", f"{proj['type']!r}: only 'mlp2x_gelu' (Linear C->H, GELU, Linear H->H)")
        if proj["in_dim"] != vision.width:
            raise bad("projector.in_dim", f"{proj['in_dim']} differs from the vision encoder width {vision.width}")

        prefixes = dict(DEFAULT_KEY_PREFIXES)
        given = data.get("key_prefixes", {})
        if not isinstance(given, dict) or set(given) - set(DEFAULT_KEY_PREFIXES) \
                or not all(isinstance(v, str) for v in given.values()):
            raise bad("key_prefixes", f"must map some of {sorted(DEFAULT_KEY_PREFIXES)} to strings, got {given!r}")
        prefixes.update(given)
        if not prefixes["projector"]:
            raise bad("key_prefixes.projector", "must not be empty")
        if not prefixes["vision"]:
            raise bad("key_prefixes.vision", "must not be empty")
        if prefixes["vision"].startswith(prefixes["projector"]) or prefixes["projector"].startswith(prefixes["vision"]):
            raise bad("key_prefixes", f"vision {prefixes['vision']!r} and projector {prefixes['projector']!r} overlap")

        tpf = data.get("tokens_per_frame", 16)
        if isinstance(tpf, bool) or not isinstance(tpf, int) or tpf < 1:
            raise bad("tokens_per_frame", f"{tpf!r} must be a positive integer")
        size = data.get("frame_size", 224)
        if isinstance(size, bool) or not isinstance(size, int) or size < vision.patch_size or size % vision.patch_size:
            raise bad("frame_size", f"{size!r} must be a positive multiple of the patch size {vision.patch_size}")
        template = data.get("chat_template", "qwen_2")
        if template not in ("qwen_2", "tokenizer"):
            raise bad("chat_template", f"{template!r} must be 'qwen_2' or 'tokenizer'")
        return cls(vision_encoder=vision, projector_in=proj["in_dim"], projector_hidden=proj["hidden_dim"],
                   tokens_per_frame=tpf, frame_size=size, key_prefixes=prefixes,
                   lm_config=str(data.get("lm_config", "config.json")),
                   image_token=str(data.get("image_token", IMAGE_TOKEN)), chat_template=template,
                   system_prompt=str(data.get("system_prompt", QWEN2_SYSTEM)),
                   random_init=bool(data.get("random_init", False)))


# --------------------------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------------------------


class WeightIndex:
    """Every tensor key of the directory's top-level .safetensors files, read lazily (never a whole file)."""

    def __init__(self, directory: str):
        from safetensors import safe_open

        self.directory = directory
        names = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
        if not names:
            raise HicoMllmCheckpointError(f"no .safetensors weight files in {directory}")
        self._handles = {}
        self.file_of: dict[str, str] = {}
        for name in names:
            try:
                handle = safe_open(os.path.join(directory, name), framework="pt", device="cpu")
            except Exception as exc:  # noqa: BLE001 - any reader failure names the file
                raise HicoMllmCheckpointError(f"cannot read {os.path.join(directory, name)}: {exc}") from exc
            self._handles[name] = handle
            for key in handle.keys():
                if key in self.file_of:
                    raise HicoMllmCheckpointError(f"{directory}: key {key!r} is in both {self.file_of[key]} "
                                                  f"and {name}")
                self.file_of[key] = name

    def keys(self) -> list[str]:
        return list(self.file_of)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self.file_of[key]].get_slice(key).get_shape())

    def tensor(self, key: str) -> torch.Tensor:
        return self._handles[self.file_of[key]].get_tensor(key)


def _shown(names: Sequence[str], n: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


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
        if raw not in weights.file_of:
            present = [k for k in weights.keys() if k.startswith(prefix)]
            raise HicoMllmCheckpointError(
                f"hico_mllm checkpoint {weights.directory}: projector weight {raw!r} is missing (key {key!r} under "
                f"projector prefix {prefix!r}); projector keys found under that prefix: "
                f"{_shown(present) if present else 'none'}. Set key_prefixes.projector in {CONFIG_FILE} to where "
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
    from compressors.encoder import (KeyCollision, LoadReport, UMTVideoEncoder, encoder_id, init_random_weights,
                                     match_checkpoint_keys, normalize_key)

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
            f"({encoder_id(vcfg)}): {_shown(mismatched, 3)}")
    missing = [k for k in expected if k not in loaded]
    if missing and not cfg.random_init:
        raise HicoMllmCheckpointError(
            f"hico_mllm checkpoint {weights.directory}: {len(missing)} of {len(expected)} vision weight(s) missing "
            f"under vision prefix {prefix!r}: {_shown([prefix + k for k in missing])}. Set key_prefixes.vision in "
            f"{CONFIG_FILE} to where the checkpoint keeps its vision tower")
    if unexpected:
        log.warning("hico_mllm %s: %d unexpected vision key(s) ignored: %s", weights.directory, len(unexpected),
                    _shown(unexpected))
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
                                      f"{cfg.lm_config}: {_shown(mismatched, 3)}")
    missing = [k for k in expected if k not in state and not (tied and k == "lm_head.weight")]
    if missing:
        raise HicoMllmCheckpointError(
            f"hico_mllm checkpoint {weights.directory}: {len(missing)} LM weight(s) missing under LM prefix "
            f"{lm_prefix!r}: {_shown([lm_prefix + k for k in missing])}. Set key_prefixes.lm in {CONFIG_FILE}")
    if unexpected:
        log.warning("hico_mllm %s: %d key(s) outside the vision/projector prefixes are not LM weights, ignored: %s",
                    weights.directory, len(unexpected), _shown(unexpected))
    bars_were_disabled = hf_logging.is_progress_bar_enabled() is False
    hf_logging.disable_progress_bar()
    try:
        model = Qwen2ForCausalLM.from_pretrained(None, config=lm_config, state_dict=state, dtype=dtype)
    finally:
        if not bars_were_disabled:
            hf_logging.enable_progress_bar()
    return model


# --------------------------------------------------------------------------------------------------------------------
# Backend
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """One request ready for the LM: token ids before / after the visual tokens, and the visual features."""

    ids_before: list[int]  # the whole prompt for text-only requests
    ids_after: list[int]
    visual: Optional[torch.Tensor]  # [n_clips * tokens_per_clip, C] in clip order, model dtype; None: text only
    n_clips: int


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: must be one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


class HicoMllmBackend:
    """Backend ``hico_mllm`` (see the module docstring for the checkpoint layout).

    ``load_vision=False`` skips the vision tower: then every video request must bring ``hico_tokens``.
    """

    def __init__(self, checkpoint_dir: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 4,
                 params: Optional[GenerationParams] = None, load_vision: bool = True):
        from transformers import AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        checkpoint_dir = str(checkpoint_dir)
        if not os.path.isdir(checkpoint_dir):
            raise HicoMllmCheckpointError(f"hico_mllm checkpoint directory not found: {checkpoint_dir}")
        self.checkpoint_dir = checkpoint_dir
        self.device = torch.device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.params = params or GenerationParams()
        self.config = HicoMllmConfig.load(checkpoint_dir)
        sha = checkpoint_sha256(checkpoint_dir)

        lm_config = read_lm_config(checkpoint_dir, self.config)
        weights = WeightIndex(checkpoint_dir)
        self.projector = load_projector(weights, self.config).to(device=self.device, dtype=self.dtype).eval()
        self.projector.requires_grad_(False)
        self.model = load_lm(weights, self.config, lm_config, self.dtype).to(self.device).eval()
        self.model.requires_grad_(False)
        self.clip_encoder = None
        vision_random = False
        if load_vision:
            from compressors.hico import ClipEncoder

            encoder, report = load_vision_encoder(weights, self.config, sha, self.device, self.dtype)
            self.clip_encoder = ClipEncoder(encoder, self.config.vision_encoder, report,
                                            tokens_per_frame=self.config.tokens_per_frame, device=str(self.device),
                                            dtype=self.dtype)
            vision_random = report.random_init
        del weights

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - name the directory and what is expected
            raise HicoMllmCheckpointError(f"hico_mllm checkpoint {checkpoint_dir}: cannot load the tokenizer "
                                          f"({type(exc).__name__}: {exc}); expected tokenizer.json / "
                                          f"tokenizer_config.json in the directory") from exc
        if self.config.chat_template == "tokenizer" and not getattr(self.tokenizer, "chat_template", None):
            raise HicoMllmCheckpointError(f"{CONFIG_FILE}: chat_template is 'tokenizer' but the tokenizer in "
                                          f"{checkpoint_dir} has none")
        self.image_token = self.config.image_token
        self.image_token_id = self._single_token_id(self.image_token)
        stops = [self._single_token_id(t) for t in (IM_END, ENDOFTEXT)]
        self.eos_token_ids = [t for t in stops if t is not None] or [self.tokenizer.eos_token_id]
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]
        self.info = BackendInfo("hico_mllm", checkpoint_dir, sha,
                                random_init=bool(self.config.random_init or vision_random))

    # -- text ---------------------------------------------------------------------------------------------------
    def _single_token_id(self, token: str) -> Optional[int]:
        """The id of `token` if the tokenizer has it as one token, else None."""
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and self.tokenizer.convert_ids_to_tokens(ids[0]) == token:
            return int(ids[0])
        return None

    def frames_count(self, request: Request) -> int:
        """T of the timestamp prompt: extra['num_frames'] if set, else len(frames), else n_clips * clip_len."""
        if request.extra.get("num_frames") is not None:
            return int(request.extra["num_frames"])
        if request.frames is not None:
            return int(len(request.frames))
        return int(np.asarray(request.hico_tokens).shape[0]) * self.config.clip_len

    @staticmethod
    def _has_video(request: Request) -> bool:
        return request.hico_tokens is not None or request.frames is not None

    def user_text(self, request: Request) -> str:
        if self.image_token in request.prompt:
            raise ValueError(f"request {request.video_id or '(no video_id)'}: the prompt must not contain "
                             f"{self.image_token!r} (the backend places the video itself)")
        if not self._has_video(request):
            return request.prompt
        return f"{self.image_token}\n" + video_question(request.prompt, request.duration_s, self.frames_count(request))

    def render(self, request: Request) -> str:
        """The full prompt text the LM sees (visual tokens stand where `<image>` is)."""
        system = request.system if request.system is not None else self.config.system_prompt
        user = self.user_text(request)
        if self.config.chat_template == "tokenizer":
            return self.tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": user}], tokenize=False,
                add_generation_prompt=True)
        return qwen2_chat_prompt(user, system)

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- vision -------------------------------------------------------------------------------------------------
    def clip_tokens(self, request: Request) -> np.ndarray:
        """float16 [n_clips, tokens_per_clip, C]: request.hico_tokens, else computed from request.frames."""
        name = request.video_id or "(no video_id)"
        cfg = self.config
        if request.hico_tokens is not None:
            tokens = np.asarray(request.hico_tokens)
            want = (cfg.tokens_per_clip, cfg.projector_in)
            if tokens.ndim != 3 or tuple(tokens.shape[1:]) != want or tokens.shape[0] < 1:
                raise ValueError(f"request {name}: hico_tokens must have shape [n_clips >= 1, {want[0]}, {want[1]}], "
                                 f"got {list(tokens.shape)}")
            return tokens
        if self.clip_encoder is None:
            raise ValueError(f"request {name}: brings frames but no hico_tokens, and the backend was built with "
                             f"load_vision=False")
        frames = np.asarray(request.frames)
        if frames.ndim != 4 or frames.shape[0] < 1:
            raise ValueError(f"request {name}: frames must be uint8 [T >= 1, H, W, 3], got {list(frames.shape)}")
        size = int(request.extra.get("resolution", cfg.frame_size))
        return self.clip_encoder.encode(frames, size).tokens

    def prepare(self, request: Request) -> Prepared:
        text = self.render(request)
        if not self._has_video(request):
            if self.image_token_id is not None and self.image_token_id in self.tokenize(text):
                raise ValueError(f"request {request.video_id or '(no video_id)'}: text-only prompt contains "
                                 f"{self.image_token!r}")
            return Prepared(self.tokenize(text), [], None, 0)
        if self.image_token_id is not None:
            ids = self.tokenize(text)
            where = [i for i, t in enumerate(ids) if t == self.image_token_id]
            if len(where) != 1:
                raise ValueError(f"request {request.video_id or '(no video_id)'}: expected exactly one "
                                 f"{self.image_token!r} in the prompt, found {len(where)}")
            before, after = ids[:where[0]], ids[where[0] + 1:]
        else:  # LLaVA tokenizer_image_token: the pieces around <image> are tokenised separately
            pieces = text.split(self.image_token)
            if len(pieces) != 2:
                raise ValueError(f"request {request.video_id or '(no video_id)'}: expected exactly one "
                                 f"{self.image_token!r} in the prompt, found {len(pieces) - 1}")
            before, after = self.tokenize(pieces[0]), self.tokenize(pieces[1])
        tokens = self.clip_tokens(request)
        visual = torch.from_numpy(np.ascontiguousarray(tokens)).reshape(-1, tokens.shape[-1])
        return Prepared(before, after, visual.to(device=self.device, dtype=self.dtype), int(tokens.shape[0]))

    @torch.inference_mode()
    def inputs_embeds(self, request: Request) -> torch.Tensor:
        """[L, H] LM input embeddings of one request: text embeddings with the projected visual tokens spliced in
        place of `<image>` (L = prompt tokens - 1 + n_clips * tokens_per_clip for video requests)."""
        return self._embed(self.prepare(request))

    def _embed(self, p: Prepared) -> torch.Tensor:
        embed = self.model.get_input_embeddings()
        parts = []
        if p.ids_before:
            parts.append(embed(torch.tensor(p.ids_before, device=self.device)))
        if p.visual is not None:
            parts.append(self.projector(p.visual).to(parts[0].dtype if parts else self.dtype))
        if p.ids_after:
            parts.append(embed(torch.tensor(p.ids_after, device=self.device)))
        if not parts:
            raise ValueError("empty prompt")
        return torch.cat(parts, dim=0)

    # -- generation ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_ids(self, requests: Sequence[Request]) -> list[list[int]]:
        """The generated token ids of each request (eos / padding removed), in request order."""
        out: list[list[int]] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self._generate_batch(requests[start:start + self.batch_size]))
        return out

    def generate(self, requests: Sequence[Request]) -> list[str]:
        ids = self.generate_ids(requests)
        return [self.tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in ids]

    def _generation_config(self):
        from transformers import GenerationConfig

        p = self.params
        kwargs = dict(max_new_tokens=p.max_new_tokens, do_sample=p.do_sample, eos_token_id=self.eos_token_ids,
                      pad_token_id=self.pad_token_id, use_cache=True)
        if p.do_sample:
            kwargs.update(temperature=p.temperature, top_p=p.top_p)
        return GenerationConfig(**kwargs)

    def _generate_batch(self, batch: Sequence[Request]) -> list[list[int]]:
        embeds = [self._embed(self.prepare(r)) for r in batch]
        longest = max(e.shape[0] for e in embeds)
        hidden = embeds[0].shape[1]
        pad_vec = self.model.get_input_embeddings()(torch.tensor([self.pad_token_id], device=self.device))[0]
        inputs = pad_vec.expand(len(batch), longest, hidden).clone()
        mask = torch.zeros(len(batch), longest, dtype=torch.long, device=self.device)
        for i, e in enumerate(embeds):  # left padding: the prompt ends where generation starts
            inputs[i, longest - e.shape[0]:] = e
            mask[i, longest - e.shape[0]:] = 1
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.params.seed)
            out = self.model.generate(inputs_embeds=inputs, attention_mask=mask,
                                      generation_config=self._generation_config())
        if out.shape[1] > self.params.max_new_tokens:  # some versions prepend the (dummy) prompt ids
            out = out[:, -self.params.max_new_tokens:]
        results = []
        stops = set(self.eos_token_ids) | {self.pad_token_id}
        for row in out.tolist():
            seq = []
            for t in row:
                if t in stops:
                    break
                seq.append(t)
            results.append(seq)
        return results


__all__ = ["CONFIG_FILE", "DEFAULT_KEY_PREFIXES", "HicoMllmBackend", "HicoMllmCheckpointError", "HicoMllmConfig",
           "IMAGE_TOKEN", "Prepared", "QWEN2_CHAT_TEMPLATE", "QWEN2_SYSTEM", "WeightIndex", "build_projector",
           "qwen2_chat_prompt"]

"""The hico_mllm checkpoint's own config file (``longvid_hico_mllm.json``, documented in the package docstring), the
qwen_2 chat format, and the error every load failure raises."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

from schemas.errors import UsageError
from schemas.sampling import IMAGE_TOKEN

CONFIG_FILE = "longvid_hico_mllm.json"
FORMAT_VERSION = 1
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


class HicoMllmCheckpointError(UsageError, RuntimeError):
    """The checkpoint directory cannot be loaded (missing files, bad config, missing or mis-shaped weights)."""


def qwen2_chat_prompt(user: str, system: str = QWEN2_SYSTEM) -> str:
    """One user turn in the qwen_2 conversation format, ending with the assistant's generation prompt."""
    return (f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n")


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
                f"annotators/backends/hico_mllm/__init__.py; tiny test checkpoints: annotators.tiny_hico_mllm)")
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

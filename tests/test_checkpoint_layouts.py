"""The `hico` encoder loads the UMT-L tower from the checkpoint layouts people have, says which it used, and never
takes a language model's final norm for the vision norm.

The layouts are written here from VideoChat-Flash's modules: the full LLaVA model keeps the tower at
``model.vision_tower`` (UMTVisionTower) -> ``.vision_tower`` (PretrainVisionTransformer) -> ``.encoder``, whose
final LayerNorm is ``vision_layernorm``; the standalone UMT-L file keeps ``encoder.*`` with the norm as
``encoder.norm``; the tower module's own state dict starts at ``vision_tower.encoder.*``.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from compressors.encoder import EncoderWeightsError, VideoEncoderConfig, load_encoder
from pipeline.stages.hico import HicoShardEncoder
from tests.conftest import make_config

CONFIG = dict(width=64, depth=3, num_heads=4)


def _source():
    config = VideoEncoderConfig.umt_large_videochat_flash(**CONFIG)
    model, _ = load_encoder(None, config, allow_random_init=True, seed=11)
    return config, model


def _layout(model, prefix: str, norm_name: str) -> dict:
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("norm."):
            key = norm_name + key[len("norm"):]
        state[prefix + key] = value.clone()
    return state


def _llm_keys(width: int) -> dict:
    # a language model beside the tower, with a final norm that must not be mistaken for the vision norm
    return {"model.norm.weight": torch.full((width,), 7.0), "model.norm.bias": torch.full((width,), -3.0),
            "model.layers.0.mlp.up_proj.weight": torch.zeros(8, width), "lm_head.weight": torch.zeros(10, width),
            "model.mm_projector.mlp.0.weight": torch.zeros(16, width)}


@pytest.mark.parametrize("name, prefix, norm_name, with_llm", [
    ("llava_model", "model.vision_tower.vision_tower.encoder.", "vision_layernorm", True),
    ("vision_tower", "vision_tower.encoder.", "vision_layernorm", False),
    ("umt_encoder", "encoder.", "norm", False),
    ("bare", "", "norm", False),
])
def test_known_layouts_are_recognised(tmp_path, name, prefix, norm_name, with_llm):
    config, source = _source()
    state = _layout(source, prefix, norm_name)
    if with_llm:
        state.update(_llm_keys(CONFIG["width"]))
    path = tmp_path / "ckpt.safetensors"
    save_file(state, str(path))
    model, report = load_encoder(path, config)
    assert report.layout == name and report.missing == [] and not report.random_init
    assert report.unexpected == []  # keys outside the tower (LLM, projector) are not the encoder's business
    assert torch.equal(model.norm.weight, source.norm.weight) and torch.equal(model.norm.bias, source.norm.bias)
    clips = torch.randn(1, 4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(clips), source(clips))


def test_hico_stage_loads_a_full_model_with_default_config(tmp_path):
    source, _ = load_encoder(None, VideoEncoderConfig.tiny(), allow_random_init=True, seed=12)  # preset "tiny"
    state = {**_layout(source, "model.vision_tower.vision_tower.encoder.", "vision_layernorm"), **_llm_keys(64)}
    path = tmp_path / "videochat-flash.safetensors"
    save_file(state, str(path))
    cfg = make_config([], tmp_path / "out", [f"hico.encoder.checkpoint={path}", "hico.encoder.preset=tiny"],
                      stages=["hico"])
    encoder = HicoShardEncoder(cfg, "cpu").encoder
    assert encoder.report.layout == "llava_model" and not encoder.report.random_init
    assert torch.equal(encoder.model.norm.weight, source.norm.weight)


def test_explicit_prefixes_never_take_the_llms_norm(tmp_path):
    config, source = _source()
    state = {k: v for k, v in _layout(source, "model.vision_tower.vision_tower.encoder.", "vision_layernorm").items()
             if "vision_layernorm" not in k}  # a tower saved without its norm ...
    state.update(_llm_keys(CONFIG["width"]))  # ... next to an LLM's model.norm
    path = tmp_path / "ckpt.safetensors"
    save_file(state, str(path))
    with pytest.raises(EncoderWeightsError, match=r"model\.norm\.(weight|bias).*not an encoder key"):
        load_encoder(path, config, key_prefix=["model.", "vision_tower.", "encoder."], allow_random_init=True)
    # recognised automatically, the missing norm is missing (and refused without allow_random_init)
    with pytest.raises(EncoderWeightsError, match="norm.weight"):
        load_encoder(path, config)


def test_unknown_layout_is_refused_with_the_known_ones(tmp_path):
    config, source = _source()
    path = tmp_path / "ckpt.safetensors"
    save_file(_layout(source, "backbone.visual.", "norm"), str(path))
    with pytest.raises(EncoderWeightsError, match="known layouts: llava_model"):
        load_encoder(path, config)

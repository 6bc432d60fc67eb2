"""HiCo video encoder (UMT-L style ViT), checkpoint loading and frame preprocessing. Tiny models only; fast."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from compressors.encoder import (EncoderWeightsError, UMTVideoEncoder, VideoEncoderConfig, count_parameters,
                                 encoder_id, load_encoder, resize_pos_table, sincos_joint_table)
from compressors.preprocess import (IMAGENET_MEAN, IMAGENET_STD, ClipSpec, clip_batch, plan_clips,
                                    preprocess_frames)


def _clips(batch=1, frames=4, size=224, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=gen).to(dtype)


def _random_model(config, seed=0):
    model, report = load_encoder(None, config, allow_random_init=True, seed=seed)
    assert report.random_init
    return model


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------------


def test_config_presets_roundtrip_and_validation():
    large = VideoEncoderConfig.umt_large()
    assert (large.width, large.depth, large.num_heads, large.patch_size, large.tubelet_size) == (1024, 24, 16, 16, 1)
    assert large.feature_block == -2 and large.num_blocks_run == 23
    assert large.tokens_per_frame() == 196 and large.tokens_per_clip() == 784
    assert large.tokens_per_frame(448) == 784 and large.tokens_per_clip(448) == 3136
    assert encoder_id(large) == "umt-vit-w1024-d24-p16-t1"
    assert encoder_id(VideoEncoderConfig.tiny(pos_embed="learned")) == "umt-vit-w64-d2-p16-t1-pos-learned"
    tiny = VideoEncoderConfig.tiny()
    assert (tiny.width, tiny.depth, tiny.num_heads) == (64, 2, 4)
    assert VideoEncoderConfig.from_dict(tiny.to_dict()) == tiny
    with pytest.raises(ValueError, match="widht"):
        VideoEncoderConfig.from_dict({"widht": 64})
    with pytest.raises(ValueError, match="pos_embed"):
        VideoEncoderConfig.tiny(pos_embed="rope")
    with pytest.raises(ValueError, match="feature_block"):
        VideoEncoderConfig.tiny(feature_block=2)
    with pytest.raises(ValueError, match="num_heads"):
        VideoEncoderConfig.tiny(num_heads=5)


def test_umt_large_parameter_count_on_meta():
    with torch.device("meta"):
        run = UMTVideoEncoder(VideoEncoderConfig.umt_large())
        full = UMTVideoEncoder(VideoEncoderConfig.umt_large(feature_block=-1))
        vcf = UMTVideoEncoder(VideoEncoderConfig.umt_large_videochat_flash())
    block = 4 * 1024 + (1024 * 3072 + 3072) + (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + (4096 * 1024 + 1024)
    stem = 3 * 16 * 16 * 1024 + 1024 + 2 * 1024  # patch embedding + final norm
    assert count_parameters(full) == stem + 24 * block == 303_098_880  # ViT-L/16 without CLS: ~303M
    assert len(run.blocks) == 23  # features of block 22: block 23 is never built
    assert count_parameters(run) == stem + 23 * block
    assert count_parameters(vcf) == stem + 23 * (block - 1024)  # q/v biases only


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pos", ["sincos", "learned", "sincos_1d"])
def test_forward_shapes_224_and_448(pos):
    config = VideoEncoderConfig.tiny(pos_embed=pos)
    model = _random_model(config)
    with torch.no_grad():
        out224 = model(_clips(2, size=224))
        out448 = model(_clips(1, size=448))
    assert out224.shape == (2, 784, 64) and out448.shape == (1, 3136, 64)
    assert torch.isfinite(out224).all() and torch.isfinite(out448).all()
    assert model.pos_embed_for(4, 28, 28).shape == (3136, 64)
    # Rectangular input and another frame count go through the same interpolation.
    assert model(_clips(1, frames=8, size=224)[..., :160]).shape == (1, 8 * 14 * 10, 64)


def test_pos_embed_interpolation():
    table = sincos_joint_table(64, 4, 14)
    assert torch.equal(resize_pos_table(table, 4, 14, 14), table.reshape(-1, 64))
    big = resize_pos_table(table, 4, 28, 28).reshape(4, 28, 28, 64)
    expected = F.interpolate(table.permute(0, 3, 1, 2), size=(28, 28), mode="bicubic", align_corners=False)
    assert torch.allclose(big, expected.permute(0, 2, 3, 1))
    # The 1-D table is the VideoMAE / UMT sinusoid over the flattened (t, row, col) position.
    pos = np.arange(4 * 14 * 14)[:, None] / np.power(10000, 2 * (np.arange(64) // 2) / 64)[None, :]
    pos[:, 0::2], pos[:, 1::2] = np.sin(pos[:, 0::2]), np.cos(pos[:, 1::2])
    assert np.allclose(table.reshape(-1, 64).numpy(), pos, atol=1e-6)

    # Learned tables are interpolated too (and gradients reach them).
    model = UMTVideoEncoder(VideoEncoderConfig.tiny(pos_embed="learned"))
    torch.nn.init.normal_(model.pos_embed_spatial)
    model.pos_embed_for(4, 28, 28).sum().backward()
    assert model.pos_embed_spatial.grad is not None and model.pos_embed_temporal.grad is not None


def test_token_order_time_major_row_major():
    model = _random_model(VideoEncoderConfig.tiny())
    clips = _clips()
    base = model.embed(clips)
    changed = clips.clone()
    changed[0, 2, :, 16:32, 0:16] += 1.0  # frame 2, patch row 1, column 0
    diff = (model.embed(changed) - base).abs().sum(-1)[0]
    assert diff.nonzero().flatten().tolist() == [2 * 196 + 1 * 14 + 0]


def test_feature_block_is_second_to_last_after_norm(tmp_path):
    full = _random_model(VideoEncoderConfig.tiny(depth=3, feature_block=-1), seed=3)
    path = tmp_path / "full.safetensors"
    save_file(full.state_dict(), str(path))
    model, report = load_encoder(path, VideoEncoderConfig.tiny(depth=3))
    assert len(model.blocks) == 2 and not report.random_init
    assert report.missing == [] and report.unexpected == []
    assert report.unused and all(k.startswith("blocks.2.") for k in report.unused)
    clips = _clips(seed=1)
    with torch.no_grad():
        x = full.embed(clips)
        for block in full.blocks[:-1]:
            x = block(x)
        expected = full.norm(x)
        got = model(clips)
    assert torch.allclose(got, expected, atol=1e-6)


def test_block_matches_reference_attention():
    model = _random_model(VideoEncoderConfig.tiny(), seed=5)
    block = model.blocks[0]
    x = torch.randn(2, 50, 64)
    h = block.norm1(x)
    q, k, v = block.attn.qkv(h).view(2, 50, 3, 4, 16).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1) * 16 ** -0.5).softmax(-1)
    y = x + block.attn.proj((attn @ v).transpose(1, 2).reshape(2, 50, 64))
    y = y + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(y))))
    with torch.no_grad():
        assert torch.allclose(block(x), y, atol=1e-5)


def test_qv_bias_layout_equals_qkv_bias_with_zero_k_bias():
    plain = _random_model(VideoEncoderConfig.tiny(), seed=2)
    qv = UMTVideoEncoder(VideoEncoderConfig.tiny(qkv_bias="qv")).eval()
    plain_state, qv_state = {}, {}
    for key, value in plain.state_dict().items():
        value = value.clone()
        if key.endswith("attn.qkv.bias"):
            torch.nn.init.normal_(value)
            value[64:128] = 0  # no k bias in the UMT layout
            stem = key[: -len("qkv.bias")]
            qv_state[stem + "q_bias"], qv_state[stem + "v_bias"] = value[:64], value[128:]
        else:
            qv_state[key] = value
        plain_state[key] = value
    plain.load_state_dict(plain_state)
    qv.load_state_dict(qv_state)
    clips = _clips()
    with torch.no_grad():
        assert torch.allclose(plain(clips), qv(clips), atol=1e-6)


def test_bfloat16_forward_on_cpu():
    model, _ = load_encoder(None, VideoEncoderConfig.tiny(), allow_random_init=True, dtype="bfloat16")
    assert model.patch_embed.proj.weight.dtype == torch.bfloat16
    ref = _random_model(VideoEncoderConfig.tiny())
    clips = _clips()
    with torch.no_grad():
        out = model(clips)
        expected = ref(clips)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 784, 64)
    assert torch.isfinite(out.float()).all()
    assert (out.float() - expected).abs().mean() < 0.05  # same weights, bf16 rounding only


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pos", ["sincos", "learned"])
def test_save_and_load_safetensors_and_pt(tmp_path, pos):
    config = VideoEncoderConfig.tiny(pos_embed=pos)
    original = _random_model(config, seed=7)
    state = {f"vision_tower.{k}": v.clone() for k, v in original.state_dict().items()}
    if pos == "learned":
        assert "vision_tower.pos_embed_spatial" in state and "vision_tower.pos_embed_temporal" in state
    st_path = tmp_path / "enc.safetensors"
    pt_path = tmp_path / "enc.pt"
    save_file(state, str(st_path))
    torch.save({"model": state, "epoch": 3}, pt_path)
    clips = _clips(seed=4)
    with torch.no_grad():
        expected = original(clips)
    for path in (st_path, pt_path):
        model, report = load_encoder(str(path), config)
        assert report.missing == [] and report.unexpected == [] and report.unused == []
        assert report.weights_sha256 == _sha(path) and report.random_init is False
        assert report.checkpoint == str(path)
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        with torch.no_grad():
            assert torch.equal(model(clips), expected)


def test_missing_key_is_an_error(tmp_path):
    config = VideoEncoderConfig.tiny()
    state = _random_model(config).state_dict()
    del state["blocks.0.mlp.fc2.weight"]
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(EncoderWeightsError) as err:
        load_encoder(path, config)
    assert "blocks.0.mlp.fc2.weight" in str(err.value) and "allow_random_init" in str(err.value)
    # Allowed: the rest is loaded over a seeded random init, and the report says so.
    model, report = load_encoder(path, config, allow_random_init=True)
    assert report.random_init and report.missing == ["blocks.0.mlp.fc2.weight"]
    assert torch.equal(model.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


def test_extra_keys_are_unexpected_and_shape_mismatch_is_an_error(tmp_path):
    config = VideoEncoderConfig.tiny()
    state = dict(_random_model(config).state_dict())
    state["head.weight"] = torch.zeros(10, 64)
    state["blocks.7.norm1.weight"] = torch.ones(64)  # deeper than the config: not merely unused
    path = tmp_path / "extra.pt"
    torch.save({"state_dict": state}, path)
    _, report = load_encoder(path, config)
    assert sorted(report.unexpected) == ["blocks.7.norm1.weight", "head.weight"]
    assert report.missing == [] and not report.random_init

    state["norm.weight"] = torch.ones(32)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(EncoderWeightsError, match=r"norm\.weight"):
        load_encoder(tmp_path / "bad.safetensors", config, allow_random_init=True)


def test_no_checkpoint_needs_allow_random_init(tmp_path):
    config = VideoEncoderConfig.tiny()
    with pytest.raises(EncoderWeightsError, match="allow_random_init"):
        load_encoder(None, config)
    with pytest.raises(EncoderWeightsError, match="not found"):
        load_encoder(tmp_path / "nope.safetensors", config)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderWeightsError, match="cannot read"):
        load_encoder(tmp_path / "junk.pt", config)
    a, report = load_encoder(None, config, allow_random_init=True)
    b, _ = load_encoder(None, config, allow_random_init=True)
    c, _ = load_encoder(None, config, allow_random_init=True, seed=1)
    assert report.random_init and report.weights_sha256 is None and report.checkpoint is None
    assert len(report.missing) == len(a.state_dict())
    clips = _clips()
    with torch.no_grad():
        assert torch.equal(a(clips), b(clips))
        assert not torch.allclose(a(clips), c(clips))


def test_videochat_flash_key_layout(tmp_path):
    """UMT checkpoints: nested wrappers, q/v biases, 23 blocks and a final norm called vision_layernorm."""
    config = VideoEncoderConfig.umt_large_videochat_flash(width=64, depth=3, num_heads=4)
    source = _random_model(config, seed=9)
    state = {}
    for key, value in source.state_dict().items():
        key = key.replace("norm.", "vision_layernorm.") if key.startswith("norm.") else key
        state[f"vision_tower.vision_tower.encoder.{key}"] = value
    assert "vision_tower.vision_tower.encoder.blocks.0.attn.q_bias" in state
    path = tmp_path / "umt.safetensors"
    save_file(state, str(path))
    model, report = load_encoder(path, config)
    assert report.missing == [] and report.unexpected == [] and not report.random_init
    assert model.norm.eps == 1e-12
    clips = _clips()
    with torch.no_grad():
        assert torch.equal(model(clips), source(clips))


# ---------------------------------------------------------------------------------------------------------------------
# Preprocessing and clips
# ---------------------------------------------------------------------------------------------------------------------


def test_preprocess_shape_dtype_and_gray():
    frames = np.full((3, 90, 160, 3), 128, dtype=np.uint8)
    out = preprocess_frames(frames, 224)
    assert out.shape == (3, 3, 224, 224) and out.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out, expected.view(1, 3, 1, 1).expand_as(out), atol=1e-5)
    half = preprocess_frames(torch.from_numpy(frames), 448, dtype=torch.bfloat16, chunk_size=2)
    assert half.shape == (3, 3, 448, 448) and half.dtype == torch.bfloat16
    with pytest.raises(TypeError):
        preprocess_frames(frames.astype(np.float32), 224)
    with pytest.raises(ValueError):
        preprocess_frames(frames[..., :2], 224)


@pytest.mark.parametrize("src", [(320, 180), (160, 90)])  # downscale and (partly) upscale
def test_preprocess_against_pil_bicubic(src):
    Image = pytest.importorskip("PIL.Image")
    small = np.random.default_rng(0).integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
    frame = np.asarray(Image.fromarray(small).resize(src, Image.BILINEAR))  # smooth-ish content
    pil = np.asarray(Image.fromarray(frame).resize((224, 224), Image.BICUBIC)).astype(np.float32) / 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pil = (torch.from_numpy(pil).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / std
    assert torch.allclose(preprocess_frames(frame[None], 224)[0], pil, atol=1e-6)
    for quantize in (False, True):
        levels = ((preprocess_frames(frame[None], 224, resize="torch", quantize=quantize)[0] - pil) * std * 255).abs()
        assert levels.max() <= (1.0 + 1e-3 if quantize else 1.5) and levels.mean() < 0.35  # PIL rounds between passes


def test_plan_clips_and_clip_batch():
    specs = plan_clips(10)
    assert [s.positions for s in specs] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]
    assert [s.padded for s in specs] == [False, False, True] and specs[-1].n_real == 2
    assert [s.clip_index for s in specs] == [0, 1, 2]
    assert not any(s.padded for s in plan_clips(8)) and len(plan_clips(8)) == 2
    assert plan_clips(0) == [] and plan_clips(1)[0].positions == [0, 0, 0, 0]
    frames = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    batch = clip_batch(frames, specs)
    assert batch.shape == (3, 4, 3, 2, 2)
    assert batch[:, :, 0, 0, 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]
    assert clip_batch(frames, []).shape[0] == 0
    with pytest.raises(IndexError):
        clip_batch(frames[:9], specs)
    assert ClipSpec(0, [0, 1, 2, 3], False).n_real == 4


def test_end_to_end_tiny_clip_tokens():
    frames = np.random.default_rng(1).integers(0, 256, size=(6, 72, 128, 3), dtype=np.uint8)
    pixels = preprocess_frames(frames, 224)
    specs = plan_clips(len(pixels))
    model = _random_model(VideoEncoderConfig.tiny())
    with torch.no_grad():
        tokens = model(clip_batch(pixels, specs))
    assert tokens.shape == (2, 784, 64)

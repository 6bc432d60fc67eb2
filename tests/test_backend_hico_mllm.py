"""hico_mllm backend: a tiny random-weight checkpoint built on the fly and loaded through the public path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from annotators.backends.base import GenerationParams, Request, checkpoint_sha256
from annotators.backends.hico_mllm import (CONFIG_FILE, HicoMllmBackend, HicoMllmCheckpointError,
                                           qwen2_chat_prompt)
from annotators.tiny_hico_mllm import build_tiny_checkpoint, build_tokenizer
from pipeline.sampling import timestamp_prompt

MAX_NEW = 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_hico_mllm")
    build_tiny_checkpoint(str(directory), seed=0)
    return str(directory)


@pytest.fixture(scope="module")
def ckpt(checkpoint):
    return checkpoint


@pytest.fixture(scope="module")
def backend(ckpt):
    return HicoMllmBackend(ckpt, device="cpu", dtype="float32", batch_size=4,
                           params=GenerationParams(max_new_tokens=MAX_NEW))


def _frames(n: int, seed: int, h: int = 36, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _tokens(n_clips: int, seed: int, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_clips, 64, width)).astype(np.float16)


def _rewrite_weights(directory: str, edit) -> None:
    from safetensors.torch import load_file, save_file

    path = f"{directory}/model.safetensors"
    state = load_file(path)
    save_file(edit(dict(state)), path, metadata={"format": "pt"})


def _edit_config(directory: str, **changes) -> None:
    path = f"{directory}/{CONFIG_FILE}"
    with open(path) as f:
        data = json.load(f)
    data.update(changes)
    with open(path, "w") as f:
        json.dump(data, f)


# -- checkpoint ----------------------------------------------------------------------------------------------------


def test_tiny_checkpoint_layout(checkpoint, tmp_path):
    directory = checkpoint
    again = build_tiny_checkpoint(str(tmp_path / "again"), seed=0)
    assert checkpoint_sha256(again) == checkpoint_sha256(directory)  # seeded: same bytes
    assert checkpoint_sha256(build_tiny_checkpoint(str(tmp_path / "other"), seed=1)) != checkpoint_sha256(directory)
    from safetensors import safe_open

    with open(f"{directory}/{CONFIG_FILE}") as f:
        cfg = json.load(f)
    assert cfg["random_init"] is True and cfg["tokens_per_frame"] == 16
    assert cfg["projector"] == {"type": "mlp2x_gelu", "in_dim": 64, "hidden_dim": 64}
    with open(f"{directory}/config.json") as f:
        lm = json.load(f)
    assert (lm["model_type"], lm["hidden_size"], lm["num_hidden_layers"], lm["num_attention_heads"],
            lm["num_key_value_heads"]) == ("qwen2", 64, 2, 4, 2)
    with safe_open(f"{directory}/model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert {"model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.embed_tokens.weight",
            "lm_head.weight", "model.vision_tower.patch_embed.proj.weight",
            "model.vision_tower.norm.weight"} <= set(keys)


def test_tokenizer_roundtrip_and_chat_template(backend):
    trained = build_tokenizer(0)
    text = backend.render(Request("Why does the cook fold a paper map?", hico_tokens=_tokens(1, 0), duration_s=2))
    assert backend.tokenize(text) == trained(text, add_special_tokens=False)["input_ids"]
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>"):
        assert backend._single_token_id(token) is not None
    user = "<image>\nhello"
    via_template = backend.tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": user}], tokenize=False,
        add_generation_prompt=True)
    assert via_template == qwen2_chat_prompt(user, "S")


# -- prompts and splicing ------------------------------------------------------------------------------------------


def test_rendered_prompt(backend):
    q = "What does the woman lift?"
    text = backend.render(Request(q, hico_tokens=_tokens(3, 1), duration_s=75.5))
    assert text.count("<image>") == 1
    # the training text (preprocess_multimodal with --time_msg short): sentence, newline, question
    user = "<image>\nThe video lasts for 75.50 seconds, and 12 frames are uniformly sampled from it. \n" + q
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + user
                    + "<|im_end|>\n<|im_start|>assistant\n")
    assert "and 12 frames are uniformly sampled" in text  # 3 clips x 4 frames
    # the number of frames: extra['num_frames'] > len(frames) > n_clips * 4
    assert timestamp_prompt(75.5, 10) in backend.render(
        Request(q, hico_tokens=_tokens(3, 1), duration_s=75.5, extra={"num_frames": 10}))
    assert timestamp_prompt(9.0, 6) in backend.render(Request(q, frames=_frames(6, 0), duration_s=9.0))
    # system override; text-only requests have neither <image> nor the timestamp prompt
    assert backend.render(Request(q, system="Be brief.")) == qwen2_chat_prompt(q, "Be brief.")
    with pytest.raises(ValueError, match="must not contain"):
        backend.render(Request("look at <image> here", hico_tokens=_tokens(1, 0)))


def test_spliced_inputs_embeds(backend):
    for n_clips in (1, 3):
        tokens = _tokens(n_clips, n_clips)
        req = Request("Describe the video.", hico_tokens=tokens, duration_s=12.0)
        ids = backend.tokenize(backend.render(req))
        emb = backend.inputs_embeds(req)
        assert emb.shape == (len(ids) - 1 + n_clips * 64, 64)
        # the visual block sits exactly where <image> was, in clip order, and is the projected tokens
        at = ids.index(backend.image_token_id)
        with torch.inference_mode():
            visual = backend.projector(torch.from_numpy(tokens.reshape(-1, 64)).float())
            text_emb = backend.model.get_input_embeddings()(torch.tensor(ids))
        assert torch.equal(emb[at:at + n_clips * 64], visual)
        assert torch.equal(emb[:at], text_emb[:at])
        assert torch.equal(emb[at + n_clips * 64:], text_emb[at + 1:])
    text_only = Request("Say hello.")
    assert backend.inputs_embeds(text_only).shape[0] == len(backend.tokenize(backend.render(text_only)))


def test_bad_tokens_shape_names_the_request(backend):
    with pytest.raises(ValueError, match="vid-7.*hico_tokens"):
        backend.generate([Request("q", hico_tokens=np.zeros((2, 16, 64), np.float16), video_id="vid-7")])


# -- generation ----------------------------------------------------------------------------------------------------


def _mixed_requests():
    return [
        Request("What happens first?", hico_tokens=_tokens(2, 3), duration_s=31.0, video_id="a"),
        Request("Describe the video.", frames=_frames(6, 4), duration_s=6.0, video_id="b"),
        Request("Say something."),
        Request("How many times?", hico_tokens=_tokens(5, 5), duration_s=300.0, video_id="c"),
        Request("Why?", hico_tokens=_tokens(1, 6), duration_s=2.5, video_id="d"),
    ]


@pytest.mark.slow
def test_batch_of_three_returns_three_strings(backend):
    reqs = _mixed_requests()[:3]  # precomputed tokens, frames only, text only
    out = backend.generate(reqs)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)
    ids = backend.generate_ids(reqs)
    assert all(1 <= len(seq) <= MAX_NEW for seq in ids)
    assert len({tuple(seq) for seq in ids}) == 3  # each answer depends on its own input


@pytest.mark.slow
def test_greedy_is_deterministic_and_reload_reproduces(backend, ckpt):
    reqs = _mixed_requests()
    first = backend.generate(reqs)
    assert backend.generate(reqs) == first
    again = HicoMllmBackend(ckpt, batch_size=2, params=GenerationParams(max_new_tokens=MAX_NEW))
    assert again.generate(reqs) == first


@pytest.mark.slow
def test_batch_equals_one_by_one(backend):
    reqs = _mixed_requests()  # prompt lengths from ~30 to ~350 embeddings: heavy left padding
    lengths = {backend.inputs_embeds(r).shape[0] for r in reqs}
    assert len(lengths) == len(reqs)
    batched = backend.generate_ids(reqs)
    single = [backend.generate_ids([r])[0] for r in reqs]
    assert batched == single
    assert backend.generate(reqs) == [backend.generate([r])[0] for r in reqs]


@pytest.mark.slow
def test_precomputed_tokens_equal_frames_no_second_vision_pass(backend, monkeypatch):
    frames = _frames(6, 11)  # 2 clips, the second padded
    from_frames = Request("What is shown?", frames=frames, duration_s=6.0)
    tokens = backend.clip_encoder.encode(frames, 224).tokens
    assert tokens.dtype == np.float16 and tokens.shape == (2, 64, 64)
    from_tokens = Request("What is shown?", hico_tokens=tokens, duration_s=6.0, extra={"num_frames": 6})
    assert backend.render(from_tokens) == backend.render(from_frames)
    assert torch.equal(backend.inputs_embeds(from_tokens), backend.inputs_embeds(from_frames))
    expected = backend.generate_ids([from_frames])

    def no_vision(*args, **kwargs):
        raise AssertionError("the vision tower ran although tokens were given")

    monkeypatch.setattr(backend.clip_encoder, "encode", no_vision)
    assert backend.generate_ids([from_tokens]) == expected
    # with frames and tokens both given, the tokens are used (no vision pass) and T = len(frames)
    both = Request("What is shown?", frames=frames, hico_tokens=tokens, duration_s=6.0)
    assert backend.generate_ids([both]) == expected


def test_backend_without_vision_tower(ckpt):
    b = HicoMllmBackend(ckpt, params=GenerationParams(max_new_tokens=4), load_vision=False)
    assert b.clip_encoder is None
    assert len(b.generate([Request("q", hico_tokens=_tokens(2, 0), duration_s=8.0)])) == 1
    with pytest.raises(ValueError, match="load_vision=False"):
        b.generate([Request("q", frames=_frames(4, 0), duration_s=4.0)])


@pytest.mark.slow
def test_max_new_tokens_respected(ckpt):
    reqs = _mixed_requests()
    for n in (1, 3):
        b = HicoMllmBackend(ckpt, params=GenerationParams(max_new_tokens=n), load_vision=True)
        assert all(1 <= len(seq) <= n for seq in b.generate_ids(reqs))


@pytest.mark.slow
def test_sampling_is_seeded(backend):
    reqs = _mixed_requests()[:3]
    saved = backend.params
    try:
        backend.params = GenerationParams(max_new_tokens=MAX_NEW, do_sample=True, temperature=1.5, seed=3)
        a = backend.generate_ids(reqs)
        assert backend.generate_ids(reqs) == a
    finally:
        backend.params = saved


# -- provenance and loading errors ---------------------------------------------------------------------------------


def test_info_provenance(backend, ckpt):
    info = backend.info
    assert info.backend == "hico_mllm" and info.model == ckpt
    assert info.weights_sha256 == checkpoint_sha256(ckpt) and len(info.weights_sha256) == 64
    assert info.random_init is True
    assert backend.clip_encoder.report.random_init is True
    assert backend.clip_encoder.report.weights_sha256 == info.weights_sha256


def test_missing_projector_key_is_a_clear_error(ckpt, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(ckpt, broken)
    _rewrite_weights(broken, lambda s: {k: v for k, v in s.items() if k != "model.mm_projector.2.bias"})
    with pytest.raises(HicoMllmCheckpointError) as err:
        HicoMllmBackend(broken)
    msg = str(err.value)
    assert "'model.mm_projector.2.bias'" in msg and "'2.bias'" in msg and "'model.mm_projector.'" in msg
    assert "key_prefixes.projector" in msg


def test_missing_lm_and_vision_keys_are_clear_errors(ckpt, tmp_path):
    lm_broken = str(tmp_path / "lm")
    shutil.copytree(ckpt, lm_broken)
    _rewrite_weights(lm_broken, lambda s: {k: v for k, v in s.items() if k != "model.norm.weight"})
    with pytest.raises(HicoMllmCheckpointError, match="model.norm.weight"):
        HicoMllmBackend(lm_broken)
    vis_broken = str(tmp_path / "vision")
    shutil.copytree(ckpt, vis_broken)
    _rewrite_weights(vis_broken, lambda s: {k: v for k, v in s.items() if not k.startswith("model.vision_tower.")})
    _edit_config(vis_broken, random_init=False)
    with pytest.raises(HicoMllmCheckpointError, match="vision prefix 'model.vision_tower.'"):
        HicoMllmBackend(vis_broken)
    assert HicoMllmBackend(vis_broken, load_vision=False).info.random_init is False
    with pytest.raises(HicoMllmCheckpointError, match="not a hico_mllm checkpoint"):
        HicoMllmBackend(str(tmp_path))


@pytest.mark.slow
def test_videochat_flash_style_prefixes(backend, ckpt, tmp_path):
    """The same weights under VideoChat-Flash's key names load by setting key_prefixes, with the same answers."""
    renamed = str(tmp_path / "vcf")
    shutil.copytree(ckpt, renamed)

    def rename(state):
        out = {}
        for k, v in state.items():
            if k.startswith("model.mm_projector."):
                k = "model.mm_projector.mlp." + k[len("model.mm_projector."):]
            elif k.startswith("model.vision_tower."):
                rest = k[len("model.vision_tower."):]
                rest = "vision_layernorm." + rest[len("norm."):] if rest.startswith("norm.") else rest
                k = "model.vision_tower.vision_tower.encoder." + rest
            out[k] = v
        return out

    _rewrite_weights(renamed, rename)
    _edit_config(renamed, key_prefixes={"vision": "model.vision_tower.vision_tower.",
                                        "projector": "model.mm_projector.mlp.", "lm": ""})
    other = HicoMllmBackend(renamed, params=GenerationParams(max_new_tokens=MAX_NEW))
    reqs = _mixed_requests()[:3]
    assert other.generate_ids(reqs) == backend.generate_ids(reqs)


def test_image_placeholder_that_is_not_a_token(ckpt, tmp_path):
    """Real Qwen2 tokenizers have no <image> token: the prompt is tokenised in two pieces around it."""
    other_dir = str(tmp_path / "placeholder")
    shutil.copytree(ckpt, other_dir)
    _edit_config(other_dir, image_token="<video>")
    b = HicoMllmBackend(other_dir, params=GenerationParams(max_new_tokens=4))
    assert b.image_token_id is None
    req = Request("What happens?", hico_tokens=_tokens(2, 0), duration_s=8.0)
    text = b.render(req)
    assert text.count("<video>\n") == 1 and "<image>" not in text
    before, after = text.split("<video>")
    assert b.inputs_embeds(req).shape[0] == len(b.tokenize(before)) + 2 * 64 + len(b.tokenize(after))
    assert len(b.generate([req])) == 1


def test_config_preset_form_and_errors_name_the_key(ckpt, tmp_path):
    from annotators.backends.hico_mllm import HicoMllmConfig

    other = str(tmp_path / "cfg")
    shutil.copytree(ckpt, other)
    _edit_config(other, vision_encoder={"preset": "tiny"})
    assert HicoMllmConfig.load(other).vision_encoder == HicoMllmConfig.load(ckpt).vision_encoder
    for change, key in (({"vision_encoder": {"preset": "from_dict"}}, "vision_encoder"),
                        ({"projector": {"in_dim": 32, "hidden_dim": 64}}, "projector.in_dim"),
                        ({"key_prefixes": {"visual": "x."}}, "key_prefixes"),
                        ({"chat_template": "llama"}, "chat_template"),
                        ({"tokens_per_frmae": 16}, "tokens_per_frmae")):
        shutil.copy(f"{ckpt}/{CONFIG_FILE}", f"{other}/{CONFIG_FILE}")
        _edit_config(other, **change)
        with pytest.raises(HicoMllmCheckpointError, match=f"{CONFIG_FILE}: {key}"):
            HicoMllmConfig.load(other)
    shutil.copy(f"{ckpt}/{CONFIG_FILE}", f"{other}/{CONFIG_FILE}")
    _edit_config(other, projector={"in_dim": 64, "hidden_dim": 32})
    with pytest.raises(HicoMllmCheckpointError, match="hidden_size 64"):
        HicoMllmBackend(other)

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

from annotators.backends.hico_mllm.backend import HicoMllmBackend, Prepared
from annotators.backends.hico_mllm.config import (CONFIG_FILE, DEFAULT_KEY_PREFIXES, ENDOFTEXT, IM_END, IM_START,
                                                  QWEN2_CHAT_TEMPLATE, QWEN2_SYSTEM, HicoMllmCheckpointError,
                                                  HicoMllmConfig, qwen2_chat_prompt)
from annotators.backends.hico_mllm.weights import WeightIndex, build_projector

__all__ = ["CONFIG_FILE", "DEFAULT_KEY_PREFIXES", "ENDOFTEXT", "IM_END", "IM_START", "HicoMllmBackend",
           "HicoMllmCheckpointError", "HicoMllmConfig", "Prepared", "QWEN2_CHAT_TEMPLATE", "QWEN2_SYSTEM",
           "WeightIndex", "build_projector", "qwen2_chat_prompt"]

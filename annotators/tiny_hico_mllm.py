"""A tiny random-weight hico_mllm checkpoint, built offline in about a second, for tests and the demo.

It has exactly the layout :mod:`annotators.backends.hico_mllm` documents (and a real checkpoint has), so
``HicoMllmBackend`` loads it through the same code path:

* ``longvid_hico_mllm.json`` with ``random_init: true`` (every annotation made with it says so);
* ``config.json``: a Qwen2 LM with hidden 64, 2 layers, 4 heads, 2 KV heads, untied embeddings;
* ``model.safetensors``: all weights under the default key prefixes - the LM under its transformers names, the tiny
  UMT encoder (``VideoEncoderConfig.tiny()``: width 64, 4 heads, features of block 0 of 2) under
  ``model.vision_tower.``, the projector (64 -> 64 -> 64) under ``model.mm_projector.``; all random (seeded);
* a byte-level BPE tokenizer (Qwen2's pre-tokenisation) trained now with ``tokenizers`` on generated sentences, with
  the special tokens ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` and ``<image>``, saved as a transformers
  fast tokenizer with the qwen_2 chat template (AutoTokenizer loads it as a Qwen2Tokenizer, as a real checkpoint).

Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import random

from annotators.backends.hico_mllm.config import (CONFIG_FILE, DEFAULT_KEY_PREFIXES, ENDOFTEXT, IM_END, IM_START,
                                                  QWEN2_CHAT_TEMPLATE)
from annotators.backends.hico_mllm.weights import build_projector
from schemas.sampling import IMAGE_TOKEN

SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, IMAGE_TOKEN]
BPE_VOCAB_SIZE = 512
HIDDEN = 64

_WHO = ["a woman", "the old man", "two kids", "the cook", "a dog", "the referee", "a girl in red", "the pilot",
        "a farmer", "the teacher", "three friends", "the baker", "a boy", "the nurse", "a tourist"]
_DOES = ["slices", "lifts", "washes", "kicks", "holds", "fixes", "stacks", "waves at", "follows", "fills",
         "folds", "moves", "checks", "buys", "hides"]
_WHAT = ["an apple", "the green chair", "a paper map", "the front gate", "a tall ladder", "the metal pan",
         "a striped shirt", "the old radio", "a glass of milk", "the boat", "a heavy bag", "the flowers",
         "a yellow kite", "the piano", "a stack of plates"]
_FORMS = [
    "{a} {b} {c}.",
    "After {a} {b} {c}, {a2} {b2} {c2}.",
    "Why does {a} {b} {c}?",
    "The video lasts for {s}.{cs:02d} seconds, and {n} frames are uniformly sampled from it.",
    "The event happens in the {s}.{d} - {s2}.{d2} seconds.",
    "Describe what {a} does. {a} {b} {c}.",
    "How many times does {a} {b} {c}? {n} times.",
    "Which happens first: {a} {b} {c}, or {a2} {b2} {c2}?",
    "Answer with the option's letter. (A) {c} (B) {c2}",
]


def _sentences(seed: int, n: int = 400) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        form = rng.choice(_FORMS)
        out.append(form.format(a=rng.choice(_WHO), b=rng.choice(_DOES), c=rng.choice(_WHAT), a2=rng.choice(_WHO),
                               b2=rng.choice(_DOES), c2=rng.choice(_WHAT), s=rng.randint(0, 7200),
                               s2=rng.randint(0, 7200), cs=rng.randint(0, 99), d=rng.randint(0, 9),
                               d2=rng.randint(0, 9), n=rng.randint(1, 512)))
    return out


def _byte_level_symbol(byte: int) -> str:
    """The character byte-level BPE (GPT-2 / Qwen2) writes for one byte: printable Latin-1 bytes stand for
    themselves, the others are shifted to 256 + their rank among them."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    if byte in printable:
        return chr(byte)
    return chr(256 + [b for b in range(256) if b not in printable].index(byte))


def readable_alphabet() -> list[str]:
    """Byte-level symbols of printable ASCII, tab and newlines. A tiny random-weight model whose vocabulary holds only
    these writes meaningless but readable text: no control characters, no broken UTF-8 (which validation rejects),
    so the demo shows captions and the QA built from them."""
    return [_byte_level_symbol(b) for b in (9, 10, 13, *range(32, 127))]


def build_tokenizer(seed: int = 0):
    """Byte-level BPE (Qwen2's pre-tokenisation) trained on generated sentences, as a transformers fast tokenizer
    with the qwen_2 chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Qwen2's own pipeline (NFC, its split regex, byte-level without regex): AutoTokenizer loads this directory as
    # a Qwen2Tokenizer (config.json says qwen2), which rebuilds exactly this pipeline around the trained BPE.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=readable_alphabet())
    tok.train_from_iterator(_sentences(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=ENDOFTEXT,
                                   padding_side="left", model_max_length=32768)
    fast.chat_template = QWEN2_CHAT_TEMPLATE
    return fast


def build_tiny_checkpoint(directory: str, seed: int = 0) -> str:
    """Write a tiny random-weight hico_mllm checkpoint to `directory` (created if needed); return it."""
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from compressors.encoder import UMTVideoEncoder, VideoEncoderConfig, init_random_weights

    directory = str(directory)
    os.makedirs(directory, exist_ok=True)
    tokenizer = build_tokenizer(seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}

    lm_config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=ids[ENDOFTEXT], eos_token_id=ids[IM_END], pad_token_id=ids[ENDOFTEXT])
    torch.manual_seed(seed)
    lm = Qwen2ForCausalLM(lm_config).eval()

    vision_config = VideoEncoderConfig.tiny()
    vision = UMTVideoEncoder(vision_config)
    init_random_weights(vision, seed)

    gen = torch.Generator().manual_seed(seed + 1)
    projector = build_projector(vision_config.width, HIDDEN)
    with torch.no_grad():
        for name, p in projector.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, p.shape[1] ** -0.5, generator=gen)

    prefixes = DEFAULT_KEY_PREFIXES
    state = {}
    for prefix, module in ((prefixes["lm"], lm), (prefixes["vision"], vision), (prefixes["projector"], projector)):
        for key, value in module.state_dict().items():
            state[prefix + key] = value.detach().to(torch.float32).contiguous().clone()
    save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    lm_config.save_pretrained(directory)
    GenerationConfig(bos_token_id=ids[ENDOFTEXT], eos_token_id=[ids[IM_END], ids[ENDOFTEXT]],
                     pad_token_id=ids[ENDOFTEXT], do_sample=False).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    ours = {
        "format_version": 1,
        "vision_encoder": {"config": vision_config.to_dict()},
        "tokens_per_frame": 16,
        "frame_size": 224,
        "projector": {"type": "mlp2x_gelu", "in_dim": vision_config.width, "hidden_dim": HIDDEN},
        "key_prefixes": dict(prefixes),
        "lm_config": "config.json",
        "image_token": IMAGE_TOKEN,
        "chat_template": "qwen_2",
        "random_init": True,
        "seed": seed,
        "note": "tiny random-weight checkpoint for tests and demos (annotators.tiny_hico_mllm); outputs are noise",
    }
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(ours, f, indent=2)
    return directory


if __name__ == "__main__":  # python -m annotators.tiny_hico_mllm OUT_DIR
    import sys

    print(build_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "tiny_hico_mllm"))

"""A tiny random-weight Qwen2.5-VL checkpoint, built offline in about a second, for tests and the demo.

The checkpoint is a real transformers-native video model (`Qwen2_5_VLForConditionalGeneration` + `Qwen2_5_VLProcessor`)
saved with `save_pretrained`, so `annotators.backends.transformers_backend.TransformersBackend` loads it through exactly
the code path a downloaded Qwen2.5-VL checkpoint takes (`AutoProcessor` / `AutoModelForImageTextToText`,
`local_files_only=True`). Nothing is downloaded: the byte-level BPE tokenizer is trained on the spot with the
`tokenizers` library on generated English sentences, and the weights are random (seeded). A marker file,
`longvid_tiny.json`, records that the weights are random so every annotation made with it says so.

Sizes: text decoder hidden 64, 2 layers, 4 heads (head dim 16, M-RoPE sections 2/3/3); vision tower hidden 32,
2 blocks, patch 14, 2x2 merge, temporal patch 2. The image and video processors resize every frame to at most 56x56
pixels, so a frame costs 4 merged visual tokens and 2 frames form one temporal patch.
"""

from __future__ import annotations

import json
import os
import random

MARKER_FILE = "longvid_tiny.json"

# Qwen2.5-VL control tokens: the chat template and the processor use these exact strings.
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VISION_PAD = "<|vision_pad|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, VISION_PAD, IMAGE_PAD, VIDEO_PAD]

BPE_VOCAB_SIZE = 400  # 98 readable byte symbols + 8 specials + merges

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = (PATCH_SIZE * MERGE_SIZE) ** 2  # 28x28: one merged token per frame pair at least
MAX_PIXELS = (2 * PATCH_SIZE * MERGE_SIZE) ** 2  # 56x56: at most 4 merged tokens per frame pair

# A Qwen-style ChatML template written for this project: one system turn (default when absent), user turns whose
# content is a string or a list of {"type": "text" | "image" | "video"} blocks, assistant turns, and the generation
# prompt. Each image / video block becomes <|vision_start|><|image_pad|> (or <|video_pad|>)<|vision_end|>; the processor
# expands the single pad token into one token per merged visual patch.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for block in message['content'] %}"
    "{% if block['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif block['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif block['type'] == 'text' %}{{ block['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_SUBJECTS = ["a man", "a woman", "the chef", "a child", "the dog", "two players", "the driver", "a cyclist",
             "the camera", "a group of people", "the speaker", "a cat", "the worker", "a student", "the crowd"]
_VERBS = ["walks into", "picks up", "opens", "cleans", "points at", "rides past", "cuts", "looks at", "pours water on",
          "carries", "drops", "paints", "climbs", "throws", "repairs"]
_OBJECTS = ["the kitchen", "a red box", "the door", "a wooden table", "the bicycle", "a bowl of soup", "the window",
            "a blue car", "the ball", "a small boat", "the stairs", "a laptop", "the garden", "a white wall",
            "the river"]
_TEMPLATES = [
    "{s} {v} {o}.",
    "First {s} {v} {o}, then {s2} {v2} {o2}.",
    "What happens after {s} {v} {o}?",
    "The video lasts for {n}.{m:02d} seconds, and {k} frames are uniformly sampled from it.",
    "The event happens in the {n}.{d} - {n2}.{d} seconds.",
    "Describe the video in detail. {s} {v} {o}.",
    "How many times does {s} {v} {o}? Answer: {k}.",
    "Question: why does {s} {v} {o}? Because {s2} {v2} {o2}.",
]


def _corpus(seed: int, n: int = 400) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        t = rng.choice(_TEMPLATES)
        lines.append(t.format(s=rng.choice(_SUBJECTS), v=rng.choice(_VERBS), o=rng.choice(_OBJECTS),
                              s2=rng.choice(_SUBJECTS), v2=rng.choice(_VERBS), o2=rng.choice(_OBJECTS),
                              n=rng.randint(0, 3600), n2=rng.randint(0, 3600), m=rng.randint(0, 99),
                              d=rng.randint(0, 9), k=rng.randint(1, 512)).capitalize())
    return lines


def build_tokenizer(seed: int = 0):
    """A byte-level BPE trained now on generated sentences, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    from annotators.tiny_hico_mllm import readable_alphabet

    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=readable_alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD_TOKEN,
                                   padding_side="left", model_max_length=32768)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_checkpoint(directory: str, seed: int = 0) -> str:
    """Write a tiny random-weight Qwen2.5-VL checkpoint (model + processor + marker) to `directory`; return it."""
    import torch
    from transformers import (GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    os.makedirs(directory, exist_ok=True)
    tokenizer = build_tokenizer(seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}

    pixels = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    image_processor = Qwen2VLImageProcessor(size=dict(pixels), patch_size=PATCH_SIZE, merge_size=MERGE_SIZE,
                                            temporal_patch_size=TEMPORAL_PATCH_SIZE)
    video_processor = Qwen2VLVideoProcessor(size=dict(pixels), patch_size=PATCH_SIZE, merge_size=MERGE_SIZE,
                                            temporal_patch_size=TEMPORAL_PATCH_SIZE, do_sample_frames=False,
                                            cap_pixels_per_frame=True)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=video_processor, chat_template=CHAT_TEMPLATE)

    text_config = {
        "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": ids[PAD_TOKEN], "eos_token_id": ids[IM_END], "pad_token_id": ids[PAD_TOKEN],
    }
    vision_config = {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
        "patch_size": PATCH_SIZE, "spatial_merge_size": MERGE_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "window_size": 2 * PATCH_SIZE * MERGE_SIZE, "fullatt_block_indexes": [1], "tokens_per_second": 2,
    }
    config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config,
                              image_token_id=ids[IMAGE_PAD], video_token_id=ids[VIDEO_PAD],
                              vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END],
                              tie_word_embeddings=False)

    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids[PAD_TOKEN], eos_token_id=[ids[IM_END], ids[PAD_TOKEN]], pad_token_id=ids[PAD_TOKEN],
        do_sample=False)

    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    with open(os.path.join(directory, MARKER_FILE), "w") as f:
        json.dump({"random_init": True, "family": "qwen2_5_vl", "seed": seed}, f, indent=2)
    return directory


if __name__ == "__main__":  # python -m annotators.tiny_transformers_vlm OUT_DIR
    import sys

    print(build_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "tiny_qwen2_5_vl"))

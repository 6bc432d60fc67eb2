"""UMT-L style video ViT for HiCo clip features, in plain PyTorch (no timm, no flash-attn).

The encoder turns a clip of ``T`` frames (``[B, T, 3, H, W]``, ImageNet-normalised, see
:mod:`compressors.preprocess`) into ``T/tubelet * (H/16) * (W/16)`` tokens of ``width`` channels: 784 tokens per
4-frame clip at 224 px, 3136 at 448 px. Token order is time-major (all patches of frame 0, then frame 1, ...), and
row-major within a frame. There is no CLS token. The features are those of block ``feature_block`` (a Python index,
``-2`` = second-to-last, as in VideoChat-Flash) after the final LayerNorm; blocks after it are neither built nor run.

Architecture: ``Conv3d`` patch embedding (kernel = stride = ``(tubelet, patch, patch)``) + positional embedding,
then pre-norm transformer blocks (LayerNorm -> multi-head self-attention over all ``T*P`` tokens of the clip with
``scaled_dot_product_attention`` -> residual; LayerNorm -> MLP with exact GELU -> residual), then ``norm``.

Positional embedding (``VideoEncoderConfig.pos_embed``), defined on the training grid
``(num_frames/tubelet, img_size/patch, img_size/patch)``:

* ``"sincos"`` -- fixed, separable 3-D sin-cos: the first 3/4 of the channels carry a 2-D (row, column) sin-cos
  code of the patch position, the last 1/4 a 1-D sin-cos code of the frame index. Not stored in the state dict.
* ``"learned"`` -- ``pos_embed_spatial [1, g*g, width]`` + ``pos_embed_temporal [1, T0, width]`` (added).
* ``"sincos_1d"`` -- fixed 1-D sinusoid table over all ``T0*g*g`` positions (VideoMAE / UMT
  ``get_sinusoid_encoding_table``, interleaved sin/cos), the layout of the released UMT-L checkpoints.

At another input resolution the spatial grid of the table is resized per frame (bicubic, ``align_corners=False``);
for another number of frames the temporal axis is resized linearly; a single frame gets the first frame's positions.
Resizing runs in float32. ``"sincos_1d"`` is always defined on UMT's pretraining grid (4 frames, 224 px) and resized
from there, as VideoChat-Flash's tower does for its 448 px model, whatever ``img_size`` the config names.

State-dict keys (what a checkpoint must provide, after prefix stripping)::

    patch_embed.proj.weight            [width, 3, tubelet, patch, patch]
    patch_embed.proj.bias              [width]
    pos_embed_spatial                  [1, (img_size/patch)^2, width]      (pos_embed="learned" only)
    pos_embed_temporal                 [1, num_frames/tubelet, width]      (pos_embed="learned" only)
    blocks.{i}.norm1.weight / .bias    [width]
    blocks.{i}.attn.qkv.weight         [3*width, width]
    blocks.{i}.attn.qkv.bias           [3*width]                           (qkv_bias=True)
    blocks.{i}.attn.q_bias / .v_bias   [width]                             (qkv_bias="qv": UMT style, k has no bias)
    blocks.{i}.attn.proj.weight / .bias
    blocks.{i}.norm2.weight / .bias
    blocks.{i}.mlp.fc1.weight / .bias  [mlp_ratio*width, width]
    blocks.{i}.mlp.fc2.weight / .bias  [width, mlp_ratio*width]
    norm.weight / norm.bias            [width]   (``vision_layernorm.*`` is accepted as an alias)

for ``i`` in ``0 .. num_blocks_run-1``. Keys of deeper blocks (``i < depth``) are reported as *unused*.

:func:`load_encoder` builds the model and loads a local ``.safetensors`` or torch ``.pt/.pth`` checkpoint; it
refuses to hand out random weights unless ``allow_random_init`` is set (tests and demos only), and its
:class:`LoadReport` records whether the weights are random and the checkpoint's sha256.
"""

from compressors.encoder.checkpoint import (CHECKPOINT_LAYOUTS, DEFAULT_KEY_PREFIXES, KEY_ALIASES, EncoderWeightsError,
                                            LoadReport, count_parameters, detect_layout, load_encoder, normalize_key)
from compressors.encoder.config import POS_EMBED_KINDS, VideoEncoderConfig, encoder_id
from compressors.encoder.model import (UMTVideoEncoder, init_random_weights, resize_pos_table, sincos_joint_table,
                                       sincos_separable_table)

__all__ = [
    "CHECKPOINT_LAYOUTS", "DEFAULT_KEY_PREFIXES", "EncoderWeightsError", "KEY_ALIASES", "LoadReport", "POS_EMBED_KINDS",
    "UMTVideoEncoder", "VideoEncoderConfig", "count_parameters", "detect_layout", "encoder_id", "init_random_weights",
    "load_encoder", "normalize_key", "resize_pos_table", "sincos_joint_table", "sincos_separable_table",
]

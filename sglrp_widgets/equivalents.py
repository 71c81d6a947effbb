"""Equivalents of layers whose ``call`` Keras cannot trace on symbolic inputs, written with ``keras.ops``.

``graph.py`` opens a layer it has no reading for by running its ``call`` on symbolic inputs. Some calls cannot
run that way: keras_hub's patch embeddings tile their class token to the batch size, ``ops.tile(token,
(batch, 1, 1))`` with ``batch`` unknown, and DeiT's encoder blocks return ``(x, None)``. An :class:`OpensAs`
names a function ``fn(layer, *inputs)`` that computes the same output from the layer's own sublayers and
weights in a traceable way; the reader opens that instead, and its replay probe checks on a random batch that
the two agree (else the layer stays opaque). Users register their own with ``register_layer(cls,
opens_as=fn)``; :data:`KNOWN_EQUIVALENTS` holds those for other libraries' layers, by class path, so none of
those libraries is imported here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

ops = keras.ops


@dataclass(frozen=True)
class OpensAs:
    """Open a layer as ``fn(layer, *args, **kwargs)``, an equivalent of its ``call`` that Keras can trace."""
    fn: Callable


def _patch_tokens(conv, data_format, inputs):
    """The patch convolution's output as a sequence of tokens (batch, patches, channels)."""
    tokens = conv(inputs)
    if data_format == "channels_first":
        tokens = ops.transpose(tokens, (0, 2, 3, 1))
    return ops.reshape(tokens, (-1, tokens.shape[1] * tokens.shape[2], tokens.shape[3]))


def _insert_tokens(tokens, weights, at: int):
    """``tokens`` with learned tokens (each weight (1, k, channels)) inserted before position ``at``, the same for
    every image. A weight tiled to the batch size is written ``0 * (first token) + weight``: traceable with
    the batch size unknown, and a constant per image, which gets no relevance (as a bias)."""
    zero = tokens[:, :1] * 0.0
    parts = [zero + w for w in weights] + [tokens[:, at:] if at else tokens]
    return ops.concatenate(([tokens[:, :at]] if at else []) + parts, axis=1)


def _vit_patching_and_embedding(layer, inputs):
    """keras_hub's ``ViTPatchingAndEmbedding``: patch tokens, the class token in front, the position embedding
    added (its position ids are 0..n-1, so the embedding is its table)."""
    tokens = _patch_tokens(layer.patch_embedding, layer.data_format, inputs)
    if layer.use_class_token:
        tokens = _insert_tokens(tokens, [layer.class_token], 0)
    return tokens + layer.position_embedding.embeddings


def _without_masks(*masks):
    if any(m is not None for m in masks):   # the layer stays opaque: a masked call is not what is written here
        raise ValueError("masked call")


def _deit_embeddings(layer, inputs, bool_masked_pos=None):
    """keras_hub's ``DeiTEmbeddings`` at inference without masks: the class and the distillation token in
    front of the patch tokens, plus the position embedding."""
    _without_masks(bool_masked_pos)
    tokens = _patch_tokens(layer.patch_embedding, layer.data_format, inputs)
    return _insert_tokens(tokens, [layer.class_token, layer.distillation_token], 0) + layer.position_embedding


def _dino_embedding(layer, inputs, masks=None, training=None):
    """keras_hub's ``DINOV2Embedding`` and ``DINOV3Embedding`` at inference without masks: the class token in
    front of the patch tokens, DINOv2's (interpolated) position embedding added (DINOv3's positions enter
    later, as rotary embeddings in the attention), then the register tokens after the class token."""
    _without_masks(masks)
    tokens = _insert_tokens(layer.patch_embeddings(inputs), [layer.cls_token], 0)
    if hasattr(layer, "interpolated_position_embeddings"):
        tokens = tokens + layer.interpolated_position_embeddings
    if layer.num_register_tokens > 0:
        tokens = _insert_tokens(tokens, [layer.register_tokens], 1)
    return tokens


def _deit_encoder(layer, hidden_states, attention_masks=None, output_hidden_states=False,
                  return_attention_scores=False):
    """keras_hub's ``DeiTEncoder`` without masks, hidden states or scores: its blocks' ``call`` in turn (Keras
    cannot trace the blocks themselves, which return ``(x, None)``), the final LayerNormalization, and the two
    empty outputs the layer returns beside it, as slices of nothing."""
    _without_masks(attention_masks)
    x = hidden_states
    for block in layer.encoder_layers:
        x = block.call(x)[0]
    x = layer.layer_norm(x)
    seq, dim = x.shape[1], x.shape[2]
    nothing = ops.slice(x, (0, 0, 0), (0, seq, dim))
    return x, nothing, ops.reshape(nothing, (0, layer.num_heads, seq, seq))


def _windows(x, size: int):
    """Swin's window partition: (batch, H, W, C), H and W multiples of ``size``, to (batch, windows, size², C),
    windows in row-major order. The batch stays an axis of its own (Swin's own code merges it with the windows
    and divides it out again, which Keras cannot do with the batch size unknown)."""
    h, w, c = x.shape[1:]
    x = ops.reshape(x, (-1, h // size, size, w // size, size, c))
    return ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, (h // size) * (w // size), size * size, c))


def _unwindows(x, size: int, h: int, w: int):
    """The inverse of :func:`_windows`."""
    c = x.shape[-1]
    x = ops.reshape(x, (-1, h // size, w // size, size, size, c))
    return ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, h, w, c))


def _shifted_window_mask(h: int, w: int, size: int, shift: int) -> np.ndarray:
    """Swin's attention mask for windows shifted by ``shift`` on an (h, w) map padded to multiples of ``size``:
    -100 between two tokens of a window that come from different regions of the unshifted map, else 0;
    (windows, size², size²)."""
    regions = np.zeros((h, w), np.int32)
    bands = lambda n: (slice(0, n - size), slice(n - size, n - shift), slice(n - shift, n))
    for i, (rows, cols) in enumerate((r, c) for r in bands(h) for c in bands(w)):
        regions[rows, cols] = i
    regions = np.pad(regions, ((0, -h % size), (0, -w % size)))
    regions = regions.reshape(regions.shape[0] // size, size, regions.shape[1] // size, size)
    regions = regions.transpose(0, 2, 1, 3).reshape(-1, size * size)
    return np.where(regions[:, None, :] != regions[:, :, None], -100.0, 0.0).astype("float32")


def _window_attention(layer, windows, mask):
    """keras_hub's ``WindowAttention`` on (batch, windows, tokens, C): multi-head attention within each window,
    with the relative position bias and, for shifted windows, the mask of each window added to the scores."""
    n_windows, tokens = windows.shape[1], windows.shape[2]
    heads, head_dim = layer.num_heads, layer.head_dim
    qkv = ops.reshape(layer.qkv(windows), (-1, n_windows, tokens, 3, heads, head_dim))
    q, k, v = (ops.transpose(qkv[:, :, :, i], (0, 1, 3, 2, 4)) for i in range(3))
    scores = ops.matmul(q * ops.cast(layer.scale, qkv.dtype), ops.transpose(k, (0, 1, 2, 4, 3)))
    scores = scores + layer._get_rel_pos_bias()
    if mask is not None:
        scores = scores + ops.expand_dims(mask, 1)
    out = ops.transpose(ops.matmul(ops.softmax(scores, axis=-1), v), (0, 1, 3, 2, 4))
    return layer.proj(ops.reshape(out, (-1, n_windows, tokens, heads * head_dim)))


def _swin_transformer_block(layer, x):
    """keras_hub's ``SwinTransformerBlock`` at inference: attention within (shifted) windows of the token map,
    then the MLP, each with its residual."""
    (h, w), size, shift = layer.input_resolution, layer.window_size, layer.shift_size
    c = x.shape[-1]
    grid = ops.reshape(layer.norm1(x), (-1, h, w, c))
    if shift:
        grid = ops.roll(grid, shift=(-shift, -shift), axis=(1, 2))
    padded_h, padded_w = h + -h % size, w + -w % size
    if (padded_h, padded_w) != (h, w):
        grid = ops.pad(grid, ((0, 0), (0, padded_h - h), (0, padded_w - w), (0, 0)))
    mask = ops.convert_to_tensor(_shifted_window_mask(h, w, size, shift)) if shift else None
    grid = _unwindows(_window_attention(layer.attn, _windows(grid, size), mask), size, padded_h, padded_w)
    if shift:
        grid = ops.roll(grid, shift=(shift, shift), axis=(1, 2))
    x = x + layer.drop_path(ops.reshape(grid[:, :h, :w, :], (-1, h * w, c)))
    return x + layer.drop_path(layer.mlp(layer.norm2(x)))


#: Equivalents for layers of other libraries, by the class's module and name.
KNOWN_EQUIVALENTS: dict[str, OpensAs] = {
    "keras_hub.src.models.vit.vit_layers.ViTPatchingAndEmbedding": OpensAs(_vit_patching_and_embedding),
    "keras_hub.src.models.deit.deit_layers.DeiTEmbeddings": OpensAs(_deit_embeddings),
    "keras_hub.src.models.deit.deit_layers.DeiTEncoder": OpensAs(_deit_encoder),
    "keras_hub.src.models.dinov2.dinov2_layers.DINOV2Embedding": OpensAs(_dino_embedding),
    "keras_hub.src.models.dinov3.dinov3_layers.DINOV3Embedding": OpensAs(_dino_embedding),
    "keras_hub.src.models.swin_transformer.swin_transformer_layers.SwinTransformerBlock":
        OpensAs(_swin_transformer_block),
}

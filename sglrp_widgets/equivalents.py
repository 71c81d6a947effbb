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


def _deit_embeddings(layer, inputs, bool_masked_pos=None):
    """keras_hub's ``DeiTEmbeddings`` at inference without masks: the class and the distillation token in
    front of the patch tokens, plus the position embedding."""
    tokens = _patch_tokens(layer.patch_embedding, layer.data_format, inputs)
    return _insert_tokens(tokens, [layer.class_token, layer.distillation_token], 0) + layer.position_embedding


def _dinov2_embedding(layer, inputs, masks=None, training=None):
    """keras_hub's ``DINOV2Embedding`` at inference without masks: the class token in front of the patch
    tokens, the (interpolated) position embedding added, then the register tokens after the class token."""
    tokens = layer.patch_embeddings(inputs)
    tokens = _insert_tokens(tokens, [layer.cls_token], 0) + layer.interpolated_position_embeddings
    if layer.num_register_tokens > 0:
        tokens = _insert_tokens(tokens, [layer.register_tokens], 1)
    return tokens


def _deit_encoder(layer, hidden_states, attention_masks=None, output_hidden_states=False,
                  return_attention_scores=False):
    """keras_hub's ``DeiTEncoder`` without masks, hidden states or scores: its blocks' ``call`` in turn (Keras
    cannot trace the blocks themselves, which return ``(x, None)``), the final LayerNormalization, and the two
    empty outputs the layer returns beside it, as slices of nothing."""
    x = hidden_states
    for block in layer.encoder_layers:
        x = block.call(x)[0]
    x = layer.layer_norm(x)
    seq, dim = x.shape[1], x.shape[2]
    nothing = ops.slice(x, (0, 0, 0), (0, seq, dim))
    return x, nothing, ops.reshape(nothing, (0, layer.num_heads, seq, seq))


#: Equivalents for layers of other libraries, by the class's module and name.
KNOWN_EQUIVALENTS: dict[str, OpensAs] = {
    "keras_hub.src.models.vit.vit_layers.ViTPatchingAndEmbedding": OpensAs(_vit_patching_and_embedding),
    "keras_hub.src.models.deit.deit_layers.DeiTEmbeddings": OpensAs(_deit_embeddings),
    "keras_hub.src.models.deit.deit_layers.DeiTEncoder": OpensAs(_deit_encoder),
    "keras_hub.src.models.dinov2.dinov2_layers.DINOV2Embedding": OpensAs(_dinov2_embedding),
}

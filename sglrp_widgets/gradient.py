"""The gradient and CAM back end: the model replayed exactly (nothing folded) in one ``tf.function``.

Each gradient or CAM method is a function in its registry entry (``methods.py``) that receives this back end
as a toolbox: :meth:`GradientBackend.logits`, :meth:`GradientBackend.gradient` (optionally with guided or
deconvnet ReLUs, or at a feature map) and :meth:`GradientBackend.resolve`. Rows are image x target pairs:
several targets per image are computed in one batched call.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from . import rules as R
from .compiling import Pass
from .errors import ExplainError, suggest
from .graph import Graph


class Grad(NamedTuple):
    grad: tf.Tensor          # d z_t / d x (or / d feature)
    logits: tf.Tensor
    targets: tf.Tensor       # resolved targets (rows, 1)
    feature: tf.Tensor | None


@tf.custom_gradient
def _guided_relu(x):
    def grad(dy):
        return tf.nn.relu(dy) * tf.cast(x > 0, dy.dtype)
    return tf.nn.relu(x), grad


@tf.custom_gradient
def _deconv_relu(x):
    def grad(dy):
        return tf.nn.relu(dy)
    return tf.nn.relu(x), grad


_RELU_MODES = {"guided": _guided_relu, "deconvnet": _deconv_relu}


def resolve_targets(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Negative targets ``-r-1`` become the r-th most probable class of each row (in-graph).

    Gradient and CAM methods resolve targets from the logits of the same forward pass they differentiate;
    LRP resolves them on the host from its cached forward state.
    """
    k = tf.shape(targets)[1]
    ranked = tf.math.top_k(logits, k=tf.maximum(k, 1)).indices
    rank = tf.clip_by_value(-targets - 1, 0, tf.maximum(k - 1, 0))
    return tf.where(targets < 0, tf.gather(ranked, rank, batch_dims=1), targets)


def cam_feature(graph: Graph, method: str, layer: str | None) -> int:
    """The value id of the feature map a CAM method uses: ``layer`` (default: the last convolution), taken
    after its BatchNorm and activation."""
    convs = [nd.name for nd in graph.nodes if nd.kind == "linear" and nd.op.family == "conv"
             and not nd.op.depthwise_part]
    name = layer
    if name is None:
        if not convs:
            raise ExplainError(f"Method {method!r} needs a convolutional layer; the model has none. Use a "
                               "gradient or LRP method instead.")
        name = convs[-1]
    if name not in graph.feature_value:
        raise ExplainError(f"layer={name!r} is not a layer of the model. Convolutional layers: "
                           f"{', '.join(convs)}.{suggest(name, convs)}")
    value = graph.feature_value[name]
    consumers, producer = graph.consumers(), graph.producer()
    if value not in producer:
        raise ExplainError(f"layer={name!r} is not on the path to the explained output.")
    while len(consumers.get(value, [])) == 1:        # take the map after its BatchNorm / activation
        nxt = graph.nodes[consumers[value][0]]
        if nxt.kind not in ("affine", "activation"):
            break
        value = nxt.output
    return value


class GradientBackend:
    """One gradient or CAM method on one read model."""

    def __init__(self, graph: Graph, method, params: dict, counter, compile: str = "background"):
        self.graph = graph
        self.method = method
        self.params = params
        self.feature = cam_feature(graph, method.name, params.get("layer")) if method.kind == "cam" else None
        spec = tf.TensorSpec((None,) + tuple(graph.input_shape), tf.float32)
        tspec = tf.TensorSpec((None, None), tf.int32)
        self.fn = Pass(self._body, mode=compile, signature=[spec, tspec], counter=counter,
                       warm_args=lambda images, targets: (images[:1], targets[:1]))
        self.passes = (self.fn,)

    uses_bounds = False

    def explain(self, x, spec, low_high=None, state_key=None, **_):
        """Relevance (K, N, ...), logits (N, C) and resolved targets (N, K) in one compiled call."""
        r, z, t = self.fn(tf.constant(x), tf.constant(spec))
        return r.numpy(), z.numpy(), t.numpy().astype(np.int64)

    def _body(self, images, targets):
        n, k = tf.shape(images)[0], tf.shape(targets)[1]
        x = tf.tile(images, tf.concat([[k], tf.ones([tf.rank(images) - 1], tf.int32)], 0))
        t = tf.reshape(tf.transpose(targets), [-1, 1])           # rows k*N + n: image n, its k-th target
        rel, logits, tt = self.method.compute(self, x, t, self.params)
        return R.by_head(rel, n), logits[:n], tf.transpose(tf.reshape(tt, [k, n]))

    # -- the toolbox the methods use ----------------------------------------------------------------------
    def logits(self, x: tf.Tensor) -> tf.Tensor:
        return self.graph.forward(x)

    resolve = staticmethod(resolve_targets)

    def gradient(self, x: tf.Tensor, targets: tf.Tensor, *, relu: str | None = None, at_feature: bool = False
                 ) -> Grad:
        """The gradient of each row's target logit, w.r.t. ``x`` or (``at_feature``) the CAM feature map.

        ``relu="guided"`` or ``"deconvnet"`` replaces every plain ReLU's backward pass.
        """
        override = None
        if relu is not None:
            fn = _RELU_MODES[relu]

            def override(i, node, ins):
                if node.kind == "activation" and node.attrs.get("activation") == "relu" \
                        and node.attrs.get("floor_zero", True):
                    return fn(ins[0])
                return None
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits, values = self.graph.forward(x, override=override, keep=True)
            tt = resolve_targets(logits, targets)
            score = tf.reduce_sum(tf.gather(logits, tt, batch_dims=1))
        feature = values[self.feature] if at_feature else None
        return Grad(tape.gradient(score, feature if at_feature else x), logits, tt, feature)

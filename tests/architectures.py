"""Real architectures for the tests: the smallest model of every keras.applications family (random weights,
small inputs, BatchNorm statistics set from a batch so the net is alive, logits scaled to a trained net's
range) and a small vision transformer built from keras.layers."""
from __future__ import annotations

import keras
import numpy as np
from keras import layers as L
from keras import ops

A = keras.applications

#: family -> (constructor, smallest input side it accepts)
FAMILIES = {
    "VGG16": (A.VGG16, 32), "ResNet50": (A.ResNet50, 32), "ResNet50V2": (A.ResNet50V2, 32),
    "DenseNet121": (A.DenseNet121, 32), "InceptionV3": (A.InceptionV3, 75),
    "InceptionResNetV2": (A.InceptionResNetV2, 75), "Xception": (A.Xception, 71), "MobileNet": (A.MobileNet, 32),
    "MobileNetV2": (A.MobileNetV2, 32), "MobileNetV3Small": (A.MobileNetV3Small, 32),
    "EfficientNetB0": (A.EfficientNetB0, 32), "EfficientNetV2B0": (A.EfficientNetV2B0, 32),
    "NASNetMobile": (A.NASNetMobile, 32), "ConvNeXtTiny": (A.ConvNeXtTiny, 32),
}


def images(model, n=2, seed=0) -> np.ndarray:
    """Images in [0, 255] of the model's input shape (what keras.applications models take when they include
    their own preprocessing; the others see an unusual range, which is fine for random weights)."""
    return np.random.default_rng(seed).uniform(0, 255, (n,) + tuple(model.input_shape[1:])).astype("float32")


def alive(model, x: np.ndarray, logit_std: float = 3.0):
    """Set every BatchNorm's statistics from ``x`` (momentum 0, one training-mode call) and scale the
    classifier layer so the logits on ``x`` have about ``logit_std`` spread: a random net that behaves like a trained
    one (activations neither vanish nor explode, the softmax does not saturate)."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, L.BatchNormalization):
            layer.momentum = 0.0
    model(x, training=True)
    head = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, (L.Dense, L.Conv2D))][-1]          # the classifier (a 1x1 conv in MobileNetV3)
    z = np.asarray(model(x))
    spread = float(z.std()) or 1.0
    head.kernel.assign(head.kernel * (logit_std / spread))
    if head.bias is not None:
        head.bias.assign(head.bias * (logit_std / spread))
    return model


def application(name: str, classes: int = 7):
    constructor, side = FAMILIES[name]
    model = constructor(weights=None, input_shape=(side, side, 3), classes=classes, classifier_activation=None)
    return alive(model, images(model, 8, seed=1))


@keras.saving.register_keras_serializable(package="sglrp_widgets_tests")
class PositionEmbedding(L.Layer):
    """A learned position embedding added to the tokens, written with keras.ops (the engine opens it)."""

    def build(self, input_shape):
        self.embedding = self.add_weight(shape=tuple(input_shape[1:]), initializer="random_normal", name="pos")

    def call(self, x):
        return x + ops.expand_dims(self.embedding, 0)


def vit(image_size=16, patch=4, dim=16, depth=2, heads=2, classes=5, seed=3):
    """A small pre-norm vision transformer from keras.layers, with random weights and a softmax head."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((image_size, image_size, 3))
    x = L.Rescaling(1 / 255.0)(inp)
    x = L.Conv2D(dim, patch, strides=patch, name="patches")(x)
    x = L.Reshape(((image_size // patch) ** 2, dim))(x)
    x = PositionEmbedding(name="position")(x)
    for i in range(depth):
        y = L.LayerNormalization(epsilon=1e-6, name=f"ln{i}a")(x)
        y = L.MultiHeadAttention(heads, dim // heads, name=f"mha{i}")(y, y)
        x = L.Add()([x, y])
        y = L.LayerNormalization(epsilon=1e-6, name=f"ln{i}b")(x)
        y = L.Dense(2 * dim, activation="gelu", name=f"mlp{i}a")(y)
        y = L.Dense(dim, name=f"mlp{i}b")(y)
        x = L.Add()([x, y])
    x = L.LayerNormalization(epsilon=1e-6, name="ln_final")(x)
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, L.Dense(classes, activation="softmax", name="predictions")(x))
    return alive(model, images(model, 8, seed=1))


def _detach_activation(y, x):
    """``f(x)`` written ``x * stop_gradient(f(x) / x)``: its gradient is the identity rule's."""
    import tensorflow as tf
    ratio = tf.where(tf.equal(x, 0.0), tf.zeros_like(x), y / tf.where(tf.equal(x, 0.0), tf.ones_like(x), x))
    return x * tf.stop_gradient(ratio)


def vit_detached_logits(model, x):
    """The :func:`vit` model written out in TensorFlow from its weights, with every factor the LRP rules hold
    constant detached: attention weights, LayerNorm's sigma, GELU as ``x * sg(gelu(x) / x)``. Independent of
    the engine: its input x gradient is what LRP-0 must equal."""
    import tensorflow as tf
    sg = tf.stop_gradient
    get = model.get_layer

    def layer_norm(name, h):
        ln = get(name)
        mean, var = tf.nn.moments(h, [-1], keepdims=True)
        return (h - mean) * sg(tf.math.rsqrt(var + ln.epsilon)) * ln.gamma + ln.beta

    def dense(name, h):
        d = get(name)
        return tf.tensordot(h, d.kernel, [[h.shape.rank - 1], [0]]) + d.bias

    def attention(name, h):
        mha = get(name)
        q, k, v = (tf.einsum("btd,dnh->btnh", h, p.kernel) + p.bias
                   for p in (mha._query_dense, mha._key_dense, mha._value_dense))
        scores = tf.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1]).astype("float32")
        probs = sg(tf.nn.softmax(scores, axis=-1))
        o = tf.einsum("bnts,bsnh->btnh", probs, v)
        return tf.einsum("btnh,nhd->btd", o, mha._output_dense.kernel) + mha._output_dense.bias

    patches = get("patches")
    h = tf.nn.conv2d(x / 255.0, patches.kernel, patches.strides, "VALID") + patches.bias
    h = tf.reshape(h, [tf.shape(h)[0], -1, h.shape[-1]]) + get("position").embedding[None]
    depth = sum(1 for layer in model.layers if isinstance(layer, L.MultiHeadAttention))
    for i in range(depth):
        h = h + attention(f"mha{i}", layer_norm(f"ln{i}a", h))
        a = dense(f"mlp{i}a", layer_norm(f"ln{i}b", h))
        h = h + dense(f"mlp{i}b", _detach_activation(tf.nn.gelu(a, approximate=False), a))
    h = tf.reduce_mean(layer_norm("ln_final", h), axis=1)
    return dense("predictions", h)


def input_x_gradient(logits_fn, x, targets):
    """``x * d z_t / d x`` of ``logits_fn`` (TensorFlow), one target per image."""
    import tensorflow as tf
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        z = logits_fn(xt)
        score = tf.reduce_sum(tf.gather(z, np.asarray(targets)[:, None], batch_dims=1))
    return (xt * tape.gradient(score, xt)).numpy(), z.numpy()


class DetachedActivation(L.Layer):
    """An activation layer whose gradient is the identity rule's: ``x * stop_gradient(f(x) / x)``."""

    def __init__(self, layer, **kw):
        super().__init__(name=f"{layer.name}_detached", **kw)
        self.wrapped = layer

    def call(self, x):
        return _detach_activation(self.wrapped(x), x)


class GatedMultiply(L.Layer):
    """``Multiply([x, gate])`` with the gate held constant."""

    def call(self, inputs):
        import tensorflow as tf
        return inputs[0] * tf.stop_gradient(inputs[1])


def detached_clone(model):
    """The model (same weights) with every activation layer detached as the identity rule has it and the second
    factor of every Multiply (the squeeze-excitation gate in EfficientNet and MobileNetV3) held constant: its
    input x gradient is what LRP-0 must equal. Built by keras.models.clone_model, independent of the engine."""
    def swap(layer):
        if isinstance(layer, (L.Activation, L.ReLU)):
            return DetachedActivation(layer)
        if isinstance(layer, L.Multiply):
            return GatedMultiply()
        return layer
    return keras.models.clone_model(model, clone_function=swap)

"""The layers of modern classifiers (METHODS.md), each rule against a naive numpy reference on a small model:
affine maps and keras.ops constants, gated products, products of two signals, contractions, LayerNorm with
sigma held constant, attention with its weights held constant, grouped/dilated/1-D/3-D convolutions,
EinsumDense, Dense on N-D inputs, scaled sums, layers opened into their operations."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import reference as ref
from reference import randomize
from sglrp_widgets import Explainer
from sglrp_widgets.canonize import canonize
from sglrp_widgets.errors import ExplainError
from sglrp_widgets.graph import read_model

L = keras.layers
EPS = ref.EPS


def npy(t):
    return np.asarray(t, np.float64)


def dense_w(layer):
    return npy(layer.kernel), npy(layer.bias) if layer.bias is not None else 0.0


def eps_rule(x, W, b, R):
    return ref.rule_epsilon(x, W, b, R, EPS)


def explain_eps(model, x, t):
    return Explainer(model, "lrp.epsilon", cache=None)(x, t)


# ---- affine maps: keras.ops with a constant ------------------------------------------------------------

CONSTANT_OPS = {              # op -> (a, c) with y = a x + c
    "x + 3.0": (lambda h: h + 3.0, 1.0, 3.0),
    "x - 1.5": (lambda h: h - 1.5, 1.0, -1.5),
    "2.0 - x": (lambda h: 2.0 - h, -1.0, 2.0),
    "x * 2.5": (lambda h: h * 2.5, 2.5, 0.0),
    "x / 4.0": (lambda h: h / 4.0, 0.25, 0.0),
    "-x": (lambda h: -h, -1.0, 0.0),
}


@pytest.mark.parametrize("name", list(CONSTANT_OPS))
def test_keras_ops_constants_are_replayed_and_get_the_affine_epsilon_rule(name):
    fn, a, c = CONSTANT_OPS[name]
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 3, activation="relu")(inp)
    y = fn(h)
    model = randomize(keras.Model(inp, L.Dense(3)(L.Flatten()(y))), 21)
    x = np.random.default_rng(0).uniform(0, 1, (2, 6, 6, 2)).astype("float32")
    out = explain_eps(model, x, [0, 2])
    np.testing.assert_allclose(out.logits, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)  # not dropped
    conv, dense = model.layers[1], model.layers[-1]
    W1 = ref.explicit_matrix(lambda t: tf.nn.convolution(t, tf.cast(conv.kernel, t.dtype)), (6, 6, 2))
    b1 = np.tile(npy(conv.bias), 16)
    W2, b2 = dense_w(dense)
    for n, t in enumerate([0, 2]):
        xn = x[n].reshape(-1).astype(np.float64)
        hn = np.maximum(xn @ W1 + b1, 0)
        yn = a * hn + c
        z = yn @ W2 + b2
        Ry = eps_rule(yn, W2, b2, np.eye(3)[t] * z[t])
        Rh = a * hn / ref.stab(a * hn + c) * Ry
        Rx = eps_rule(xn, W1, b1, Rh)
        np.testing.assert_allclose(out.relevance[n].reshape(-1), Rx, rtol=1e-4, atol=1e-6 * np.abs(Rx).max())


def test_the_x_plus_3_model_of_the_issue_gives_the_models_logits():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, activation="relu")(inp)
    x = x + 3.0
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(x)))
    images = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    for method in ("sglrp", "gradient", "lrp.epsilon"):
        out = Explainer(model, method, cache=None)(images)
        np.testing.assert_allclose(out.logits, model.predict(images, verbose=0), rtol=1e-5, atol=1e-5)


def test_bounds_are_mapped_through_affine_preprocessing_layers():
    """z_box bounds given at the model input reach the first conv through Rescaling and '2 - x' (a < 0)."""
    inp = keras.Input((5, 5, 2))
    h = 2.0 - L.Rescaling(1 / 255.0)(inp)          # input [0, 255] -> [1, 2] at the conv
    h = L.Conv2D(3, 2, activation="relu", name="conv")(h)
    model = randomize(keras.Model(inp, L.Dense(2, name="top")(L.Flatten()(h))), 22)
    x = np.random.default_rng(2).uniform(0, 255, (1, 5, 5, 2)).astype("float32")
    out = Explainer(model, "deep_taylor.bounded", low=0.0, high=255.0, cache=None)(x, 1)
    conv, dense = model.get_layer("conv"), model.get_layer("top")
    W1 = ref.explicit_matrix(lambda t: tf.nn.convolution(t, tf.cast(conv.kernel, t.dtype)), (5, 5, 2))
    b1 = np.tile(npy(conv.bias), 16)
    W2, b2 = dense_w(dense)
    xc = 2.0 - x[0].reshape(-1).astype(np.float64) / 255.0
    h1 = np.maximum(xc @ W1 + b1, 0)
    z = h1 @ W2 + b2
    Rh = ref.rule_z_plus(h1, W2, b2, np.eye(2)[1] * z[1])
    Rc = ref.rule_z_box(xc, W1, b1, Rh, 1.0, 2.0)
    Rx = (xc - 2.0) / ref.stab(xc) * Rc              # the affine maps (x/255, then 2 - r) back to the input
    np.testing.assert_allclose(out.relevance[0].reshape(-1), Rx, rtol=2e-4, atol=1e-6 * np.abs(Rx).max())


# ---- products ---------------------------------------------------------------------------------------

def test_gated_product_holds_the_gate_constant():
    """Squeeze-excitation: h * sigmoid(dense(h)); the gate branch gets no relevance, h gets R."""
    inp = keras.Input((5,))
    h = L.Dense(4, activation="relu")(inp)
    g = L.Dense(4, activation="sigmoid")(h)
    y = L.Multiply()([h, g])
    model = randomize(keras.Model(inp, L.Dense(3)(y)), 23)
    x = np.random.default_rng(3).normal(size=(1, 5)).astype("float32")
    out = explain_eps(model, x, 2)
    d1, dg, d3 = (model.get_layer(n) for n in (model.layers[1].name, model.layers[2].name, model.layers[-1].name))
    W1, b1 = dense_w(d1)
    Wg, bg = dense_w(dg)
    W3, b3 = dense_w(d3)
    xn = x[0].astype(np.float64)
    hn = np.maximum(xn @ W1 + b1, 0)
    yn = hn * (1 / (1 + np.exp(-(hn @ Wg + bg))))
    z = yn @ W3 + b3
    Ry = eps_rule(yn, W3, b3, np.eye(3)[2] * z[2])
    Rx = eps_rule(xn, W1, b1, Ry)                    # R_h = R_y: the gate is held constant
    np.testing.assert_allclose(out.relevance[0], Rx, rtol=1e-4, atol=1e-7)


def test_swish_written_as_a_product_is_a_gate_and_hard_sigmoid_pattern_too():
    inp = keras.Input((5,))
    h = L.Dense(4)(inp)
    swish = ops.multiply(h, ops.sigmoid(h))
    hard = L.Multiply()([swish, L.ReLU(6.0)(swish + 3.0) * (1.0 / 6.0)])   # MobileNetV3's hard-swish
    model = randomize(keras.Model(inp, L.Dense(2)(hard)), 24)
    graph = canonize(read_model(model), fold=True)
    held = [n.attrs["held"] for n in graph.nodes if n.kind == "product"]
    assert held == [(1,), (1,)]
    x = np.random.default_rng(4).normal(size=(1, 5)).astype("float32")
    out = explain_eps(model, x, 1)
    W1, b1 = dense_w(model.layers[1])
    W2, b2 = dense_w(model.layers[-1])
    xn = x[0].astype(np.float64)
    hn = xn @ W1 + b1
    s = hn / (1 + np.exp(-hn))
    y = s * np.clip(s + 3, 0, 6) / 6
    z = y @ W2 + b2
    Rx = eps_rule(xn, W1, b1, eps_rule(y, W2, b2, np.eye(2)[1] * z[1]))   # both gates held: R passes
    np.testing.assert_allclose(out.relevance[0], Rx, rtol=1e-4, atol=1e-7)


def test_product_of_two_signals_splits_relevance_equally():
    inp = keras.Input((5,))
    a = L.Dense(4, name="a")(inp)
    b = L.Dense(4, name="b")(inp)
    model = randomize(keras.Model(inp, L.Dense(3, name="top")(L.Multiply()([a, b]))), 25)
    x = np.random.default_rng(5).normal(size=(1, 5)).astype("float32")
    out = explain_eps(model, x, 0)
    (Wa, ba), (Wb, bb), (W3, b3) = (dense_w(model.get_layer(n)) for n in ("a", "b", "top"))
    xn = x[0].astype(np.float64)
    an, bn = xn @ Wa + ba, xn @ Wb + bb
    y = an * bn
    z = y @ W3 + b3
    Ry = eps_rule(y, W3, b3, np.eye(3)[0] * z[0])
    Rx = eps_rule(xn, Wa, ba, Ry / 2) + eps_rule(xn, Wb, bb, Ry / 2)
    np.testing.assert_allclose(out.relevance[0], Rx, rtol=1e-4, atol=1e-7)


def test_matmul_of_two_signals_gets_half_of_each_epsilon_rule():
    inp = keras.Input((6,))
    a = L.Reshape((2, 3))(L.Dense(6, name="a")(inp))
    b = L.Reshape((3, 2))(L.Dense(6, name="b")(inp))
    y = L.Flatten()(ops.matmul(a, b))
    model = randomize(keras.Model(inp, L.Dense(3, name="top")(y)), 26)
    x = np.random.default_rng(6).normal(size=(1, 6)).astype("float32")
    out = explain_eps(model, x, 1)
    (Wa, ba), (Wb, bb), (W3, b3) = (dense_w(model.get_layer(n)) for n in ("a", "b", "top"))
    xn = x[0].astype(np.float64)
    A, B = (xn @ Wa + ba).reshape(2, 3), (xn @ Wb + bb).reshape(3, 2)
    Y = A @ B
    z = Y.reshape(-1) @ W3 + b3
    S = (eps_rule(Y.reshape(-1), W3, b3, np.eye(3)[1] * z[1]) / ref.stab(Y.reshape(-1))).reshape(2, 2)
    RA, RB = 0.5 * A * (S @ B.T), 0.5 * B * (A.T @ S)
    Rx = eps_rule(xn, Wa, ba, RA.reshape(-1)) + eps_rule(xn, Wb, bb, RB.reshape(-1))
    np.testing.assert_allclose(out.relevance[0], Rx, rtol=1e-4, atol=1e-7)


# ---- normalisation and attention -----------------------------------------------------------------------

def test_layer_norm_holds_sigma_and_gets_the_epsilon_rule_of_what_remains():
    inp = keras.Input((6,))
    h = L.Dense(5, name="d1")(inp)
    y = L.LayerNormalization(name="ln")(h)
    model = randomize(keras.Model(inp, L.Dense(3, name="d2")(y)), 27)
    ln = model.get_layer("ln")
    ln.gamma.assign(np.random.default_rng(0).uniform(0.5, 1.5, 5).astype("float32"))
    x = np.random.default_rng(7).normal(size=(1, 6)).astype("float32")
    out = explain_eps(model, x, 2)
    (W1, b1), (W2, b2) = dense_w(model.get_layer("d1")), dense_w(model.get_layer("d2"))
    gamma, beta = npy(ln.gamma), npy(ln.beta)
    xn = x[0].astype(np.float64)
    hn = xn @ W1 + b1
    sigma = np.sqrt(hn.var() + ln.epsilon)
    M = (np.eye(5) - 1 / 5) @ np.diag(gamma / sigma)      # y = h M + beta (inputs x outputs), sigma fixed
    yn = hn @ M + beta
    z = yn @ W2 + b2
    Rh = eps_rule(hn, M, beta, eps_rule(yn, W2, b2, np.eye(3)[2] * z[2]))
    Rx = eps_rule(xn, W1, b1, Rh)
    np.testing.assert_allclose(out.relevance[0], Rx, rtol=2e-4, atol=1e-7)


def test_group_norm_holds_each_groups_sigma_and_gets_the_epsilon_rule_of_what_remains():
    """GroupNormalization on a (2, 2, 6) map in 3 groups of 2 channels: per image and group, the mean and sigma over
    the 4 positions and 2 channels; sigma held constant, the rest a linear map with the epsilon rule."""
    inp = keras.Input((2, 2, 3))
    h = L.Dense(6, name="d1")(inp)
    y = L.GroupNormalization(3, name="gn")(h)
    model = randomize(keras.Model(inp, L.Dense(3, name="d2")(L.Flatten()(y))), 29)
    gn = model.get_layer("gn")
    gn.gamma.assign(np.random.default_rng(0).uniform(0.5, 1.5, 6).astype("float32"))
    gn.beta.assign(np.random.default_rng(1).normal(0, 0.3, 6).astype("float32"))
    assert {n.kind for n in read_model(model).nodes if n.name == "gn"} == {"layer_norm"}
    x = np.random.default_rng(8).normal(size=(1, 2, 2, 3)).astype("float32")
    out = explain_eps(model, x, 1)
    (W1, b1), (W2, b2) = dense_w(model.get_layer("d1")), dense_w(model.get_layer("d2"))
    gamma, beta = npy(gn.gamma), npy(gn.beta)
    xn = x[0].reshape(4, 3).astype(np.float64)
    hn = xn @ W1 + b1                                       # (4 positions, 6 channels)
    group = np.repeat(np.arange(3), 2)                      # the group of each channel
    sigma = np.array([np.sqrt(hn[:, group == g].var() + gn.epsilon) for g in group])
    # y = h M + beta over the 24 values (position-major), sigma fixed: subtract the group mean, scale
    same = (group[None, :] == group[:, None]).astype(float)
    M = (np.eye(24) - np.kron(np.ones((4, 4)), same) / 8) @ np.diag(np.tile(gamma / sigma, 4))
    yn = hn.reshape(24) @ M + np.tile(beta, 4)
    z = yn @ W2 + b2
    Ry = eps_rule(yn, W2, b2, np.eye(3)[1] * z[1])
    Rh = eps_rule(hn.reshape(24), M, np.tile(beta, 4), Ry).reshape(4, 6)
    Rx = np.stack([eps_rule(xn[p], W1, b1, Rh[p]) for p in range(4)])
    np.testing.assert_allclose(out.relevance[0].reshape(4, 3), Rx, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("axis", [-1, [1, 2]])
def test_unit_norm_holds_the_norm_and_gets_the_epsilon_rule_of_the_scaling(axis):
    """UnitNormalization ``y = h / ||h||`` with the norm held constant: ``y = h M``, ``M`` diagonal, epsilon rule
    (no bias). Over the last axis (one norm per position) and over both axes (one norm per image)."""
    inp = keras.Input((2, 3))
    h = L.Dense(4, name="d1")(inp)
    y = L.UnitNormalization(axis=axis, name="un")(h)
    model = randomize(keras.Model(inp, L.Dense(3, name="d2")(L.Flatten()(y))), 31)
    assert {n.kind for n in read_model(model).nodes if n.name == "un"} == {"layer_norm"}
    x = np.random.default_rng(9).normal(size=(1, 2, 3)).astype("float32")
    out = explain_eps(model, x, 2)
    (W1, b1), (W2, b2) = dense_w(model.get_layer("d1")), dense_w(model.get_layer("d2"))
    xn = x[0].astype(np.float64)
    hn = xn @ W1 + b1                                       # (2 positions, 4 channels)
    norm = np.linalg.norm(hn, axis=-1, keepdims=True) if axis == -1 else np.linalg.norm(hn) * np.ones((2, 1))
    yn = (hn / norm).reshape(8)
    z = yn @ W2 + b2
    Ry = eps_rule(yn, W2, b2, np.eye(3)[2] * z[2])
    Rh = eps_rule(hn.reshape(8), np.diag(1 / np.repeat(norm[:, 0], 4)), 0.0, Ry).reshape(2, 4)
    Rx = np.stack([eps_rule(xn[p], W1, b1, Rh[p]) for p in range(2)])
    np.testing.assert_allclose(out.relevance[0], Rx, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(out.logits[0], z, rtol=1e-5, atol=1e-6)


def _attention_scores(layer, q, k):
    """Keras's ``Attention`` / ``AdditiveAttention`` scores, written out in numpy from the layer's weights."""
    if isinstance(layer, L.AdditiveAttention):
        scale = npy(layer.scale) if layer.use_scale else 1.0
        return (scale * np.tanh(q[:, None] + k[None])).sum(-1)
    scale = float(npy(layer.scale)) if layer.use_scale else 1.0
    if layer.score_mode == "dot":
        return q @ k.T * scale
    return float(npy(layer.concat_score_weight)) * np.tanh(scale * (q[:, None] + k[None])).sum(-1)


@pytest.mark.parametrize("kind", ["dot", "concat", "additive", "dot, causal, q = v, own key"])
def test_keras_attention_layers_hold_their_weights_and_give_the_value_the_epsilon_rule(kind):
    """``Attention`` and ``AdditiveAttention``: ``softmax(score(q, k)) @ v`` with the softmax held constant; the
    query and key get no relevance."""
    inp = keras.Input((5, 6))
    q, v, k = (L.Dense(4, name=n)(inp) for n in ("q", "v", "k"))
    if kind == "additive":
        layer = L.AdditiveAttention(name="att")
    else:
        layer = L.Attention(use_scale=True, score_mode=kind.split(",")[0], name="att")
    causal = "causal" in kind
    inputs = [v, v, k] if "q = v" in kind else [q, v]
    model = randomize(keras.Model(inp, L.Dense(3, name="top")(L.Flatten()(layer(inputs, use_causal_mask=causal)))),
                      32, scale=0.7)
    for w in layer.weights:
        w.assign(np.random.default_rng(3).uniform(0.5, 1.5, w.shape).astype("float32"))
    assert {n.kind for n in read_model(model).nodes if n.name == "att"} == {"scored_attention"}
    x = np.random.default_rng(10).normal(size=(1, 5, 6)).astype("float32")
    out = explain_eps(model, x, 1)
    X = x[0].astype(np.float64)
    names = ("q" if inputs[0] is q else "v", "v", "k" if len(inputs) > 2 else "v")
    Q, V, K = (X @ W + b for W, b in (dense_w(model.get_layer(n)) for n in names))
    S = _attention_scores(layer, Q, K)
    if causal:
        S = np.where(np.tril(np.ones((5, 5))) > 0, S, S - 1e9)
    A = np.exp(S - S.max(-1, keepdims=True))
    A /= A.sum(-1, keepdims=True)
    Y = A @ V
    W3, b3 = dense_w(model.get_layer("top"))
    z = Y.reshape(-1) @ W3 + b3
    RY = eps_rule(Y.reshape(-1), W3, b3, np.eye(3)[1] * z[1]).reshape(5, 4)
    RV = V * (A.T @ (RY / ref.stab(Y)))                        # the epsilon rule of Y = A V, A fixed
    Wv, bv = dense_w(model.get_layer("v"))
    Rx = np.stack([eps_rule(X[t], Wv, bv, RV[t]) for t in range(5)])
    np.testing.assert_allclose(out.logits[0], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.relevance[0], Rx, rtol=2e-4, atol=1e-7)


def test_multi_head_attention_holds_the_attention_weights():
    inp = keras.Input((4, 6))
    mha = L.MultiHeadAttention(2, 3, name="mha")
    y = mha(inp, inp)
    model = randomize(keras.Model(inp, L.Dense(3, name="top")(L.Flatten()(y))), 28, scale=0.7)
    x = np.random.default_rng(8).normal(size=(1, 4, 6)).astype("float32")
    out = explain_eps(model, x, 1)
    q_d, k_d, v_d, o_d = mha._query_dense, mha._key_dense, mha._value_dense, mha._output_dense
    X = x[0].astype(np.float64)
    q = np.einsum("td,dnh->tnh", X, npy(q_d.kernel)) + npy(q_d.bias)
    k = np.einsum("td,dnh->tnh", X, npy(k_d.kernel)) + npy(k_d.bias)
    v = np.einsum("td,dnh->tnh", X, npy(v_d.kernel)) + npy(v_d.bias)
    s = np.einsum("tnh,snh->nts", q, k) / np.sqrt(3)
    A = np.exp(s - s.max(-1, keepdims=True))
    A /= A.sum(-1, keepdims=True)
    o = np.einsum("nts,snh->tnh", A, v)
    Wo = npy(o_d.kernel).reshape(6, 6)               # (n*h) x d
    Y = o.reshape(4, 6) @ Wo + npy(o_d.bias)
    W3, b3 = dense_w(model.get_layer("top"))
    z = Y.reshape(-1) @ W3 + b3
    RY = eps_rule(Y.reshape(-1), W3, b3, np.eye(3)[1] * z[1]).reshape(4, 6)
    Ro = np.stack([eps_rule(o.reshape(4, 6)[t], Wo, npy(o_d.bias), RY[t]) for t in range(4)]).reshape(4, 2, 3)
    Rv = v * np.einsum("nts,tnh->snh", A, Ro / ref.stab(o))           # A @ V with A held: epsilon rule
    Wv = npy(v_d.kernel).reshape(6, 6)
    Rx = np.stack([eps_rule(X[s_], Wv, npy(v_d.bias).reshape(-1), Rv[s_].reshape(-1)) for s_ in range(4)])
    np.testing.assert_allclose(out.relevance[0], Rx, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(out.logits[0], z, rtol=1e-4, atol=1e-5)


# ---- linear layers of every shape -----------------------------------------------------------------------

def _relu_net(layer, in_shape):
    inp = keras.Input(in_shape)
    h = L.ReLU()(layer(inp))
    return randomize(keras.Model(inp, L.Dense(3)(L.Flatten()(h))), 29)


LINEAR_LAYERS = {
    "grouped conv (2 channels per group)": (lambda: L.Conv2D(6, 3, groups=2, padding="same"), (5, 5, 4)),
    "grouped conv (depthwise-like)": (lambda: L.Conv2D(8, 3, groups=4), (5, 5, 4)),
    "dilated conv": (lambda: L.Conv2D(3, 3, dilation_rate=2, padding="same"), (7, 7, 2)),
    "Conv1D causal": (lambda: L.Conv1D(3, 3, padding="causal", dilation_rate=2), (9, 2)),
    "Conv3D": (lambda: L.Conv3D(2, 2, strides=(1, 2, 2)), (3, 4, 4, 2)),
    "depthwise strided": (lambda: L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same"), (6, 6, 3)),
    "depthwise (transposed flipped)": (lambda: L.DepthwiseConv2D(5, padding="same"), (6, 6, 3)),
    "separable": (lambda: L.SeparableConv2D(4, 3, padding="same"), (5, 5, 3)),
    "Dense on N-D": (lambda: L.Dense(4), (3, 5, 2)),
    "Conv2DTranspose (strided, same)": (lambda: L.Conv2DTranspose(4, 3, strides=2, padding="same"), (4, 4, 3)),
    "Conv2DTranspose (valid, output padding)": (lambda: L.Conv2DTranspose(3, 2, strides=3, output_padding=1),
                                                (3, 3, 2)),
    "Conv1DTranspose (strided)": (lambda: L.Conv1DTranspose(3, 3, strides=2), (6, 2)),
    "EinsumDense": (lambda: L.EinsumDense("abc,cd->abd", output_shape=(3, 4), bias_axes="d"), (3, 5)),
}


@pytest.mark.parametrize("name", list(LINEAR_LAYERS))
def test_linear_layers_replay_and_lrp0_is_input_times_gradient(name):
    make, shape = LINEAR_LAYERS[name]
    model = _relu_net(make(), shape)
    x = np.random.default_rng(9).normal(size=(2,) + shape).astype("float32")
    out = Explainer(model, "lrp.z", cache=None)(x, [0, 2])
    np.testing.assert_allclose(out.logits, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        z = model(xt)
        score = tf.reduce_sum(tf.gather(z, [[0], [2]], batch_dims=1))
    expected = (xt * tape.gradient(score, xt)).numpy()       # a ReLU net: LRP-0 = input x gradient
    np.testing.assert_allclose(out.relevance, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_adaptive_max_pooling_routes_relevance_to_each_windows_winner_as_max_pooling_does():
    def net(pool):
        inp = keras.Input((8, 8, 2))
        return keras.Model(inp, L.Dense(3)(L.Flatten()(pool(L.Conv2D(4, 3, padding="same", activation="relu")(inp)))))

    adaptive, plain = net(L.AdaptiveMaxPooling2D((2, 2))), net(L.MaxPooling2D(4))
    plain.set_weights(randomize(adaptive, 39).get_weights())
    x = np.random.default_rng(13).normal(size=(2, 8, 8, 2)).astype("float32")
    for method in ("lrp.epsilon", "sglrp"):
        got = Explainer(adaptive, method, cache=None)(x, [1, 0])
        want = Explainer(plain, method, cache=None)(x, [1, 0])
        np.testing.assert_allclose(got.relevance, want.relevance, rtol=1e-5, atol=1e-7)


def test_a_batchnorm_after_a_transposed_convolution_folds_into_its_output_channels():
    """A transposed convolution keeps its kernel as (h, w, out, in): the BatchNorm's per-channel scale folds into
    the ``out`` axis. LRP-0 of the folded graph is still input x gradient (a wrong axis would scale the rules'
    weights, not the forward values), and the BatchNorm is gone from the graph."""
    inp = keras.Input((4, 4, 3))
    h = L.BatchNormalization(name="bn")(L.Conv2DTranspose(5, 3, strides=2, padding="same", name="up")(inp))
    model = randomize(keras.Model(inp, L.Dense(3)(L.Flatten()(L.ReLU()(h)))), 37)
    assert "bn" not in {n.name for n in canonize(read_model(model), fold=True).nodes}
    x = np.random.default_rng(12).normal(size=(2, 4, 4, 3)).astype("float32")
    out = Explainer(model, "lrp.z", cache=None)(x, [0, 2])
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        score = tf.reduce_sum(tf.gather(model(xt), [[0], [2]], batch_dims=1))
    expected = (xt * tape.gradient(score, xt)).numpy()
    np.testing.assert_allclose(out.relevance, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("name", ["grouped conv (2 channels per group)", "grouped conv (depthwise-like)",
                                  "Conv2DTranspose (strided, same)", "Conv2DTranspose (valid, output padding)"])
def test_grouped_and_transposed_convolutions_z_plus_matches_the_explicit_matrix(name):
    make, shape = LINEAR_LAYERS[name]
    layer = make()
    inp = keras.Input(shape)
    model = randomize(keras.Model(inp, L.Dense(2)(L.Flatten()(L.ReLU()(layer(inp))))), 30)
    x = np.random.default_rng(10).uniform(0, 1, (1,) + shape).astype("float32")
    out = Explainer(model, "lrp.z_plus", cache=None)(x, 1)
    W1 = ref.explicit_matrix(lambda t: layer(tf.cast(t, tf.float32)) - layer.bias, shape)
    out_shape = layer.compute_output_shape((1,) + shape)[1:]
    b1 = np.broadcast_to(npy(layer.bias), out_shape).reshape(-1)
    W2, b2 = dense_w(model.layers[-1])
    xn = x[0].reshape(-1).astype(np.float64)
    h = np.maximum(xn @ W1 + b1, 0)
    Rx = ref.rule_z_plus(xn, W1, b1, ref.rule_z_plus(h, W2, b2, np.eye(2)[1] * (h @ W2 + b2)[1]))
    np.testing.assert_allclose(out.relevance[0].reshape(-1), Rx, rtol=1e-3, atol=1e-6 * np.abs(Rx).max())


# ---- user layers -------------------------------------------------------------------------------------

class ScaledSum(L.Layer):
    """InceptionResNet's CustomScaleLayer: ``x + s * f(x)`` written with keras.ops."""

    def __init__(self, scale, **kw):
        super().__init__(**kw)
        self.scale = scale

    def call(self, inputs):
        return inputs[0] + inputs[1] * self.scale


class SmallBlock(L.Layer):
    """A user layer with a sublayer and a variable: opened into a Dense, an affine add and an activation."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.inner = L.Dense(4)

    def build(self, shape):
        self.offset = self.add_weight(shape=(4,), initializer="ones", name="offset")

    def call(self, x):
        return ops.relu(self.inner(x) + self.offset)


def test_scaled_sum_conserves_like_add():
    inp = keras.Input((6,))
    a = L.Dense(4, use_bias=False, activation="relu")(inp)
    b = L.Dense(4, use_bias=False, activation="relu")(a)
    y = ScaledSum(0.3)([a, b])
    model = randomize(keras.Model(inp, L.Dense(3, use_bias=False)(y)), 31)
    kinds = [n.kind for n in canonize(read_model(model), fold=True).nodes]
    assert "opaque" not in kinds and "add" in kinds
    x = np.abs(np.random.default_rng(11).normal(size=(2, 6))).astype("float32")
    out = Explainer(model, "lrp.z", cache=None)(x, [0, 1])             # no biases: LRP-0 conserves
    np.testing.assert_allclose(out.relevance.sum(-1), out.logits[[0, 1], [0, 1]], rtol=1e-4)


def _augmented_and_plain(augment: bool):
    """The Keras tutorials' classifier: a data augmentation block, Rescaling, convolutions; and the same net
    (the same weights) without the augmentation block."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((12, 12, 3))
    x = keras.Sequential([L.RandomFlip("horizontal"), L.RandomRotation(0.1), L.RandomZoom(0.1),
                          L.RandomTranslation(0.1, 0.1), L.RandomContrast(0.2)], name="augment")(inp) \
        if augment else inp
    x = L.Rescaling(1 / 255.0)(x)
    x = L.Conv2D(6, 3, activation="relu", name="c1")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x))


@pytest.mark.parametrize("method", ["sglrp", "lrp.epsilon", "gradient", "grad_cam"])
def test_data_augmentation_layers_are_explained_as_the_identity_they_are_at_inference(method):
    """Keras records ``training=True`` for augmentation layers and ``model(x, training=False)`` overrides it; the
    replay did not, so it flipped and rotated the image at random and the replay check refused the model."""
    augmented, plain = _augmented_and_plain(True), _augmented_and_plain(False)
    plain.set_weights(augmented.get_weights())
    x = np.random.default_rng(3).uniform(0, 255, (2, 12, 12, 3)).astype("float32")
    np.testing.assert_array_equal(augmented(x, training=False), plain(x))
    got = Explainer(augmented, method, cache=None)(x, [1, 2])
    want = Explainer(plain, method, cache=None)(x, [1, 2])
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-6)
    np.testing.assert_allclose(got.relevance, want.relevance, rtol=1e-5, atol=1e-6 * np.abs(want.relevance).max())
    kinds = {n.name: n.kind for n in read_model(augmented).nodes}
    assert {k for n, k in kinds.items() if n.startswith("augment/")} == {"route"}


class OpsRMSNorm(L.Layer):
    """RMS normalisation written with keras.ops, as keras_hub's MobileNetV5 writes it: ``x * rsqrt(mean(x²) +
    eps) * gamma``. Its call takes no ``training``."""
    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + 1e-6) * self.gamma


class NormBlock(L.Layer):
    """A block that passes its ``training`` on to a sublayer whose call takes none (Keras drops it, and records
    it in the sublayer's node)."""
    def __init__(self, **kw):
        super().__init__(**kw)
        self.norm = OpsRMSNorm()

    def call(self, x, training=None):
        return self.norm(x, training=training)


def test_a_reciprocal_factor_is_held_like_a_divisor_so_an_ops_rms_norm_explains_as_rms_normalization():
    """``x * rsqrt(v)`` is ``x / sqrt(v)``: the reciprocal factor is held, as the divisor of ``a / b`` is, so an
    RMS normalisation written with keras.ops (inside a block that passes ``training`` on to it) gets what
    ``RMSNormalization`` gets, sigma held and the epsilon rule of the scaling."""
    def net(norm):
        inp = keras.Input((2, 3))
        h = L.Dense(4, name="d1")(inp)
        return keras.Model(inp, L.Dense(3, name="d2")(L.Flatten()(norm(h))))

    written = randomize(net(NormBlock(name="block")), 33)
    written.get_layer("block").norm.gamma.assign(np.random.default_rng(0).uniform(0.5, 1.5, 4).astype("float32"))
    layer = net(L.RMSNormalization(epsilon=1e-6, name="rms"))
    layer.set_weights(written.get_weights())
    products = [n for n in canonize(read_model(written), fold=True).nodes if n.kind == "product"]
    assert [n.attrs["held"] for n in products] == [(1,)]
    x = np.random.default_rng(10).normal(size=(2, 2, 3)).astype("float32")
    for method in ("lrp.epsilon", "sglrp"):
        got = Explainer(written, method, cache=None)(x, [2, 0])
        want = Explainer(layer, method, cache=None)(x, [2, 0])
        np.testing.assert_allclose(got.logits, want.logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.relevance, want.relevance, rtol=1e-4, atol=1e-6 * np.abs(want.relevance).max())


class OpsResize(L.Layer):
    def __init__(self, interpolation, **kw):
        super().__init__(**kw)
        self.interpolation = interpolation

    def call(self, x):
        return ops.image.resize(x, (6, 6), interpolation=self.interpolation)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_keras_ops_image_resize_is_read_as_the_resizing_layer_is(interpolation):
    written = _after([OpsResize(interpolation, name="resize")])
    layer = _after([L.Resizing(6, 6, interpolation=interpolation, name="resizing")])
    layer.set_weights(written.get_weights())
    x = np.random.default_rng(4).uniform(0, 255, (2, 10, 10, 3)).astype("float32")
    for method in ("lrp.epsilon", "sglrp"):
        got = Explainer(written, method, cache=None)(x, [1, 2])
        want = Explainer(layer, method, cache=None)(x, [1, 2])
        np.testing.assert_allclose(got.relevance, want.relevance, rtol=1e-4, atol=1e-6 * np.abs(want.relevance).max())


def test_keras_ops_image_resize_with_a_kernel_of_negative_lobes_is_refused_naming_it():
    model = _after([OpsResize("bicubic", name="resize")])
    with pytest.raises(ExplainError, match="resize"):
        Explainer(model, "lrp.epsilon", cache=None)(np.zeros((1, 10, 10, 3), "float32"), 0)


class SplitAndScale(L.Layer):
    """Cuts the channels in two with ``keras.ops.split`` (or the rows with ``unstack``) and weights the pieces
    differently, as CSPNet's stages do; ``sliced=True`` writes the same with slices."""
    def __init__(self, how, **kw):
        super().__init__(**kw)
        self.how = how

    def call(self, x):
        if self.how == "split":
            a, b = ops.split(x, 2, axis=-1)
        elif self.how == "unstack":
            a, b = ops.unstack(x, axis=1)
        elif self.how == "channel slices":
            a, b = x[..., :2], x[..., 2:]
        else:
            a, b = x[:, 0], x[:, 1]
        return ops.concatenate([a * 2.0, b - 1.0], axis=-1)


@pytest.mark.parametrize("how, sliced", [("split", "channel slices"), ("unstack", "row slices")])
def test_keras_ops_split_and_unstack_route_each_piece_as_slices_do(how, sliced):
    def net(layer):
        inp = keras.Input((2, 5))
        h = L.Dense(4, activation="relu", name="d1")(inp)
        return keras.Model(inp, L.Dense(3, name="d2")(L.Flatten()(layer(h))))

    written, plain = net(SplitAndScale(how)), net(SplitAndScale(sliced))
    plain.set_weights(randomize(written, 35).get_weights())
    x = np.random.default_rng(11).normal(size=(2, 2, 5)).astype("float32")
    for method in ("lrp.epsilon", "sglrp"):
        got = Explainer(written, method, cache=None)(x, [1, 2])
        want = Explainer(plain, method, cache=None)(x, [1, 2])
        np.testing.assert_allclose(got.logits, np.asarray(written(x)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.relevance, want.relevance, rtol=1e-5, atol=1e-7)


def _after(front, seed=6, side=10):
    """``front`` layers, then Rescaling, a ReLU convolution and a dense head."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((side, side, 3))
    x = inp
    for layer in front:
        x = layer(x)
    x = L.Conv2D(4, 3, activation="relu", name="c1")(L.Rescaling(1 / 127.5, offset=-1.0)(x))
    return keras.Model(inp, L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(x)))


def test_resizing_is_a_fixed_linear_map_with_the_epsilon_rule_and_carries_the_bounds():
    model = _after([L.Resizing(6, 6, name="resizing")])
    graph = canonize(read_model(model), fold=True)
    assert [n.kind for n in graph.nodes if n.name == "resizing"] == ["fixed_linear"]
    assert {graph.nodes[i].name for i in graph.first_linear} == {"c1"}       # the bounds reach the first conv
    x = np.random.default_rng(4).uniform(0, 255, (1, 10, 10, 3)).astype("float32")
    # the resize as an explicit matrix (300 inputs -> 108 outputs), from the layer applied to basis images
    basis = np.eye(300, dtype="float32").reshape(300, 10, 10, 3)
    W = npy(model.get_layer("resizing")(basis)).reshape(300, 108)
    small = _after([], side=6)
    small.set_weights(model.get_weights())
    y = npy(model.get_layer("resizing")(x)).reshape(1, 6, 6, 3).astype("float32")
    r_small = explain_eps(small, y, 1).relevance[0].reshape(108)      # the relevance at the resized image
    want = eps_rule(npy(x).reshape(300), W, 0.0, r_small).reshape(10, 10, 3)
    np.testing.assert_allclose(explain_eps(model, x, 1).relevance[0], want, rtol=1e-3,
                               atol=1e-5 * np.abs(want).max())
    Explainer(model, "sglrp", cache=None)(x, 1)                          # the z_box layer gets its bounds


def test_center_crop_routes_the_relevance_of_the_kept_pixels():
    model = _after([L.CenterCrop(6, 6)])
    small = _after([], side=6)
    small.set_weights(model.get_weights())
    x = np.random.default_rng(5).uniform(0, 255, (2, 10, 10, 3)).astype("float32")
    for method, params in (("sglrp", {"low": 0.0, "high": 255.0}), ("lrp.epsilon", {}), ("lrp.flat", {})):
        got = Explainer(model, method, cache=None, **params)(x, [0, 2]).relevance
        want = Explainer(small, method, cache=None, **params)(x[:, 2:8, 2:8], [0, 2]).relevance
        np.testing.assert_allclose(got[:, 2:8, 2:8], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
        assert not got[:, :2].any() and not got[:, 8:].any()


class ReshapedTwice(L.Layer):
    """Doubles its input through a reshape to (batch, n) and back with ``ops.shape(x)``, which records the
    symbolic batch size ``None`` (as GroupNormalization's call does)."""

    def call(self, x):
        flat = ops.reshape(x, (-1, int(np.prod(x.shape[1:]))))
        return ops.reshape(flat * 2.0, ops.shape(x))


def test_a_layer_reshaping_with_the_symbolic_batch_size_is_opened_and_replayed():
    model = _after([ReshapedTwice(name="twice")])
    plain = _after([L.Rescaling(2.0)])
    plain.set_weights(model.get_weights())
    assert "opaque" not in {n.kind for n in read_model(model).nodes}
    x = np.random.default_rng(6).uniform(0, 100, (2, 10, 10, 3)).astype("float32")
    for method in ("lrp.epsilon", "gradient"):
        got, want = Explainer(model, method, cache=None)(x, 1), Explainer(plain, method, cache=None)(x, 1)
        np.testing.assert_allclose(got.relevance, want.relevance, rtol=1e-5, atol=1e-6 * np.abs(want.relevance).max())


class LogTwice(L.Layer):
    def call(self, x):
        return ops.log(x) * 2.0


def test_the_replay_probe_of_an_opened_layer_accepts_values_outside_its_domain():
    """The probe feeds random normal values, so ``log`` gives NaN at the negative ones, in the layer and in its
    replay alike: the layer is still opened (its ``* 2.0`` becomes an affine node)."""
    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2)(LogTwice(name="logs")(L.Dense(4, activation="relu")(inp))))
    kinds = {n.name: n.kind for n in read_model(model).nodes}
    assert "logs" not in kinds                               # not one opaque node
    assert "affine" in {kind for name, kind in kinds.items() if name.startswith("logs/")}


class UpByOps(L.Layer):
    """A transposed convolution written with ``keras.ops.conv_transpose``: Keras records the operation in a form
    it cannot replay outside the layer."""
    def build(self, shape):
        self.kernel = self.add_weight(shape=(3, 3, 4, shape[-1]))

    def call(self, x):
        return ops.relu(ops.conv_transpose(x, self.kernel, strides=2, padding="same"))


def test_a_layer_whose_opened_operations_do_not_replay_it_stays_opaque():
    """Before the check, every gradient method crashed on such a model. Now the layer stays one node: gradients
    work, LRP names it."""
    keras.utils.set_random_seed(7)
    inp = keras.Input((8, 8, 3))
    x = UpByOps(name="up")(L.MaxPooling2D()(inp))
    model = keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(L.Conv2D(4, 3, name="c")(x))))
    assert [n.kind for n in read_model(model).nodes if n.name.startswith("up")] == ["opaque"]
    x = np.random.default_rng(7).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    out = Explainer(model, "gradient", cache=None)(x, 1)
    np.testing.assert_allclose(out.logits, model(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ExplainError, match="UpByOps"):
        Explainer(model, "sglrp", cache=None)(x, 1)


def _mixed_and_float32():
    nets = []
    for policy in ("mixed_float16", "float32"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            keras.utils.set_random_seed(8)
            inp = keras.Input((8, 8, 3))
            x = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="c1")(L.Rescaling(1 / 255.0, name="scale")(inp)))
            x = L.GlobalAveragePooling2D()(L.ReLU()(x))
            nets.append(keras.Model(inp, L.Activation("softmax", dtype="float32")(L.Dense(3, name="d")(x))))
        finally:
            keras.mixed_precision.set_global_policy("float32")
    return nets


def test_a_mixed_precision_model_is_refused_clearly_and_its_float32_copy_is_explained():
    from sglrp_widgets import float32_copy
    mixed, plain = _mixed_and_float32()
    plain.set_weights(mixed.get_weights())
    x = np.random.default_rng(9).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    with pytest.raises(ExplainError, match=r"half precision .*'scale'.*float32_copy\(model\)"):
        Explainer(mixed, "sglrp", cache=None)(x, 1)
    copy = float32_copy(mixed)
    assert {layer.compute_dtype for layer in copy._flatten_layers()} == {"float32"}
    assert mixed.layers[2].compute_dtype == "float16"                  # the model itself is left as it was
    for method in ("sglrp", "gradient"):
        got, want = Explainer(copy, method, cache=None)(x, 1), Explainer(plain, method, cache=None)(x, 1)
        np.testing.assert_array_equal(got.relevance, want.relevance)


def test_user_layers_are_opened_and_the_model_is_left_untouched():
    inp = keras.Input((5,))
    block = SmallBlock(name="block")
    model = randomize(keras.Model(inp, L.Dense(3)(block(inp))), 32)
    before = (len(block._inbound_nodes), len(block.inner._inbound_nodes), len(block.inner._outbound_nodes))
    graph = canonize(read_model(model), fold=True)
    assert [n.kind for n in graph.nodes] == ["linear", "activation", "linear"]   # the offset folded in
    assert (len(block._inbound_nodes), len(block.inner._inbound_nodes), len(block.inner._outbound_nodes)) == before
    x = np.random.default_rng(12).normal(size=(2, 5)).astype("float32")
    out = Explainer(model, "lrp.z", cache=None)(x, [1, 2])
    np.testing.assert_allclose(out.logits, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert model.get_layer("block").output is not None           # still one inbound node: .output works


class RawTFLayer(L.Layer):
    def call(self, x):
        return tf.nn.relu(x) * 1.0


class WrongLinear(L.Layer):
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 3), name="w")

    def call(self, x):
        return tf.matmul(x, self.w)


def test_register_layer_makes_a_raw_tensorflow_layer_explainable():
    from sglrp_widgets import register_layer
    inp = keras.Input((5,))
    model = randomize(keras.Model(inp, L.Dense(3)(RawTFLayer(name="raw")(L.Dense(4)(inp)))), 33)
    x = np.random.default_rng(13).normal(size=(1, 5)).astype("float32")
    with pytest.raises(ExplainError, match="'raw' \\(RawTFLayer\\)"):
        Explainer(model, "lrp.z", cache=None)(x, 0)
    register_layer(RawTFLayer, "identity")
    try:
        fresh = keras.Model(model.inputs, model.outputs)             # a new model object: read afresh
        out = Explainer(fresh, "lrp.z", cache=None)(x, 0)
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            score = fresh(xt)[0, 0]
        np.testing.assert_allclose(out.relevance, (xt * tape.gradient(score, xt)).numpy(), rtol=1e-4, atol=1e-6)
    finally:
        register_layer(RawTFLayer, None)


class ClassToken(L.Layer):
    """A class token in front of the tokens, tiled to the batch size as keras_hub's ViT does: Keras cannot trace
    ``ops.tile(token, (None, 1, 1))`` on symbolic inputs, so the layer cannot be opened."""

    def build(self, shape):
        self.token = self.add_weight(shape=(1, 1, shape[-1]), initializer="random_normal", name="token")

    def call(self, x):
        return ops.concatenate([ops.tile(self.token, (ops.shape(x)[0], 1, 1)), x], axis=1)


def test_a_layer_keras_cannot_trace_opens_as_the_equivalent_registered_for_it():
    """``register_layer(cls, opens_as=fn)``: relevance crosses what ``fn`` records (here the class token is a
    constant per image, ``0 * x[:, :1] + token``: no relevance); an ``fn`` that computes something else is
    caught by the replay probe and the layer stays opaque."""
    from sglrp_widgets import register_layer
    inp = keras.Input((3, 4))
    tokens = ClassToken(name="cls")(L.Dense(4, name="d1")(inp))
    model = randomize(keras.Model(inp, L.Dense(2, name="d2")(L.Flatten()(tokens))), 36)
    x = np.random.default_rng(16).normal(size=(3, 3, 4)).astype("float32")
    with pytest.raises(ExplainError, match="'cls' \\(ClassToken\\)"):
        Explainer(model, "lrp.epsilon", cache=None)(x, 0)
    wrong = lambda layer, h: ops.concatenate([h[:, :1] * 0.0, h], axis=1)          # noqa: E731 - no token
    with pytest.raises(ExplainError, match="a rule or opens_as, not both"):
        register_layer(ClassToken, "route", opens_as=wrong)
    with pytest.raises(ExplainError, match="opens_as must be a function"):
        register_layer(ClassToken, opens_as="concatenate")
    register_layer(ClassToken, opens_as=wrong)
    try:
        with pytest.raises(ExplainError, match="'cls' \\(ClassToken\\)"):
            Explainer(keras.Model(model.inputs, model.outputs), "lrp.epsilon", cache=None)(x, 0)
        register_layer(ClassToken, opens_as=lambda layer, h: ops.concatenate([h[:, :1] * 0.0 + layer.token, h], 1))
        out = Explainer(keras.Model(model.inputs, model.outputs), "lrp.epsilon", cache=None)(x, [0, 1, 0])
    finally:
        register_layer(ClassToken, None)
    (W1, b1), (W2, b2) = dense_w(model.get_layer("d1")), dense_w(model.get_layer("d2"))
    token = npy(model.get_layer("cls").token)[0]
    for i, t in enumerate([0, 1, 0]):
        xn = x[i].astype(np.float64)
        h = xn @ W1 + b1
        y = np.concatenate([token, h]).reshape(-1)
        z = y @ W2 + b2
        Rh = eps_rule(y, W2, b2, np.eye(2)[t] * z[t]).reshape(4, 4)[1:]        # the token's row is absorbed
        Rx = np.stack([eps_rule(xn[p], W1, b1, Rh[p]) for p in range(3)])
        np.testing.assert_allclose(out.logits[i], z, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.relevance[i], Rx, rtol=2e-4, atol=1e-7)


class LearnedScale(L.Layer):
    """``scale * x`` with the weight on the left (Keras's variable operators cannot take a symbolic tensor) and
    a reshape to ``(batch, -1, channels)`` with the batch size read from the input, as keras_hub layers write."""

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        y = self.scale * x
        return ops.reshape(y, (ops.shape(x)[0], -1, x.shape[-1]))

    def compute_output_shape(self, shape):
        return shape[0], shape[1] * shape[2], shape[3]


def test_a_weight_times_the_input_and_a_batch_sized_reshape_are_opened_and_read_live():
    inp = keras.Input((2, 2, 3))
    model = randomize(keras.Model(inp, L.Dense(2, name="top")(L.Flatten()(LearnedScale(name="s")(inp)))), 37)
    layer = model.get_layer("s")
    layer.scale.assign(np.array([0.5, -2.0, 1.5], "float32"))
    assert [n.kind for n in read_model(model).nodes if n.name.startswith("s/")] == ["affine", "route"]
    assert "__mul__" not in vars(type(layer.scale))          # Keras's own variable operators are back
    x = np.random.default_rng(17).normal(size=(3, 2, 2, 3)).astype("float32")
    ex = Explainer(model, "lrp.epsilon", cache=None)
    W, b = dense_w(model.get_layer("top"))
    for scale in ([0.5, -2.0, 1.5], [1.0, 3.0, -0.5]):               # the weight is read at run time
        layer.scale.assign(np.array(scale, "float32"))
        out = ex(x, 1)
        for i in range(3):
            y = (x[i].astype(np.float64) * scale).reshape(-1)
            z = y @ W + b
            np.testing.assert_allclose(out.logits[i], z, rtol=1e-5, atol=1e-6)
            Ry = eps_rule(y, W, b, np.eye(2)[1] * z[1])
            Rx = y / ref.stab(y) * Ry                          # the epsilon rule of y = scale * x (no offset)
            np.testing.assert_allclose(out.relevance[i].reshape(-1), Rx, rtol=2e-4, atol=1e-7)


class DoubledWeight(L.Layer):
    """``x @ (2 w)``: opened, the product ``2 w`` is computed when the layer is read and recorded as a value."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 3), name="w")

    def call(self, x):
        return ops.matmul(x, self.w * 2.0)


def test_a_model_whose_opened_layer_computed_from_its_weights_is_read_again_when_they_change():
    """Every explainer of the model (two sharing one reading, and a gradient method) explains the model with
    its new weights, as a new explainer of a fresh model object does; the model itself is not re-read while
    its weights stay."""
    inp = keras.Input((4,))
    layer = DoubledWeight(name="dw")
    model = randomize(keras.Model(inp, L.Dense(2, name="top")(layer(inp))), 38)
    x = np.random.default_rng(18).normal(size=(2, 4)).astype("float32")
    explainers = [Explainer(model, m, cache=None) for m in ("lrp.epsilon", "sglrp", "gradient")]
    for ex in explainers:
        ex(x, 0)
    layer.w.assign(layer.w * 3.0 + 1.0)
    for ex in explainers:
        out = ex(x, [0, 1])
        np.testing.assert_allclose(out.logits, np.asarray(model(x)), rtol=1e-5, atol=1e-5)
        fresh = Explainer(keras.Model(model.inputs, model.outputs), ex.method, cache=None)(x, [0, 1])
        np.testing.assert_allclose(out.relevance, fresh.relevance, rtol=1e-5, atol=1e-7)
    graph = explainers[0].graph
    explainers[0](x + 1, 1)
    assert explainers[0].graph is graph


def test_a_reading_that_changes_the_function_is_refused_naming_the_layer():
    from sglrp_widgets import register_layer
    from sglrp_widgets.graph import LinearOp
    inp = keras.Input((5,))
    layer = WrongLinear(name="wrong")
    model = randomize(keras.Model(inp, L.Dense(2)(L.ReLU()(layer(inp)))), 34)
    register_layer(WrongLinear, lambda lay: LinearOp("dense", lay, lay.w * 2.0, None))   # a buggy reading
    try:
        with pytest.raises(ExplainError, match="first difference at the output of layer 'wrong' \\(WrongLinear\\)"):
            Explainer(model, "lrp.z", cache=None)(np.ones((1, 5), "float32"), 0)
    finally:
        register_layer(WrongLinear, None)


# ---- rules= ------------------------------------------------------------------------------------------

def _small():
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(3, 3, activation="relu", name="conv")(inp)
    return randomize(keras.Model(inp, L.Dense(2, name="top")(L.Flatten()(h))), 35)


def test_a_rule_given_per_layer_uses_its_own_bounds():
    from sglrp_widgets.rules import z_box
    model = _small()
    x = np.random.default_rng(14).uniform(0.2, 0.8, (1, 6, 6, 2)).astype("float32")
    out = Explainer(model, "lrp.epsilon", rules={"conv": z_box(0.0, 1.0)}, cache=None)(x, 1)
    conv, top = model.get_layer("conv"), model.get_layer("top")
    W1 = ref.explicit_matrix(lambda t: tf.nn.convolution(t, tf.cast(conv.kernel, t.dtype)), (6, 6, 2))
    b1 = np.tile(npy(conv.bias), 16)
    W2, b2 = dense_w(top)
    xn = x[0].reshape(-1).astype(np.float64)
    h = np.maximum(xn @ W1 + b1, 0)
    Rh = eps_rule(h, W2, b2, np.eye(2)[1] * (h @ W2 + b2)[1])
    expected = ref.rule_z_box(xn, W1, b1, Rh, 0.0, 1.0)               # not the batch range [0.2, 0.8]
    np.testing.assert_allclose(out.relevance[0].reshape(-1), expected, rtol=1e-4, atol=1e-7)


def test_rules_keys_matching_no_layer_and_unknown_rule_keywords_are_clear_errors():
    from sglrp_widgets import explain
    model = _small()
    x = np.ones((1, 6, 6, 2), "float32")
    with pytest.raises(ExplainError, match="'cnov' match no linear layer.*'conv'.*Did you mean 'conv'"):
        Explainer(model, "lrp.epsilon", rules={"cnov": "z_plus"})(x, 0)
    with pytest.raises(ExplainError, match="Unknown parameter 'eps' for rule 'epsilon'.*Did you mean 'epsilon'"):
        Explainer(model, "lrp.epsilon", rules={"conv": ("epsilon", {"eps": 0.1})})
    with pytest.raises(ExplainError, match="Unknown parameter 'g' for rule 'gamma'; its parameters are gamma"):
        explain(model, x, "lrp.epsilon", rules={"conv": ("gamma", {"g": 0.5})})
    a = explain(model, x, "lrp.epsilon", targets=0, rules={"conv": ("gamma", {"gamma": 0.5})})
    b = explain(model, x, "lrp.epsilon", targets=0)
    assert not np.allclose(a.relevance, b.relevance)                   # explain() takes rules= and uses them


def test_the_new_rules_conserve_relevance_without_biases():
    """Gates, two-signal products, attention (weights held) and LayerNorm (sigma held, no beta) pass on exactly
    the relevance they receive: with LRP-0 and no biases anywhere the input relevance sums to the logit."""
    inp = keras.Input((4, 6))
    x = L.Dense(6, use_bias=False, activation="relu")(inp)
    gate = L.Dense(6, use_bias=False, activation="sigmoid")(L.GlobalAveragePooling1D(keepdims=True)(x))
    x = L.Multiply()([x, gate])                                              # squeeze-excitation
    x = L.Add()([x, L.MultiHeadAttention(2, 3, use_bias=False)(x, x)])       # attention, weights held
    x = L.LayerNormalization(center=False)(x)                               # sigma held, no beta
    a, b = L.Dense(5, use_bias=False)(x), L.Dense(5, use_bias=False)(x)
    x = L.Multiply()([a, b])                                                 # two signals: R/2 each
    model = randomize(keras.Model(inp, L.Dense(3, use_bias=False)(L.Flatten()(x))), 36)
    images = np.random.default_rng(15).normal(size=(2, 4, 6)).astype("float32")
    out = Explainer(model, "lrp.z", cache=None)(images, [0, 2])
    np.testing.assert_allclose(out.relevance.sum(axis=(1, 2)), out.logits[[0, 1], [0, 2]], rtol=1e-4)


def test_a_map_that_overflows_float32_is_a_clear_error():
    from sglrp_widgets import register_layer
    from sglrp_widgets.propagation import Handler

    class Amplify(Handler):           # a (bad) user rule that multiplies relevance by 1e30
        def backward(self, node, i, xs, st, r, ctx):
            return [r * 1e30]

    class Scale(L.Layer):
        def call(self, x):
            return x * 1.0

    register_layer(Scale, Amplify())
    try:
        inp = keras.Input((4,))
        x = Scale()(Scale()(L.Dense(4)(inp)))
        model = randomize(keras.Model(inp, L.Dense(2)(x)), 37)
        with pytest.raises(ExplainError, match="'lrp.z' produced a non-finite map"):
            Explainer(model, "lrp.z", cache=None)(np.ones((1, 4), "float32"), 0)
    finally:
        register_layer(Scale, None)

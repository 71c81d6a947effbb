"""A naive numpy LRP, written from METHODS.md with explicit matrices, to check the engine against.

Nets are lists of stages over flattened channels-last vectors:
  ("linear", W, b, family, relu_after)  - W is the explicit (inputs x outputs) matrix of a Dense/Conv layer
  ("avgpool", P)                        - average pooling as its fixed explicit matrix
  ("maxpool", in_shape, pool)           - 2-D max pooling, valid padding, stride = pool
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

EPS = 1e-7


def stab(z, eps=EPS):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def rule_z(x, W, b, R, eps=EPS):
    return x * (W @ (R / stab(x @ W + b, eps)))


def rule_epsilon(x, W, b, R, e):
    return x * (W @ (R / stab(x @ W + b, e if e > 0 else EPS)))


def rule_z_plus(x, W, b, R):
    xp, xn, Wp, Wn = np.maximum(x, 0), np.minimum(x, 0), np.maximum(W, 0), np.minimum(W, 0)
    s = R / stab(xp @ Wp + xn @ Wn)
    return xp * (Wp @ s) + xn * (Wn @ s)


def rule_alpha_beta(x, W, b, R, alpha, beta, bias=True):
    xp, xn, Wp, Wn = np.maximum(x, 0), np.minimum(x, 0), np.maximum(W, 0), np.minimum(W, 0)
    bp, bn = (np.maximum(b, 0), np.minimum(b, 0)) if bias else (0.0, 0.0)
    P = xp @ Wp + xn @ Wn + bp
    N = xp @ Wn + xn @ Wp + bn
    sp, sn = R / stab(P), R / stab(N)
    return alpha * (xp * (Wp @ sp) + xn * (Wn @ sp)) - beta * (xp * (Wn @ sn) + xn * (Wp @ sn))


def rule_gamma(x, W, b, R, g):
    Wg = W + g * np.maximum(W, 0)
    return x * (Wg @ (R / stab(x @ Wg)))


def rule_w_square(x, W, b, R):
    W2 = W ** 2
    return W2 @ (R / stab(np.ones_like(x) @ W2))


def rule_flat(x, W, b, R, mask):
    M = mask.astype(np.float64)
    return M @ (R / stab(np.ones_like(x) @ M))


def rule_z_box(x, W, b, R, low, high):
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    lo, hi = np.broadcast_to(low, x.shape), np.broadcast_to(high, x.shape)
    s = R / stab(x @ W - lo @ Wp - hi @ Wn)
    return x * (W @ s) - lo * (Wp @ s) - hi * (Wn @ s)


def explicit_matrix(fn, in_shape):
    """The (inputs x outputs) matrix of a linear map ``fn`` acting on channels-last tensors."""
    n = int(np.prod(in_shape))
    basis = np.eye(n, dtype=np.float64).reshape((n,) + tuple(in_shape))
    out = fn(tf.constant(basis)).numpy()
    return out.reshape(n, -1)


def maxpool_forward(x, in_shape, pool):
    h, w, c = in_shape
    a = x.reshape(h, w, c)[: h // pool * pool, : w // pool * pool]
    a = a.reshape(h // pool, pool, w // pool, pool, c).transpose(0, 2, 4, 1, 3).reshape(h // pool, w // pool, c, -1)
    return a.max(-1).reshape(-1), a.argmax(-1)


def maxpool_backward(R, in_shape, pool, winners):
    h, w, c = in_shape
    out = np.zeros((h, w, c))
    ho, wo = h // pool, w // pool
    Rr = R.reshape(ho, wo, c)
    for i in range(ho):
        for j in range(wo):
            for k in range(c):
                di, dj = divmod(int(winners[i, j, k]), pool)
                out[i * pool + di, j * pool + dj, k] += Rr[i, j, k]
    return out.reshape(-1)


def forward(net, x):
    """Values at every stage; returns (logits, trace) with the input of each stage."""
    trace = []
    for stage in net:
        trace.append(x)
        if stage[0] == "linear":
            _, W, b, _, relu = stage
            x = x @ W + b
            if relu:
                x = np.maximum(x, 0)
        elif stage[0] == "avgpool":
            x = x @ stage[1]
        elif stage[0] == "maxpool":
            x, _ = maxpool_forward(x, stage[1], stage[2])
    return x, trace


def backward(net, x, R, rule_for):
    """LRP with ``rule_for(index, stage) -> f(x, W, b, R)`` for the linear stages."""
    _, trace = forward(net, x)
    for i in range(len(net) - 1, -1, -1):
        stage, xi = net[i], trace[i]
        if stage[0] == "linear":
            R = rule_for(i, stage)(xi, stage[1], stage[2], R)
        elif stage[0] == "avgpool":
            R = rule_epsilon(xi, stage[1], 0.0, R, EPS)
        elif stage[0] == "maxpool":
            _, winners = maxpool_forward(xi, stage[1], stage[2])
            R = maxpool_backward(R, stage[1], stage[2], winners)
    return R


def keras_to_reference(model):
    """Turn a Sequential model of Dense/Conv2D/ReLU/pooling/Flatten layers into a reference net."""
    import keras
    net = []
    shape = tuple(model.inputs[0].shape[1:])
    first_relu_pending = None
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            kernel = layer.kernel.numpy().astype(np.float64)
            if isinstance(layer, keras.layers.Dense):
                fn = lambda t, k=kernel: tf.tensordot(t, k, axes=1)  # noqa: E731
                family = "dense"
            else:
                fn = lambda t, k=kernel, l=layer: tf.nn.convolution(  # noqa: E731
                    t, k, strides=l.strides, padding=l.padding.upper())
                family = "conv"
            W = explicit_matrix(fn, shape)
            out_shape = tuple(fn(tf.zeros((1,) + shape, tf.float64)).shape[1:])
            b = np.broadcast_to(layer.bias.numpy().astype(np.float64), out_shape).reshape(-1)
            relu = layer.activation.__name__ == "relu"
            net.append(["linear", W, b, family, relu])
            first_relu_pending = net[-1]
            shape = out_shape
        elif isinstance(layer, keras.layers.ReLU):
            first_relu_pending[4] = True
        elif isinstance(layer, keras.layers.AveragePooling2D):
            P = explicit_matrix(lambda t, l=layer: tf.nn.avg_pool2d(t, l.pool_size, l.strides, l.padding.upper()),
                                shape)
            shape = tuple(layer.compute_output_shape((1,) + shape)[1:])
            net.append(("avgpool", P))
        elif isinstance(layer, keras.layers.MaxPooling2D):
            assert layer.pool_size[0] == layer.strides[0] and layer.padding == "valid"
            net.append(("maxpool", shape, layer.pool_size[0]))
            shape = tuple(layer.compute_output_shape((1,) + shape)[1:])
        elif isinstance(layer, keras.layers.Flatten):
            shape = (int(np.prod(shape)),)
        else:
            raise TypeError(layer)
    return [tuple(s) for s in net]


def randomize(model, seed=0, scale=0.5, bias_scale=0.1):
    """Give every weight (biases too) random values, so rules that differ on biases differ here."""
    import keras
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, scale if w.ndim > 1 else bias_scale, w.shape).astype("float32")
                       for w in model.get_weights()])
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):   # a variance must stay positive
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype("float32"))
    return model

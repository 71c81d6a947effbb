"""Gradient and CAM methods against independent computations (plain GradientTape / numpy), and the registry."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from reference import randomize
from sglrp_widgets import Explainer, list_methods
from sglrp_widgets.methods import METHODS, validate_params

L = keras.layers


def dense_net():
    inp = keras.Input((6,))
    h1 = L.Dense(8, activation="relu")(inp)
    h2 = L.Dense(8, activation="relu")(h1)
    logits = L.Dense(3, name="logits")(h2)
    out = L.Softmax()(logits)
    return randomize(keras.Model(inp, out), 21)


def conv_net():
    inp = keras.Input((9, 9, 2))
    x = L.Conv2D(4, 3, activation="relu", name="c1")(inp)
    x = L.Conv2D(5, 3, padding="same", name="c2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    logits = L.Dense(3, name="logits")(x)
    return randomize(keras.Model(inp, L.Activation("softmax")(logits)), 22)


def logits_model(model):
    return keras.Model(model.inputs, model.get_layer("logits").output)


def tape_gradient(model, x, targets):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        z = logits_model(model)(xt)
        s = tf.reduce_sum(tf.gather(z, targets, batch_dims=1))
    return tape.gradient(s, xt).numpy()


X6 = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
T3 = np.array([0, 2, 1])


def test_gradient_and_input_x_gradient_match_a_plain_tape():
    model = dense_net()
    g = tape_gradient(model, X6, T3)
    np.testing.assert_allclose(Explainer(model, "gradient", cache=None)(X6, T3).relevance, g, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(Explainer(model, "input_x_gradient", cache=None)(X6, T3).relevance, X6 * g,
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_modified_backprop_matches_numpy(method):
    model = dense_net()
    (W1, b1), (W2, b2), (W3, b3) = [l.get_weights() for l in model.layers if isinstance(l, L.Dense)]
    out = Explainer(model, method, cache=None)(X6, T3).relevance
    for n, t in enumerate(T3):
        p1 = X6[n] @ W1 + b1
        p2 = np.maximum(p1, 0) @ W2 + b2
        g = W3[:, t]
        g = np.maximum(g, 0) * (p2 > 0 if method == "guided_backprop" else 1)
        g = W2 @ g
        g = np.maximum(g, 0) * (p1 > 0 if method == "guided_backprop" else 1)
        np.testing.assert_allclose(out[n], W1 @ g, rtol=1e-5, atol=1e-6)


def test_smoothgrad_reproduces_its_noise_and_reduces_to_gradient_without_noise():
    model = dense_net()
    g = tape_gradient(model, X6, T3)
    np.testing.assert_allclose(Explainer(model, "smoothgrad", noise=0.0, n=3, cache=None)(X6, T3).relevance, g,
                               rtol=1e-5, atol=1e-7)
    out = Explainer(model, "smoothgrad", noise=0.2, n=5, seed=7, cache=None)(X6, T3).relevance
    sigma = 0.2 * (X6.max(1, keepdims=True) - X6.min(1, keepdims=True))
    expected = np.mean([tape_gradient(model, X6 + sigma * tf.random.stateless_normal((1, 6), [7, i]).numpy(), T3)
                        for i in range(5)], axis=0)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)
    other = Explainer(model, "smoothgrad", noise=0.2, n=5, seed=8, cache=None)(X6, T3).relevance
    assert not np.allclose(out, other)


def test_integrated_gradients_is_the_right_riemann_sum_and_exact_on_linear_models():
    model = dense_net()
    steps, base = 8, 0.5
    out = Explainer(model, "integrated_gradients", steps=steps, baseline=base, cache=None)(X6, T3).relevance
    grads = np.mean([tape_gradient(model, base + k / steps * (X6 - base), T3) for k in range(1, steps + 1)], axis=0)
    np.testing.assert_allclose(out, (X6 - base) * grads, rtol=1e-4, atol=1e-6)
    linear = keras.Sequential([keras.Input((6,)), L.Dense(3, name="logits")])
    randomize(linear, 3)
    W = linear.get_weights()[0]
    ig = Explainer(linear, "integrated_gradients", steps=3, cache=None)(X6, T3).relevance
    np.testing.assert_allclose(ig, X6 * W[:, T3].T, rtol=1e-5, atol=1e-6)


def cam_reference(model, x, targets, layer, plus_plus=False):
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.get_layer("logits").output])
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        a, z = probe(xt)
        s = tf.reduce_sum(tf.gather(z, targets, batch_dims=1))
    g = tape.gradient(s, a).numpy().astype(np.float64)
    a = a.numpy().astype(np.float64)
    if plus_plus:
        denom = 2 * g ** 2 + a.sum(axis=(1, 2), keepdims=True) * g ** 3
        alpha = np.where(denom != 0, g ** 2 / np.where(denom != 0, denom, 1), 0)
        w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
    else:
        w = g.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((w * a).sum(-1, keepdims=True), 0)
    up = tf.image.resize(cam.astype(np.float32), x.shape[1:3], method="bilinear").numpy()
    return up


X9 = np.random.default_rng(1).uniform(0, 1, (2, 9, 9, 2)).astype("float32")


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_plus_plus"])
def test_grad_cam_matches_reference_and_takes_the_activated_last_conv(method):
    model = conv_net()
    out = Explainer(model, method, cache=None)(X9, [1, 2])
    expected = cam_reference(model, X9, np.array([1, 2]), "r2", plus_plus=method == "grad_cam_plus_plus")
    np.testing.assert_allclose(out.heatmap(), expected[..., 0], rtol=1e-4, atol=1e-6)
    assert out.relevance.shape == X9.shape and expected.max() > 0
    by_name = Explainer(model, method, layer="c1", cache=None)(X9, [1, 2]).heatmap()
    np.testing.assert_allclose(by_name, cam_reference(model, X9, np.array([1, 2]), "c1",
                                                      method == "grad_cam_plus_plus")[..., 0], rtol=1e-4, atol=1e-6)


def test_guided_grad_cam_is_cam_times_guided_backprop():
    model = conv_net()
    out = Explainer(model, "guided_grad_cam", cache=None)(X9, [0, 1]).relevance
    cam = cam_reference(model, X9, np.array([0, 1]), "r2")
    gb = Explainer(model, "guided_backprop", cache=None)(X9, [0, 1]).relevance
    np.testing.assert_allclose(out, cam * gb, rtol=1e-4, atol=1e-7)


def test_only_methods_whose_maps_are_never_negative_say_so():
    """``never_negative`` lets a colour bar start at 0 (the CLI's figures): Grad-CAM and Grad-CAM++ end in a ReLU;
    Guided Grad-CAM multiplies by signed guided backprop, and every other method is signed too."""
    model = conv_net()
    flagged = {name for name, m in METHODS.items() if m.never_negative}
    assert flagged == {"grad_cam", "grad_cam_plus_plus"}
    for name in flagged | {"guided_grad_cam"}:
        rel = Explainer(model, name, cache=None)(X9, [0, 1]).relevance
        assert bool(rel.min() >= 0) is (name in flagged), name
    # and why, in words for the widget's tooltip; relu makes any method's maps never negative
    assert METHODS["grad_cam"].why_never_negative() == "Grad-CAM maps are never negative"
    assert METHODS["sglrp"].why_never_negative({"relu": False}) == ""
    assert METHODS["sglrp"].why_never_negative({"relu": True}) == "relu keeps only the positive part of the map"


def test_cam_layer_errors_are_clear():
    from sglrp_widgets.errors import ExplainError
    with pytest.raises(ExplainError, match="not a layer of the model.*Convolutional layers: c1, c2"):
        Explainer(conv_net(), "grad_cam", layer="c3")(X9, 0)
    with pytest.raises(ExplainError, match="needs a convolutional layer"):
        Explainer(dense_net(), "grad_cam")(X6, 0)


def test_relu_parameter_keeps_the_positive_part():
    model = dense_net()
    signed = Explainer(model, "gradient", cache=None)(X6, T3).relevance
    positive = Explainer(model, "gradient", relu=True, cache=None)(X6, T3).relevance
    assert (signed < 0).any()
    np.testing.assert_array_equal(positive, np.maximum(signed, 0))


def test_registry_describes_every_method_and_validates_from_it():
    methods = list_methods()
    names = [m["name"] for m in methods]
    assert names == list(METHODS) and len(names) == 29
    for m in methods:
        assert m["label"] and m["description"] and m["family"] in ("Contrastive LRP", "LRP", "Gradient", "CAM")
        for p in m["params"]:
            assert set(p) == {"name", "type", "default", "min", "max", "choices", "help"}
            assert validate_params(m["name"], {p["name"]: p["default"]})[p["name"]] == p["default"]
    assert validate_params("smoothgrad", {"n": "8", "relu": "true"}) == {"n": 8, "noise": 0.1, "seed": 0,
                                                                         "relu": True}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_one_map_per_target_with_the_input_shape(method):
    model = conv_net()
    out = Explainer(model, method, cache=None)(X9, [[0, 1], [2, 0]])
    assert out.relevance.shape == (2, 2) + X9.shape[1:] and out.relevance.dtype == np.float32
    assert np.isfinite(out.relevance).all()
    single = Explainer(model, method, cache=None)(X9, [1, 0])
    np.testing.assert_allclose(single.relevance, out.relevance[:, 1], rtol=1e-4, atol=1e-6)   # same targets

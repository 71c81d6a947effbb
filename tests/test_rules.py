"""Every rule and composite against the naive numpy reference in tests/reference.py."""
import keras
import numpy as np
import pytest

import reference as ref
from reference import randomize
from sglrp_widgets import Explainer

L = keras.layers
LOW, HIGH = -2.5, 3.0


def dense_net():
    m = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu"), L.Dense(4, activation="relu"),
                          L.Dense(3)])
    return randomize(m, 1)


def conv_net():
    m = keras.Sequential([keras.Input((12, 12, 2)), L.Conv2D(3, 3, strides=2, padding="same", activation="relu"),
                          L.MaxPooling2D(2), L.Conv2D(4, 2, padding="valid"), L.ReLU(), L.AveragePooling2D(2),
                          L.Flatten(), L.Dense(3)])
    return randomize(m, 2)


def mask_of(W):
    return W != 0


def reference_composite(name, net, params):
    first = next(i for i, s in enumerate(net) if s[0] == "linear")
    eps = params.get("epsilon")
    box = lambda x, W, b, R: ref.rule_z_box(x, W, b, R, LOW, HIGH)  # noqa: E731
    flat = lambda x, W, b, R: ref.rule_flat(x, W, b, R, mask_of(W))  # noqa: E731
    zplus = ref.rule_z_plus
    ab10 = lambda x, W, b, R: ref.rule_alpha_beta(x, W, b, R, 1, 0)  # noqa: E731
    ab21 = lambda x, W, b, R: ref.rule_alpha_beta(x, W, b, R, 2, 1)  # noqa: E731

    def rule_for(i, stage):
        fam, is_first = stage[3], i == first
        e = lambda d: (lambda x, W, b, R: ref.rule_epsilon(x, W, b, R, d if eps is None else eps))  # noqa: E731
        table = {
            "deep_taylor": zplus,
            "deep_taylor.bounded": box if is_first else zplus,
            "lrp.z": ref.rule_z,
            "lrp.epsilon": e(1e-7),
            "lrp.w_square": ref.rule_w_square,
            "lrp.flat": flat,
            "lrp.alpha_2_beta_1": ab21,
            "lrp.alpha_1_beta_0": ab10,
            "lrp.z_plus": zplus,
            "lrp.sequential_preset_a": e(0.1) if fam == "dense" else ab10,
            "lrp.sequential_preset_b": e(0.1) if fam == "dense" else ab21,
            "lrp.sequential_preset_a_flat": flat if is_first else (e(0.1) if fam == "dense" else ab10),
            "lrp.sequential_preset_b_flat": flat if is_first else (e(0.1) if fam == "dense" else ab21),
            "lrp.epsilon_plus_flat": flat if is_first else (zplus if fam == "conv" else e(1e-6)),
            "lrp.epsilon_gamma_box": box if is_first else (
                (lambda x, W, b, R: ref.rule_gamma(x, W, b, R, 0.25)) if fam == "conv" else e(1e-6)),
        }
        return table[name]
    return rule_for


COMPOSITES = ["deep_taylor", "deep_taylor.bounded", "lrp.z", "lrp.epsilon", "lrp.w_square", "lrp.flat",
              "lrp.alpha_2_beta_1", "lrp.alpha_1_beta_0", "lrp.z_plus", "lrp.sequential_preset_a",
              "lrp.sequential_preset_b", "lrp.sequential_preset_a_flat", "lrp.sequential_preset_b_flat",
              "lrp.epsilon_plus_flat", "lrp.epsilon_gamma_box"]


def assert_maps_close(out, expected):
    scale = np.abs(expected).max() + 1e-12
    np.testing.assert_allclose(out / scale, expected / scale, atol=2e-5)


@pytest.mark.parametrize("make_net", [dense_net, conv_net], ids=["dense", "conv"])
@pytest.mark.parametrize("composite", COMPOSITES)
def test_composite_matches_numpy_reference(make_net, composite):
    model = make_net()
    net = ref.keras_to_reference(model)
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (3,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    targets = [0, 2, 1]
    params = {"low": LOW, "high": HIGH} if composite in ("deep_taylor.bounded", "lrp.epsilon_gamma_box") else {}
    out = Explainer(model, composite, cache=None, **params)(x, targets)
    assert out.relevance.shape == x.shape
    for n in range(3):
        xn = x[n].reshape(-1).astype(np.float64)
        logits, _ = ref.forward(net, xn)
        np.testing.assert_allclose(out.logits[n], logits, rtol=1e-4, atol=1e-4)
        head = np.zeros_like(logits)
        head[targets[n]] = logits[targets[n]]
        expected = ref.backward(net, xn, head, reference_composite(composite, net, params))
        assert_maps_close(out.relevance[n].reshape(-1), expected)


def test_epsilon_parameter_changes_the_map_as_the_reference_says():
    model = dense_net()
    net = ref.keras_to_reference(model)
    x = np.random.default_rng(0).normal(0, 1, (2, 6)).astype("float32")
    for eps in (1e-7, 0.5, 5.0):
        out = Explainer(model, "lrp.epsilon", epsilon=eps, cache=None)(x, [1, 1])
        for n in range(2):
            xn = x[n].astype(np.float64)
            logits, _ = ref.forward(net, xn)
            head = np.eye(3)[1] * logits[1]
            expected = ref.backward(net, xn, head, lambda i, s: (lambda x_, W, b, R: ref.rule_epsilon(x_, W, b, R, eps)))
            assert_maps_close(out.relevance[n], expected)


def test_per_channel_bounds_broadcast_like_the_reference():
    model = conv_net()
    net = ref.keras_to_reference(model)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 12, 12, 2)).astype("float32")
    low, high = np.array([-1.0, -2.0]), np.array([1.5, 2.5])
    out = Explainer(model, "deep_taylor.bounded", low=low, high=high, cache=None)(x, 2)
    xn = x[0].reshape(-1).astype(np.float64)
    logits, _ = ref.forward(net, xn)
    lo, hi = np.tile(low, 144), np.tile(high, 144)
    rule_for = lambda i, s: ((lambda x_, W, b, R: ref.rule_z_box(x_, W, b, R, lo, hi)) if i == 0  # noqa: E731
                             else ref.rule_z_plus)
    expected = ref.backward(net, xn, np.eye(3)[2] * logits[2], rule_for)
    assert_maps_close(out.relevance[0].reshape(-1), expected)


def test_rules_differ_from_each_other():
    """Guards against a composite silently falling back to one rule."""
    model = conv_net()
    x = np.random.default_rng(1).normal(0, 1, (1, 12, 12, 2)).astype("float32")
    maps = {c: Explainer(model, c, low=LOW, high=HIGH, cache=None)(x, 0).relevance
            if c in ("deep_taylor.bounded", "lrp.epsilon_gamma_box") else Explainer(model, c, cache=None)(x, 0).relevance
            for c in ["lrp.z", "lrp.z_plus", "lrp.w_square", "lrp.flat", "lrp.alpha_2_beta_1",
                      "deep_taylor.bounded", "lrp.epsilon_gamma_box"]}
    names = list(maps)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.allclose(maps[a], maps[b], atol=1e-6), (a, b)


def test_stabilize_of_a_known_nonnegative_sum_is_the_same_bits():
    import tensorflow as tf
    from sglrp_widgets.rules import stabilize
    z = tf.constant([0.0, -0.0, 1e-30, 1e-7, 0.5, 3.0, 1e20], tf.float32)
    np.testing.assert_array_equal((1.0 / stabilize(z, 1e-7, nonneg=True)).numpy(),
                                  (1.0 / stabilize(z, 1e-7)).numpy())

"""Engine properties: conservation, model forms, BN folding, SGLRP/CLRP, caching, retracing, errors."""
import gc
import logging
import tracemalloc

import keras
import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from reference import randomize
from sglrp_widgets import Explainer, explain
from sglrp_widgets.engine import ResultCache
from sglrp_widgets.errors import ExplainError, UnsupportedLayerError
from sglrp_widgets.canonize import canonize
from sglrp_widgets.graph import read_model
from sglrp_widgets.lrp import bound_args

L = keras.layers


def zero_biases(model):
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.zeros(layer.bias.shape, "float32"))
    return model


def residual_net(with_bias=False, bn=True):
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(4, 3, padding="same", use_bias=with_bias)(inp)
    if bn:
        x = L.BatchNormalization(center=with_bias)(x)
    x = L.ReLU()(x)
    y = L.Conv2D(4, 3, padding="same", activation="relu", use_bias=with_bias)(x)
    x = L.Add()([x, y])
    x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(6, 3, padding="valid", activation="relu", use_bias=with_bias)(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(5, use_bias=with_bias, activation="softmax")(x)
    model = keras.Model(inp, out)
    randomize(model, 3)
    if bn:
        bn_layer = [l for l in model.layers if isinstance(l, L.BatchNormalization)][0]
        rng = np.random.default_rng(9)
        weights = bn_layer.get_weights()
        bn_layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if i == 0 or i == len(weights) - 1
                              else rng.normal(0, 0.3, w.shape).astype("float32") for i, w in enumerate(weights)])
        if not with_bias:   # no beta; moving mean must be zero for a bias-free fold
            w = bn_layer.get_weights()
            w[-2] = np.zeros_like(w[-2])
            bn_layer.set_weights(w)
    return model


IMAGES = np.random.default_rng(0).uniform(0, 1, (2, 10, 10, 3)).astype("float32")


@pytest.mark.parametrize("method,params", [
    ("lrp.z", {}), ("lrp.z_plus", {}), ("lrp.alpha_2_beta_1", {}), ("lrp.alpha_1_beta_0", {}),
    ("deep_taylor", {}), ("deep_taylor.bounded", {"low": 0, "high": 1}),
])
def test_conservation_including_across_add(method, params):
    model = residual_net(with_bias=False)
    out = Explainer(model, method, cache=None, **params)(IMAGES, [1, 3])
    logits = out.logits[np.arange(2), [1, 3]]
    np.testing.assert_allclose(out.relevance.sum(axis=(1, 2, 3)), logits, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("method", ["lrp.w_square", "lrp.flat", "lrp.z", "lrp.z_plus"])
def test_conservation_of_input_independent_rules(method):
    # w_square and flat send relevance to inactive units too; the Add and average-pool rules split in
    # proportion to activations, so those nets would lose it there: check them on conv/max-pool/dense nets.
    model = keras.Sequential([keras.Input((10, 10, 3)), L.Conv2D(4, 3, use_bias=False, activation="relu"),
                              L.MaxPooling2D(2), L.Conv2D(5, 2, strides=2, padding="same", use_bias=False),
                              L.ReLU(), L.Flatten(), L.Dense(4, use_bias=False)])
    randomize(model, 12)
    out = Explainer(model, method, cache=None)(IMAGES, [1, 3])
    logits = out.logits[np.arange(2), [1, 3]]
    np.testing.assert_allclose(out.relevance.sum(axis=(1, 2, 3)), logits, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["sglrp", "lrp", "lrp.epsilon"])
def test_relu_after_add_as_in_resnet_blocks(method):
    inp = keras.Input((8, 8, 3))
    p = L.ReLU()(L.Conv2D(4, 3, padding="same")(inp))
    y = L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(p))
    x = L.ReLU()(L.Add()([p, y]))
    model = randomize(keras.Model(inp, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(x))), 13)
    out = Explainer(model, method, cache=None)(np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype("float32"),
                                               [1, 2])
    assert np.isfinite(out.relevance).all() and np.abs(out.relevance).max() > 0
    if method == "lrp":   # z_box + z+ conserve the logit (no biases reach the input): a value check
        np.testing.assert_allclose(out.relevance.sum(axis=(1, 2, 3)), out.logits[[0, 1], [1, 2]], rtol=1e-3)


def test_add_splits_in_proportion_not_by_gradient():
    inp = keras.Input((4,))
    a = L.Dense(3, use_bias=False)(inp)
    b = L.Dense(3, use_bias=False)(inp)
    out = L.Dense(2, use_bias=False)(L.Add()([a, b]))
    model = randomize(keras.Model(inp, out), 4)
    x = np.random.default_rng(1).normal(size=(1, 4)).astype("float32")
    r = Explainer(model, "lrp.z", cache=None)(x, 0)
    np.testing.assert_allclose(r.relevance.sum(), r.logits[0, 0], rtol=1e-4)   # a gradient split would double it


def test_bn_folding_keeps_logits_and_is_applied():
    model = residual_net(with_bias=True)
    assert any(isinstance(n.layer, L.BatchNormalization) for n in read_model(model).nodes)
    graph = canonize(read_model(model), fold=True)
    assert not any(isinstance(n.layer, L.BatchNormalization) for n in graph.nodes)
    assert graph.softmax_removed
    logits = graph.forward(tf.constant(IMAGES)).numpy()
    expected = np.log(model.predict(IMAGES, verbose=0))
    expected -= expected.mean(-1, keepdims=True)
    np.testing.assert_allclose(logits - logits.mean(-1, keepdims=True), expected, atol=1e-4 * np.abs(expected).max())


def test_unfoldable_batchnorm_gets_the_epsilon_rule():
    inp = keras.Input((5,))
    x = L.Dense(4, activation="relu")(inp)
    x = L.BatchNormalization()(x)          # after a ReLU: cannot fold
    out = L.Dense(3)(x)
    model = randomize(keras.Model(inp, out), 6)
    graph = canonize(read_model(model), fold=True)
    assert [n.kind for n in graph.nodes] == ["linear", "activation", "affine", "linear"]
    x0 = np.random.default_rng(2).normal(size=(1, 5)).astype("float32")
    r = Explainer(model, "lrp.epsilon", cache=None)(x0, 1).relevance[0]
    d1, bn, d2 = model.layers[1], model.layers[2], model.layers[3]
    W1, b1 = [w.astype(np.float64) for w in d1.get_weights()]
    gamma, beta, mean, var = [w.astype(np.float64) for w in bn.get_weights()]
    a = gamma / np.sqrt(var + bn.epsilon)
    c = beta - mean * a
    W2, b2 = [w.astype(np.float64) for w in d2.get_weights()]
    h = np.maximum(x0[0] @ W1 + b1, 0)
    y = h * a + c
    z = y @ W2 + b2
    R = np.eye(3)[1] * z[1]
    Ry = ref.rule_epsilon(y, W2, b2, R, 1e-7)
    Rh = a * h * Ry / ref.stab(y)
    Rx = ref.rule_epsilon(x0[0].astype(np.float64), W1, b1, Rh, 1e-7)
    np.testing.assert_allclose(r, Rx, rtol=1e-3, atol=1e-6)


def _three_forms():
    seq = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(6, 3, activation="relu"), L.MaxPooling2D(2),
                            L.Flatten(), L.Dense(16, activation="relu"), L.Dense(3, activation="softmax")])
    randomize(seq, 7)
    inp = keras.Input((8, 8, 2))
    x = inp
    for layer in seq.layers:
        x = layer(x)
    functional = keras.Model(inp, x)
    inner = keras.Sequential([keras.Input((8, 8, 2))] + seq.layers[:3])
    inp2 = keras.Input((8, 8, 2))
    y = inner(inp2)
    for layer in seq.layers[3:]:
        y = layer(y)
    nested = keras.Model(inp2, y)
    return seq, functional, nested


@pytest.mark.parametrize("method", ["sglrp", "lrp.epsilon", "lrp.sequential_preset_a_flat", "gradient",
                                    "grad_cam"])
def test_sequential_functional_and_nested_give_identical_maps(method):
    x = np.random.default_rng(3).uniform(0, 1, (2, 8, 8, 2)).astype("float32")
    maps = [Explainer(m, method, cache=None)(x, [0, 2]).relevance for m in _three_forms()]
    np.testing.assert_array_equal(maps[0], maps[1])
    np.testing.assert_array_equal(maps[0], maps[2])
    assert np.abs(maps[0]).max() > 0


def _separate_target_and_dual(model, x, t, head):
    """Target and dual maps from the numpy reference (bounded Deep Taylor), combined as the seeds do."""
    net = ref.keras_to_reference(model)
    low, high = 0.0, 1.0
    rule_for = lambda i, s: ((lambda x_, W, b, R: ref.rule_z_box(x_, W, b, R, low, high)) if i == 0  # noqa: E731
                             else ref.rule_z_plus)
    xn = x.reshape(-1).astype(np.float64)
    z, _ = ref.forward(net, xn)
    onehot = np.eye(len(z))[t]
    if head == "sglrp":
        y = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        rt, rd = onehot * y[t] * (1 - y[t]), (1 - onehot) * y[t] * y
    else:
        rt, rd = onehot * z[t], (1 - onehot) * z[t] / (len(z) - 1)
    ht, hd = ref.backward(net, xn, rt, rule_for), ref.backward(net, xn, rd, rule_for)
    s = ht.sum() / ref.stab(hd.sum())
    return ht - s * hd


@pytest.mark.parametrize("head", ["sglrp", "clrp"])
def test_contrastive_equals_target_minus_scaled_dual_and_sums_to_zero(head):
    model = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(3, 3, activation="relu"), L.MaxPooling2D(2),
                              L.Flatten(), L.Dense(4, activation="relu"), L.Dense(3)])
    randomize(model, 8)
    x = np.random.default_rng(4).uniform(0, 1, (2, 8, 8, 2)).astype("float32")
    out = Explainer(model, head, low=0.0, high=1.0, cache=None)(x, [2, 0])
    for n, t in enumerate([2, 0]):
        expected = _separate_target_and_dual(model, x[n], t, head)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(out.relevance[n].reshape(-1) / scale, expected / scale, atol=5e-5)
        assert abs(out.relevance[n].sum()) < 1e-4 * np.abs(out.relevance[n]).sum()


@pytest.mark.parametrize("method", ["sglrp", "clrp"])
def test_dual_sums_give_the_total_relevance_of_any_head(method):
    """sum(B(R)) = <v, R>: what lets SGLRP/CLRP fold the dual map into one backward pass."""
    model = residual_net(with_bias=True)
    ex = Explainer(model, method, cache=None)
    ex(IMAGES, 0)
    low, high = bound_args(ex._bounds(IMAGES))
    _, state, v = ex.backend.forward(tf.constant(IMAGES), low, high)
    heads = np.random.default_rng(0).normal(size=(3 * 2, 5)).astype("float32")
    rel = ex.backend.backward(state, tf.constant(heads)).numpy().reshape(3, 2, -1).sum(-1)
    expected = (heads.reshape(3, 2, 5) * v.numpy()[None]).sum(-1)
    np.testing.assert_allclose(rel, expected, rtol=1e-4, atol=1e-6)


def test_sglrp_is_finite_and_nonzero_for_a_confident_prediction():
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Flatten(), L.Dense(3)])
    w = np.zeros((16, 3), "float32")
    w[:, 0] = 2.0
    w[:8, 1] = 0.5
    model.set_weights([w, np.zeros(3, "float32")])
    x = np.ones((1, 4, 4, 1), "float32")
    out = Explainer(model, "sglrp", low=0, high=1, cache=None)(x, 0)
    p = out.probabilities[0, 0]
    assert np.float32(p) == 1.0         # y_t rounds to 1 in float32 (logit gap 28)
    assert np.isfinite(out.relevance).all() and np.abs(out.relevance).max() > 0


def test_signed_softmax_gradient_head_for_sequential_variants():
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="relu"), L.Dense(3)])
    randomize(model, 10)
    x = np.random.default_rng(0).normal(size=(1, 6)).astype("float32")
    out = Explainer(model, "sglrp.sequential_a", cache=None)(x, 1)
    net = ref.keras_to_reference(model)
    z, _ = ref.forward(net, x[0].astype(np.float64))
    y = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    head = -y[1] * y
    head[1] = y[1] * (1 - y[1])
    flat = lambda x_, W, b, R: ref.rule_flat(x_, W, b, R, W != 0)  # noqa: E731
    eps = lambda x_, W, b, R: ref.rule_epsilon(x_, W, b, R, 0.1)  # noqa: E731
    expected = ref.backward(net, x[0].astype(np.float64), head, lambda i, s: flat if i == 0 else eps)
    np.testing.assert_allclose(out.relevance[0], expected, rtol=1e-3, atol=1e-7)


# ---- targets, caching, retracing ------------------------------------------------------------------

def test_several_targets_per_image_match_single_calls():
    model = residual_net(with_bias=True)
    ex = Explainer(model, "sglrp", cache=None)
    both = ex(IMAGES, [[1, 3], [0, 4]])
    assert both.relevance.shape == (2, 2) + IMAGES.shape[1:]
    np.testing.assert_array_equal(both.targets, [[1, 3], [0, 4]])
    for k in range(2):
        single = ex(IMAGES, both.targets[:, k])
        np.testing.assert_allclose(both.relevance[:, k], single.relevance, rtol=1e-5, atol=1e-7)


def test_top1_and_top_k_targets():
    model = residual_net(with_bias=True)
    ex = Explainer(model, "lrp.epsilon", cache=None)
    probs = model.predict(IMAGES, verbose=0)
    out = ex(IMAGES)
    np.testing.assert_array_equal(out.targets, probs.argmax(-1))
    top = ex(IMAGES, top_k=3)
    np.testing.assert_array_equal(top.targets, np.argsort(-probs, axis=-1)[:, :3])


def test_fifty_targets_cause_no_retrace_and_memory_stays_flat():
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, activation="relu"), L.Flatten(),
                              L.Dense(60)])
    ex = Explainer(model, "sglrp", cache=None)
    x = np.random.default_rng(0).uniform(0, 1, (1, 8, 8, 3)).astype("float32")
    ex(x, 0)
    ex(x, 1)
    assert ex.wait_compiled()
    traces = ex.trace_count            # the forward (with the dual sums) and the backward: traced once each
    assert traces == 2
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for t in range(2, 52):
        ex(x, t)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert ex.trace_count == traces
    assert ex.backend.backward_pass.function.experimental_get_tracing_count() == 1
    assert after - before < 512 * 1024, f"memory grew by {after - before} bytes over 50 targets"


def test_results_are_cached_and_weight_changes_are_never_stale():
    model = residual_net(with_bias=True)
    cache = ResultCache()
    ex = Explainer(model, "lrp.epsilon", cache=cache)
    first = ex(IMAGES, [1, 2])
    again = ex(IMAGES, [1, 2])
    assert not first.cached and again.cached
    np.testing.assert_array_equal(first.relevance, again.relevance)
    model.set_weights([w * 1.5 if w.ndim > 1 else w for w in model.get_weights()])
    changed = ex(IMAGES, [1, 2])
    assert not changed.cached
    fresh = Explainer(model, "lrp.epsilon", cache=None)(IMAGES, [1, 2])
    np.testing.assert_allclose(changed.relevance, fresh.relevance, rtol=1e-6)
    assert not np.allclose(changed.relevance, first.relevance)


def test_training_step_invalidates_results():
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="relu"), L.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    before = explain(model, x, "lrp.z_plus", targets=0)
    model.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    after = explain(model, x, "lrp.z_plus", targets=0)
    assert not after.cached
    expected = Explainer(model, "lrp.z_plus", cache=None)(x, 0).relevance
    np.testing.assert_allclose(after.relevance, expected, rtol=1e-6)
    assert not np.allclose(before.relevance, after.relevance)


def test_result_cache_is_bounded_in_bytes():
    cache = ResultCache(max_bytes=10_000)
    for i in range(10):
        cache.put(i, (np.zeros(1000, np.float32),))     # 4000 bytes each
    assert cache.nbytes <= 10_000 and len(cache) == 2
    assert cache.get(9) is not None and cache.get(0) is None


def test_the_state_cache_counts_each_state_at_its_size():
    """The bytes a state is counted at (summed once per images' shape) are its tensors' bytes, per batch size."""
    from sglrp_widgets.caching import STATES
    ex = Explainer(residual_net(with_bias=True), "sglrp", cache=None)
    STATES.clear()
    for batch in (1, 2, 1, 2):
        ex(IMAGES[:batch] + np.float32(len(STATES)), 1)
    assert len(STATES) == 4
    for (_, state, _), size in STATES._items.values():
        assert size == sum(t.numpy().nbytes for t in state)
    assert len({size for _, size in STATES._items.values()}) == 2
    STATES.clear()


def test_explain_shares_compiled_explainers():
    model = keras.Sequential([keras.Input((6,)), L.Dense(3)])
    x = np.ones((1, 6), "float32")
    from sglrp_widgets.engine import get_explainer
    a = get_explainer(model, "lrp.epsilon", epsilon=0.1)
    explain(model, x, "lrp.epsilon", targets=0, epsilon=0.1)
    assert get_explainer(model, "lrp.epsilon", epsilon=0.1) is a
    assert get_explainer(model, "lrp.epsilon", epsilon=0.2) is not a


def test_bounds_default_from_preprocess_and_explicit_values_win():
    model = keras.Sequential([keras.Input((4, 4, 3)), L.Conv2D(2, 2, activation="relu"), L.Flatten(), L.Dense(3)])
    x = np.random.default_rng(0).uniform(-100, 100, (1, 4, 4, 3)).astype("float32")
    vgg_pre = keras.applications.vgg16.preprocess_input
    ex = Explainer(model, "sglrp", preprocess=vgg_pre, cache=None)
    low, high = ex._bounds(x)
    np.testing.assert_allclose(low, [-103.939, -116.779, -123.68], atol=1e-3)
    np.testing.assert_allclose(high, [151.061, 138.221, 131.32], atol=1e-3)
    a = ex(x, 1).relevance
    b = Explainer(model, "sglrp", low=[-103.939, -116.779, -123.68], high=[151.061, 138.221, 131.32],
                  cache=None)(x, 1).relevance
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    ex2 = Explainer(model, "sglrp", preprocess=vgg_pre, low=-5.0, cache=None)
    assert np.all(ex2._bounds(x)[0] == -5.0)
    ex3 = Explainer(model, "sglrp", cache=None)
    assert ex3._bounds(x)[0] == pytest.approx(x.min()) and ex3._bounds(x)[1] == pytest.approx(x.max())


def test_custom_rules_override_the_composite():
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="relu", name="hidden"), L.Dense(3, name="top")])
    randomize(model, 11)
    x = np.random.default_rng(0).normal(size=(1, 6)).astype("float32")
    mixed = Explainer(model, "lrp.epsilon", rules={"top": "z_plus"}, cache=None)
    assert mixed.rules["top"].startswith("z_plus") and mixed.rules["hidden"].startswith("epsilon")
    out = mixed(x, 2).relevance[0]
    net = ref.keras_to_reference(model)
    z, _ = ref.forward(net, x[0].astype(np.float64))
    expected = ref.backward(net, x[0].astype(np.float64), np.eye(3)[2] * z[2],
                            lambda i, s: ref.rule_z_plus if i == 1 else
                            (lambda x_, W, b, R: ref.rule_epsilon(x_, W, b, R, 1e-7)))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-7)
    by_class = Explainer(model, "lrp.epsilon", rules={L.Dense: ("alpha_beta", {"alpha": 2, "beta": 1})}, cache=None)
    assert all(r.startswith("alpha_beta") for r in by_class.rules.values())


# ---- errors ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    return keras.Sequential([keras.Input((4, 4, 3)), L.Conv2D(2, 2, activation="relu"), L.Flatten(), L.Dense(3)])


def test_error_unknown_method_suggests(small):
    with pytest.raises(ExplainError, match="Did you mean 'sglrp'"):
        Explainer(small, "sglpr")


def test_error_unknown_parameter_lists_valid(small):
    with pytest.raises(ExplainError, match="Valid parameters: epsilon, relu. Did you mean 'epsilon'"):
        Explainer(small, "lrp.epsilon", epsilom=0.1)


def test_error_bad_parameter_value(small):
    with pytest.raises(ExplainError, match="epsilon.*>= 0|epsilon.*must be in"):
        Explainer(small, "lrp.epsilon", epsilon=-1)
    with pytest.raises(ExplainError, match="low must be smaller than high"):
        Explainer(small, "sglrp", low=1, high=0)


@pytest.mark.parametrize("images,match", [
    (np.zeros((4, 4, 3), "float32"), r"batch of images.*images\[None\]"),
    (np.zeros((1, 5, 4, 3), "float32"), r"expects \(N, 4, 4, 3\)"),
    (np.zeros((1, 4, 4, 3), "uint8"), "floating point"),
    (np.zeros((0, 4, 4, 3), "float32"), "empty"),
])
def test_error_bad_images(small, images, match):
    with pytest.raises(ExplainError, match=match):
        Explainer(small, "lrp.epsilon")(images, 0)


def test_error_non_finite_images_counts_them(small):
    x = np.zeros((2, 4, 4, 3), "float32")
    x[0, 0, 0, 0] = np.nan
    x[1, 1, 1, 1] = np.inf
    x[1, 1, 1, 2] = np.nan
    with pytest.raises(ExplainError, match=r"3 non-finite values \(2 NaN, 1 Inf\)"):
        Explainer(small, "sglrp")(x, 0)


@pytest.mark.parametrize("targets,match", [
    (3, r"target 3 is out of range: the model has 3 classes"),
    ([0, -1], "out of range"),
    ([0, 1, 2], "3 entries for 2 images"),
    ([0.5, 1], "integers"),
    ([[0, 1], [2]], "same K|integers"),
])
def test_error_bad_targets(small, targets, match):
    with pytest.raises(ExplainError, match=match):
        Explainer(small, "lrp.epsilon")(np.zeros((2, 4, 4, 3), "float32"), targets)


def test_error_multi_output_model_says_how_to_choose():
    inp = keras.Input((6,))
    a = L.Dense(3, name="head_a")(inp)
    b = L.Dense(2, name="head_b")(inp)
    model = keras.Model(inp, [a, b])
    x = np.ones((1, 6), "float32")
    with pytest.raises(ExplainError, match="2 outputs.*output=<index or name>"):
        Explainer(model, "lrp.epsilon")(x, 0)
    out = Explainer(model, "lrp.epsilon", output="head_b", cache=None)(x, 1)
    assert out.logits.shape == (1, 2)


class RawTFLayer(L.Layer):
    """A user layer written with raw TensorFlow ops: Keras cannot trace it symbolically, so it stays opaque."""

    def call(self, x):
        return tf.clip_by_value(x, -1.0, 1.0)


def test_error_lists_every_blocking_layer_and_gradient_methods_still_work():
    inp = keras.Input((6,))
    x = RawTFLayer(name="clip_a")(L.Dense(4)(inp))
    x = RawTFLayer(name="clip_b")(L.Dense(4)(x))
    x = L.Lambda(lambda t: tf.nn.relu(t), name="raw_lambda")(x)
    model = keras.Model(inp, L.Dense(3)(x))
    ex = Explainer(model, "sglrp")
    for _ in range(2):     # the same clear error every time
        with pytest.raises(UnsupportedLayerError) as info:
            ex(np.ones((1, 6), "float32"), 0)
        msg = str(info.value)
        assert "3 layer(s)" in msg and "'clip_a' (RawTFLayer)" in msg and "'clip_b' (RawTFLayer)" in msg
        assert "'raw_lambda' (Lambda)" in msg and "RawTFLayer x2" in msg and "Lambda x1" in msg
        assert "register_layer" in msg and "gradient, input_x_gradient" in msg
    g = Explainer(model, "gradient", cache=None)(np.ones((1, 6), "float32"), 0)
    assert np.abs(g.relevance).max() > 0


def test_error_unbuilt_model():
    model = keras.Sequential([L.Dense(3)])
    with pytest.raises(ExplainError, match="not built"):
        Explainer(model, "lrp.epsilon")(np.ones((1, 6), "float32"), 0)


def test_failed_call_leaves_the_explainer_working(small):
    ex = Explainer(small, "sglrp", cache=None)
    with pytest.raises(ExplainError):
        ex(np.zeros((1, 4, 4, 3), "float32"), 7)
    out = ex(np.ones((1, 4, 4, 3), "float32"), 1)
    assert np.isfinite(out.relevance).all()


def test_models_sharing_weights_but_not_structure_do_not_share_results():
    hidden, top = L.Dense(4, activation="relu"), L.Dense(3)
    inp = keras.Input((6,))
    plain = keras.Model(inp, top(hidden(inp)))
    inp2 = keras.Input((6,))
    clipped = keras.Model(inp2, L.ReLU()(top(hidden(inp2))))       # same weights, different logits
    randomize(plain, 14)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    a = explain(plain, x, "gradient", targets=0)
    b = explain(clipped, x, "gradient", targets=0)
    assert not b.cached
    np.testing.assert_array_equal(b.logits, np.maximum(a.logits, 0))


def test_concatenate_branches_route_relevance_and_conserve():
    inp = keras.Input((8, 8, 2))
    a = L.Conv2D(3, 3, padding="same", activation="relu", use_bias=False)(inp)
    b = L.Conv2D(2, 1, activation="relu", use_bias=False)(inp)
    x = L.Concatenate()([a, b])
    x = L.Conv2D(4, 3, strides=2, activation="relu", use_bias=False)(x)
    out = L.Dense(3, use_bias=False)(L.Flatten()(x))
    model = randomize(keras.Model(inp, out), 15)
    x0 = np.random.default_rng(2).uniform(0, 1, (2, 8, 8, 2)).astype("float32")
    r = Explainer(model, "lrp.z", cache=None)(x0, [0, 1])
    np.testing.assert_allclose(r.relevance.sum(axis=(1, 2, 3)), r.logits[[0, 1], [0, 1]], rtol=1e-4)
    inp2 = keras.Input((8, 8, 2))
    same = keras.Model(inp2, model.layers[-1](model.layers[-2](model.layers[-3](L.Concatenate()(
        [model.layers[1](inp2), model.layers[2](inp2)])))))     # the same net, rebuilt: identical maps
    np.testing.assert_array_equal(Explainer(same, "lrp.z", cache=None)(x0, [0, 1]).relevance, r.relevance)


def test_explain_holds_models_weakly():
    import weakref
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="relu"), L.Dense(3)])
    ref_ = weakref.ref(model)
    explain(model, np.ones((1, 6), "float32"), "sglrp", targets=0)
    explain(model, np.ones((1, 6), "float32"), "gradient", targets=0)
    del model
    gc.collect()
    assert ref_() is None


def test_a_class_switch_reuses_the_images_forward_state():
    model = residual_net(with_bias=True)
    ex = Explainer(model, "sglrp", cache=None)
    first = ex(IMAGES, [1, 2])
    calls = []
    forward = ex.backend.forward
    ex.backend.forward = lambda *a: calls.append(1) or forward(*a)
    switched = ex(IMAGES, [3, 0])                      # same images, other classes: backward pass only
    assert calls == []
    fresh = Explainer(model, "sglrp", cache=None)(IMAGES, [3, 0])
    np.testing.assert_allclose(switched.relevance, fresh.relevance, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(switched.logits, first.logits)
    ex(IMAGES + 0.01, [3, 0])                          # a new image needs its forward pass
    assert calls == [1]


def test_without_keep_states_no_state_is_held_and_each_call_runs_its_forward_pass(monkeypatch):
    from sglrp_widgets import engine
    from sglrp_widgets.caching import STATES
    model = residual_net(with_bias=True)
    kept = Explainer(model, "sglrp", cache=None)(IMAGES, [1, 2])
    STATES.clear()
    ex = Explainer(model, "sglrp", cache=None, keep_states=False)
    calls = []
    forward = ex.backend.forward
    ex.backend.forward = lambda *a: calls.append(1) or forward(*a)
    hashed = []
    monkeypatch.setattr(engine, "digest", lambda img: hashed.append(1))      # no key needed: no image hashed
    first = ex(IMAGES, [1, 2])
    ex(IMAGES, [3, 0])
    assert calls == [1, 1] and len(STATES) == 0 and hashed == []
    np.testing.assert_array_equal(first.relevance, kept.relevance)
    with pytest.raises(ExplainError, match="keep_states must be True or False, got 'no'"):
        Explainer(model, "sglrp", keep_states="no")


def test_method_support_names_what_cannot_work_without_tracing():
    import keras
    from sglrp_widgets.engine import method_support
    dense_only = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    support = method_support(dense_only)
    from sglrp_widgets.methods import METHODS
    assert set(support) == set(METHODS)
    assert support["sglrp"] is None and support["gradient"] is None
    assert "convolutional layer" in support["grad_cam"]
    assert method_support(dense_only) == support          # cached per model


def test_derived_weights_written_in_slices_equal_the_whole(monkeypatch):
    """Large kernels are derived slice by slice (memory); the result must be the same weights."""
    from sglrp_widgets import lrp
    model = residual_net(with_bias=True)
    methods = ["lrp.alpha_2_beta_1", "lrp.flat", "lrp.w_square", "lrp.epsilon_gamma_box"]   # every weight key
    whole = [Explainer(model, m, cache=None)(IMAGES, [1, 2]).relevance for m in methods]
    monkeypatch.setattr(lrp, "SLICE_VALUES", 5)
    sliced_model = keras.models.clone_model(model)               # other weights first: derived once ...
    explainers = [Explainer(sliced_model, m, cache=None) for m in methods]
    for e in explainers:
        e(IMAGES, [1, 2])
    sliced_model.set_weights(model.get_weights())               # ... then rewritten in place, slice by slice
    for e, w in zip(explainers, whole):
        np.testing.assert_array_equal(e(IMAGES, [1, 2]).relevance, w)


def test_weights_fingerprint_sees_a_changed_or_moved_value():
    from sglrp_widgets.caching import FULL_FINGERPRINT_SIZE, weights_fingerprint
    rng = np.random.default_rng(0)
    small = tf.Variable(rng.normal(size=(3, 4)).astype("float32"))
    big = tf.Variable(rng.normal(size=(FULL_FINGERPRINT_SIZE + 7,)).astype("float32"))   # sampled
    counter = tf.Variable(3, dtype=tf.int64)
    fingerprint = lambda: weights_fingerprint([small, counter, big]).numpy()       # noqa: E731
    before = fingerprint()
    small[1, 2].assign(small[1, 2] + 1e-3)
    changed = fingerprint()
    assert not np.array_equal(changed, before)
    values = small.numpy()
    values[0, 0], values[2, 3] = values[2, 3], values[0, 0]
    small.assign(values)                                    # the same values, two of them swapped
    assert not np.array_equal(fingerprint(), changed)
    moved = fingerprint()
    counter.assign(4)
    assert not np.array_equal(fingerprint(), moved)
    moved = fingerprint()
    big[:8].assign(big[:8] * 2)
    assert not np.array_equal(fingerprint(), moved)


def test_derived_weights_follow_weights_changed_after_a_failed_first_call():
    """The modified weights are derived when the explainer is built; a first call that fails on its input
    must not let a later weight change go unseen."""
    model = residual_net(with_bias=True)
    ex = Explainer(model, "lrp.alpha_2_beta_1", cache=None)
    with pytest.raises(ExplainError):
        ex(np.zeros((1, 3), "float32"))                     # wrong shape: fails after building
    model.set_weights([w * 1.5 if w.ndim > 1 else w for w in model.get_weights()])
    fresh = explainer_on_a_copy(model, "lrp.alpha_2_beta_1")
    np.testing.assert_allclose(ex(IMAGES, [1, 2]).relevance, fresh(IMAGES, [1, 2]).relevance, rtol=1e-5,
                               atol=1e-7)


def explainer_on_a_copy(model, method, **kwargs):
    """``method`` on an independent copy of ``model`` (same weights): nothing shared through the engine's
    per-model store of derived weights and traced passes."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return Explainer(copy, method, cache=None, **kwargs)


def wide_conv_net():
    """A conv on 256 channels (it runs flipped) with a BatchNorm folded into it, then a depthwise conv and a conv
    that transpose flipped."""
    inp = keras.Input((6, 6, 256))
    x = L.Conv2D(8, 3, padding="same", name="wide")(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu", name="depthwise")(x)
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="narrow")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    model = keras.Model(inp, L.Dense(4)(x))
    randomize(model, 5)
    depthwise = model.get_layer("depthwise")        # keeps the logits within a few units, so that SGLRP's
    depthwise.kernel.assign(depthwise.kernel * 0.3)     # softmax gradient does not vanish
    return model


def test_convolutions_that_run_or_transpose_flipped_are_chosen_by_their_shape():
    graph = canonize(read_model(wide_conv_net()), fold=True)
    ops = {n.name: n.op for n in graph.nodes if n.kind == "linear"}
    assert ops["wide"].runs_flipped and not ops["narrow"].runs_flipped and not ops["depthwise"].runs_flipped
    assert ops["wide"].transposes_flipped and ops["narrow"].transposes_flipped and ops["depthwise"].transposes_flipped
    assert not any(op.runs_flipped or op.transposes_flipped for k, op in ops.items()
                   if k not in ("wide", "narrow", "depthwise"))
    for conv, transposes in [(L.Conv2D(4, 3, strides=2, padding="same"), False),
                             (L.Conv2D(4, 3, padding="valid"), False),
                             (L.Conv2D(4, 1), True), (L.Conv2D(4, 1, padding="same"), True),
                             (L.Conv2D(4, 2, padding="same"), False),
                             (L.Conv2D(4, 3, padding="same", dilation_rate=2), False),
                             (L.Conv2D(4, 3, padding="same", groups=4), False),
                             (L.DepthwiseConv2D(3, padding="same"), True), (L.DepthwiseConv2D(1), True),
                             (L.DepthwiseConv2D(3, padding="same", depth_multiplier=2), False),
                             (L.DepthwiseConv2D(3, strides=2, padding="same"), False),
                             (L.DepthwiseConv2D(3, padding="valid"), False),
                             (L.DepthwiseConv2D(2, padding="same"), False)]:
        model = keras.Sequential([keras.Input((8, 8, 256)), conv, L.Flatten(), L.Dense(2)])
        ops = [n.op for n in canonize(read_model(model), fold=True).nodes if n.kind == "linear"]
        assert not ops[0].runs_flipped, conv.get_config()
        assert ops[0].transposes_flipped == transposes, conv.get_config()


def test_a_flipped_convolution_is_the_convolution():
    from sglrp_widgets.graph import flip_kernel
    graph = canonize(read_model(wide_conv_net()), fold=True)
    op = next(n.op for n in graph.nodes if n.name == "wide")
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 6, 6, 256)).astype("float32"))
    kernel = tf.constant(np.random.default_rng(2).normal(size=(3, 3, 256, 8)).astype("float32"))
    np.testing.assert_allclose(op.apply(x, kernel, flipped=flip_kernel(kernel)).numpy(), op.apply(x, kernel).numpy(),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["narrow", "depthwise"])
def test_a_flipped_kernel_transposes_as_a_convolution(name):
    """The transposed map from a layer's flipped kernel (a plain or a depthwise convolution) is the layer's
    input gradient."""
    graph = canonize(read_model(wide_conv_net()), fold=True)
    op = next(n.op for n in graph.nodes if n.name == name)
    rng = np.random.default_rng(4)
    kernel = tf.constant(rng.normal(size=op.kernel_var.shape).astype("float32"))
    x = tf.constant(rng.normal(size=(2, 6, 6, 8)).astype("float32"))
    s = tf.constant(rng.normal(size=op.apply(x, kernel).shape).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = op.apply(x, kernel)
    np.testing.assert_allclose(op.transpose(s, None, tf.shape(x), flipped=op.flip(kernel)).numpy(),
                               tape.gradient(out, x, output_gradients=s).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("switch", ["runs_flipped", "transposes_flipped"])
@pytest.mark.parametrize("method", ["sglrp", "lrp.epsilon", "lrp.alpha_2_beta_1", "lrp.w_square", "deep_taylor"])
def test_maps_do_not_depend_on_running_convolutions_flipped(method, switch, monkeypatch):
    """Switching ``transposes_flipped`` off switches both off (a layer runs flipped only if it transposes so)."""
    from sglrp_widgets.graph import LinearOp
    model = wide_conv_net()
    x = np.random.default_rng(3).uniform(0, 1, (2, 6, 6, 256)).astype("float32")
    # compiled on the first call: a pass compiled in the background after the patch would mix both forms
    flipped = Explainer(model, method, cache=None, compile="first_call")(x, [1, 3])
    monkeypatch.setattr(LinearOp, switch, property(lambda self: False))
    expected = explainer_on_a_copy(model, method, compile="first_call")(x, [1, 3])
    np.testing.assert_allclose(flipped.logits, expected.logits, rtol=1e-5, atol=1e-5)
    scale = np.abs(expected.relevance).max()
    np.testing.assert_allclose(flipped.relevance, expected.relevance, rtol=0, atol=1e-5 * scale)


def test_a_layer_keeps_its_kernels_only_in_the_forms_it_reads():
    """Running flipped, a layer keeps only flipped kernels; transposing flipped, each kernel in both forms and
    a stack only flipped; any other layer the plain forms."""
    from sglrp_widgets.rules import FLIPPED, STACKED
    ex = Explainer(wide_conv_net(), "sglrp", cache=None)
    slots = {ex.backend.graph.nodes[i].name: set(s) for i, s in ex.backend.derived.slots.items()}
    assert {k for k in slots["wide"] if not k.startswith("b")} == {         # z_box: w, w+, w- and their stack
        FLIPPED + k for k in ("model", "w", "w_pos", "w_neg", STACKED + "w|w_pos|w_neg")}
    assert {k for k in slots["narrow"] if not k.startswith("b")} == {"w_pos", FLIPPED + "w_pos"}
    assert {k for k in slots["depthwise"] if not k.startswith("b")} == {"w_pos", FLIPPED + "w_pos"}
    ex = Explainer(signed_input_net(), "lrp.z_plus", cache=None)
    slots = {ex.backend.graph.nodes[i].name: set(s) for i, s in ex.backend.derived.slots.items()}
    assert slots["first"] == {"w_pos", "w_neg", FLIPPED + "w_pos", FLIPPED + "w_neg", FLIPPED + STACKED + "w_pos|w_neg"}
    assert slots["second"] == {"w_pos", "w_neg", STACKED + "w_pos|w_neg"}           # stride 2: plain forms


def test_replay_check_runs_beside_the_first_call_and_still_refuses_another_function(monkeypatch):
    from sglrp_widgets import engine
    model = residual_net(with_bias=True)
    monkeypatch.setattr(engine, "model_outputs", lambda m, x: [np.asarray(m(x)) * 0.5 + 0.25])
    with pytest.raises(ExplainError, match="does not compute the model's function"):
        Explainer(model, "sglrp", cache=None)(IMAGES, 1)


def test_background_returns_the_value_or_raises_the_error():
    from sglrp_widgets.background import Background
    assert Background(lambda: 42).result() == 42
    with pytest.raises(ZeroDivisionError):
        Background(lambda: 1 / 0).result()


def test_weights_fingerprint_does_not_depend_on_how_it_is_run():
    """Integer sums: the same bits eagerly and compiled (and on any thread count), so a model never looks
    retrained because a reduction ran in another order."""
    from sglrp_widgets.caching import FULL_FINGERPRINT_SIZE, weights_fingerprint
    rng = np.random.default_rng(1)
    shapes = [(3, 3, 8, 16), (5,), (FULL_FINGERPRINT_SIZE + 11,)]
    variables = [tf.Variable(rng.normal(size=s).astype("float32")) for s in shapes]
    variables += [tf.Variable(7, dtype=tf.int64), tf.Variable(rng.normal(size=(4, 4)))]      # int64, float64
    compiled = tf.function(lambda: weights_fingerprint(variables), autograph=False)
    np.testing.assert_array_equal(weights_fingerprint(variables).numpy(), compiled().numpy())


def test_quiet_retracing_notices_drop_only_that_notice_and_only_while_inside():
    """The filter is shared by every thread, so the compile worker, still tracing an earlier test's pass, would
    drop the test's last notice: the test holds the worker's queue (it starts no pass) until its trace ends."""
    import time
    from sglrp_widgets import compiling
    from sglrp_widgets.compiling import quiet_retracing_notices
    logger, seen = tf.get_logger(), []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    level = logger.level
    with compiling._WORKER._cv:
        deadline = time.monotonic() + 120
        while quiet_retracing_notices._depth and time.monotonic() < deadline:
            time.sleep(0.01)
        assert quiet_retracing_notices._depth == 0
        try:
            outer, inner = quiet_retracing_notices(), quiet_retracing_notices()
            outer.__enter__()
            inner.__enter__()                   # another thread's explainer enters ...
            outer.__exit__(None, None, None)    # ... and the first leaves before it
            logger.warning("5 out of the last 5 calls to <f> triggered tf.function retracing.")
            logger.warning("a warning of the user's own")
            assert logger.level == level
            inner.__exit__(None, None, None)
            logger.warning("6 out of the last 6 calls to <g> triggered tf.function retracing.")
        finally:
            logger.removeHandler(handler)
    assert seen == ["a warning of the user's own", "6 out of the last 6 calls to <g> triggered tf.function retracing."]


def signed_input_net():
    """Convolutions and a dense layer on signed inputs (tanh), so z+ and alpha-beta rules have two kernels."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", activation="tanh", name="first")(inp)
    x = L.Conv2D(5, 3, strides=2, padding="same", activation="tanh", name="second")(x)
    x = L.Flatten()(x)
    x = L.Dense(7, activation="tanh", name="hidden")(x)
    model = keras.Model(inp, L.Dense(4, name="logits")(x))
    randomize(model, 9)
    return model


@pytest.mark.parametrize("method", ["sglrp", "deep_taylor.bounded", "lrp.z_plus", "lrp.alpha_2_beta_1"])
def test_maps_do_not_depend_on_stacking_a_parts_kernels(method, monkeypatch):
    from sglrp_widgets.graph import LinearOp
    from sglrp_widgets.rules import STACKED
    model = signed_input_net()
    x = np.random.default_rng(5).uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    stacking = Explainer(model, method, cache=None)
    stacked = stacking(x, [1, 3])
    assert any(STACKED in k for slots in stacking.backend.derived.slots.values() for k in slots)
    monkeypatch.setattr(LinearOp, "stack_axis", property(lambda self: None))
    plain = explainer_on_a_copy(model, method)
    expected = plain(x, [1, 3])
    assert not any(STACKED in k for slots in plain.backend.derived.slots.values() for k in slots)
    scale = np.abs(expected.relevance).max()
    np.testing.assert_allclose(stacked.relevance, expected.relevance, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("method", ["sglrp", "deep_taylor.bounded", "lrp.z_plus", "lrp.alpha_2_beta_1"])
def test_signed_inputs_shortcuts_keep_every_bit(method, monkeypatch):
    """On signed inputs, z+'s ``x+ g+ + x- g-`` is taken as ``x * (g+ where x > 0, else g-)`` and its denominator
    ``w+ x+ + w- x-`` as non-negative (no sign select): the same bits as term by term with the select."""
    from sglrp_widgets import rules
    model = signed_input_net()
    x = np.random.default_rng(5).uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    sign_pair, nonneg_sum, taken = rules._sign_pair, rules._nonneg_sum, {"pairs": 0, "signed sums": 0}

    def counted_pair(terms):
        pair = sign_pair(terms)
        taken["pairs"] += pair is not None
        return pair

    def counted_sum(leaf, terms, nonneg):
        known = nonneg_sum(leaf, terms, nonneg)
        taken["signed sums"] += known and any(t.inputs == "x_neg" for t in terms)
        return known

    monkeypatch.setattr(rules, "_sign_pair", counted_pair)
    monkeypatch.setattr(rules, "_nonneg_sum", counted_sum)
    tf.config.run_functions_eagerly(True)
    try:
        fast = Explainer(model, method, cache=None)(x, [1, 3]).relevance
        assert taken["pairs"] and taken["signed sums"]
        monkeypatch.setattr(rules, "_sign_pair", lambda terms: None)
        monkeypatch.setattr(rules, "_nonneg_sum", lambda leaf, terms, nonneg: nonneg_sum(leaf, terms, nonneg) and
                            not any(t.inputs == "x_neg" for t in terms))
        slow = explainer_on_a_copy(model, method)(x, [1, 3]).relevance
    finally:
        tf.config.run_functions_eagerly(False)
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("net, method, low", [(wide_conv_net, "sglrp", 0.0),            # flipped kernels
                                             (signed_input_net, "lrp.z_plus", -1.0)])   # stacked kernels
def test_derived_kernels_follow_new_weights(net, method, low):
    model = net()
    x = np.random.default_rng(4).uniform(low, 1, (1,) + model.input_shape[1:]).astype("float32")
    ex = Explainer(model, method, cache=None)
    before = ex(x, 2).relevance
    model.set_weights([w * 1.5 - 0.01 for w in model.get_weights()])
    after = ex(x + 0.5, 2).relevance
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, explainer_on_a_copy(model, method)(x + 0.5, 2).relevance, rtol=1e-5,
                               atol=1e-6 * np.abs(after).max())


def test_flat_caller_gives_the_functions_values_and_falls_back_to_the_public_call():
    from sglrp_widgets.compiling import flat_caller
    spec = tf.TensorSpec([None])
    fn = tf.function(lambda xs, y: xs[0] * y + xs[1], input_signature=[[spec, spec], spec], autograph=False)
    concrete = fn.get_concrete_function()
    args = ([tf.constant([1.0, 2.0]), tf.constant([3.0, 4.0])], tf.constant([5.0, 6.0]))
    np.testing.assert_array_equal(flat_caller(concrete)(*args).numpy(), [8.0, 16.0])

    class PublicOnly:                   # a TensorFlow whose concrete functions have no ``_call_flat``
        def __call__(self, *a):
            return concrete(*a)

    np.testing.assert_array_equal(flat_caller(PublicOnly())(*args).numpy(), [8.0, 16.0])


def test_run_functions_eagerly_runs_the_passes_as_python_with_the_same_maps():
    model = residual_net(with_bias=True)
    compiled = Explainer(model, "sglrp", cache=None)(IMAGES, [1, 2])
    tf.config.run_functions_eagerly(True)
    try:
        ex = Explainer(model, "sglrp", cache=None)
        eager = ex(IMAGES, [1, 2])
        ex(IMAGES, [0, 3])                                      # a class switch
        assert not ex.wait_compiled() and ex.trace_count == 0
    finally:
        tf.config.run_functions_eagerly(False)
    np.testing.assert_allclose(eager.relevance, compiled.relevance, rtol=1e-5,
                               atol=1e-6 * np.abs(compiled.relevance).max())


def test_near_ones_looks_only_where_the_input_is_non_zero_and_within_its_tolerance():
    from sglrp_widgets.rules import NEAR_ONES, near_ones
    x = tf.constant([[0.0, 2.0, -1.0]])
    for u, expected in [([7.0, 1.0, 1.0], True),                       # far from 1 only where x == 0
                        ([1.0, 7.0, 1.0], False), ([1.0, 1.0, 0.0], False),
                        ([1.0, 1.0 + NEAR_ONES / 2, 1.0 - NEAR_ONES / 2], True),
                        ([1.0, 1.0 + 4 * NEAR_ONES, 1.0], False)]:
        assert bool(near_ones(x, tf.constant([u]))) is expected, u


def relu_net(shifted):
    """ReLU convolutions and dense layers (z+ ignores their biases, so each passes the dual sums' ones on
    unchanged), with a BatchNorm after a ReLU if ``shifted`` (it cannot fold; its shift makes ``u`` deviate)."""
    m = keras.Sequential([keras.Input((10, 10, 3)), L.Conv2D(6, 3, activation="relu")]
                         + [L.BatchNormalization()] * shifted
                         + [L.Conv2D(5, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                            L.Dense(8, activation="relu"), L.Dense(4)])
    return randomize(m, 11)


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("method", ["sglrp", "clrp"])
def test_dual_sums_skip_the_transposed_maps_only_where_u_is_all_ones(method, shifted, monkeypatch):
    """Where ``u`` is all ones the dual sums run no map on ``in * u``; where a shift makes it deviate they do,
    and either way the maps are those computed without the shortcut. Only this thread's maps count: the compile
    worker may still be tracing an earlier test's pass."""
    import threading

    from sglrp_widgets import rules
    model = relu_net(shifted)
    x = np.random.default_rng(6).uniform(0, 1, (2, 10, 10, 3)).astype("float32")
    calls, here = [], threading.get_ident()
    counted = rules._transposed_map
    monkeypatch.setattr(rules, "_transposed_map",
                        lambda *a: (threading.get_ident() == here and calls.append(1)) or counted(*a))
    tf.config.run_functions_eagerly(True)
    try:
        shortcut = Explainer(model, method, cache=None)(x, [1, 3])
    finally:
        tf.config.run_functions_eagerly(False)
    assert (len(calls) > 0) == shifted
    monkeypatch.setattr(rules, "NEAR_ONES", -1.0)
    expected = explainer_on_a_copy(model, method, compile="first_call")(x, [1, 3])
    scale = np.abs(expected.relevance).max()
    assert scale > 0
    np.testing.assert_allclose(shortcut.relevance, expected.relevance, rtol=0, atol=1e-5 * scale)


def folding_net():
    """Values the state may fold into the scale of the node that made them (an inverse denominator, a sum's, an
    unfoldable BatchNorm's ratio), because every reader gives them relevance x times a map (conv -> ReLU -> conv,
    conv -> add, a ReLU output read by a conv and an add, an unfoldable BatchNorm -> dense), and values it may not
    (a ReLU output also read by a concatenation; a pool or a flatten between two layers)."""
    inp = keras.Input((10, 10, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inp)   # read by b and by the add
    b = L.Conv2D(4, 3, padding="same", activation="relu", name="b")(a)
    c = L.Conv2D(4, 3, padding="same", name="c")(b)
    s = L.ReLU(name="relu")(L.Add(name="add")([a, c]))                     # read by e and by the concatenation
    m = L.Concatenate(name="cat")([s, L.Conv2D(4, 1, activation="relu", name="e")(s)])
    d = L.Conv2D(6, 3, activation="relu", name="d")(L.MaxPooling2D(2, name="pool")(m))
    h = L.Dense(8, activation="relu", name="hidden")(L.Flatten(name="flat")(d))
    h = L.BatchNormalization(name="bn")(h)                                 # after a ReLU: an affine map of its own
    return randomize(keras.Model(inp, L.Dense(5, name="logits")(h)), 14, scale=0.25)


FOLDED = {("b", 0, "a"), ("add", 0, "a"), ("c", 0, "b"), ("add", 1, "c")}


@pytest.mark.parametrize("method, expected", [
    ("deep_taylor.bounded", FOLDED),        # z+ on the BatchNorm's signed output: x+ and x- apart, not x times a map
    ("lrp.epsilon", FOLDED | {("logits", 0, "bn")}),
    ("lrp.alpha_2_beta_1", set()),          # two parts: neither x times one map nor one inverse
    ("lrp.w_square", set()),                # input independent: batch-1 inverses
])
def test_the_state_folds_a_value_only_where_every_reader_scales_by_it(method, expected):
    ex = Explainer(folding_net(), method, cache=None)
    nodes = ex.backend.graph.nodes
    assert {(nodes[i].name, j, nodes[p].name) for (i, j), (p, _) in ex.backend.input_folds.items()} == expected


@pytest.mark.parametrize("method", ["sglrp", "clrp", "lrp.epsilon", "deep_taylor.bounded", "lrp.z_plus"])
def test_folded_inputs_shrink_the_state_and_keep_the_maps(method, monkeypatch):
    """The folded state (``x / z_p`` in place of ``x`` and ``1 / z_p``) gives the maps of the unfolded one, for a
    new image and a class switch, and holds a's, b's and c's outputs fewer (and lrp.epsilon the BatchNorm's)."""
    from sglrp_widgets import lrp
    from sglrp_widgets.caching import STATES
    model = folding_net()
    x = np.random.default_rng(7).uniform(0, 1, (2, 10, 10, 3)).astype("float32")

    def run(ex):
        STATES.clear()
        new, switch = ex(x, [1, 3]), ex(x, [4, 0])
        ((_, state, _), _), = STATES._items.values()
        return new.relevance, switch.relevance, sum(int(np.prod(t.shape)) * t.dtype.size for t in state)

    folded = run(Explainer(model, method, cache=None, compile="first_call"))
    monkeypatch.setattr(lrp, "FOLD_INPUTS", False)
    plain = run(explainer_on_a_copy(model, method, compile="first_call"))
    bn = 8 if method == "lrp.epsilon" else 0                             # see FOLDED
    assert plain[2] - folded[2] == 2 * (3 * 100 * 4 + bn) * 4           # float32 values of two images
    for got, expected in zip(folded[:2], plain[:2]):
        scale = np.abs(expected).max()
        assert scale > 0
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * scale)

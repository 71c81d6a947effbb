"""Real architectures: the smallest model of every keras.applications family and a ViT built from keras.layers
(``architectures.py``). Every method gives a finite, non-zero map and the engine's logits are the model's;
LRP-0 equals input x gradient of the network in which every factor the rules hold constant is detached (an
autodiff check independent of the engine); SGLRP sums to about zero.

The every-method sweep runs eagerly (``tf.config.run_functions_eagerly``): one call per method and model is
dominated by tracing, which the compiled path's own tests (and the SGLRP test here) cover.
"""
import numpy as np
import pytest
import tensorflow as tf

import architectures as arch
from sglrp_widgets import Explainer
from sglrp_widgets.methods import METHODS

pytestmark = pytest.mark.slow

FAST = {"smoothgrad": {"n": 2}, "integrated_gradients": {"steps": 2}}
TARGETS = [1, 2]          # LRP-0 checks; the every-method sweep explains the top-1 class (Grad-CAM is ReLU d)


@pytest.fixture(scope="module")
def eager():
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


_MODELS: dict = {}


def model_of(name):
    if name not in _MODELS:
        _MODELS.clear()                         # keep one model alive at a time
        _MODELS[name] = arch.vit() if name == "ViT" else arch.application(name)
    return _MODELS[name]


@pytest.mark.parametrize("name", list(arch.FAMILIES) + ["ViT"])
def test_every_method_explains_every_family(name, eager):
    model = model_of(name)
    x = arch.images(model, 2)
    expected = model.predict(x, verbose=0)
    if model.layers[-1].activation.__name__ == "softmax" if hasattr(model.layers[-1], "activation") else False:
        expected = np.log(expected)
    problems = []
    for method in METHODS:
        out = Explainer(model, method, cache=None, **FAST.get(method, {}))(x, TARGETS)
        per_image = np.abs(out.relevance.reshape(2, -1)).max(axis=1)
        if not np.isfinite(out.relevance).all() or not (per_image > 0).all():
            problems.append(f"{method}: finite={np.isfinite(out.relevance).all()} max|map|={per_image}")
        z = out.logits - out.logits.max(-1, keepdims=True) if name == "ViT" else out.logits
        want = expected - expected.max(-1, keepdims=True) if name == "ViT" else expected
        if not np.allclose(z, want, rtol=1e-3, atol=1e-3 * np.abs(want).max()):
            problems.append(f"{method}: logits {z[0, :3]} != model's {want[0, :3]}")
    assert not problems, "\n".join(problems)


DETACHED = {
    "VGG16": lambda m: m,                       # ReLU networks: the detached network is the network
    "ResNet50": lambda m: m,
    "DenseNet121": lambda m: m,
    "MobileNetV3Small": arch.detached_clone,    # hard-swish, ReLU6 hard-sigmoid gates
    "EfficientNetB0": arch.detached_clone,      # swish, sigmoid squeeze-excitation gates
}


@pytest.mark.parametrize("name", list(DETACHED) + ["ViT"])
def test_lrp0_is_input_x_gradient_of_the_detached_network(name, eager):
    model = model_of(name)
    x = arch.images(model, 2)
    if name == "ViT":
        logits_fn = lambda t: arch.vit_detached_logits(model, t)       # noqa: E731
    else:
        detached = DETACHED[name](model)
        logits_fn = lambda t: detached(t)                               # noqa: E731
    expected, _ = arch.input_x_gradient(logits_fn, x, TARGETS)
    plain, _ = arch.input_x_gradient(lambda t: model(t), x, TARGETS)
    got = Explainer(model, "lrp.z", cache=None)(x, TARGETS).relevance
    scale = np.abs(expected).max()
    # LRP-0's stabiliser (1e-7) changes the rule only where a denominator nearly cancels (ResNet's residual
    # sums): a few per mille of the largest contribution; the detached network's gradient is far from the
    # plain one wherever a nonlinearity is held constant, so the check can fail.
    assert np.abs(got - expected).max() <= 2e-2 * scale
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.9999
    if DETACHED.get(name) is not (lambda m: m) and name not in ("VGG16", "ResNet50", "DenseNet121"):
        assert np.abs(plain - expected).max() > 0.1 * scale


@pytest.mark.parametrize("name", list(arch.FAMILIES) + ["ViT"])
def test_sglrp_compiled_sums_to_zero(name):
    model = model_of(name)
    x = arch.images(model, 2)
    out = Explainer(model, "sglrp", cache=None)(x, TARGETS)
    assert np.isfinite(out.relevance).all()
    y = out.probabilities[np.arange(2), TARGETS].astype(np.float64)
    head = y * (1 - y)                          # the target head; sums are conserved up to the dual's scaling
    np.testing.assert_array_less(np.abs(out.relevance.reshape(2, -1).sum(1)), 1e-4 * head + 1e-12)
    assert (np.abs(out.relevance.reshape(2, -1)).max(1) > 0).all()

"""Independent implementations agree: every LRP composite and SGLRP/CLRP against zennit, the gradient and CAM
methods against Captum (both PyTorch).

The same network is built twice, in Keras and in PyTorch, with the same weights (a BatchNorm to fold, a strided
convolution, a max pool, a depthwise convolution, a residual sum, an average pool, a flatten and two dense
layers). zennit explains the PyTorch copy with its own rules, set up as ``docs/methods.md`` says for each
composite; our engine explains the Keras one. Where the contract leaves out a bias that zennit's rule would count
(z+, w², γ), zennit is told to zero it (``zero_params="bias"``). SGLRP and CLRP are computed the naive way on the
zennit side: two attributions per image (the target head and the dual head) and the seeds' scaling, where our
engine runs one batched pass and the dual sums.

Where zennit does something the contract does not, the zennit side is set up to follow the contract, and the
comments say why: the average pooling's stabilizer, the contract's form of LRP-γ, and the BatchNorm's eps (zennit's
canonizer would leave every map scaled by 1 / sqrt(1 + eps)). With those, every map agreed within 3e-5 of its largest
value here (float32 against float32; the tests allow 1e-4). Captum's gradient, input × gradient, guided backprop,
deconvnet, Integrated Gradients (right Riemann sum, 32 steps), Grad-CAM and Guided Grad-CAM (bilinear upsampling)
agreed within 5e-7. (SmoothGrad draws its own noise and Grad-CAM++ is not in Captum.)

PyTorch, zennit and Captum are not dependencies of the project, so CI skips this file. To run it (zennit 0.5.1 and
Captum 0.9.0 here, which brought torch 2.14.1 and torchvision 0.29.1)::

    python -m venv --system-site-packages /tmp/zv && /tmp/zv/bin/pip install zennit captum
    /tmp/zv/bin/python -m pytest -q tests/test_pytorch_crosschecks.py
"""
import sys

import pytest

if "tensorflow" in sys.modules and "torch" not in sys.modules:
    pytest.skip("zennit imports torchvision, which crashes (segfault) once TensorFlow is loaded; run this file on "
                "its own", allow_module_level=True)
torch = pytest.importorskip("torch")
zennit = pytest.importorskip("zennit")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from zennit import rules as Z  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.core import Stabilizer  # noqa: E402
from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite  # noqa: E402
from zennit.layer import Sum  # noqa: E402
from zennit.rules import GammaMod  # noqa: E402
from zennit.types import Activation, AvgPool, BatchNorm  # noqa: E402

from sglrp_widgets import Explainer  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients"),
              pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")]

L = keras.layers
LOW, HIGH = -1.0, 1.0
CLASSES = 5
SIDE = 14


def keras_net():
    keras.utils.set_random_seed(7)
    inp = keras.Input((SIDE, SIDE, 3))
    x = L.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(epsilon=1e-3, name="bn1")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(8, 3, strides=2, activation="relu", name="c2")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="c3")(x)
    b = L.Conv2D(8, 1, name="c4")(a)
    x = L.ReLU()(L.Add()([a, b]))
    x = L.AveragePooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(10, activation="relu", name="d1")(x)
    model = keras.Model(inp, L.Dense(CLASSES, name="d2")(x))
    rng = np.random.default_rng(1)
    bn = model.get_layer("bn1")
    bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.2, 6), rng.normal(0, 0.3, 6), rng.uniform(0.5, 2, 6)])
    for name in ("c1", "c2", "dw", "c3", "c4", "d1", "d2"):       # biases that matter, of both signs
        layer = model.get_layer(name)
        layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype("float32"))
    return model


class Residual(torch.nn.Module):
    def __init__(self, c3, c4):
        super().__init__()
        self.c3, self.relu, self.c4, self.sum = c3, torch.nn.ReLU(), c4, Sum()

    def forward(self, x):
        a = self.relu(self.c3(x))
        return self.sum(torch.stack([a, self.c4(a)], dim=-1))


class ChannelsLast(torch.nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def torch_copy(model):
    def conv(name, padding, stride=1):
        kernel, bias = model.get_layer(name).get_weights()
        if name == "dw":                                    # depthwise: (h, w, c, 1) -> c groups of one channel
            kernel = kernel.transpose(0, 1, 3, 2)
            m = torch.nn.Conv2d(kernel.shape[3], kernel.shape[3], kernel.shape[0], padding=padding,
                                groups=kernel.shape[3])
        else:
            m = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[0], padding=padding, stride=stride)
        m.weight.data = torch.tensor(kernel.transpose(3, 2, 0, 1).copy())
        m.bias.data = torch.tensor(bias)
        return m

    def dense(name):
        kernel, bias = model.get_layer(name).get_weights()
        m = torch.nn.Linear(*kernel.shape)
        m.weight.data, m.bias.data = torch.tensor(kernel.T.copy()), torch.tensor(bias)
        return m

    # eps moved into the variance: zennit's canonizer leaves the merged BatchNorm computing x / sqrt(1 + eps),
    # which would scale every map by 1 / sqrt(1.001).
    gamma, beta, mean, var = model.get_layer("bn1").get_weights()
    bn = torch.nn.BatchNorm2d(6, eps=0.0)
    bn.weight.data, bn.bias.data = torch.tensor(gamma), torch.tensor(beta)
    bn.running_mean.data, bn.running_var.data = torch.tensor(mean), torch.tensor(var + 1e-3)
    net = torch.nn.Sequential(
        conv("c1", 1), bn, torch.nn.ReLU(), conv("c2", 0, stride=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        conv("dw", 1), torch.nn.ReLU(),
        Residual(conv("c3", 1), conv("c4", 0)), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        ChannelsLast(), torch.nn.Flatten(), dense("d1"), torch.nn.ReLU(), dense("d2"))
    return net.eval()


CONV, DENSE = torch.nn.Conv2d, torch.nn.Linear
BOX = Z.ZBox(low=torch.full((1, 3, SIDE, SIDE), LOW), high=torch.full((1, 3, SIDE, SIDE), HIGH), stabilizer=1e-7)


def zplus():
    return Z.ZPlus(stabilizer=1e-7, zero_params="bias")


def flat():
    return Z.Flat(stabilizer=1e-7)


def gamma():
    """The contract's LRP-γ, x (w + γ w+) over its sum, built from zennit's parts. zennit 0.5's own ``Gamma`` takes
    sides by the output's sign (x (w + γ w-) where z_k < 0, and for negative inputs), which the contract does not;
    the two agree wherever relevance reaches only positive outputs of non-negative inputs (a conv before a ReLU)."""
    stabilize = Stabilizer.ensure(1e-7)
    return Z.BasicHook(input_modifiers=[lambda x: x], param_modifiers=[GammaMod(0.25, min=0.0, zero_params="bias")],
                       output_modifiers=[lambda y: y], gradient_mapper=lambda g, outputs: g / stabilize(outputs[0]),
                       reducer=lambda inputs, gradients: inputs[0] * gradients[0])


#: composite -> (zennit rule of the first layer or None, of the other conv layers, of the dense layers)
ZENNIT = {
    "lrp.epsilon": (None, lambda: Z.Epsilon(1e-7), lambda: Z.Epsilon(1e-7)),
    "lrp.z": (None, lambda: Z.Epsilon(1e-7), lambda: Z.Epsilon(1e-7)),        # z: the stabilizer alone
    "lrp.z_plus": (None, zplus, zplus),
    "lrp.alpha_2_beta_1": (None, lambda: Z.AlphaBeta(2.0, 1.0, stabilizer=1e-7),
                           lambda: Z.AlphaBeta(2.0, 1.0, stabilizer=1e-7)),
    "lrp.alpha_1_beta_0": (None, lambda: Z.AlphaBeta(1.0, 0.0, stabilizer=1e-7),
                           lambda: Z.AlphaBeta(1.0, 0.0, stabilizer=1e-7)),
    "lrp.w_square": (None, lambda: Z.WSquare(stabilizer=1e-7, zero_params="bias"),
                     lambda: Z.WSquare(stabilizer=1e-7, zero_params="bias")),
    "lrp.flat": (None, flat, flat),
    "deep_taylor": (None, zplus, zplus),
    "deep_taylor.bounded": (lambda: BOX, zplus, zplus),
    "lrp.sequential_preset_a": (None, lambda: Z.AlphaBeta(1.0, 0.0, stabilizer=1e-7), lambda: Z.Epsilon(0.1)),
    "lrp.sequential_preset_b": (None, lambda: Z.AlphaBeta(2.0, 1.0, stabilizer=1e-7), lambda: Z.Epsilon(0.1)),
    "lrp.sequential_preset_a_flat": (flat, lambda: Z.AlphaBeta(1.0, 0.0, stabilizer=1e-7), lambda: Z.Epsilon(0.1)),
    "lrp.sequential_preset_b_flat": (flat, lambda: Z.AlphaBeta(2.0, 1.0, stabilizer=1e-7), lambda: Z.Epsilon(0.1)),
    "lrp.epsilon_plus_flat": (flat, zplus, lambda: Z.Epsilon(1e-6)),
    "lrp.epsilon_gamma_box": (lambda: BOX, gamma, lambda: Z.Epsilon(1e-6)),
}


def zennit_composite(name):
    first, conv, dense = ZENNIT[name]
    # The contract's average pooling is the epsilon rule of the pooling, which stabilizes the mean of a 2x2 window;
    # zennit's Norm stabilizes its sum, four times the mean.
    layer_map = [(Activation, Z.Pass()), (Sum, Z.Norm(1e-7)), (AvgPool, Z.Norm(4e-7)), (BatchNorm, Z.Pass()),
                 (CONV, conv()), (DENSE, dense())]
    canonizers = [SequentialMergeBatchNorm()]
    if first is None:
        return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=[(CONV, first())], canonizers=canonizers)


def zennit_relevance(net, name, x, head):
    """Relevance (N, H, W, C) of ``head(logits)`` (the relevance at the logits) under zennit's composite."""
    with Gradient(model=net, composite=zennit_composite(name)) as attributor:
        _, relevance = attributor(torch.tensor(x.transpose(0, 3, 1, 2).copy()), head)
    return relevance.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def nets():
    model = keras_net()
    x = np.random.default_rng(2).uniform(LOW, HIGH, (3, SIDE, SIDE, 3)).astype("float32")
    net = torch_copy(model)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.tensor(x.transpose(0, 3, 1, 2).copy())).numpy(), model(x),
                                   rtol=1e-4, atol=1e-5)
    return model, net, x


TARGETS = np.array([0, 3, 4])


def onehot(targets):
    return torch.nn.functional.one_hot(torch.tensor(targets), CLASSES).float()


def assert_close(ours, theirs):
    scale = np.abs(theirs).max()
    assert scale > 0
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("name", sorted(ZENNIT))
def test_every_composite_agrees_with_zennit(nets, name):
    model, net, x = nets
    bounds = {"low": LOW, "high": HIGH} if ZENNIT[name][0] is not None and ZENNIT[name][0] is not flat else {}
    ours = Explainer(model, name, cache=None, **bounds)(x, TARGETS).relevance
    theirs = zennit_relevance(net, name, x, lambda z: z * onehot(TARGETS))
    assert_close(ours, theirs)


def test_every_composite_of_the_engine_is_cross_checked():
    from sglrp_widgets.composites import COMPOSITES
    assert set(ZENNIT) == set(COMPOSITES)


def test_the_comparisons_can_fail(nets):
    """Maps of different rules or methods are far apart on this net: z+ against zennit's epsilon, and our gradient
    against Captum's deconvnet."""
    model, net, x = nets
    ours = Explainer(model, "lrp.z_plus", cache=None)(x, TARGETS).relevance
    theirs = zennit_relevance(net, "lrp.epsilon", x, lambda z: z * onehot(TARGETS))
    assert np.abs(ours - theirs).max() > 0.05 * np.abs(theirs).max()
    ours = Explainer(model, "gradient", cache=None)(x, TARGETS).relevance
    theirs = captum_methods()["deconvnet"](net, torch.tensor(x.transpose(0, 3, 1, 2).copy()), torch.tensor(TARGETS))
    theirs = theirs.detach().numpy().transpose(0, 2, 3, 1)
    assert np.abs(ours - theirs).max() > 0.05 * np.abs(theirs).max()


def dual_subtraction(target_map, dual_map):
    """The seeds' post-step: H_t - s H_d with s = sum H_t / sum H_d per image."""
    axes = (1, 2, 3)
    s = target_map.sum(axis=axes, keepdims=True) / dual_map.sum(axis=axes, keepdims=True)
    return target_map - s * dual_map


@pytest.mark.parametrize("method", ["sglrp", "clrp"])
def test_sglrp_and_clrp_agree_with_two_naive_zennit_attributions(nets, method):
    model, net, x = nets
    ours = Explainer(model, method, cache=None, low=LOW, high=HIGH)(x, TARGETS).relevance
    e = onehot(TARGETS)

    def target_head(z):
        if method == "clrp":
            return z * e
        y = torch.softmax(z.double(), -1)
        yt = (y * e).sum(-1, keepdim=True)
        return (e * yt * (1 - yt)).float()

    def dual_head(z):
        if method == "clrp":
            return (1 - e) * (z * e).sum(-1, keepdim=True) / (CLASSES - 1)
        y = torch.softmax(z.double(), -1)
        return ((1 - e) * (y * e).sum(-1, keepdim=True) * y).float()

    theirs = dual_subtraction(zennit_relevance(net, "deep_taylor.bounded", x, target_head),
                              zennit_relevance(net, "deep_taylor.bounded", x, dual_head))
    assert_close(ours, theirs)
    np.testing.assert_allclose(ours.sum(axis=(1, 2, 3)), 0, atol=1e-4 * np.abs(ours).sum())


# -- the gradient and CAM family against Captum -----------------------------------------------------------------
def captum_methods():
    captum = pytest.importorskip("captum.attr")

    def last_conv(net):                    # the residual branch's 1x1, the layer our Grad-CAM picks by default
        return next(m for m in net.modules() if isinstance(m, Residual)).c4

    def grad_cam(net, x, t):
        cam = captum.LayerGradCam(net, last_conv(net)).attribute(x, target=t, relu_attributions=True)
        return captum.LayerAttribution.interpolate(cam, x.shape[2:], interpolate_mode="bilinear")

    return {
        "gradient": lambda net, x, t: captum.Saliency(net).attribute(x, target=t, abs=False),
        "input_x_gradient": lambda net, x, t: captum.InputXGradient(net).attribute(x, target=t),
        "guided_backprop": lambda net, x, t: captum.GuidedBackprop(net).attribute(x, target=t),
        "deconvnet": lambda net, x, t: captum.Deconvolution(net).attribute(x, target=t),
        "integrated_gradients": lambda net, x, t: captum.IntegratedGradients(net).attribute(
            x, baselines=0.0, target=t, n_steps=32, method="riemann_right"),
        "grad_cam": grad_cam,
        "guided_grad_cam": lambda net, x, t: captum.GuidedGradCam(net, last_conv(net)).attribute(
            x, target=t, interpolate_mode="bilinear"),
    }


GRADIENT_METHODS = ["gradient", "input_x_gradient", "guided_backprop", "deconvnet", "integrated_gradients",
                    "grad_cam", "guided_grad_cam"]


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_the_gradient_and_cam_methods_agree_with_captum(nets, method):
    """Captum's implementations on the PyTorch copy. Grad-CAM on the last convolution (the residual branch's 1x1),
    upsampled bilinearly; our CAM maps spread the CAM over the channels, so their channel sum is compared."""
    model, net, x = nets
    ours = Explainer(model, method, cache=None)(x, TARGETS).relevance
    theirs = captum_methods()[method](net, torch.tensor(x.transpose(0, 3, 1, 2).copy()), torch.tensor(TARGETS))
    theirs = theirs.detach().numpy().transpose(0, 2, 3, 1)
    if method == "grad_cam":
        ours = ours.sum(axis=-1, keepdims=True)
    assert_close(ours, theirs)

"""Read a Keras 3 model into a graph of operations that replays it exactly.

Every node of a Sequential or Functional model (nested models included) becomes a :class:`Node` that calls
the same layer or ``keras.ops`` operation with the arguments Keras recorded for it: constants, keyword
arguments and all. A layer this module has no reading for (a ``Lambda``, a user's own layer class, a
built-in composite such as ``MultiHeadAttention``) is *opened*: its ``call`` runs on symbolic inputs and the
operations it records become nodes, so relevance rules can see inside it. A layer that cannot be opened stays
one ``opaque`` node: it still replays exactly, so gradient methods work through it.

Each node gets a *kind*, which names the handler that carries relevance across it (``propagation.py``):

========================  =================================================================================
``linear``                Dense, EinsumDense, Conv1D/2D/3D (grouped, dilated) and their transposes,
                          DepthwiseConv2D, SeparableConv
``fixed_linear``          average pooling, mean/sum reductions, bilinear up-sampling and resizing: linear,
                          fixed weights
``affine``                ``y = a x + c`` with ``a``, ``c`` fixed: BatchNorm, Rescaling, Normalization,
                          ``x + 3.0``, ``x * gamma`` (LayerScale), ...
``activation``            elementwise nonlinearities (ReLU, GELU, swish, sigmoid, ...)
``add``                   ``y = sum_i c_i x_i``: Add, Subtract, Average, ``x + y``
``product``               elementwise ``a * b`` (and ``a / b``): gates and products of two signals
``contraction``           ``matmul``/``einsum``/``Dot`` of two signals
``attention``             ``ops.dot_product_attention`` (inside ``MultiHeadAttention``)
``scored_attention``      ``Attention`` (dot or concat scores), ``AdditiveAttention``
``layer_norm``            LayerNormalization, RMSNormalization, GroupNormalization (channels last),
                          UnitNormalization
``route``                 reshaping, padding, cropping, slicing, concatenation, max pooling, data
                          augmentation (the identity at inference)
``opaque``                anything else (no LRP rule; replayed as is)
========================  =================================================================================

Model surgery (removing the final softmax, folding BatchNorm, finding gates) is ``canonize.py``'s job.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from .compiling import yield_to_callers
from .equivalents import KNOWN_EQUIVALENTS, OpensAs
from .errors import ExplainError, UnsupportedLayerError

L = keras.layers

# ---- what each Keras class is ----------------------------------------------------------------------------

#: Layers that only move values around: relevance is routed unchanged (through their gradient).
ROUTING_LAYERS = (
    L.Flatten, L.Reshape, L.Permute, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
    L.Cropping1D, L.Cropping2D, L.Cropping3D, L.Concatenate, L.Identity, L.ActivityRegularization,
    L.RepeatVector, L.Maximum, L.Minimum,
)
#: Keras's data-augmentation layers: random in training, the identity at inference (what is explained), so
#: relevance passes unchanged. (RandomCrop is not among them: its inference output has another shape.)
AUGMENTATION_LAYERS = tuple(getattr(L, n) for n in (
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
    "RandomColorDegeneration", "RandomColorJitter", "RandomElasticTransform", "RandomErasing",
    "RandomGaussianBlur", "RandomGrayscale", "RandomHue", "RandomInvert", "RandomPerspective",
    "RandomPosterization", "RandomSaturation", "RandomSharpness", "RandomShear", "AugMix", "RandAugment",
    "CutMix", "MixUp") if hasattr(L, n))
MAX_POOLING = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
               L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D)
AVG_POOLING = (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
               L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D)
CONV_LAYERS = (L.Conv1D, L.Conv2D, L.Conv3D)
CONV_TRANSPOSE_LAYERS = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
UPSAMPLING = (L.UpSampling1D, L.UpSampling2D, L.UpSampling3D)

#: ``keras.ops`` operations (class names) whose routing depends on the values: relevance follows the winners.
NONLINEAR_ROUTE_OPS = {"MaxPool", "AdaptiveMaxPool", "Max", "Amax", "Maximum", "Minimum"}
#: ``keras.ops`` operations (class names) that route values: relevance follows their gradient.
ROUTE_OPS = {"Reshape", "Transpose", "ExpandDims", "Squeeze", "Concatenate", "Stack", "GetItem", "Slice",
             "Take", "TakeAlongAxis", "Cast", "Copy", "Moveaxis", "Swapaxes", "Flip", "Roll", "Tile",
             "Repeat", "BroadcastTo", "Pad", "Ravel", "StopGradient", "ConvertToTensor", "Hstack", "Vstack",
             "Dstack", "Append"} | NONLINEAR_ROUTE_OPS
#: ``keras.ops`` operations that cut a tensor into pieces (routes, one per piece).
SPLIT_OPS = {"Split", "ArraySplit", "Hsplit", "Vsplit", "Dsplit", "Unstack"}
#: ``keras.ops`` operations that are linear maps with fixed weights (the epsilon rule of that map).
FIXED_LINEAR_OPS = {"Mean", "Sum", "AveragePool", "Average", "AdaptiveAveragePool", "Cumsum", "Trace"}
#: Elementwise nonlinearities: relevance passes unchanged (the identity rule).
ACTIVATION_OPS = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Gelu": "gelu",
                  "Silu": "silu", "HardSigmoid": "hard_sigmoid", "HardSilu": "hard_silu", "Elu": "elu",
                  "Selu": "selu", "Softplus": "softplus", "Softsign": "softsign", "LeakyRelu": "leaky_relu",
                  "Celu": "celu", "Softmax": "softmax", "LogSoftmax": "log_softmax", "LogSigmoid": "log_sigmoid",
                  "HardTanh": "hard_tanh", "Mish": "mish", "Squareplus": "squareplus", "SparsePlus": "sparse_plus",
                  "Clip": "clip", "Erf": "erf"}
#: Activations whose output lies in a bounded range: what makes a factor a *gate* (``docs/methods.md``).
GATE_ACTIVATIONS = {"sigmoid", "hard_sigmoid", "softmax", "tanh"}
#: Activations whose output is never negative.
NONNEG_ACTIVATIONS = {"relu", "relu6", "sigmoid", "hard_sigmoid", "softmax", "softplus"}
CONTRACTION_OPS = {"Matmul", "Einsum", "Tensordot", "Dot", "Inner", "Outer", "Vdot"}
_AFFINE_OPS = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Negative"}


# ---- the graph ------------------------------------------------------------------------------------------

@dataclass
class LinearOp:
    """``z = apply(x, kernel, bias)``: a layer's linear part, with affine maps after it folded in.

    ``kind`` is ``"dense"`` (last axis), ``"einsum"``, ``"conv"`` (N-D, grouped, dilated), ``"depthwise"`` or
    ``"conv_transpose"`` (its kernel is (..., out, in), as Keras keeps it).
    Rules derive modified kernels (``w+``, ``w^2``, ...) from :meth:`params` (the folded weights) and apply
    them with :meth:`apply`. The layer's output itself is computed as the model computes it (:meth:`forward`:
    the unfolded weights, then each folded map's own layer): folding in float32 cancels badly where a
    BatchNorm's mean is large against its spread, and the forward values must be the model's.
    """

    kind: str
    layer: Any
    kernel_var: Any
    bias_var: Any | None
    strides: tuple = ()
    padding: str = "VALID"
    dilations: tuple = ()
    groups: int = 1
    equation: str = ""
    causal_pad: int = 0                           # Conv1D padding="causal": left padding
    folds: tuple = ()                             # affine maps after the layer: functions () -> (a, c)
    fold_calls: tuple = ()                        # ... and their exact replays: call([z]) -> y
    depthwise_part: bool = False                  # SeparableConv: the depthwise half

    @property
    def family(self) -> str:
        """``"dense"`` or ``"conv"``: the column the composites tables use."""
        return "dense" if self.kind in ("dense", "einsum") else "conv"

    def params(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Current (kernel, bias) with the folded affine maps applied; bias is zeros when the layer has none."""
        kernel = tf.convert_to_tensor(self.kernel_var)
        out_ch = kernel.shape[-2] * kernel.shape[-1] if self.kind == "depthwise" else \
            kernel.shape[-2] if self.kind == "conv_transpose" else kernel.shape[-1]
        if self.bias_var is not None:
            bias = tf.convert_to_tensor(self.bias_var)
        elif self.kind == "einsum":
            bias = tf.zeros([], kernel.dtype)
        else:
            bias = tf.zeros([out_ch], kernel.dtype)
        for fold in self.folds:
            a, c = (tf.reshape(tf.cast(t, kernel.dtype), [-1]) for t in fold())
            if self.kind == "depthwise":
                kernel = kernel * tf.reshape(tf.broadcast_to(a, [out_ch]), kernel.shape[-2:])
            elif self.kind == "conv_transpose":
                kernel = kernel * tf.reshape(tf.broadcast_to(a, [out_ch]), [out_ch, 1])
            else:
                kernel = kernel * a
            bias = bias * a + c
        return kernel, bias

    def forward(self, x: tf.Tensor, flipped: tf.Tensor | None = None) -> tf.Tensor:
        """The layer's output as the model computes it (unfolded weights, then each folded map); ``flipped`` is
        the layer's own kernel in :func:`flip_kernel` form (see :meth:`apply`)."""
        z = self.apply(x, tf.convert_to_tensor(self.kernel_var),
                       None if self.bias_var is None else tf.convert_to_tensor(self.bias_var), flipped=flipped)
        for call in self.fold_calls:
            z = call([z])
        return z

    @property
    def transposes_flipped(self) -> bool:
        """Whether :meth:`transpose` may run as the convolution of the flipped kernel (:meth:`flip`): a 2-D
        convolution with stride 1, no dilation or groups, an odd kernel and 'same' padding (or 1x1), or a
        depthwise convolution of the same kind with one output per channel. The transposed convolution of a
        kernel is the convolution of its flipped form, and at batch 1 oneDNN's forward kernel is never slower
        than its backward-data kernel on this project's CPU and much faster on small maps with many channels
        (ResNet50's 7 x 7 layers: 0.8-1.4 ms instead of 1.7-2.6 ms; EfficientNetB0's depthwise layers 14 % in
        all, its lrp.epsilon class switch 38 -> 33 ms)."""
        shape = self.kernel_var.shape
        plain = self.kind == "conv" and self.groups == 1 and not self.causal_pad
        one_per_channel = self.kind == "depthwise" and shape[-1] == 1
        return ((plain or one_per_channel) and len(shape) == 4
                and all(s == 1 for s in self.strides) and all(d == 1 for d in self.dilations)
                and all(k % 2 == 1 for k in shape[:2]) and (self.padding == "SAME" or tuple(shape[:2]) == (1, 1)))

    def flip(self, kernel: tf.Tensor) -> tf.Tensor:
        """``kernel`` in the form whose convolution is this layer's transposed map (:attr:`transposes_flipped`):
        rotated by 180 degrees, with in and out swapped for a plain convolution (:func:`flip_kernel`)."""
        return tf.reverse(kernel, [0, 1]) if self.kind == "depthwise" else flip_kernel(kernel)

    @property
    def runs_flipped(self) -> bool:
        """Whether :meth:`apply` may run as the transposed convolution of the flipped kernel: a plain convolution
        that :attr:`transposes_flipped` with 'same' padding, a kernel larger than 1x1 and at least 256 input
        channels. That is the same sum in the same order (bit-identical here), and oneDNN's backward-data kernel
        reads a blocked copy of the weights: up to twice as fast as its forward kernel on the plain layout at
        batch 1 on this project's CPU (VGG16's 28 x 28 x 512 layers: 12 ms against 23 ms when it was chosen;
        a later A/B of whole forward passes found VGG16 and ResNet50 within noise either way), while on fewer
        channels it gains nothing and loses the fused bias and activation. Such a layer keeps its kernels in
        flipped form only: both directions read that form."""
        shape = self.kernel_var.shape
        return (self.kind == "conv" and self.transposes_flipped and self.padding == "SAME"
                and tuple(shape[:2]) != (1, 1) and shape[2] >= 256)

    def apply(self, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None = None,
              flipped: tf.Tensor | None = None) -> tf.Tensor:
        """Apply the linear map with the given (possibly modified) kernel and optional bias. ``flipped``, when
        given, is ``flip_kernel(kernel)`` and the map runs as its transposed convolution (:attr:`runs_flipped`)."""
        if flipped is not None:
            out_shape = tf.concat([tf.shape(x)[:-1], [tf.shape(flipped)[2]]], 0)
            z = tf.nn.conv2d_transpose(x, flipped, out_shape, strides=1, padding="SAME")
            return z if bias is None else z + bias
        if self.kind == "dense":
            z = tf.tensordot(x, kernel, axes=[[x.shape.rank - 1], [0]])
        elif self.kind == "einsum":
            z = tf.einsum(self.equation, x, kernel)
        elif self.kind == "depthwise":
            z = tf.nn.depthwise_conv2d(x, kernel, strides=(1, *self.strides, 1), padding=self.padding,
                                       dilations=self.dilations)
        elif self.kind == "conv_transpose":
            layer = self.layer
            z = keras.ops.conv_transpose(x, kernel, strides=list(layer.strides), padding=layer.padding,
                                         output_padding=layer.output_padding, dilation_rate=layer.dilation_rate,
                                         data_format="channels_last")
        else:
            if self.causal_pad:
                x = tf.pad(x, [[0, 0], [self.causal_pad, 0], [0, 0]])
            z = self._convolve(x, kernel)
        return z if bias is None else z + bias

    @property
    def stack_axis(self) -> int | None:
        """The kernel's input-channel axis when several kernels stacked along it transpose in one call
        (:meth:`transpose_stacked`): dense layers and plain convolutions; ``None`` for the others."""
        if self.kind == "dense":
            return 0
        if self.kind == "conv" and self.groups == 1 and not self.causal_pad and all(d == 1 for d in self.dilations):
            return -2
        return None

    def transpose_stacked(self, s: tf.Tensor, stacked: tf.Tensor | None, in_shape, count: int,
                          flipped: tf.Tensor | None = None) -> list[tf.Tensor]:
        """``[transpose(s, k) for k in kernels]`` from the ``count`` kernels stacked along :attr:`stack_axis`
        (or that stack's ``flipped`` form): one transposed map with ``count`` times the input channels, split.
        Each output channel is its own sum, so the values are those of separate calls (bit-identical here); a
        first layer's three z_box kernels on RGB take one call on 9 channels, 2.6x faster than three on 3."""
        shape = tf.concat([in_shape[:-1], in_shape[-1:] * count], 0)
        return tf.split(self.transpose(s, stacked, shape, flipped), count, axis=-1)

    def transpose(self, s: tf.Tensor, kernel: tf.Tensor | None, in_shape, flipped: tf.Tensor | None = None
                  ) -> tf.Tensor:
        """``J^T s`` of ``apply(., kernel)`` without bias: the input gradient, computed by the transposed
        operation itself (``matmul`` with the kernel transposed, ``conv_transpose``, the depthwise backprop,
        a transposed ``einsum``), or, given the kernel's ``flipped`` form (:attr:`transposes_flipped`), the
        convolution with it. ``in_shape`` is the input's shape with ``s``'s batch axis."""
        if flipped is not None:
            if self.kind == "depthwise":
                return tf.nn.depthwise_conv2d(s, flipped, strides=(1, 1, 1, 1), padding="SAME")
            return tf.nn.conv2d(s, flipped, strides=1, padding="SAME")
        if self.kind == "dense":            # matmul's transpose_b: no transposed copy of the kernel, even eagerly
            if s.shape.rank == 2:
                return tf.matmul(s, kernel, transpose_b=True)
            flat = tf.matmul(tf.reshape(s, [-1, kernel.shape[1]]), kernel, transpose_b=True)
            return tf.reshape(flat, tf.concat([tf.shape(s)[:-1], [kernel.shape[0]]], 0))
        if self.kind == "einsum":
            x_spec, w_spec = self.equation.split("->")[0].split(",")
            out_spec = self.equation.split("->")[1]
            if set(x_spec) <= set(out_spec) | set(w_spec) and len(set(x_spec)) == len(x_spec):
                return tf.einsum(f"{out_spec},{w_spec}->{x_spec}", s, kernel)
        elif self.kind == "depthwise":
            return tf.nn.depthwise_conv2d_backprop_input(in_shape, kernel, s, strides=(1, *self.strides, 1),
                                                         padding=self.padding, dilations=(1, *self.dilations, 1))
        elif self.kind == "conv" and self.groups == 1 and not self.causal_pad and \
                all(d == 1 for d in self.dilations):
            return tf.nn.conv_transpose(s, kernel, in_shape, strides=self.strides, padding=self.padding)
        elif self.kind == "conv_transpose":       # the input gradient of TF's conv_transpose: the convolution
            layer = self.layer
            return tf.nn.convolution(s, kernel, strides=layer.strides, padding=layer.padding.upper(),
                                     dilations=layer.dilation_rate)
        dummy = tf.zeros(in_shape, s.dtype)                 # any other map: its input gradient
        with tf.GradientTape() as tape:
            tape.watch(dummy)
            out = self.apply(dummy, kernel)
        return tape.gradient(out, dummy, output_gradients=s)

    def _convolve(self, x, kernel):
        if self.groups == 1:
            return tf.nn.convolution(x, kernel, strides=self.strides, padding=self.padding,
                                     dilations=self.dilations)
        in_per_group, out = kernel.shape[-2], kernel.shape[-1]
        if in_per_group == 1 and x.shape.rank == 4:     # one input channel per group: a depthwise convolution
            dw = tf.reshape(kernel, kernel.shape[:2] + [self.groups, out // self.groups])
            return tf.nn.depthwise_conv2d(x, dw, strides=(1, *self.strides, 1), padding=self.padding,
                                          dilations=self.dilations)
        # Otherwise a block-diagonal kernel: exact, the zero blocks contribute exact zeros to every rule.
        cin = in_per_group * self.groups
        tiled = tf.tile(kernel, [1] * (kernel.shape.rank - 2) + [self.groups, 1])
        mask = np.equal.outer(np.arange(cin) // in_per_group, np.arange(out) // (out // self.groups))
        return tf.nn.convolution(x, tiled * mask.astype(kernel.dtype.as_numpy_dtype), strides=self.strides,
                                 padding=self.padding, dilations=self.dilations)


def flip_kernel(kernel: tf.Tensor) -> tf.Tensor:
    """A 2-D convolution kernel (h, w, in, out) rotated by 180 degrees with in and out swapped: the kernel whose
    transposed convolution (stride 1, 'same', odd size) is the convolution with ``kernel``, and whose
    convolution is the transposed convolution with ``kernel``."""
    return tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])


@dataclass
class Node:
    """One operation of the model: ``outputs = call(inputs)``, replayed with its recorded arguments.

    ``kind`` names the handler that carries relevance across it (see the module docstring); ``attrs`` holds
    what that handler needs (the activation's name, an affine map's ``(a, c)``, the held-constant factors...).
    """

    kind: str
    name: str
    layer: Any                                   # the Keras layer or operation applied
    inputs: list[int]
    output: int
    call: Callable | None = None                 # exact replay: call([input tensors]) -> output tensor
    op: LinearOp | None = None                   # for kind "linear"
    attrs: dict = field(default_factory=dict)
    in_shapes: list = field(default_factory=list)     # static input shapes without the batch axis
    out_shape: tuple | None = None

    @property
    def class_name(self) -> str:
        return type(self.layer).__name__ if self.layer is not None else self.kind

    def run(self, ins: list, flipped: tf.Tensor | None = None) -> tf.Tensor:
        """The node's output from its inputs, as the model computes it (a linear layer's own kernel in
        ``flip_kernel`` form makes it run flipped, see :attr:`LinearOp.runs_flipped`)."""
        if self.kind == "linear":
            return self.op.forward(ins[0], flipped)
        return self.call(ins)


@dataclass
class Graph:
    """A model as an ordered list of :class:`Node` over integer value ids (``input_id`` is the image)."""

    nodes: list[Node]
    input_id: int
    output_id: int
    input_shape: tuple
    num_classes: int
    softmax_removed: bool = False
    output_index: int = 0
    feature_value: dict = field(default_factory=dict)   # layer name -> value id of its (activated) output
    keras_values: dict = field(default_factory=dict)    # value id -> the model's KerasTensor with that value
    first_linear: set = field(default_factory=set)      # node indices of the first linear layers
    relu_followed: set = field(default_factory=set)     # node indices of linear layers followed by a ReLU
    bounds_path: list = field(default_factory=list)     # node indices mapping the input bounds to first layers
    relevant: set = field(default_factory=set)          # node indices that relevance reaches

    def consumers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for v in set(node.inputs):
                out.setdefault(v, []).append(i)
        return out

    def producer(self) -> dict[int, int]:
        return {node.output: i for i, node in enumerate(self.nodes)}

    def macs_per_node(self) -> float:
        """Multiply-adds of the linear layers for one image, per node: how much of a pass is arithmetic
        rather than per-op overhead (VGG16 at 224x224: about 4e8; ResNet50 3e7; EfficientNetB0 2e6)."""
        def size(shape) -> int:                     # an unknown dimension counts as 1
            return int(np.prod([d or 1 for d in shape]))
        macs = sum(size((n.out_shape or (1,))[:-1]) * size(n.op.kernel_var.shape)
                   for n in self.nodes if n.kind == "linear" and n.op is not None)
        return macs / max(len(self.nodes), 1)

    def forward(self, x: tf.Tensor, *, override: Callable | None = None, keep: bool = False):
        """Replay the model on ``x``; returns the logits (and every value when ``keep``).

        ``override(i, node, ins)`` may return a replacement output for node ``i`` (``None`` keeps the node's).
        """
        values = {self.input_id: x}
        for i, node in enumerate(self.nodes):
            yield_to_callers()              # compiling in the background: let a caller's call run first
            ins = [values[v] for v in node.inputs]
            out = override(i, node, ins) if override is not None else None
            values[node.output] = node.run(ins) if out is None else out
        return (values[self.output_id], values) if keep else values[self.output_id]


# ---- user registrations ----------------------------------------------------------------------------------

#: Layer class -> how to read it: a node kind (``"activation"``, ``"route"``, ``"opaque"``, a kind a
#: handler was registered for), a function ``layer -> LinearOp``, or an :class:`~.equivalents.OpensAs`. Filled
#: by ``register_layer``.
LAYER_READINGS: dict[type, Any] = {}


# ---- reading --------------------------------------------------------------------------------------------

def batchnorm_affine(bn) -> tuple[tf.Tensor, tf.Tensor]:
    """BatchNormalization at inference as ``y = x * scale + shift`` (per channel, broadcast over ``bn.axis``)."""
    var = tf.convert_to_tensor(bn.moving_variance)
    mean = tf.convert_to_tensor(bn.moving_mean)
    scale = tf.math.rsqrt(var + bn.epsilon)
    if bn.scale:
        scale = scale * tf.convert_to_tensor(bn.gamma)
    shift = -mean * scale
    if bn.center:
        shift = shift + tf.convert_to_tensor(bn.beta)
    return scale, shift


def _normalization_affine(layer) -> tuple[tf.Tensor, tf.Tensor]:
    """``keras.layers.Normalization``: ``(x - mean) / max(sqrt(var), eps)``, or its inverse."""
    mean = _as_tensor(layer.mean)                # float16 in a model trained with mixed precision
    std = tf.maximum(tf.sqrt(_as_tensor(layer.variance)), keras.config.epsilon())
    return (std, mean) if layer.invert else (1.0 / std, -mean / std)


def _activation_name(fn) -> str:
    name = getattr(fn, "__name__", type(fn).__name__)
    return {"identity": "linear", "swish": "silu", "hard_swish": "hard_silu"}.get(name, name)


def _padding(layer) -> str:
    pad = layer.padding.upper()
    if pad not in ("SAME", "VALID", "CAUSAL"):
        raise UnsupportedLayerError(
            f"Layer {layer.name!r} ({type(layer).__name__}) uses padding={layer.padding!r}; only 'same', 'valid' "
            "and 'causal' are supported.", layer.name, type(layer).__name__)
    return "VALID" if pad == "CAUSAL" else pad


def _shape(kt) -> tuple:
    return tuple(kt.shape[1:]) if getattr(kt, "shape", None) is not None and len(kt.shape) else ()


def _replay(op, arguments) -> Callable:
    """``call(values)``: ``op`` applied to the recorded arguments with ``values`` in place of its tensors, in
    inference mode as ``model(x, training=False)`` runs it: Keras records the ``training`` a layer had when the
    model was built (``True`` for data augmentation layers) and overrides it with the model call's, which we do
    too."""
    tensors = arguments.keras_tensors
    fixed = _free_batch_reshape(op)
    if fixed is not None:
        return lambda values: keras.ops.reshape(values[0], fixed if fixed[0] is not None else
                                                (keras.ops.shape(values[0])[0],) + fixed[1:])
    inference = "training" in getattr(op, "_call_context_args", ()) or getattr(op, "_call_has_training_arg", False)

    def call(values):
        args, kwargs = arguments.fill_in({id(t): v for t, v in zip(tensors, values)})
        return op(*args, **{**kwargs, "training": False}) if inference else op(*args, **kwargs)
    return call


def _resizing_kind(layer) -> str | None:
    """``Resizing`` (and ``keras.ops.image.resize``): nearest neighbours route values; bilinear and area
    averaging are linear maps with fixed, non-negative weights (they also carry the input's bounds). Kernels with
    negative lobes (bicubic, Lanczos...) and padding with a non-zero fill value get no reading (they stay
    opaque)."""
    if getattr(layer, "pad_to_aspect_ratio", False) and getattr(layer, "fill_value", 0.0):   # Keras >= 3.4
        return None
    return {"nearest": "route", "bilinear": "fixed_linear", "area": "fixed_linear"}.get(layer.interpolation)


def _free_batch_reshape(op) -> tuple | None:
    """The shape of a ``keras.ops.reshape`` recorded with the symbolic batch size (``ops.reshape(y,
    ops.shape(x))`` in ``GroupNormalization``, ``ops.reshape(x, (B, -1, C))`` with ``B = ops.shape(x)[0]``):
    its one ``None`` is the size known only at run time, which ``-1`` infers; where the shape has a ``-1``
    already, a leading ``None`` (returned as is) is the batch size of the reshaped tensor. ``None`` for any other
    operation. The replay probe of the layer that recorded it checks the reading on a batch."""
    if type(op).__name__ != "Reshape" or isinstance(op, L.Layer):
        return None
    shape = getattr(op, "newshape", None)
    if not isinstance(shape, (list, tuple)) or not all(d is None or isinstance(d, int) for d in shape):
        return None
    if sum(d is None for d in shape) != 1:
        return None
    if -1 in shape:
        return tuple(shape) if shape[0] is None else None
    return tuple(-1 if d is None else d for d in shape)


def _constant_operand(arguments):
    """For a binary op with one tensor: (the tensor's position, the other operand), else None."""
    args = list(arguments.args)
    if len(args) != 2 or arguments.kwargs:
        return None
    kinds = [isinstance(a, keras.KerasTensor) for a in args]
    if kinds.count(True) != 1:
        return None
    pos = kinds.index(True)
    return pos, args[1 - pos]


def _as_tensor(c) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(c), tf.float32)


class _Reader:
    """Turns a model into nodes; one instance per :func:`read_model` call."""

    def __init__(self):
        self.nodes: list[Node] = []
        self.next_id = 0
        self.feature_value: dict[str, int] = {}
        self.keras_values: dict[int, Any] = {}

    def new_value(self) -> int:
        self.next_id += 1
        return self.next_id

    def add(self, kind, name, layer, inputs, *, call=None, op=None, in_shapes=(), out_shape=None, **attrs) -> int:
        out = self.new_value()
        self.nodes.append(Node(kind=kind, name=name, layer=layer, inputs=list(inputs), output=out, call=call,
                               op=op, attrs=attrs, in_shapes=list(in_shapes), out_shape=out_shape))
        return out

    # -- graphs -------------------------------------------------------------------------------------------
    def walk(self, model, in_ids: list[int], prefix: str, top: bool = False) -> list[int]:
        functional = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
        if functional is None or not hasattr(functional, "_nodes_by_depth"):
            raise ExplainError(f"Model {model.name!r} ({type(model).__name__}) is a subclassed model or a "
                               "Sequential model without an Input; build it as a Functional model or give it "
                               "keras.Input(shape) to explain it.")
        if len(functional.inputs) != len(in_ids):
            raise ExplainError(f"Model {model.name!r} has {len(functional.inputs)} inputs; sglrp_widgets explains "
                               "image classifiers with exactly one image input.")
        env = {id(t): v for t, v in zip(functional.inputs, in_ids)}
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for knode in functional._nodes_by_depth[depth]:
                if knode.operation is None or knode.is_input or isinstance(knode.operation, L.InputLayer):
                    continue
                self.read_node(knode, env, prefix, top)
        return [env[id(t)] for t in functional.outputs]

    def read_node(self, knode, env: dict, prefix: str, top: bool = False) -> None:
        ins = [env[id(t)] for t in knode.arguments.keras_tensors]
        outs = self.layer_call(knode.operation, knode, ins, prefix)
        for t, v in zip(knode.outputs, outs):
            env[id(t)] = v
            if top:
                self.keras_values.setdefault(v, t)

    def layer_call(self, op, knode, ins: list[int], prefix: str) -> list[int]:
        """Read one application of ``op`` (a layer, a nested model or a ``keras.ops`` operation)."""
        name = f"{prefix}{op.name}"
        if isinstance(op, keras.Model):
            return self.walk(op, ins, prefix=f"{name}/")
        shapes = [_shape(t) for t in knode.arguments.keras_tensors]
        out_shapes = [_shape(t) for t in knode.outputs]
        outs = self.read_operation(op, knode.arguments, ins, name, shapes, out_shapes)
        if isinstance(op, L.Layer):
            self.feature_value[name] = outs[0]
            if prefix and op.name not in self.feature_value:
                self.feature_value[op.name] = outs[0]
        return outs

    # -- operations ---------------------------------------------------------------------------------------
    def read_operation(self, op, arguments, ins, name, shapes, out_shapes) -> list[int]:
        call = _replay(op, arguments)
        kw = dict(call=call, in_shapes=shapes, out_shape=out_shapes[0])
        reading = _registered_reading(op)
        if isinstance(reading, OpensAs):
            opened = self.open(op, arguments, ins, name, reading.fn)
            if opened is not None:
                return opened
        elif reading is not None:
            return [self.read_registered(op, reading, ins, name, kw)]
        if isinstance(op, L.Layer) and type(op).__module__.startswith("keras.src.layers"):
            out = self.read_layer(op, arguments, ins, name, kw)
            if out is not None:
                return [out]
        elif not isinstance(op, L.Layer):
            if len(out_shapes) == 1:
                return [self.read_op(op, arguments, ins, name, kw)]
            if type(op).__name__ in SPLIT_OPS and len(ins) == 1:    # each piece a route of the input
                return [self.add("route", f"{name}[{i}]", op, ins, call=lambda v, i=i, c=call: c(v)[i],
                                 in_shapes=shapes, out_shape=s) for i, s in enumerate(out_shapes)]
        opened = self.open(op, arguments, ins, name)
        if opened is not None:
            return opened
        if len(out_shapes) > 1:                           # a tuple-valued opaque node, then one item each
            whole = self.add("opaque", name, op, ins, call=lambda v, c=call: tuple(c(v)), in_shapes=shapes)
            return [self.add("route", f"{name}[{i}]", op, [whole], call=lambda v, i=i: v[0][i], in_shapes=[None],
                             out_shape=s) for i, s in enumerate(out_shapes)]
        return [self.add("opaque", name, op, ins, **kw)]

    def read_registered(self, op, reading, ins, name, kw) -> int:
        if callable(reading) and not isinstance(reading, str):
            lin = reading(op)
            if not isinstance(lin, LinearOp):
                raise ExplainError(f"The reading registered for {type(op).__name__} must return a LinearOp, got "
                                   f"{type(lin).__name__}.")
            return self.add("linear", name, op, ins, op=lin, **{k: v for k, v in kw.items() if k != "call"})
        if reading == "activation":
            return self.add("activation", name, op, ins, activation=type(op).__name__.lower(), **kw)
        return self.add(reading, name, op, ins, **kw)

    def linear(self, layer, ins, name, op, kw) -> int:
        kw = {k: v for k, v in kw.items() if k != "call"}
        out_shape = kw.pop("out_shape", None)
        out = self.add("linear", name, layer, ins, op=op, out_shape=out_shape, **kw)
        fn = getattr(layer, "activation", None) if isinstance(layer, L.Layer) else None
        act = _activation_name(fn) if fn is not None else "linear"
        if act != "linear":
            out = self.add("activation", name, layer, [out], call=lambda v, f=layer.activation: f(v[0]),
                           activation=act, in_shapes=[out_shape], out_shape=out_shape)
        return out

    def conv_op(self, layer, kernel, bias, kind="conv", **extra) -> LinearOp:
        pad = _padding(layer)
        dil = tuple(layer.dilation_rate)
        causal = dil[0] * (layer.kernel_size[0] - 1) if layer.padding == "causal" else 0
        return LinearOp(kind, layer, kernel, bias, strides=tuple(layer.strides), padding=pad, dilations=dil,
                        causal_pad=causal, **extra)

    def read_layer(self, layer, arguments, ins, name, kw) -> int | None:
        """Built-in Keras layers with a known reading; ``None`` for the ones to open."""
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return self.add("opaque", name, layer, ins, **kw)      # replayed exactly; no LRP rule
        if isinstance(layer, L.Dense):
            return self.linear(layer, ins, name, LinearOp("dense", layer, layer.kernel, layer.bias), kw)
        if isinstance(layer, L.EinsumDense):
            return self.linear(layer, ins, name, LinearOp("einsum", layer, layer.kernel, layer.bias,
                                                          equation=layer.equation), kw)
        if isinstance(layer, L.SeparableConv2D):
            dw = self.conv_op(layer, layer.depthwise_kernel, None, kind="depthwise", depthwise_part=True)
            mid = self.add("linear", f"{name}[depthwise]", layer, ins, op=dw, in_shapes=kw["in_shapes"])
            pw = LinearOp("conv", layer, layer.pointwise_kernel, layer.bias, strides=(1, 1), padding="VALID",
                          dilations=(1, 1))
            return self.linear(layer, [mid], name, pw, {**kw, "in_shapes": [None]})
        if isinstance(layer, L.DepthwiseConv2D):
            return self.linear(layer, ins, name, self.conv_op(layer, layer.kernel, layer.bias, kind="depthwise"), kw)
        if isinstance(layer, CONV_TRANSPOSE_LAYERS):
            return self.linear(layer, ins, name, LinearOp("conv_transpose", layer, layer.kernel, layer.bias), kw)
        if isinstance(layer, CONV_LAYERS):
            op = self.conv_op(layer, layer.kernel, layer.bias, groups=int(getattr(layer, "groups", 1) or 1))
            return self.linear(layer, ins, name, op, kw)
        if isinstance(layer, L.BatchNormalization):
            axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
            rank = len(kw["in_shapes"][0]) + 1 if kw["in_shapes"] and kw["in_shapes"][0] is not None else None
            last = axis == -1 or (rank is not None and axis == rank - 1)
            if not last and rank is None:
                return None
            bshape = None if last else [1 if d != axis % rank else -1 for d in range(rank)]
            return self.add("affine", name, layer, ins, affine=_reshaped(lambda bn=layer: batchnorm_affine(bn), bshape),
                            channelwise=last, batchnorm=True, **kw)
        if isinstance(layer, L.Rescaling):
            return self.add("affine", name, layer, ins, channelwise=True,
                            affine=lambda r=layer: (_as_tensor(r.scale), _as_tensor(r.offset)), **kw)
        if isinstance(layer, L.Normalization):
            return self.add("affine", name, layer, ins, affine=lambda n=layer: _normalization_affine(n),
                            channelwise=_broadcasts_per_channel(layer.mean), **kw)
        if isinstance(layer, (L.LayerNormalization, L.UnitNormalization)) or type(layer).__name__ == "RMSNormalization":
            return self.add("layer_norm", name, layer, ins, **kw)
        if isinstance(layer, L.GroupNormalization) and kw["in_shapes"] and kw["in_shapes"][0] is not None \
                and layer.axis in (-1, len(kw["in_shapes"][0])):            # channels last
            return self.add("layer_norm", name, layer, ins, **kw)
        if isinstance(layer, L.Attention) and _plain_attention_call(arguments):
            return self.add("scored_attention", name, layer, ins, causal=bool(arguments.kwargs.get(
                "use_causal_mask")), **kw)
        if isinstance(layer, L.Activation):
            return self.add("activation", name, layer, ins, activation=_activation_name(layer.activation), **kw)
        if isinstance(layer, L.Softmax):
            return self.add("activation", name, layer, ins, activation="softmax", **kw)
        if isinstance(layer, L.ReLU):
            plain = not layer.negative_slope and not layer.threshold
            act = "relu6" if plain and layer.max_value == 6 else "relu" if plain and layer.max_value is None \
                else "relu_variant"
            return self.add("activation", name, layer, ins, activation=act, floor_zero=plain, **kw)
        if isinstance(layer, (L.LeakyReLU, L.ELU, L.PReLU)):
            return self.add("activation", name, layer, ins, activation=type(layer).__name__.lower(), **kw)
        if isinstance(layer, AVG_POOLING):
            return self.add("fixed_linear", name, layer, ins, **kw)
        if isinstance(layer, UPSAMPLING):
            kind = "fixed_linear" if getattr(layer, "interpolation", "nearest") != "nearest" else "route"
            return self.add(kind, name, layer, ins, **kw)
        if isinstance(layer, L.Resizing):
            kind = _resizing_kind(layer)
            return self.add(kind, name, layer, ins, carries_bounds=True, **kw) if kind else None
        if isinstance(layer, L.CenterCrop):            # a crop, or a bilinear resize where the image is smaller
            side = kw["in_shapes"][0][:2] if kw["in_shapes"] and kw["in_shapes"][0] else (None, None)
            crops = None not in side and side[0] >= layer.height and side[1] >= layer.width
            return self.add("route" if crops else "fixed_linear", name, layer, ins, carries_bounds=True, **kw)
        if isinstance(layer, MAX_POOLING + ROUTING_LAYERS + AUGMENTATION_LAYERS):
            return self.add("route", name, layer, ins, nonlinear=isinstance(layer, MAX_POOLING + (L.Maximum,
                                                                                                  L.Minimum)), **kw)
        if isinstance(layer, (L.Add, L.Subtract, L.Average)):
            n = len(ins)
            coef = [1.0] * n if isinstance(layer, L.Add) else [1.0, -1.0] if isinstance(layer, L.Subtract) \
                else [1.0 / n] * n
            return self.add("add", name, layer, ins, coefficients=coef, **kw)
        if isinstance(layer, L.Multiply):
            return self.add("product", name, layer, ins, **kw)
        if isinstance(layer, L.Dot):
            return self.add("contraction", name, layer, ins, **kw)
        if isinstance(layer, L.InputLayer):
            return ins[0]
        return None

    def read_op(self, op, arguments, ins, name, kw) -> int:
        """A ``keras.ops`` operation recorded in the graph (``x + 3.0``, ``ops.multiply``, ``ops.einsum``...)."""
        cls = type(op).__name__
        tensors = arguments.keras_tensors
        if cls in _AFFINE_OPS:
            affine = _op_affine(cls, arguments)
            if affine is not None:
                return self.add("affine", name, op, ins, affine=affine[0], channelwise=affine[1],
                                static=affine[2], **kw)
            if len(tensors) == 2 and cls in ("Add", "Subtract"):
                return self.add("add", name, op, ins, coefficients=[1.0, 1.0 if cls == "Add" else -1.0], **kw)
            if len(tensors) == 2 and cls == "Multiply":
                return self.add("product", name, op, ins, **kw)
            if len(tensors) == 2 and cls in ("Divide", "TrueDivide") and \
                    arguments.args[0] is tensors[0] and arguments.args[1] is tensors[1]:
                return self.add("product", name, op, ins, divide=True, **kw)
        if cls in ACTIVATION_OPS and len(tensors) == 1:
            return self.add("activation", name, op, ins, activation=ACTIVATION_OPS[cls], **kw)
        if cls in ("Maximum", "Minimum") and len(tensors) == 1:     # max(x, 0) and friends: ReLU-like
            return self.add("activation", name, op, ins, activation=cls.lower(), **kw)
        if cls == "DotProductAttention":
            return self.add("attention", name, op, ins, **_attention_attrs(op, arguments), **kw)
        if cls == "Resize" and len(tensors) == 1 and (kind := _resizing_kind(op)):    # keras.ops.image.resize
            return self.add(kind, name, op, ins, carries_bounds=True, **kw)
        weight = _constant_weight(cls, arguments)
        if weight is not None:
            return self.linear(op, ins, name, weight, kw)
        if cls in CONTRACTION_OPS and len(tensors) == 2:
            return self.add("contraction", name, op, ins, **kw)
        if cls in FIXED_LINEAR_OPS and len(tensors) == 1:
            return self.add("fixed_linear", name, op, ins, **kw)
        if cls in ROUTE_OPS:
            return self.add("route", name, op, ins, nonlinear=cls in NONLINEAR_ROUTE_OPS, **kw)
        return self.add("opaque", name, op, ins, **kw)

    # -- opening layers into their operations ---------------------------------------------------------------
    def open(self, layer, arguments, ins, name, equivalent: Callable | None = None) -> list[int] | None:
        """Read ``layer.call`` (or ``equivalent(layer, ...)``) as the operations it records on symbolic inputs;
        ``None`` if Keras cannot.

        Whatever the call records on the layer and its sublayers is removed again afterwards, so the user's
        model keeps exactly the nodes it had.
        """
        if not isinstance(layer, L.Layer) or isinstance(layer, L.InputLayer):
            return None
        tensors = arguments.keras_tensors
        symbolic = [keras.KerasTensor(t.shape, dtype=t.dtype) for t in tensors]
        args, kwargs = arguments.fill_in({id(t): s for t, s in zip(tensors, symbolic)})
        call = layer.call if equivalent is None else functools.partial(equivalent, layer)
        try:
            accepted = inspect.signature(call).parameters
        except (TypeError, ValueError):
            return None
        # Keras records the call-context arguments ``mask`` and ``training`` as given, and drops them for a call
        # that does not take them (``self.norm(x, training=training)`` on a layer whose call has no ``training``)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("mask", "training") or k in accepted}
        if "training" in accepted:
            kwargs["training"] = False
        layers = list(layer._flatten_layers(include_self=True, recursive=True))
        sizes = [(len(x._inbound_nodes), len(x._outbound_nodes)) for x in layers]
        start = len(self.nodes)
        try:
            with _variables_meet_symbolic_tensors():
                outs = keras.tree.flatten(call(*args, **kwargs))
            if not outs or not all(isinstance(o, keras.KerasTensor) for o in outs):
                return None
            recorded = _recorded_nodes(outs, symbolic)
            if recorded is None:
                return None
            env = {id(s): v for s, v in zip(symbolic, ins)}
            for knode in recorded:
                self.read_node(knode, env, prefix=f"{name}/")
            opened = [env[id(o)] for o in outs]
            if self.replays(layer, arguments, ins, opened, start):
                return opened
            del self.nodes[start:]
            return None
        except Exception:                      # noqa: BLE001 - Keras cannot trace it: the layer stays opaque
            del self.nodes[start:]
            return None
        finally:
            for x, (n_in, n_out) in zip(layers, sizes):
                del x._inbound_nodes[n_in:]
                del x._outbound_nodes[n_out:]

    def replays(self, layer, arguments, ins, outs, start) -> bool:
        """Whether the nodes read from ``layer.call`` (``self.nodes[start:]``) compute what the layer computes,
        on a random batch: an operation recorded with a stand-in for a value known only at run time (the
        symbolic batch size ``None`` in a reshape, say) would not. Inputs of unknown size or not floating
        point are not probed; the whole model's replay check still covers them."""
        tensors = arguments.keras_tensors
        if any(d is None for t in tensors for d in t.shape[1:]) or \
                not all(str(t.dtype).startswith(("float", "bfloat")) for t in tensors):
            return True
        rng = np.random.default_rng(0)
        by_id = {}
        for t in tensors:
            if id(t) not in by_id:
                by_id[id(t)] = tf.constant(rng.normal(size=(t.shape[0] or 2,) + tuple(t.shape[1:])), t.dtype)
        concrete = [by_id[id(t)] for t in tensors]
        want = keras.tree.flatten(_replay(layer, arguments)(concrete))
        values = dict(zip(ins, concrete))
        for node in self.nodes[start:]:
            values[node.output] = node.run([values[v] for v in node.inputs])
        return len(want) == len(outs) and all(_agree_where_finite(np.asarray(values[o]), np.asarray(w))
                                              for o, w in zip(outs, want))


def _registered_reading(op):
    for cls in type(op).__mro__:
        if cls in LAYER_READINGS:
            return LAYER_READINGS[cls]
        known = KNOWN_EQUIVALENTS.get(f"{cls.__module__}.{cls.__qualname__}")
        if known is not None:
            return known
    return None


def _reshaped(fn, shape):
    if shape is None:
        return fn
    return lambda: tuple(tf.reshape(t, shape) for t in fn())


def _broadcasts_per_channel(value) -> bool:
    shape = tuple(getattr(value, "shape", np.shape(value)))
    return all(d == 1 for d in shape[:-1])


def _op_affine(cls: str, arguments):
    """``(affine_fn, channelwise, static)`` for ``x op constant``; ``None`` when both operands are tensors.

    ``static`` is ``(a, c)`` as Python floats when both are plain numbers (used to prove non-negativity).
    """
    if cls == "Negative":
        if len(arguments.keras_tensors) != 1:
            return None
        return (lambda: (tf.constant(-1.0), tf.constant(0.0))), True, (-1.0, 0.0)
    found = _constant_operand(arguments)
    if found is None:
        return None
    pos, c = found
    if isinstance(c, keras.KerasTensor):
        return None
    if cls in ("Divide", "TrueDivide") and pos == 1:      # c / x: not affine in x
        return None
    table = {
        "Add": lambda k: (tf.ones_like(k), k),
        "Subtract": (lambda k: (tf.ones_like(k), -k)) if pos == 0 else (lambda k: (-tf.ones_like(k), k)),
        "Multiply": lambda k: (k, tf.zeros_like(k)),
        "Divide": lambda k: (1.0 / k, tf.zeros_like(k)),
        "TrueDivide": lambda k: (1.0 / k, tf.zeros_like(k)),
    }
    make = table[cls]
    static = None
    if isinstance(c, (int, float)) and not isinstance(c, bool):
        a_, c_ = make(tf.constant(float(c)))
        static = (float(a_), float(c_))
    return (lambda: make(_as_tensor(c))), _broadcasts_per_channel(c), static


def _constant_weight(cls: str, arguments) -> LinearOp | None:
    """``matmul(x, W)`` / ``einsum(eq, x, W)`` with a fixed ``W`` (a variable or array): a linear layer."""
    args = list(arguments.args)
    if arguments.kwargs or len(arguments.keras_tensors) != 1:
        return None
    if cls == "Matmul" and len(args) == 2 and args[0] is arguments.keras_tensors[0] \
            and len(getattr(args[1], "shape", ())) == 2:
        return LinearOp("dense", None, args[1], None)
    if cls == "Einsum" and len(args) == 3 and isinstance(args[0], str) and "..." not in args[0]:
        spec_in, spec_out = args[0].replace(" ", "").split("->")
        specs = spec_in.split(",")
        if len(specs) != 2:
            return None
        pos = 1 if args[1] is arguments.keras_tensors[0] else 2
        x_spec, w_spec = (specs[0], specs[1]) if pos == 1 else (specs[1], specs[0])
        return LinearOp("einsum", None, args[3 - pos], None, equation=f"{x_spec},{w_spec}->{spec_out}")
    return None


def _attention_attrs(op, arguments) -> dict:
    """Which recorded tensor is the query, key, value (bias, mask) of ``ops.dot_product_attention``."""
    names = ("query", "key", "value", "bias", "mask", "scale")
    bound = dict(zip(names, arguments.args))
    bound.update(arguments.kwargs)
    index = {id(t): j for j, t in enumerate(arguments.keras_tensors)}
    positions = {k: index[id(v)] for k, v in bound.items() if isinstance(v, keras.KerasTensor)}
    return {"positions": positions, "scale": bound.get("scale"), "mask": bound.get("mask"),
            "is_causal": bool(getattr(op, "is_causal", False)),
            "soft_cap": getattr(op, "attn_logits_soft_cap", None)}


_VARIABLE_OPERATORS = {"__add__": "add", "__radd__": "add", "__sub__": "subtract", "__rsub__": "subtract",
                       "__mul__": "multiply", "__rmul__": "multiply", "__truediv__": "divide",
                       "__rtruediv__": "divide", "__matmul__": "matmul", "__rmatmul__": "matmul"}


_VARIABLE_OPERATORS_LOCK = threading.RLock()       # two threads opening layers at once restore in turn


@contextlib.contextmanager
def _variables_meet_symbolic_tensors():
    """While a layer is opened, ``variable * x`` with a symbolic ``x`` records ``ops.multiply(variable, x)``, as
    ``x * variable`` does (Keras's variable operators compute eagerly and fail on symbolic tensors:
    ``self.scale * x`` in a layer's ``call`` kept it from being opened). The variable stays an argument, read
    at run time; with any other operand the operators are Keras's own."""
    cls = keras.Variable

    def operator(name, plain):
        def apply(self, other):
            if isinstance(other, keras.KerasTensor):
                fn = getattr(keras.ops, _VARIABLE_OPERATORS[name])
                return fn(other, self) if name.startswith("__r") else fn(self, other)
            return plain(self, other)
        return apply

    with _VARIABLE_OPERATORS_LOCK:
        saved = {name: cls.__dict__.get(name) for name in _VARIABLE_OPERATORS}
        try:
            for name in _VARIABLE_OPERATORS:
                setattr(cls, name, operator(name, getattr(cls, name)))
            yield
        finally:
            for name, method in saved.items():
                if method is None:
                    delattr(cls, name)
                else:
                    setattr(cls, name, method)


def _plain_attention_call(arguments) -> bool:
    """Whether an ``Attention`` layer was called on ``[query, value(, key)]`` with no masks, returning its output
    only (what ``scored_attention`` reads; other calls are opened or stay opaque)."""
    kwargs = arguments.kwargs
    return len(arguments.keras_tensors) in (2, 3) and kwargs.get("mask") is None and \
        not kwargs.get("return_attention_scores")


def _recorded_nodes(outs, symbolic) -> list | None:
    """The Keras nodes between ``symbolic`` inputs and ``outs``, in execution order; ``None`` if a path
    starts anywhere else (a tensor the layer made without using its inputs)."""
    starts = {id(s) for s in symbolic}
    order, seen, ok = [], set(), [True]

    def visit(t):
        if id(t) in starts:
            return
        history = getattr(t, "_keras_history", None)
        if history is None or history.operation is None:
            ok[0] = False
            return
        node = history.operation._inbound_nodes[history.node_index]
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.arguments.keras_tensors:
            visit(parent)
        order.append(node)

    for o in outs:
        visit(o)
    return order if ok[0] else None


def read_model(model, *, output: int | str | None = None) -> Graph:
    """Read ``model`` into a :class:`Graph` that replays it exactly (no surgery; see ``canonize.py``).

    Parameters
    ----------
    model : keras.Model
        A built Sequential or Functional model (nested models allowed) with one image input.
    output : int or str, optional
        Which output to explain when the model has several (index or output layer name).

    Examples
    --------
    >>> g = read_model(model)
    >>> logits = g.forward(tf.constant(images))
    """
    if not isinstance(model, keras.Model):
        raise ExplainError(f"Expected a keras.Model, got {type(model).__name__}.")
    if not model.built or (isinstance(model, keras.Sequential) and getattr(model, "_functional", None) is None):
        raise ExplainError(f"Model {model.name!r} is not built: call it once on an image batch, or give it an "
                           "Input, before explaining it.")
    if len(model.inputs) != 1:
        raise ExplainError(f"Model {model.name!r} has {len(model.inputs)} inputs; sglrp_widgets explains image "
                           "classifiers with exactly one image input.")
    half = half_precision_layers(model)
    if half:
        raise ExplainError(f"Model {model.name!r} computes in half precision (mixed precision: {len(half)} layers, "
                           f"e.g. {half[0]!r}). Its own outputs are exact to only about 1e-3 per layer, so the "
                           "engine cannot check that it replays the model. Explain a float32 copy with the same "
                           "weights: sglrp_widgets.float32_copy(model).")
    reader = _Reader()
    input_id = reader.new_value()
    outs = reader.walk(model, [input_id], prefix="", top=True)
    out_index = _output_index(model, len(outs), output)
    out_id = outs[out_index]
    shape = tuple(model.inputs[0].shape[1:])
    out_shape = model.outputs[out_index].shape
    return Graph(nodes=reader.nodes, input_id=input_id, output_id=out_id, input_shape=shape,
                 num_classes=int(out_shape[-1]), output_index=out_index, feature_value=reader.feature_value,
                 keras_values=reader.keras_values)


def half_precision_layers(model) -> list[str]:
    """The names of the layers of ``model`` that compute in float16 or bfloat16 (mixed precision)."""
    return [layer.name for layer in model._flatten_layers(include_self=False, recursive=True)
            if getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16")
            and not isinstance(layer, (L.InputLayer, keras.Model))]


def float32_copy(model):
    """A copy of ``model`` that computes in float32, with the same weights: what to explain of a model trained
    with mixed precision (``mixed_float16`` or ``mixed_bfloat16``), whose layers compute in half precision.
    Made once; after training the model further, make a new copy.

    Examples
    --------
    >>> RelevanceExplorer(float32_copy(model), images)
    """
    def in_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    # A Keras without `recursive` clones nested models as they are; read_model then says which layer stays half.
    nested = {"recursive": True} if "recursive" in inspect.signature(keras.models.clone_model).parameters else {}
    copy = keras.models.clone_model(model, clone_function=in_float32, **nested)
    copy.set_weights(model.get_weights())
    return copy


def _output_index(model, count: int, output) -> int:
    names = [t._keras_history[0].name for t in model.outputs]
    if count > 1 and output is None:
        raise ExplainError(f"Model {model.name!r} has {count} outputs ({', '.join(names)}); pass "
                           "output=<index or name> to choose the classifier output to explain.")
    if output is None:
        return 0
    if isinstance(output, str):
        if output not in names:
            raise ExplainError(f"output={output!r} is not an output of the model; outputs are {names}.")
        return names.index(output)
    if isinstance(output, bool) or not isinstance(output, (int, np.integer)) or not 0 <= int(output) < count:
        raise ExplainError(f"output={output!r} is out of range for a model with {count} output(s).")
    return int(output)


def input_signature_check(graph: Graph, images: np.ndarray) -> None:
    """Raise a clear error when ``images`` cannot be fed to the model."""
    expected = graph.input_shape
    if images.ndim != len(expected) + 1:
        raise ExplainError(f"images must have shape (N, {', '.join(str(d) for d in expected)}) - a batch of "
                           f"images; got an array of shape {images.shape}. For one image use images[None].")
    for got, want in zip(images.shape[1:], expected):
        if want is not None and got != want:
            raise ExplainError(f"images have shape {images.shape}, but the model expects "
                               f"(N, {', '.join(str(d) for d in expected)}).")


# ---- replay fidelity ------------------------------------------------------------------------------------

#: Replayed and model values agree when |replay - model| <= REPLAY_RTOL * max|model| + REPLAY_ATOL.
REPLAY_RTOL, REPLAY_ATOL = 1e-3, 1e-5


def _agree(got: np.ndarray, want: np.ndarray) -> bool:
    if got.shape != want.shape:
        return False
    return bool(np.all(np.abs(got - want) <= REPLAY_RTOL * np.max(np.abs(want), initial=0.0) + REPLAY_ATOL))


def model_outputs(model, x: np.ndarray) -> list:
    """The model's own outputs for ``x`` (inference mode), flattened: what the replay must reproduce."""
    return [np.asarray(o) for o in keras.tree.flatten(model(_as_model_input(model, x), training=False))]


def replay_mismatch(model, graph: Graph, x: np.ndarray, logits: np.ndarray, output=None,
                    outputs: list | None = None) -> str | None:
    """``None`` when the graph's ``logits`` for ``x`` are the model's (``outputs``, computed here when not
    given); else a sentence naming the first layer whose output differs. With the final softmax removed,
    log-probabilities are compared (where the model's probability is not 0), which still sees every logit up
    to the shift softmax ignores."""
    outs = model_outputs(model, x) if outputs is None else outputs
    want = np.asarray(outs[graph.output_index], np.float64)
    got = logits.astype(np.float64)
    if graph.softmax_removed:
        got = got - got.max(-1, keepdims=True)
        got = got - np.log(np.exp(got).sum(-1, keepdims=True))
        seen = want > 1e-30
        want = np.where(seen, np.log(np.where(seen, want, 1.0)), got)
    if _agree(got, want):
        return None
    return (f"The engine's replay of model {model.name!r} does not compute the model's function "
            f"({_first_difference(model, graph, x)}), so its explanations would describe another function. "
            "Please report this model; gradient methods on the model itself are unaffected by this check.")


def _as_model_input(model, x):
    """``x`` in the structure the model was built with (a one-element list for some applications)."""
    try:
        structure = model.input
    except (AttributeError, ValueError):        # a Sequential model built but never called
        return x
    return [x] if isinstance(structure, (list, tuple)) else x


def _agree_where_finite(got: np.ndarray, want: np.ndarray) -> bool:
    """``_agree``, where a random probe may leave a layer's domain (``log`` of a negative value): the same
    values wherever they are finite, and NaN or infinity at the same places."""
    finite = np.isfinite(want)
    return got.shape == want.shape and np.array_equal(finite, np.isfinite(got)) and \
        _agree(np.where(finite, got, 0.0), np.where(finite, want, 0.0))


def _first_difference(model, graph: Graph, x: np.ndarray) -> str:
    """Where the replay first parts from the model, comparing every top-level layer output."""
    keep = [(v, t) for v, t in graph.keras_values.items() if v in graph.producer()]
    try:
        probe = keras.Model(model.inputs, [t for _, t in keep])
        wanted = [np.asarray(a) for a in keras.tree.flatten(probe(_as_model_input(probe, x), training=False))]
        _, values = graph.forward(tf.constant(x), keep=True)
    except Exception as exc:                 # noqa: BLE001 - the diagnosis is best effort
        return f"the layers could not be compared: {exc}"
    order = {node.output: i for i, node in enumerate(graph.nodes)}
    for (v, t), want in sorted(zip(keep, wanted), key=lambda item: order[item[0][0]]):
        if not _agree(np.asarray(values[v]), want):
            layer = t._keras_history.operation
            return f"first difference at the output of layer {layer.name!r} ({type(layer).__name__})"
    return "the logits differ although every layer's output agrees"

"""Read a Keras 3 model into an ordered list of layer applications.

Pure model surgery, no relevance rules: nested models are flattened, built-in activations are split off
their linear layers, a final softmax is removed and BatchNormalization directly after a linear layer is
folded into it. The resulting :class:`Graph` can be replayed inside a ``tf.function``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from .errors import ExplainError, UnsupportedLayerError

L = keras.layers

# Layers that only move values around: relevance is routed unchanged (through their gradient).
_ROUTING = (
    L.Flatten, L.Reshape, L.Permute, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
    L.Cropping1D, L.Cropping2D, L.Cropping3D, L.Concatenate, L.Identity, L.ActivityRegularization,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.RepeatVector,
)
# Layers whose relevance goes to the winning input (the gradient).
_MAX_POOLING = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
                L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D)
_AVG_POOLING = (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
                L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D)
_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
_RELU_NAMES = {"relu"}


@dataclass
class LinearOp:
    """``z = apply(x, kernel, bias)``: a layer's linear part, with BatchNorm folding."""

    kind: str                       # "dense", "conv", "depthwise"
    layer: Any
    kernel_var: Any
    bias_var: Any | None
    strides: tuple = ()
    padding: str = "VALID"
    dilations: tuple = ()
    bn: Any | None = None           # a folded BatchNormalization layer
    depthwise_part: bool = False    # SeparableConv: the depthwise half

    @property
    def family(self) -> str:
        """``"dense"`` or ``"conv"``: the column the composites tables use."""
        return "dense" if self.kind == "dense" else "conv"

    def params(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Current (kernel, bias) with any BatchNorm folded in; bias is zeros when the layer has none."""
        kernel = tf.convert_to_tensor(self.kernel_var)
        out_ch = kernel.shape[-1] if self.kind != "depthwise" else kernel.shape[-2] * kernel.shape[-1]
        bias = tf.convert_to_tensor(self.bias_var) if self.bias_var is not None else tf.zeros([out_ch], kernel.dtype)
        if self.bn is not None:
            scale, shift = batchnorm_affine(self.bn)
            if self.kind == "depthwise":
                kernel = kernel * tf.reshape(scale, kernel.shape[-2:])
            else:
                kernel = kernel * scale
            bias = bias * scale + shift
        return kernel, bias

    def apply(self, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None = None) -> tf.Tensor:
        """Apply the linear map with the given (possibly modified) kernel and optional bias."""
        if self.kind == "dense":
            z = tf.tensordot(x, kernel, axes=[[x.shape.rank - 1], [0]])
        elif self.kind == "conv":
            z = tf.nn.convolution(x, kernel, strides=self.strides, padding=self.padding, dilations=self.dilations)
        else:
            z = tf.nn.depthwise_conv2d(x, kernel, strides=(1, *self.strides, 1), padding=self.padding,
                                       dilations=self.dilations)
        if bias is not None:
            z = z + bias
        return z


@dataclass
class Node:
    """One layer application: ``outputs = forward(inputs)``.

    ``kind`` is one of ``linear`` (a rule applies), ``pool`` (average pooling, fixed weights),
    ``elementwise`` (an unfolded BatchNorm or Rescaling: ``y = a x + c``), ``activation``,
    ``route`` (relevance follows the gradient: reshaping, padding, max pooling, concatenation),
    ``add`` and ``opaque`` (a layer without any rule: only gradient methods can pass it).
    """

    kind: str
    name: str
    layer: Any
    inputs: list[int]
    output: int
    op: LinearOp | None = None
    fn: Callable | None = None                  # forward for non-linear kinds
    activation: str = ""                        # function name, for kind "activation"
    scale_shift: Callable | None = None         # for kind "elementwise": returns (a, c)

    @property
    def class_name(self) -> str:
        return type(self.layer).__name__ if self.layer is not None else self.kind


@dataclass
class Graph:
    """A model as an ordered list of :class:`Node` over integer value ids."""

    nodes: list[Node]
    input_id: int
    output_id: int
    input_shape: tuple
    num_classes: int
    softmax_removed: bool = False
    first_linear: set = field(default_factory=set)     # node indices of the first linear layers
    relu_followed: set = field(default_factory=set)    # node indices of linear layers followed by a ReLU
    feature_value: dict = field(default_factory=dict)  # layer name -> value id of its (activated) output

    def consumers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for v in node.inputs:
                out.setdefault(v, []).append(i)
        return out

    def producer(self) -> dict[int, int]:
        return {node.output: i for i, node in enumerate(self.nodes)}

    def opaque_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "opaque"]

    def forward(self, x: tf.Tensor, linear_params: Callable[[int, Node], tuple] | None = None,
                activation_fn: Callable[[Node, tf.Tensor], tf.Tensor] | None = None,
                keep: bool = False):
        """Replay the model on ``x``; returns the logits (and every value when ``keep``).

        ``linear_params(i, node)`` gives the (kernel, bias) to use for linear node ``i`` (default: the
        layer's current, folded weights); ``activation_fn`` replaces the activation of activation nodes.
        """
        values = {self.input_id: x}
        for i, node in enumerate(self.nodes):
            ins = [values[v] for v in node.inputs]
            if node.kind == "linear":
                kernel, bias = linear_params(i, node) if linear_params else node.op.params()
                out = node.op.apply(ins[0], kernel, bias)
            elif node.kind == "activation" and activation_fn is not None:
                out = activation_fn(node, ins[0])
            elif node.kind == "add":
                out = tf.add_n(ins) if node.fn is None else node.fn(ins)
            elif node.kind == "elementwise":
                a, c = node.scale_shift()
                out = ins[0] * a + c
            else:
                out = node.fn(ins[0] if len(ins) == 1 else ins)
            values[node.output] = out
        return (values[self.output_id], values) if keep else values[self.output_id]


def batchnorm_affine(bn) -> tuple[tf.Tensor, tf.Tensor]:
    """BatchNormalization at inference as ``y = x * scale + shift`` (per channel)."""
    var = tf.convert_to_tensor(bn.moving_variance)
    mean = tf.convert_to_tensor(bn.moving_mean)
    scale = tf.math.rsqrt(var + bn.epsilon)
    if bn.scale:
        scale = scale * tf.convert_to_tensor(bn.gamma)
    shift = -mean * scale
    if bn.center:
        shift = shift + tf.convert_to_tensor(bn.beta)
    return scale, shift


def _activation_name(fn) -> str:
    name = getattr(fn, "__name__", type(fn).__name__)
    return "linear" if name in ("linear", "identity") else name


def _call(layer):
    def fn(x):
        return layer(x, training=False) if _accepts_training(layer) else layer(x)
    return fn


def _accepts_training(layer) -> bool:
    import inspect
    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def _padding(layer) -> str:
    pad = layer.padding.upper()
    if pad not in ("SAME", "VALID"):
        raise UnsupportedLayerError(
            f"Layer {layer.name!r} ({type(layer).__name__}) uses padding={layer.padding!r}; "
            "only 'same' and 'valid' are supported.", layer.name, type(layer).__name__)
    return pad


class _Reader:
    def __init__(self):
        self.nodes: list[Node] = []
        self.next_id = 0
        self.feature_value: dict[str, int] = {}

    def new_value(self) -> int:
        self.next_id += 1
        return self.next_id

    def add(self, kind, name, layer, inputs, **kw) -> int:
        out = self.new_value()
        self.nodes.append(Node(kind=kind, name=name, layer=layer, inputs=list(inputs), output=out, **kw))
        return out

    # -- models -------------------------------------------------------------------------------
    def walk(self, model, in_ids: list[int], prefix: str) -> list[int]:
        if isinstance(model, keras.Sequential):
            ids = in_ids
            for layer in model.layers:
                ids = self.apply(layer, ids, prefix)
            return ids
        if not hasattr(model, "_nodes_by_depth"):
            raise ExplainError(f"Model {model.name!r} ({type(model).__name__}) is a subclassed model; "
                               "build it as a Sequential or Functional model to explain it.")
        if len(model.inputs) != len(in_ids):
            raise ExplainError(f"Model {model.name!r} has {len(model.inputs)} inputs; sglrp_widgets explains "
                               "image classifiers with exactly one image input.")
        env = {id(t): v for t, v in zip(model.inputs, in_ids)}
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for knode in model._nodes_by_depth[depth]:
                op = knode.operation
                if isinstance(op, L.InputLayer):
                    continue
                ins = [env[id(t)] for t in knode.input_tensors]
                outs = self.apply(op, ins, prefix)
                for t, v in zip(knode.output_tensors, outs):
                    env[id(t)] = v
        return [env[id(t)] for t in model.outputs]

    # -- layers -------------------------------------------------------------------------------
    def apply(self, layer, ins: list[int], prefix: str) -> list[int]:
        name = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            return self.walk(layer, ins, prefix=f"{name}/")
        if isinstance(layer, L.InputLayer):
            return ins
        out = self._apply_layer(layer, ins, name)
        self.feature_value[name] = out
        if prefix and layer.name not in self.feature_value:
            self.feature_value[layer.name] = out
        return [out]

    def _linear(self, layer, ins, name, op) -> int:
        out = self.add("linear", name, layer, ins, op=op)
        act = _activation_name(layer.activation)
        if act != "linear":
            out = self.add("activation", name, layer, [out], fn=layer.activation, activation=act)
        return out

    def _apply_layer(self, layer, ins, name) -> int:
        cls = type(layer).__name__
        if isinstance(layer, L.Dense):
            return self._linear(layer, ins, name, LinearOp("dense", layer, layer.kernel, layer.bias))
        if isinstance(layer, L.SeparableConv2D):
            self._check_conv(layer)
            dw = LinearOp("depthwise", layer, layer.depthwise_kernel, None, strides=tuple(layer.strides),
                          padding=_padding(layer), dilations=tuple(layer.dilation_rate), depthwise_part=True)
            mid = self.add("linear", f"{name}[depthwise]", layer, ins, op=dw)
            pw = LinearOp("conv", layer, layer.pointwise_kernel, layer.bias, strides=(1, 1), padding="VALID",
                          dilations=(1, 1))
            return self._linear(layer, [mid], name, pw)
        if isinstance(layer, L.DepthwiseConv2D):
            self._check_conv(layer)
            op = LinearOp("depthwise", layer, layer.kernel, layer.bias, strides=tuple(layer.strides),
                          padding=_padding(layer), dilations=tuple(layer.dilation_rate))
            return self._linear(layer, ins, name, op)
        if isinstance(layer, _CONV):
            self._check_conv(layer)
            if getattr(layer, "groups", 1) != 1:
                raise UnsupportedLayerError(f"Layer {name!r} ({cls}) uses groups={layer.groups}; grouped "
                                            "convolutions are not supported.", name, cls)
            op = LinearOp("conv", layer, layer.kernel, layer.bias, strides=tuple(layer.strides),
                          padding=_padding(layer), dilations=tuple(layer.dilation_rate))
            return self._linear(layer, ins, name, op)
        if isinstance(layer, L.BatchNormalization):
            return self.add("elementwise", name, layer, ins, scale_shift=lambda bn=layer: batchnorm_affine(bn))
        if isinstance(layer, L.Rescaling):
            return self.add("elementwise", name, layer, ins,
                            scale_shift=lambda r=layer: (tf.constant(r.scale, tf.float32),
                                                         tf.constant(r.offset, tf.float32)))
        if isinstance(layer, L.Activation):
            return self.add("activation", name, layer, ins, fn=layer.activation,
                            activation=_activation_name(layer.activation))
        if isinstance(layer, L.Softmax):
            return self.add("activation", name, layer, ins, fn=_call(layer), activation="softmax")
        if isinstance(layer, L.ReLU):
            return self.add("activation", name, layer, ins, fn=_call(layer), activation="relu")
        if isinstance(layer, (L.LeakyReLU, L.ELU, L.PReLU)):
            return self.add("activation", name, layer, ins, fn=_call(layer), activation=cls.lower())
        if isinstance(layer, _AVG_POOLING):
            return self.add("pool", name, layer, ins, fn=_call(layer))
        if isinstance(layer, _MAX_POOLING + _ROUTING):
            return self.add("route", name, layer, ins, fn=_call(layer))
        if isinstance(layer, (L.Add, L.Average)) or cls == "Add" and type(layer).__module__.endswith("ops.numpy"):
            fn = None if not isinstance(layer, L.Average) else (lambda xs: tf.add_n(xs) / len(xs))
            return self.add("add", name, layer, ins, fn=fn)
        return self.add("opaque", name, layer, ins, fn=_call(layer) if isinstance(layer, L.Layer) else
                        (lambda xs, op=layer: op(*xs) if isinstance(xs, list) else op(xs)))

    @staticmethod
    def _check_conv(layer):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise UnsupportedLayerError(
                f"Layer {layer.name!r} ({type(layer).__name__}) uses data_format={layer.data_format!r}; "
                "only 'channels_last' is supported.", layer.name, type(layer).__name__)


def read_model(model, *, fold_batchnorm: bool = True, output: int | str | None = None) -> Graph:
    """Read ``model`` into a :class:`Graph`.

    Parameters
    ----------
    model : keras.Model
        A built Sequential or Functional model (nested models allowed) with one image input.
    fold_batchnorm : bool
        Fold BatchNormalization that directly follows a linear layer into it.
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
    reader = _Reader()
    input_id = reader.new_value()
    outs = reader.walk(model, [input_id], prefix="")
    if len(outs) > 1:
        names = [getattr(t, "name", str(i)) for i, t in enumerate(model.outputs)]
        if output is None:
            raise ExplainError(f"Model {model.name!r} has {len(outs)} outputs ({', '.join(names)}); pass "
                               "output=<index or name> to choose the classifier output to explain.")
        if isinstance(output, str):
            layer_names = [t._keras_history[0].name for t in model.outputs]
            if output not in layer_names:
                raise ExplainError(f"output={output!r} is not an output of the model; outputs are {layer_names}.")
            output = layer_names.index(output)
        if not 0 <= int(output) < len(outs):
            raise ExplainError(f"output={output} is out of range for a model with {len(outs)} outputs.")
        out_id = outs[int(output)]
    else:
        if output not in (None, 0, model.outputs[0]._keras_history[0].name):
            raise ExplainError(f"output={output!r} does not name the model's only output.")
        out_id = outs[0]

    nodes = reader.nodes
    producer = {n.output: i for i, n in enumerate(nodes)}
    # Remove a final softmax.
    softmax_removed = False
    last = producer.get(out_id)
    if last is not None and nodes[last].kind == "activation" and nodes[last].activation == "softmax":
        out_id = nodes[last].inputs[0]
        softmax_removed = True
    nodes = _prune(nodes, out_id)
    if fold_batchnorm:
        nodes = _fold_batchnorm(nodes)
    shape = tuple(model.inputs[0].shape[1:])
    out_shape = model.outputs[0].shape if len(model.outputs) == 1 else model.outputs[int(output)].shape
    graph = Graph(nodes=nodes, input_id=input_id, output_id=out_id, input_shape=shape,
                  num_classes=int(out_shape[-1]), softmax_removed=softmax_removed,
                  feature_value=reader.feature_value)
    _classify(graph)
    return graph


def _prune(nodes: list[Node], out_id: int) -> list[Node]:
    """Keep only the nodes that the output depends on."""
    needed = {out_id}
    keep = []
    for node in reversed(nodes):
        if node.output in needed:
            keep.append(node)
            needed.update(node.inputs)
    return keep[::-1]


def _fold_batchnorm(nodes: list[Node]) -> list[Node]:
    producer = {n.output: i for i, n in enumerate(nodes)}
    uses: dict[int, int] = {}
    for n in nodes:
        for v in n.inputs:
            uses[v] = uses.get(v, 0) + 1
    drop = set()
    for i, node in enumerate(nodes):
        if node.kind != "elementwise" or not isinstance(node.layer, L.BatchNormalization):
            continue
        if not _normalizes_last_axis(node.layer):
            continue
        src = producer.get(node.inputs[0])
        if src is None or nodes[src].kind != "linear" or nodes[src].op.bn is not None:
            continue
        if uses.get(node.inputs[0], 0) != 1:
            continue
        lin = nodes[src]
        lin.op = LinearOp(**{**lin.op.__dict__, "bn": node.layer})
        lin.output = node.output
        drop.add(i)
    return [n for i, n in enumerate(nodes) if i not in drop]


def _normalizes_last_axis(bn) -> bool:
    axis = bn.axis[0] if isinstance(bn.axis, (list, tuple)) and len(bn.axis) == 1 else bn.axis
    if axis == -1:
        return True
    try:
        return axis == len(bn.input.shape) - 1
    except (AttributeError, ValueError):
        return False


def _classify(graph: Graph) -> None:
    """Find the first linear layers and the linear layers followed by a ReLU."""
    producer = graph.producer()
    consumers = graph.consumers()
    for i, node in enumerate(graph.nodes):
        if node.kind != "linear":
            continue
        v = node.inputs[0]
        while v != graph.input_id:
            p = producer.get(v)
            if p is None or graph.nodes[p].kind != "route" or len(graph.nodes[p].inputs) != 1 \
                    or isinstance(graph.nodes[p].layer, _MAX_POOLING):
                break
            v = graph.nodes[p].inputs[0]
        if v == graph.input_id:
            graph.first_linear.add(i)
        if any(graph.nodes[c].kind == "activation" and graph.nodes[c].activation in _RELU_NAMES
               for c in consumers.get(node.output, [])):
            graph.relu_followed.add(i)


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

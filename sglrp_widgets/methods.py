"""The method catalogue: every method with its parameters, in one registry.

Each entry declares its parameters (name, type, default, range or choices, help) so that the API validates
them and the widget builds its controls from them. An LRP method is a head and a composite (data); a
gradient or CAM method carries its own code, a function ``compute(toolbox, x, targets, params)`` over the
gradient back end's toolbox (``gradient.py``). Adding a method is adding one entry to ``METHODS``.

Reading the registry needs no TensorFlow (the CLI's ``methods``, a DatasetExplorer browsing a store): the
functions that compute import it when they run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ExplainError, suggest


@dataclass(frozen=True)
class Param:
    name: str
    type: str                      # "float", "int", "bool", "choice", "str", "bounds"
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "default": self.default, "min": self.min,
                "max": self.max, "choices": list(self.choices) if self.choices else None, "help": self.help}


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    family: str                    # "Contrastive LRP", "LRP", "Gradient", "CAM"
    description: str
    kind: str                      # "lrp", "gradient", "cam"
    composite: str | None = None   # for kind "lrp"
    head: str = "logit"            # "logit", "sglrp", "clrp", "softmax_gradient"
    params: tuple[Param, ...] = field(default=())
    compute: Callable | None = None  # gradient/CAM: (toolbox, x rows, targets (rows, 1), params) -> rel, z, t
    never_negative: bool = False     # its maps have no negative values (a colour bar can start at 0)

    @property
    def uses_bounds(self) -> bool:
        return any(p.name == "low" for p in self.params)

    def why_never_negative(self, params: dict | None = None) -> str:
        """Why this method's maps with ``params`` have no negative part, in words ('' when they may have one):
        their colour bars start at 0 in the widget, its figures and the CLI's."""
        if self.never_negative:
            return f"{self.label} maps are never negative"
        if (params or {}).get("relu"):
            return "relu keeps only the positive part of the map"
        return ""

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "family": self.family, "description": self.description,
                "params": [p.to_dict() for p in self.params], "never_negative": self.never_negative}


RELU = Param("relu", "bool", False, "Keep only the positive part of the map.")
LOW = Param("low", "bounds", None, "Lowest input value for the z_box rule (number or one per channel); "
            "default: preprocess(0) when a preprocess function is given, else the batch minimum.")
HIGH = Param("high", "bounds", None, "Highest input value for the z_box rule (number or one per channel); "
             "default: preprocess(255) when a preprocess function is given, else the batch maximum.")
SCALE = Param("scaling", "bool", True, "Scale the dual map so the result sums to about zero (the seeds' scaling).")
CAM_LAYER = Param("layer", "str", None, "Name of the convolutional layer to take the CAM from "
                  "(default: the last convolutional layer, after its BatchNorm/activation).")


def _eps(default: float) -> Param:
    return Param("epsilon", "float", default, "Stabilizer added to the denominators of the epsilon rule.",
                 min=0.0, max=1e3)


def _lrp(name, label, description, *, params=(), family="LRP", head="logit", composite=None) -> Method:
    return Method(name, label, family, description, "lrp", composite or name, head, tuple(params) + (RELU,))


# ---- gradient and CAM methods: each one's code ------------------------------------------------------------
# ``m`` is the gradient back end's toolbox; ``x`` holds one row per (image, target) pair, ``t`` the targets
# (rows, 1; negative = rank among the top classes). Each returns (relevance, logits, resolved targets).

def _gradient(m, x, t, p):
    g = m.gradient(x, t)
    return g.grad, g.logits, g.targets


def _input_x_gradient(m, x, t, p):
    g = m.gradient(x, t)
    return x * g.grad, g.logits, g.targets


def _guided_backprop(m, x, t, p):
    g = m.gradient(x, t, relu="guided")
    return g.grad, g.logits, g.targets


def _deconvnet(m, x, t, p):
    g = m.gradient(x, t, relu="deconvnet")
    return g.grad, g.logits, g.targets


def _smoothgrad(m, x, t, p):
    import tensorflow as tf

    axes = tf.range(1, tf.rank(x))
    sigma = p["noise"] * (tf.reduce_max(x, axis=axes, keepdims=True) - tf.reduce_min(x, axis=axes, keepdims=True))
    logits = m.logits(x)
    tt = m.resolve(logits, t)                    # targets are resolved on the clean image

    def add_sample(i, total):
        # One noise draw per sample, shared by every row: an image's map does not depend on the batch.
        noise = tf.random.stateless_normal(tf.concat([[1], tf.shape(x)[1:]], 0), seed=tf.stack([p["seed"], i]))
        return total + m.gradient(x + sigma * noise, tt).grad

    return _sum_over(0, p["n"], add_sample, tf.zeros_like(x)) / float(p["n"]), logits, tt


def _integrated_gradients(m, x, t, p):
    import tensorflow as tf

    base = tf.fill(tf.shape(x), tf.cast(p["baseline"], x.dtype))
    logits = m.logits(x)
    tt = m.resolve(logits, t)

    def add_step(i, total):                      # the right Riemann sum, alpha = i / steps
        alpha = tf.cast(i, x.dtype) / float(p["steps"])
        return total + m.gradient(base + alpha * (x - base), tt).grad

    total = _sum_over(1, p["steps"] + 1, add_step, tf.zeros_like(x))
    return (x - base) * total / float(p["steps"]), logits, tt


def _sum_over(start: int, stop: int, add, total):
    """``total = add(i, total)`` for ``i`` in ``range(start, stop)``, as one graph loop when traced (the loop
    body is traced once, not ``stop - start`` times) and as a Python loop when run eagerly."""
    import tensorflow as tf

    _, total = tf.while_loop(lambda i, _: i < stop, lambda i, total: (i + 1, add(i, total)),
                             (tf.constant(start), total))
    return total


def _cam_map(m, x, t, weights_of):
    """ReLU(sum_c w_c A_c) at the feature map, upsampled bilinearly to the input: (rows, H, W, 1)."""
    import tensorflow as tf

    g = m.gradient(x, t, at_feature=True)
    if g.feature.shape.rank != 4:
        raise ExplainError(f"CAM methods need a 2-D feature map (N, h, w, c); the chosen layer gives shape "
                           f"{g.feature.shape}.")
    cam = tf.nn.relu(tf.reduce_sum(weights_of(g.grad, g.feature) * g.feature, axis=-1, keepdims=True))
    return tf.image.resize(cam, tf.shape(x)[1:3], method="bilinear"), g.logits, g.targets


def _cam(weights_of):
    """A CAM method from its channel weighting; the map is spread over the channels as ``cam / C``."""
    def compute(m, x, t, p):
        import tensorflow as tf

        cam, logits, tt = _cam_map(m, x, t, weights_of)
        return tf.broadcast_to(cam / tf.cast(tf.shape(x)[-1], x.dtype), tf.shape(x)), logits, tt
    return compute


def _mean_gradient(g, a):
    import tensorflow as tf

    return tf.reduce_mean(g, axis=(1, 2), keepdims=True)


def _plus_plus_weights(g, a):
    import tensorflow as tf

    g2, g3 = g * g, g * g * g
    alpha = tf.math.divide_no_nan(g2, 2.0 * g2 + tf.reduce_sum(a, axis=(1, 2), keepdims=True) * g3)
    return tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2), keepdims=True)


def _guided_grad_cam(m, x, t, p):
    cam, logits, tt = _cam_map(m, x, t, _mean_gradient)
    return cam * m.gradient(x, tt, relu="guided").grad, logits, tt


METHODS: dict[str, Method] = {m.name: m for m in [
    _lrp("sglrp", "SGLRP", "Softmax-Gradient LRP: bounded Deep Taylor from the softmax gradient, minus the "
         "scaled relevance of all other classes.", family="Contrastive LRP", head="sglrp",
         composite="deep_taylor.bounded", params=(LOW, HIGH, SCALE)),
    _lrp("clrp", "CLRP", "Contrastive LRP: the target logit's map minus the scaled map of the target logit "
         "spread over all other classes.", family="Contrastive LRP", head="clrp",
         composite="deep_taylor.bounded", params=(LOW, HIGH, SCALE)),
    _lrp("sglrp.sequential_a", "SGLRP (preset A, flat)", "Signed softmax gradient propagated with "
         "LRP sequential preset A (flat first layer).", family="Contrastive LRP", head="softmax_gradient",
         composite="lrp.sequential_preset_a_flat", params=(_eps(0.1),)),
    _lrp("sglrp.sequential_b", "SGLRP (preset B, flat)", "Signed softmax gradient propagated with "
         "LRP sequential preset B (flat first layer).", family="Contrastive LRP", head="softmax_gradient",
         composite="lrp.sequential_preset_b_flat", params=(_eps(0.1),)),
    _lrp("lrp", "LRP (Deep Taylor, bounded)", "The target logit propagated with bounded Deep Taylor "
         "(z_box on the first layer, z+ elsewhere): the SGLRP paper's LRP.", composite="deep_taylor.bounded",
         params=(LOW, HIGH)),
    _lrp("deep_taylor", "Deep Taylor", "Deep Taylor decomposition for unbounded inputs: z+ everywhere."),
    _lrp("deep_taylor.bounded", "Deep Taylor (bounded)", "Deep Taylor with the z_box rule on the first layer.",
         params=(LOW, HIGH)),
    _lrp("lrp.z", "LRP-z", "The basic z rule everywhere (bias included)."),
    _lrp("lrp.epsilon", "LRP-ε", "The epsilon rule everywhere.", params=(_eps(1e-7),)),
    _lrp("lrp.w_square", "LRP-w²", "The w² rule everywhere (input independent)."),
    _lrp("lrp.flat", "LRP-flat", "The flat rule everywhere (input independent)."),
    _lrp("lrp.alpha_2_beta_1", "LRP-α2β1", "alpha=2, beta=1 everywhere (bias kept)."),
    _lrp("lrp.alpha_1_beta_0", "LRP-α1β0", "alpha=1, beta=0 everywhere (bias kept)."),
    _lrp("lrp.z_plus", "LRP-z+", "The z+ rule everywhere."),
    _lrp("lrp.sequential_preset_a", "LRP preset A", "Dense: epsilon; conv: alpha=1, beta=0.",
         params=(_eps(0.1),)),
    _lrp("lrp.sequential_preset_b", "LRP preset B", "Dense: epsilon; conv: alpha=2, beta=1.",
         params=(_eps(0.1),)),
    _lrp("lrp.sequential_preset_a_flat", "LRP preset A (flat)", "Preset A with the flat rule on the first "
         "layer.", params=(_eps(0.1),)),
    _lrp("lrp.sequential_preset_b_flat", "LRP preset B (flat)", "Preset B with the flat rule on the first "
         "layer.", params=(_eps(0.1),)),
    _lrp("lrp.epsilon_plus_flat", "LRP ε+♭", "flat on the first layer, z+ on conv, epsilon on dense.",
         params=(_eps(1e-6),)),
    _lrp("lrp.epsilon_gamma_box", "LRP ε-γ-box", "z_box on the first layer, gamma on conv, epsilon on dense.",
         params=(LOW, HIGH, _eps(1e-6), Param("gamma", "float", 0.25, "Weight of the positive part in the "
                                                "gamma rule.", min=0.0, max=100.0))),
    Method("gradient", "Gradient", "Gradient", "The gradient of the target logit with respect to the input.",
           "gradient", params=(RELU,), compute=_gradient),
    Method("input_x_gradient", "Input × Gradient", "Gradient", "Input times the gradient of the target logit.",
           "gradient", params=(RELU,), compute=_input_x_gradient),
    Method("guided_backprop", "Guided Backprop", "Gradient", "Gradient with ReLUs passing only positive "
           "gradients at positive inputs.", "gradient", params=(RELU,), compute=_guided_backprop),
    Method("deconvnet", "Deconvnet", "Gradient", "Gradient with ReLUs applied to the backward signal.",
           "gradient", params=(RELU,), compute=_deconvnet),
    Method("smoothgrad", "SmoothGrad", "Gradient", "Mean gradient over noisy copies of the input.", "gradient",
           params=(Param("n", "int", 32, "Number of noisy samples.", min=1, max=1024),
                   Param("noise", "float", 0.1, "Noise standard deviation as a fraction of each image's "
                         "value range.", min=0.0, max=10.0),
                   Param("seed", "int", 0, "Random seed of the noise.", min=0, max=2**31 - 1), RELU),
           compute=_smoothgrad),
    Method("integrated_gradients", "Integrated Gradients", "Gradient", "Path integral of the gradient from a "
           "baseline to the input, times (input - baseline).", "gradient",
           params=(Param("steps", "int", 32, "Number of Riemann steps.", min=1, max=1024),
                   Param("baseline", "float", 0.0, "Constant baseline value.", min=-1e6, max=1e6), RELU),
           compute=_integrated_gradients),
    Method("grad_cam", "Grad-CAM", "CAM", "Feature maps weighted by their mean gradient, then a ReLU as in the "
           "paper (maps are never negative), upsampled bilinearly.", "cam", params=(CAM_LAYER, RELU),
           compute=_cam(_mean_gradient), never_negative=True),
    Method("grad_cam_plus_plus", "Grad-CAM++", "CAM", "Grad-CAM with pixel-wise weights from second and third "
           "order terms; ReLU'd like Grad-CAM.", "cam", params=(CAM_LAYER, RELU),
           compute=_cam(_plus_plus_weights), never_negative=True),
    Method("guided_grad_cam", "Guided Grad-CAM", "CAM", "Upsampled Grad-CAM times guided backprop.", "cam",
           params=(CAM_LAYER, RELU), compute=_guided_grad_cam),
]}


def list_methods() -> list[dict]:
    """Every method with its name, label, family, description, parameters and ``never_negative``.

    Examples
    --------
    >>> [m["name"] for m in list_methods()][:3]
    ['sglrp', 'clrp', 'sglrp.sequential_a']
    """
    return [m.to_dict() for m in METHODS.values()]


def get_method(name: str) -> Method:
    if not isinstance(name, str) or name not in METHODS:
        raise ExplainError(f"Unknown method {name!r}. Valid methods: {', '.join(METHODS)}."
                           f"{suggest(str(name), METHODS)}")
    return METHODS[name]


def _coerce(method: str, p: Param, value):
    where = f"Parameter {p.name!r} of method {method!r}"
    if p.type == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
            return bool(value)
        raise ExplainError(f"{where} must be true or false, got {value!r}.")
    if p.type == "str":
        if value is None or isinstance(value, str):
            return value or None
        raise ExplainError(f"{where} must be a string, got {value!r}.")
    if p.type == "bounds":
        if value is None or (isinstance(value, str) and value.strip() == ""):
            return None
        try:
            import numpy as np
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ExplainError(f"{where} must be a number or one number per channel, got {value!r}.") from None
        if arr.ndim > 1 or not np.all(np.isfinite(arr)):
            raise ExplainError(f"{where} must be a finite number or one number per channel, got {value!r}.")
        return float(arr) if arr.ndim == 0 else tuple(float(v) for v in arr)
    if p.type in ("float", "int"):
        if isinstance(value, bool):
            raise ExplainError(f"{where} must be a number, got {value!r}.")
        try:
            num = float(value)
        except (TypeError, ValueError):
            raise ExplainError(f"{where} must be a number, got {value!r}.") from None
        if num != num or num in (float("inf"), float("-inf")):
            raise ExplainError(f"{where} must be finite, got {value!r}.")
        if p.type == "int":
            if num != int(num):
                raise ExplainError(f"{where} must be an integer, got {value!r}.")
            num = int(num)
        if (p.min is not None and num < p.min) or (p.max is not None and num > p.max):
            raise ExplainError(f"{where} must be in [{p.min}, {p.max}], got {value!r}.")
        return num
    if p.type == "choice":
        if value not in p.choices:
            raise ExplainError(f"{where} must be one of {list(p.choices)}, got {value!r}.")
        return value
    raise AssertionError(p.type)


def validate_params(method: str, params: dict | None = None) -> dict:
    """Check ``params`` against the registry; return every parameter of ``method`` with defaults filled in.

    Examples
    --------
    >>> validate_params("lrp.epsilon", {"epsilon": 0.1})
    {'epsilon': 0.1, 'relu': False}
    """
    m = get_method(method)
    params = dict(params or {})
    known = {p.name: p for p in m.params}
    for key in params:
        if key not in known:
            raise ExplainError(f"Unknown parameter {key!r} for method {method!r}. Valid parameters: "
                               f"{', '.join(known) or 'none'}.{suggest(key, known)}")
    out = {p.name: (_coerce(method, p, params[p.name]) if p.name in params else p.default) for p in m.params}
    low, high = out.get("low"), out.get("high")
    if low is not None and high is not None:
        import numpy as np
        lo, hi = np.broadcast_arrays(np.asarray(low), np.asarray(high))
        if not np.all(lo < hi):
            raise ExplainError(f"low must be smaller than high, got low={low!r}, high={high!r}.")
    return out

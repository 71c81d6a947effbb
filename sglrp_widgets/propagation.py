"""How relevance crosses each kind of node: one handler per kind.

A handler knows, for one kind of :class:`~sglrp_widgets.graph.Node`:

- ``carries(node)`` — which inputs receive relevance (a held-constant gate, the query and key of attention,
  the divisor of ``a / b`` get none);
- ``needs(node)`` — which input values its backward and transpose read;
- ``state(node, i, xs, y, ctx)`` — what else it keeps from the forward pass (inverse denominators...), so a
  class switch on a seen image costs one backward pass (it sees every input value; backward and transpose
  see only the ones ``needs`` asks for, ``None`` for the others);
- ``backward(node, i, xs, st, r, ctx)`` — relevance at each input from the relevance ``r`` at the output;
- ``transpose(node, i, xs, st, us, ctx)`` — the transpose of that linear map (forward maps only), used to
  push ones from the input to the logits: the total relevance each logit turns into (SGLRP/CLRP's scaling);
  ``state_and_transpose`` gives both in one go (linear layers share their kernels' calls between them);
- ``nonneg(node, inputs_nonneg)`` — whether its output is never negative (lets ``z+`` skip terms);
- ``scales_by_input(node, j, rule, nonneg)`` and ``output_scale_key(node, rule, nonneg)`` — whether the relevance
  at input ``j`` is that input times a map, and which state entry first multiplies the relevance at the output: a
  value every reader scales by is kept folded into its maker's entry (``lrp.input_folds``).

Relevance tensors stack the heads (targets, and SGLRP's target/dual) head-major along the batch axis:
``(H*N, ...)`` against forward values ``(N, ...)``. Formulas: ``docs/methods.md``.
A user adds a kind for their own layer class with :func:`register_layer`.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

from . import rules as R
from .equivalents import OpensAs
from .errors import ExplainError
from .graph import LAYER_READINGS, NONNEG_ACTIVATIONS, LinearOp, Node

EPS = R.SAFE_EPS


# ---- small tensor helpers ---------------------------------------------------------------------------------

def per_head(t: tf.Tensor, r: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """``r * t`` where ``r`` is (H*N, ...) and ``t`` is a per-image (N, ...) tensor (or broadcastable)."""
    if t.shape.rank == 0 or t.shape[0] == 1:
        return r * t
    return R.flat_heads(R.by_head(r, n) * t[None])


def tile_heads(x: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """(N, ...) -> (H*N, ...) with as many heads as ``like`` (H*N, ...) has."""
    reps = tf.shape(like)[0] // tf.shape(x)[0]
    return tf.tile(x, tf.concat([[reps], tf.ones([tf.rank(x) - 1], tf.int32)], 0))


def sum_to(r: tf.Tensor, shape) -> tf.Tensor:
    """Sum ``r`` (batch first) over the axes an input of per-image ``shape`` was broadcast along."""
    if shape is None or r.shape.rank is None or len(shape) + 1 != r.shape.rank:
        return r
    axes = [a + 1 for a, d in enumerate(shape) if d == 1 and r.shape[a + 1] != 1]
    return tf.reduce_sum(r, axis=axes, keepdims=True) if axes else r


def broadcast_like(u: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    return u if u.shape == y.shape else u + tf.zeros_like(y)


def vjp(call, xs: list, s: tf.Tensor) -> list:
    """``J^T s`` of ``call`` at ``xs`` (tiled to ``s``'s heads), for each input."""
    tiled = [tile_heads(x, s) for x in xs]
    with tf.GradientTape() as tape:
        tape.watch(tiled)
        out = call(tiled)
    return tape.gradient(out, tiled, output_gradients=s, unconnected_gradients="zero")


def linear_vjp(call, shapes: list, s: tf.Tensor) -> list:
    """``J^T s`` of a linear ``call``: needs only the inputs' shapes (per image), not their values."""
    dummies = [tf.zeros(tf.concat([tf.shape(s)[:1], shape], 0), s.dtype) for shape in shapes]
    with tf.GradientTape() as tape:
        tape.watch(dummies)
        out = call(dummies)
    return tape.gradient(out, dummies, output_gradients=s, unconnected_gradients="zero")


def _static(shapes) -> bool:
    return all(s is not None and all(d is not None for d in s) for s in shapes)


# ---- the handlers ---------------------------------------------------------------------------------------

class Handler:
    """The identity: relevance passes unchanged (elementwise activations). Subclasses override what differs."""

    def carries(self, node: Node) -> list[bool]:
        return [True] * len(node.inputs)

    def needs(self, node: Node) -> list[bool]:
        return [False] * len(node.inputs)

    def state(self, node, i, xs, y, ctx) -> dict:
        return {}

    def backward(self, node, i, xs, st, r, ctx) -> list:
        return [sum_to(r, node.in_shapes[0] if node.in_shapes else None)]

    def transpose(self, node, i, xs, st, us, ctx):
        return us[0]

    def state_and_transpose(self, node, i, xs, y, us, ctx) -> tuple[dict, tf.Tensor]:
        st = self.state(node, i, xs, y, ctx)
        return st, self.transpose(node, i, xs, st, us, ctx)

    def nonneg(self, node, inputs_nonneg: list[bool]) -> bool:
        return False

    def scales_by_input(self, node, j: int, rule, nonneg: bool) -> bool:
        """Whether the relevance at input ``j`` is that input's value times a map, which ``backward`` then hands
        over unscaled when ``ctx.folded_shape(i, j)`` says the state holds the value elsewhere (inside the scale
        of the node that made it, ``lrp.input_folds``; ``rule``: the node's LRP rule, if linear)."""
        return False

    def output_scale_key(self, node, rule, nonneg: bool) -> str | None:
        """The state entry (same shape as the output, per image) by which ``backward`` first multiplies the
        relevance at the output, so that the readers' input ``x`` may be folded into it (``lrp.input_folds``);
        ``None`` if none (``rule``: the node's LRP rule, if linear; ``nonneg``: whether its input is known >= 0)."""
        return None


class Activation(Handler):
    """Elementwise nonlinearities: the identity rule (relevance passes unchanged, ``docs/methods.md``)."""

    def nonneg(self, node, inputs_nonneg):
        act = node.attrs.get("activation")
        return act in NONNEG_ACTIVATIONS and (act != "relu" or node.attrs.get("floor_zero", True))


class Linear(Handler):
    """Dense, convolutions, EinsumDense: the layer's rule from the composite (``rules.py``)."""

    def needs(self, node):
        return [True]

    def state_and_transpose(self, node, i, xs, y, us, ctx):
        u = us[0] if us is not None else None
        inv, u_out = R.forward_terms(ctx.rule(i), node.op, xs[0], ctx.weights(i), ctx.bounds(i),
                                     ctx.input_nonneg(i), y, u=u, u_is_ones=u is not None and u is ctx.ones)
        return {f"inv{j}": t for j, t in enumerate(inv) if t is not None}, u_out

    def state(self, node, i, xs, y, ctx):
        return self.state_and_transpose(node, i, xs, y, None, ctx)[0]

    def _inv(self, i, st, ctx):
        return [st.get(f"inv{j}") for j in range(len(ctx.rule(i).leaves()))]

    def backward(self, node, i, xs, st, r, ctx):
        return [R.apply_linear_rule(ctx.rule(i), node.op, xs[0], r, ctx.weights(i), ctx.bounds(i),
                                    nonneg=ctx.input_nonneg(i), inv=self._inv(i, st, ctx),
                                    folded_shape=ctx.folded_shape(i, 0))]

    def scales_by_input(self, node, j, rule, nonneg):
        return R.scales_by_input(rule, nonneg)

    def output_scale_key(self, node, rule, nonneg):
        return "inv0" if R.one_inverse_per_image(rule, nonneg) else None

    def transpose(self, node, i, xs, st, us, ctx):
        return self.state_and_transpose(node, i, xs, node.op.forward(xs[0]), us, ctx)[1]


class FixedLinear(Handler):
    """Average pooling, mean/sum reductions, bilinear up-sampling: ``y = f(x)`` linear with fixed weights;
    the epsilon rule of ``f``: ``R_x = x * f^T(R / y)``."""

    def needs(self, node):
        return [True]

    def state(self, node, i, xs, y, ctx):
        return {"inv": 1.0 / R.stabilize(y, EPS)}

    def backward(self, node, i, xs, st, r, ctx):
        s = per_head(st["inv"], r, ctx.n)
        shapes = node.in_shapes if _static(node.in_shapes) else None
        g = linear_vjp(node.call, shapes, s)[0] if shapes else vjp(node.call, xs, s)[0]
        return [per_head(xs[0], g, ctx.n)]

    def transpose(self, node, i, xs, st, us, ctx):
        return node.call([xs[0] * us[0]]) * st["inv"]

    def output_scale_key(self, node, rule, nonneg):
        return "inv"

    def nonneg(self, node, inputs_nonneg):
        return all(inputs_nonneg)


class Affine(Handler):
    """``y = a x + c`` with fixed ``a``, ``c``: the epsilon rule ``R_x = a x / (a x + c) * R``."""

    def state(self, node, i, xs, y, ctx):
        a, _ = node.attrs["affine"]()
        return {"ratio": a * xs[0] / R.stabilize(y, EPS)}

    def backward(self, node, i, xs, st, r, ctx):
        return [sum_to(per_head(st["ratio"], r, ctx.n), node.in_shapes[0])]

    def transpose(self, node, i, xs, st, us, ctx):
        return st["ratio"] * us[0]

    def output_scale_key(self, node, rule, nonneg):
        return "ratio"

    def nonneg(self, node, inputs_nonneg):
        static = node.attrs.get("static")
        return bool(static and static[0] >= 0 and static[1] >= 0 and inputs_nonneg[0])


class Add(Handler):
    """``y = sum_i c_i x_i``: each summand gets relevance in proportion to its contribution ``c_i x_i / y``."""

    def needs(self, node):
        return [True] * len(node.inputs)

    def state(self, node, i, xs, y, ctx):
        return {"inv": 1.0 / R.stabilize(y, EPS)}

    def backward(self, node, i, xs, st, r, ctx):
        s = per_head(st["inv"], r, ctx.n)
        coef = node.attrs["coefficients"]
        return [(s if c == 1 else c * s) if ctx.folded_shape(i, j) else sum_to(per_head(c * x, s, ctx.n), shape)
                for j, (c, x, shape) in enumerate(zip(coef, xs, node.in_shapes))]

    def scales_by_input(self, node, j, rule, nonneg):
        return node.out_shape is not None and node.in_shapes[j] is not None and \
            tuple(node.in_shapes[j]) == tuple(node.out_shape)

    def output_scale_key(self, node, rule, nonneg):
        return "inv"

    def transpose(self, node, i, xs, st, us, ctx):
        coef = node.attrs["coefficients"]
        return tf.add_n([broadcast_like(c * x * u, st["inv"]) for c, x, u in zip(coef, xs, us)]) * st["inv"]

    def nonneg(self, node, inputs_nonneg):
        return all(inputs_nonneg) and all(c >= 0 for c in node.attrs["coefficients"])


class Product(Handler):
    """Elementwise ``a * b``: a gate factor is held constant and the other gets all the relevance; two signals
    share it equally (the uniform rule, ``R_a = R_b = R / 2``)."""

    def carries(self, node):
        held = node.attrs.get("held", ())
        return [j not in held for j in range(len(node.inputs))]

    def backward(self, node, i, xs, st, r, ctx):
        free = self.carries(node)
        share = r / float(sum(free))
        return [sum_to(share, shape) if f else None for f, shape in zip(free, node.in_shapes)]

    def transpose(self, node, i, xs, st, us, ctx):
        free = [u for u, f in zip(us, self.carries(node)) if f]
        out = tf.add_n([tf.broadcast_to(u, _broadcast_shape([tf.shape(v) for v in free])) for u in free])
        return out / float(len(free))

    def nonneg(self, node, inputs_nonneg):
        return all(inputs_nonneg)


def _broadcast_shape(shapes):
    out = shapes[0]
    for s in shapes[1:]:
        out = tf.broadcast_dynamic_shape(out, s)
    return out


class Contraction(Handler):
    """``matmul``/``einsum``/``Dot`` of two signals, bilinear: the epsilon rule of the map in each free factor
    (the other held at its value); gates held constant, two signals share equally (AttnLRP)."""

    carries = Product.carries

    def needs(self, node):
        return [True] * len(node.inputs)

    def state(self, node, i, xs, y, ctx):
        return {"inv": 1.0 / R.stabilize(y, EPS)}

    def backward(self, node, i, xs, st, r, ctx):
        free = self.carries(node)
        s = per_head(st["inv"], r, ctx.n)
        grads = vjp(node.call, xs, s)
        m = float(sum(free))
        return [per_head(x, g, ctx.n) / m if f else None for f, x, g in zip(free, xs, grads)]

    def transpose(self, node, i, xs, st, us, ctx):
        free = self.carries(node)
        parts = [node.call([x * u if j == k else x for k, x in enumerate(xs)])
                 for j, (f, u) in enumerate(zip(free, us)) if f]
        return tf.add_n(parts) * st["inv"] / float(len(parts))


class Attention(Handler):
    """``ops.dot_product_attention``: the attention weights ``A`` held constant (CP-LRP); relevance flows to
    the values only, with the epsilon rule of ``V -> A V``."""

    def carries(self, node):
        return [j == node.attrs["positions"]["value"] for j in range(len(node.inputs))]

    def needs(self, node):
        return [True] * len(node.inputs)

    def state(self, node, i, xs, y, ctx):
        return {"probs": _attention_probs(node, xs), "inv": 1.0 / R.stabilize(y, EPS)}

    def backward(self, node, i, xs, st, r, ctx):
        pos = node.attrs["positions"]
        v = xs[pos["value"]]
        s = per_head(st["inv"], r, ctx.n)
        a = tile_heads(st["probs"], s)
        g = tf.einsum("bnts,btnh->bsnh", a, s)
        g = _ungroup(g, v)
        return [per_head(v, g, ctx.n) if j == pos["value"] else None for j in range(len(xs))]

    def transpose(self, node, i, xs, st, us, ctx):
        pos = node.attrs["positions"]
        vu = xs[pos["value"]] * us[pos["value"]]
        vu = _regroup(vu, st["probs"])
        return tf.einsum("bnts,bsnh->btnh", st["probs"], vu) * st["inv"]


class ScoredAttention(Handler):
    """``keras.layers.Attention`` (dot or concat scores) and ``AdditiveAttention``: ``softmax(score(q, k)) @ v``.
    The attention weights are held constant (CP-LRP), computed by the layer's own score and softmax methods
    (scale, concat weights, causal mask as it has them); the value gets the epsilon rule of that map."""

    def carries(self, node):
        return [j == 1 for j in range(len(node.inputs))]

    def needs(self, node):
        return [True] * len(node.inputs)

    def state(self, node, i, xs, y, ctx):
        layer, q, v = node.layer, xs[0], xs[1]
        scores = layer._calculate_scores(query=q, key=xs[2] if len(xs) > 2 else v)
        mask = layer._calculate_score_mask(scores, None, node.attrs["causal"])
        return {"probs": layer._apply_scores(scores, v, mask, training=False)[1], "inv": 1.0 / R.stabilize(y, EPS)}

    def backward(self, node, i, xs, st, r, ctx):
        s = per_head(st["inv"], r, ctx.n)
        g = tf.matmul(tile_heads(st["probs"], s), s, transpose_a=True)
        return [per_head(xs[1], g, ctx.n) if j == 1 else None for j in range(len(xs))]

    def transpose(self, node, i, xs, st, us, ctx):
        return tf.matmul(st["probs"], xs[1] * us[1]) * st["inv"]


def _regroup(v, probs):
    """Repeat grouped key/value heads to the query heads (grouped-query attention), as Keras does."""
    heads, kv = probs.shape[1], v.shape[2]
    if heads is not None and kv is not None and heads > kv > 1:
        return tf.repeat(v, heads // kv, axis=2)
    return v


def _ungroup(g, v):
    heads, kv = g.shape[2], v.shape[2]
    if heads is not None and kv is not None and heads > kv > 1:
        shape = tf.concat([tf.shape(g)[:2], [kv, heads // kv], tf.shape(g)[3:]], 0)
        return tf.reduce_sum(tf.reshape(g, shape), axis=3)
    return g


def _attention_probs(node, xs):
    """The attention weights ``softmax(scale q k^T + bias, masked)`` exactly as Keras's TensorFlow backend."""
    pos, attrs = node.attrs["positions"], node.attrs
    q, k = xs[pos["query"]], xs[pos["key"]]
    k = _regroup(k, tf.zeros([1, q.shape[2], 1, 1]))
    scale = attrs.get("scale")
    if attrs.get("soft_cap"):
        raise ExplainError(f"Layer {node.name!r}: attention with a logits soft cap has no LRP rule here.")
    scale = 1.0 / tf.sqrt(tf.cast(tf.shape(k)[-1], tf.float32)) if scale is None else scale
    logits = tf.einsum("btnh,bsnh->bnts", q, k) * tf.cast(scale, q.dtype)
    if "bias" in pos:
        logits = logits + xs[pos["bias"]]
    mask = xs[pos["mask"]] if "mask" in pos else attrs.get("mask")
    if mask is not None or attrs.get("is_causal"):
        keep = tf.ones_like(logits, tf.bool)
        if mask is not None:
            keep = tf.logical_and(keep, tf.cast(mask, tf.bool))
        if attrs.get("is_causal"):
            t, s = tf.shape(logits)[2], tf.shape(logits)[3]
            keep = tf.logical_and(keep, tf.linalg.band_part(tf.ones((t, s), tf.bool), -1, 0)[None, None])
        logits = tf.where(keep, logits, tf.cast(-0.7 * q.dtype.max, logits.dtype))
    return tf.nn.softmax(logits, axis=-1)


class LayerNorm(Handler):
    """LayerNormalization (and GroupNormalization, RMSNormalization, UnitNormalization) with ``sigma`` held
    constant (CP-LRP): ``y = (x - mean(x)) gamma / sigma + beta`` is a linear map of ``x``; its epsilon rule is
    ``R_x = x * (t - mean(t))`` with ``t = gamma / sigma * R / y`` (no centering for RMS and unit
    normalisation, whose ``sigma`` is the root mean square or the L2 norm). The statistics run over the
    layer's axes, or for GroupNormalization over each group of channels and the positions."""

    def needs(self, node):
        return [True]

    def _grouped(self, node, t):
        """``t`` as the groups its statistics run over, and their axes; ``back(view)`` undoes the view."""
        layer, rank = node.layer, t.shape.rank
        if type(layer).__name__ == "GroupNormalization":
            c = t.shape[-1]
            view = tf.reshape(t, tf.concat([tf.shape(t)[:-1], [layer.groups, c // layer.groups]], 0))
            return view, [a for a in range(1, rank + 1) if a != rank - 1], lambda v: tf.reshape(v, tf.shape(t))
        axis = getattr(layer, "axis", -1)
        axes = sorted(a % rank for a in ([axis] if isinstance(axis, int) else axis))
        return t, axes, lambda v: v

    def _centered(self, node):
        name = type(node.layer).__name__
        return name == "GroupNormalization" or (name == "LayerNormalization" and not node.layer.rms_scaling)

    def _center(self, node, t):
        if not self._centered(node):
            return t
        view, axes, back = self._grouped(node, t)
        return back(view - tf.reduce_mean(view, axis=axes, keepdims=True))

    def state(self, node, i, xs, y, ctx):
        layer, x = node.layer, xs[0]
        view, axes, back = self._grouped(node, x)
        if type(layer).__name__ == "UnitNormalization":    # x * min(rsqrt(sum(x^2)), 1e12), as Keras does
            w, gamma = tf.minimum(tf.math.rsqrt(tf.reduce_sum(tf.square(view), axes, keepdims=True)), 1e12), None
        elif type(layer).__name__ == "RMSNormalization":    # x * rsqrt(mean(x^2) + eps) * scale
            w = tf.math.rsqrt(tf.reduce_mean(tf.square(view), axes, keepdims=True) + (layer.epsilon or 1e-7))
            gamma = getattr(layer, "scale", None)
        else:
            _, var = tf.nn.moments(view, axes, keepdims=True)
            w = tf.math.rsqrt(var + layer.epsilon)
            gamma = layer.gamma if layer.scale else None
        w = back(tf.broadcast_to(w, tf.shape(view))) if view is not x else w
        if gamma is not None and not isinstance(gamma, bool):
            if type(layer).__name__ == "GroupNormalization":
                shape = [1] * (x.shape.rank - 1) + [-1]
            else:
                shape = [x.shape[a] if a in axes else 1 for a in range(x.shape.rank)]
            w = w * tf.reshape(tf.convert_to_tensor(gamma), shape)
        return {"w_inv": w / R.stabilize(y, EPS), "w": w, "inv": 1.0 / R.stabilize(y, EPS)}

    def backward(self, node, i, xs, st, r, ctx):
        t = self._center(node, per_head(st["w_inv"], r, ctx.n))
        return [per_head(xs[0], t, ctx.n)]

    def transpose(self, node, i, xs, st, us, ctx):
        return st["w"] * self._center(node, xs[0] * us[0]) * st["inv"]


class Route(Handler):
    """Reshaping, padding, slicing, concatenation, max pooling: relevance follows the gradient."""

    def needs(self, node):
        linear = not node.attrs.get("nonlinear") and _static(node.in_shapes)
        return [not linear] * len(node.inputs)

    def backward(self, node, i, xs, st, r, ctx):
        if not any(self.needs(node)):
            return linear_vjp(node.call, node.in_shapes, r)
        return vjp(node.call, xs, r)

    def transpose(self, node, i, xs, st, us, ctx):
        if not any(self.needs(node)):
            return node.call(us)
        with tf.autodiff.ForwardAccumulator(xs, us) as acc:
            y = node.call(xs)
        return acc.jvp(y)

    def nonneg(self, node, inputs_nonneg):
        return all(inputs_nonneg)


class Opaque(Handler):
    """A node without a rule: LRP methods refuse a model in which relevance would have to cross one."""

    def backward(self, node, i, xs, st, r, ctx):  # pragma: no cover - rejected before tracing
        raise ExplainError(f"Layer {node.name!r} ({node.class_name}) has no LRP rule.")


HANDLERS: dict[str, Handler] = {
    "linear": Linear(), "fixed_linear": FixedLinear(), "affine": Affine(), "activation": Activation(),
    "add": Add(), "product": Product(), "contraction": Contraction(), "attention": Attention(),
    "scored_attention": ScoredAttention(), "layer_norm": LayerNorm(), "route": Route(), "opaque": Opaque(),
}


def handler(node: Node) -> Handler:
    return HANDLERS[node.kind]


def register_layer(layer_class: type, rule=None, *, opens_as: Callable | None = None) -> None:
    """Tell the engine how relevance crosses ``layer_class`` (a user's own layer class).

    ``opens_as=fn``: read the layer as ``fn(layer, *inputs)``, an equivalent of its ``call`` written with
    ``keras.ops`` and its sublayers, for a ``call`` that Keras cannot trace symbolically (one that tiles a
    weight to the batch size ``ops.shape(x)[0]``, say). Relevance then crosses the operations ``fn`` records,
    with their rules. The engine checks on a batch that ``fn`` computes what the layer computes, and keeps
    the layer opaque if it does not.

    Otherwise ``rule`` may be:

    - ``"identity"`` — an elementwise map: relevance passes unchanged (like an activation);
    - ``"route"`` — it only moves values (reshape, crop...): relevance follows its gradient;
    - ``"fixed_linear"`` — a linear map without parameters: the epsilon rule of that map;
    - a function ``layer -> LinearOp`` — a linear layer: the composites give it a rule like a Dense/Conv;
    - a :class:`Handler` instance — full control (``state``, ``backward``, ``transpose``...);
    - ``None`` — forget an earlier registration.

    Layers not registered are opened into the operations their ``call`` records when Keras can trace it.

    Examples
    --------
    >>> register_layer(MyClip, "identity")
    >>> register_layer(MyDense, lambda layer: LinearOp("dense", layer, layer.w, layer.b))
    >>> register_layer(MyTokens, opens_as=lambda layer, x: ops.concatenate([x[:, :1] * 0.0 + layer.token, x], 1))
    """
    if not isinstance(layer_class, type):
        raise ExplainError(f"register_layer needs a layer class, got {layer_class!r}.")
    if opens_as is not None:
        if rule is not None:
            raise ExplainError("register_layer: give a rule or opens_as, not both.")
        if not callable(opens_as):
            raise ExplainError(f"register_layer: opens_as must be a function (layer, *inputs) -> output, got "
                               f"{opens_as!r}.")
        LAYER_READINGS[layer_class] = OpensAs(opens_as)
    elif rule is None:
        LAYER_READINGS.pop(layer_class, None)
    elif isinstance(rule, Handler):
        kind = f"user:{layer_class.__module__}.{layer_class.__qualname__}"
        HANDLERS[kind] = rule
        LAYER_READINGS[layer_class] = kind
    elif rule == "identity":
        LAYER_READINGS[layer_class] = "activation"
    elif rule in ("route", "fixed_linear"):
        LAYER_READINGS[layer_class] = rule
    elif callable(rule):
        LAYER_READINGS[layer_class] = rule
    else:
        raise ExplainError(f"register_layer: rule must be 'identity', 'route', 'fixed_linear', a function "
                           f"layer -> LinearOp or a Handler, got {rule!r}.")


__all__ = ["HANDLERS", "Handler", "LinearOp", "handler", "register_layer"]

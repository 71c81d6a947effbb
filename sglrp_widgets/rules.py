"""LRP rules as data, and how a rule turns the relevance at a layer's output into relevance at its input.

A rule for a linear layer ``z = x W + b`` is a list of *terms* ``(input modifier, weight modifier, sign)``
and an optional bias modifier. With ``z' = sum_terms sign * in_mod(x) W_mod (+ b_mod)`` the rule is

    R_in = sum_terms sign * in_mod(x) * W_mod^T ( R / stabilize(z') )

which covers ``z``, ``epsilon``, ``z_plus``, ``gamma``, ``w_square``, ``flat`` and ``z_box``; ``alpha_beta`` is a
weighted sum of two such rules. ``W^T`` is the transposed linear map (the layer's input gradient), so a
rule costs one forward map per distinct modified weight and one transposed map per distinct weight.
Formulas: ``docs/methods.md`` ("Rules for linear layers").
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import tensorflow as tf

from .errors import ExplainError, suggest

SAFE_EPS = 1e-7


@dataclass(frozen=True)
class Term:
    inputs: str          # "x", "x_pos", "x_neg", "ones", "low", "high"
    weights: str         # "w", "w_pos", "w_neg", "w_sq", "ones", "w_gamma"
    sign: float = 1.0


@dataclass(frozen=True)
class Rule:
    """One LRP rule for linear layers. Build rules with the functions below, e.g. ``epsilon(0.1)``."""

    name: str
    terms: tuple[Term, ...] = ()
    bias: str | None = None                  # "b", "b_pos", "b_neg" or None
    eps: float = SAFE_EPS                    # stabilizer: z + eps * sign(z), sign(0) = 1
    parts: tuple = ()                        # ((coefficient, Rule), ...) for composed rules
    params: dict = field(default_factory=dict, compare=False, hash=False)

    def leaves(self):
        """The (coefficient, simple rule) pairs this rule is made of."""
        return self.parts if self.parts else ((1.0, self),)

    def weight_keys(self) -> set[str]:
        keys = set()
        for _, r in self.leaves():
            keys |= {t.weights for t in r.terms}
            if r.bias:
                keys.add(r.bias)
        return keys

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


def z() -> Rule:
    """``R_j = sum_k x_j w_jk * safe_div(R_k, z_k)``, bias included in ``z_k``."""
    return Rule("z", (Term("x", "w"),), bias="b")


def epsilon(epsilon: float = 1e-7) -> Rule:
    """``R_j = sum_k x_j w_jk R_k / (z_k + epsilon sign(z_k))``, bias included."""
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not epsilon >= 0:
        raise ExplainError(f"epsilon must be a number >= 0, got {epsilon!r}.")
    return Rule("epsilon", (Term("x", "w"),), bias="b", eps=float(epsilon) if epsilon > 0 else SAFE_EPS,
                params={"epsilon": epsilon})


def z_plus() -> Rule:
    """Positive contributions only, bias ignored; for ``x < 0`` the positive part is ``x+ w+ + x- w-``."""
    return Rule("z_plus", (Term("x_pos", "w_pos"), Term("x_neg", "w_neg")))


def _positive_part(bias: bool) -> Rule:
    return Rule("alpha", (Term("x_pos", "w_pos"), Term("x_neg", "w_neg")), bias="b_pos" if bias else None)


def _negative_part(bias: bool) -> Rule:
    return Rule("beta", (Term("x_pos", "w_neg"), Term("x_neg", "w_pos")), bias="b_neg" if bias else None)


def alpha_beta(alpha: float = 1.0, beta: float = 0.0, bias: bool = True) -> Rule:
    """``R_j = sum_k (alpha p_jk / P_k - beta n_jk / N_k) R_k`` with ``p = (x w)+``, ``n = (x w)-``."""
    if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-6:
        raise ExplainError(f"alpha_beta needs alpha - beta = 1 with both >= 0; got alpha={alpha}, beta={beta}.")
    parts = ((float(alpha), _positive_part(bias)),)
    if beta:
        parts += ((-float(beta), _negative_part(bias)),)
    return Rule("alpha_beta", parts=parts, params={"alpha": alpha, "beta": beta, "bias": bias})


def gamma(gamma: float = 0.25) -> Rule:
    """``R_j = sum_k x_j (w_jk + gamma w+_jk) * safe_div(R_k, sum_i x_i (w_ik + gamma w+_ik))``."""
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not gamma >= 0:
        raise ExplainError(f"gamma must be a number >= 0, got {gamma!r}.")
    return Rule("gamma", (Term("x", f"w_gamma:{float(gamma)!r}"),), params={"gamma": gamma})


def w_square() -> Rule:
    """``R_j = sum_k w_jk^2 * safe_div(R_k, sum_i w_ik^2)``: input independent."""
    return Rule("w_square", (Term("ones", "w_sq"),))


def flat() -> Rule:
    """``R_j = sum_k safe_div(R_k, #inputs read by k)``: input independent, padding excluded."""
    return Rule("flat", (Term("ones", "ones"),))


def z_box(low=None, high=None) -> Rule:
    """Bounded Deep Taylor rule: ``(x w - l w+ - h w-)`` over its sum; ``low``/``high`` broadcast per channel.

    Bounds given here are the values the layer's *input* can take. Without them, a first layer gets the
    method's bounds (``low=``/``high=``, ``preprocess``, or the batch range) mapped from the model's input
    through the affine maps before it; any other layer gets the batch range of its input.
    """
    if (low is None) != (high is None):
        raise ExplainError(f"z_box needs both low and high, or neither; got low={low!r}, high={high!r}.")
    if low is not None:
        import numpy as np
        try:
            lo, hi = np.broadcast_arrays(np.asarray(low, np.float64), np.asarray(high, np.float64))
        except (TypeError, ValueError):
            raise ExplainError(f"z_box bounds must be numbers or one number per channel; got low={low!r}, "
                               f"high={high!r}.") from None
        if lo.ndim > 1 or not np.all(np.isfinite(lo)) or not np.all(np.isfinite(hi)) or not np.all(lo < hi):
            raise ExplainError(f"z_box needs finite low < high (a number or one per channel); got low={low!r}, "
                               f"high={high!r}.")
        low, high = (float(lo) if lo.ndim == 0 else tuple(lo.tolist())), \
            (float(hi) if hi.ndim == 0 else tuple(hi.tolist()))
    return Rule("z_box", (Term("x", "w"), Term("low", "w_pos", -1.0), Term("high", "w_neg", -1.0)),
                params={"low": low, "high": high})


RULES = {"z": z, "epsilon": epsilon, "z_plus": z_plus, "alpha_beta": alpha_beta, "gamma": gamma,
         "w_square": w_square, "flat": flat, "z_box": z_box}


def get_rule(spec) -> Rule:
    """A :class:`Rule` from a Rule, a rule name (``"z_plus"``) or ``(name, kwargs)``.

    Rule parameters use the methods' names: ``epsilon``, ``gamma``, ``low``, ``high``, ``alpha``, ``beta``,
    ``bias``; an unknown keyword raises an :class:`ExplainError` naming the valid ones.

    Examples
    --------
    >>> get_rule(("epsilon", {"epsilon": 0.1}))
    epsilon(epsilon=0.1)
    """
    if isinstance(spec, Rule):
        return spec
    if isinstance(spec, str):
        spec = (spec, {})
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        name, kwargs = spec
        if name not in RULES:
            raise ExplainError(f"Unknown rule {name!r}; rules are {sorted(RULES)}.{suggest(name, RULES)}")
        valid = list(inspect.signature(RULES[name]).parameters)
        for key in kwargs:
            if key not in valid:
                raise ExplainError(f"Unknown parameter {key!r} for rule {name!r}; its parameters are "
                                   f"{', '.join(valid) or 'none'}.{suggest(key, valid)}")
        return RULES[name](**kwargs)
    raise ExplainError(f"Cannot make a rule from {spec!r}: give a Rule, a rule name or (name, {{parameters}}).")


# ---- derived weights ----------------------------------------------------------------------------

# Sign parts shared by weights ("w_pos", "b_neg") and inputs ("x_pos", "x_neg").
_PART = {"": lambda t: t, "pos": lambda t: tf.maximum(t, 0.0), "neg": lambda t: tf.minimum(t, 0.0)}


#: Prefix of a kernel kept in ``LinearOp.flip`` form (``"flipped:w_pos"``, ``"flipped:stacked:w_pos|w_neg"``):
#: a layer that :attr:`~sglrp_widgets.graph.LinearOp.transposes_flipped` transposes it as a convolution, one that
#: :attr:`~sglrp_widgets.graph.LinearOp.runs_flipped` also applies it as a transposed convolution.
#: ``"flipped:model"`` is the layer's own (unfolded) kernel, for its output.
FLIPPED = "flipped:"


#: Prefix of kernels stacked along the layer's input-channel axis (``"stacked:w|w_pos|w_neg"``): a rule part with
#: several kernels transposes them in one call (:meth:`~sglrp_widgets.graph.LinearOp.transpose_stacked`).
STACKED = "stacked:"


def stacked_key(keys: list[str]) -> str:
    return STACKED + "|".join(keys)


def part_kernels(leaf: Rule, nonneg: bool) -> list[str]:
    """The distinct kernels of a rule part's active terms, in order."""
    return list(dict.fromkeys(t.weights for t in _active_terms(leaf, nonneg)))


def apply_weights(op, x: tf.Tensor, weights: dict, key: str) -> tf.Tensor:
    """``op`` applied to ``x`` with the modified kernel ``weights[key]``, the fastest way the layer allows."""
    if op.runs_flipped:
        return op.apply(x, None, flipped=weights[FLIPPED + key])
    return op.apply(x, weights[key])


def transpose_weights(op, s: tf.Tensor, weights: dict, kernels: list[str], in_shape) -> dict[str, tf.Tensor]:
    """``{k: J^T s}`` of ``op`` applied with each kernel ``weights[k]``: from their flipped forms where the layer
    transposes flipped, in one call where the kernels are stacked (``STACKED``)."""
    flip = op.transposes_flipped

    def forms(key):                                     # (kernel, flipped kernel): the one the layer reads
        return (None, weights[FLIPPED + key]) if flip else (weights[key], None)

    key = stacked_key(kernels)
    if len(kernels) > 1 and (FLIPPED + key if flip else key) in weights:
        stacked, flipped = forms(key)
        return dict(zip(kernels, op.transpose_stacked(s, stacked, in_shape, len(kernels), flipped=flipped)))
    transposed = {}
    for k in kernels:
        kernel, flipped = forms(k)
        transposed[k] = op.transpose(s, kernel, in_shape, flipped=flipped)
    return transposed


def derive_weight(key: str, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """The modified parameter named ``key`` computed from the layer's (kernel, bias).

    ``w``/``b`` with an optional sign part (``w_pos``, ``b_neg``), ``w_sq``, ``ones`` or ``w_gamma:<g>``.
    """
    if key.startswith("w_gamma:"):
        return kernel + float(key.split(":", 1)[1]) * tf.maximum(kernel, 0.0)
    if key == "w_sq":
        return tf.square(kernel)
    if key == "ones":
        return tf.ones_like(kernel)
    base, _, part = key.partition("_")
    if base not in ("w", "b") or part not in _PART:
        raise KeyError(key)
    return _PART[part](kernel if base == "w" else bias)


# ---- the backward step ----------------------------------------------------------------------------

def stabilize(z: tf.Tensor, eps: float, nonneg: bool = False) -> tf.Tensor:
    """``z + eps * sign(z)`` with ``sign(0) = 1``; ``nonneg`` says ``z >= 0`` is known (then it is ``z + eps``, the
    same bits without the comparison and the select)."""
    if nonneg:
        return z + tf.constant(eps, z.dtype)
    return z + tf.where(z >= 0, tf.constant(eps, z.dtype), tf.constant(-eps, z.dtype))


def safe_div(a: tf.Tensor, b: tf.Tensor, eps: float = SAFE_EPS) -> tf.Tensor:
    return a / stabilize(b, eps)


def _dims(t: tf.Tensor, start: int) -> list | tf.Tensor:
    """The sizes of ``t``'s axes from ``start`` on: Python ints when known while tracing (fewer graph ops)."""
    static = t.shape[start:]
    return list(static) if static.is_fully_defined() else tf.shape(t)[start:]


def by_head(r: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """(H*N, ...) -> (H, N, ...): heads are stacked head-major along the batch axis."""
    rest = _dims(r, 1)
    return tf.reshape(r, [-1, n] + rest if isinstance(rest, list) else tf.concat([[-1, n], rest], 0))


def flat_heads(r: tf.Tensor) -> tf.Tensor:
    """(H, N, ...) -> (H*N, ...)."""
    rest = _dims(r, 2)
    return tf.reshape(r, [-1] + rest if isinstance(rest, list) else tf.concat([[-1], rest], 0))


def modified_inputs(key: str, x: tf.Tensor, bounds) -> tf.Tensor:
    """``x`` with an optional sign part (``x_pos``, ``x_neg``), or a batch-1 constant: ``ones``, ``low``, ``high``."""
    if key in ("ones", "low", "high"):
        fill = {"ones": 1.0, "low": bounds[0] if bounds else None, "high": bounds[1] if bounds else None}[key]
        return tf.zeros_like(x[:1]) + fill
    base, _, part = key.partition("_")
    if base != "x" or part not in _PART:
        raise KeyError(key)
    return _PART[part](x)


def _active_terms(leaf: Rule, nonneg: bool) -> list[Term]:
    return [t for t in leaf.terms if not (nonneg and t.inputs == "x_neg")]


_NONNEG_WEIGHTS = ("w_pos", "w_sq", "ones", "b_pos")


def _nonneg_product(t: Term, nonneg: bool) -> bool:
    if t.weights == "w_neg":
        return t.inputs == "x_neg"
    return t.weights in _NONNEG_WEIGHTS and (t.inputs in ("x_pos", "ones") or (t.inputs == "x" and nonneg))


def _nonneg_sum(leaf: Rule, terms: list[Term], nonneg: bool) -> bool:
    """Whether the part's denominator is a sum of non-negative products: ``w+ x+`` and ``w- x-`` (z+ and the
    alpha part on any input), ``w+ x`` on ReLU outputs, the ``ones`` and ``b+`` terms; then ``stabilize`` needs
    no sign."""
    return all(t.sign > 0 and _nonneg_product(t, nonneg) for t in terms) and leaf.bias in (None, "b_pos")


def _signed_add(total: tf.Tensor | None, sign: float, t: tf.Tensor) -> tf.Tensor:
    """``total + sign * t`` (``sign * t`` when ``total`` is None) without multiplying by +-1."""
    if total is None:
        return t if sign == 1.0 else -t if sign == -1.0 else sign * t
    return total + t if sign == 1.0 else total - t if sign == -1.0 else total + sign * t


def _term_input(key: str, x: tf.Tensor, bounds, nonneg: bool) -> tf.Tensor:
    return x if nonneg and key == "x_pos" else modified_inputs(key, x, bounds)


#: The dual sums' input ``u`` counts as all ones where it is within this of 1 (8 float32 ulps of 1) wherever
#: the layer's input is non-zero (:func:`forward_terms`).
NEAR_ONES = 2.0 ** -20

#: Inputs where the dual sums check for all ones: the signal, known non-negative where the part's sum is (ReLU
#: outputs). Networks with signed activations (swish, GELU) gate and normalise them, so ``u`` is rarely all ones
#: there and the check would cost a reduction per layer for nothing (none of EfficientNetB0's layers).
_NONNEG_SIGNAL = ("x", "x_pos")


def near_ones(x: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    """Whether ``u`` is 1 within :data:`NEAR_ONES` wherever ``x`` is non-zero (a boolean scalar): there a
    layer's transposed rule applied to ``u`` is its denominator, up to that rounding."""
    return tf.reduce_max(tf.where(tf.not_equal(x, 0.0), tf.abs(u - 1.0), 0.0)) <= NEAR_ONES


def _transposed_map(op, inp: tf.Tensor, u: tf.Tensor, weights: dict, key: str) -> tf.Tensor:
    """``W (in * u)``, one term's share of the transposed rule, as a call of its own: one call on the batch
    ``[in; in * u]`` beside the denominator's ``W in`` was slower on every layer shape measured (the copy costs
    more than oneDNN gains on batch 2; EfficientNetB0's SGLRP new image 146 -> 122 ms at batch 1)."""
    return apply_weights(op, inp * u, weights, key)


def forward_terms(rule: Rule, op, x: tf.Tensor, weights: dict, bounds=None, nonneg: bool = False,
                  z_forward: tf.Tensor | None = None, u: tf.Tensor | None = None, u_is_ones: bool = False):
    """The inverse denominators ``1 / stabilize(z')`` of each part of ``rule`` at linear ``op`` with input
    ``x``, and, when ``u`` is given, the transposed rule applied to ``u`` (see :func:`apply_linear_rule`):
    ``(inverses, u_out)``.

    ``apply_linear_rule`` is ``R_in = sum_t sign_t in_t * W_t^T (R / z')``, so its transpose is
    ``u_out = sum_t sign_t W_t (in_t * u) / z'``: forward maps only, on the same kernels as the denominator
    ``z' = sum_t sign_t W_t in_t (+ bias)``, one call each (:func:`_transposed_map`). ``z_forward`` (the layer's
    own output ``x W + b``) is the denominator of the z and epsilon rules and reused; with ``u_is_ones``
    (``u`` is the all-ones input) the transpose is the denominator without its bias. So it is, up to rounding,
    when ``u`` is :func:`near_ones` and the part's denominator is a sum of non-negative products of the signal
    (z+ on ReLU outputs: each output's share of ``u - 1`` is at most ``max |u - 1|``): then no map runs on
    ``in * u`` (a conserving network's dual sums cost no convolution). ``None`` marks a part without active
    terms.
    """
    inverses, u_out, near = [], None, None
    for coef, leaf in rule.leaves():
        terms = _active_terms(leaf, nonneg)
        if not terms:
            inverses.append(None)
            continue
        bias = weights[leaf.bias] if leaf.bias else None
        if z_forward is not None and leaf.bias == "b" and \
                [(t.inputs, t.weights, t.sign) for t in terms] == [("x", "w", 1.0)]:
            zs = z_forward
            zt = None if u is None else (z_forward - bias if u_is_ones else _transposed_map(op, x, u, weights, "w"))
        else:
            zs, zt = None, None
            shortcut = u is not None and not u_is_ones and _nonneg_sum(leaf, terms, nonneg) and \
                all(t.inputs in _NONNEG_SIGNAL for t in terms)
            if shortcut and near is None:
                near = near_ones(x, u)
            for t in terms:
                inp = _term_input(t.inputs, x, bounds, nonneg)
                d = apply_weights(op, inp, weights, t.weights)
                if u is None or u_is_ones:
                    tr = d if u_is_ones else None
                elif shortcut:
                    tr = tf.cond(near, lambda d=d: d,
                                 lambda inp=inp, key=t.weights: _transposed_map(op, inp, u, weights, key))
                else:               # in: the signal, or a batch-1 constant (bounds, ones)
                    tr = _transposed_map(op, inp, u, weights, t.weights)
                zs = _signed_add(zs, t.sign, d)
                if tr is not None:
                    zt = _signed_add(zt, t.sign, tr)
            if bias is not None:
                zs = zs + bias
        inv = 1.0 / stabilize(zs, leaf.eps, nonneg=_nonneg_sum(leaf, terms, nonneg))
        inverses.append(inv)
        if u is not None:
            part = coef * zt * inv if coef != 1.0 else zt * inv
            u_out = part if u_out is None else u_out + part
    return inverses, u_out


def _inputs_times_maps(terms: list[Term], maps: dict, x: tf.Tensor, bounds, nonneg: bool, n) -> tf.Tensor:
    """``sum_t sign_t in_t * maps[w_t]`` for one part (maps head-major (H*N, ...), ``x`` per image)."""
    pair = _sign_pair(terms)
    if pair:            # x+ g+ + x- g- = x * (g+ where x > 0, else g-): the same bits in three passes, not five
        pos, neg = pair
        picked = tf.where(x[None] > 0, by_head(maps[pos.weights], n), by_head(maps[neg.weights], n))
        return _signed_add(None, pos.sign, flat_heads(picked * x[None]))
    inputs = {t.inputs: _term_input(t.inputs, x, bounds, nonneg) for t in terms}
    total = None
    for t in terms:
        g = maps[t.weights]
        contrib = flat_heads(by_head(g, n) * inputs[t.inputs][None]) if t.inputs in ("x", "x_pos", "x_neg") \
            else g * inputs[t.inputs]
        total = _signed_add(total, t.sign, contrib)
    return total


def _signed_maps(terms: list[Term], maps: dict) -> tf.Tensor:
    """``sum_t sign_t maps[w_t]``: a part's relevance at the input before the factor ``x`` (see
    :func:`scales_by_input`)."""
    total = None
    for t in terms:
        total = _signed_add(total, t.sign, maps[t.weights])
    return total


def scales_by_input(rule: Rule, nonneg: bool) -> bool:
    """Whether ``rule`` gives relevance at the input as ``x * c``: one part, every active term on ``x`` itself
    (z, epsilon, gamma; z+ and alpha1-beta0 on non-negative inputs). The state can then keep ``x`` inside the
    scale of the node that made it (``lrp.input_folds``)."""
    (coef, leaf), *more = rule.leaves()
    terms = _active_terms(leaf, nonneg)
    return not more and coef == 1.0 and bool(terms) and \
        all(t.inputs == "x" or (nonneg and t.inputs == "x_pos") for t in terms)


def one_inverse_per_image(rule: Rule, nonneg: bool) -> bool:
    """Whether ``rule`` keeps one inverse denominator, of the input's batch size: one part whose active terms
    read the signal (``w_square``/``flat`` have batch-1 denominators)."""
    (_, leaf), *more = rule.leaves()
    return not more and any(t.inputs in ("x", "x_pos", "x_neg") for t in _active_terms(leaf, nonneg))


def _sign_pair(terms: list[Term]) -> tuple[Term, Term] | None:
    """The part's two terms on ``x_pos`` and ``x_neg`` (in that order) when they are all it has and share a sign."""
    by_input = {t.inputs: t for t in terms}
    if len(terms) == 2 and set(by_input) == {"x_pos", "x_neg"} and terms[0].sign == terms[1].sign:
        return by_input["x_pos"], by_input["x_neg"]
    return None


def apply_linear_rule(rule: Rule, op, x: tf.Tensor | None, r_out: tf.Tensor, weights: dict, bounds=None,
                      nonneg: bool = False, z_forward: tf.Tensor | None = None, inv: list | None = None,
                      folded_shape: tuple | None = None) -> tf.Tensor:
    """Relevance at the input of linear ``op`` (forward input ``x``, shape (N, ...)) from ``r_out`` (H*N, ...).

    ``weights`` maps weight keys to the (modified) parameters; ``nonneg`` says ``x >= 0`` is known, so
    terms on ``x_neg`` vanish and are skipped. ``inv`` are the parts' inverse denominators from
    :func:`forward_terms` (computed here when not given). ``x=None`` with ``folded_shape`` (the input's shape
    without the batch axis), for a rule that :func:`scales_by_input`: the caller holds ``x`` elsewhere and the
    result is the maps before the factor ``x``.
    """
    if inv is None:
        inv = forward_terms(rule, op, x, weights, bounds, nonneg, z_forward)[0]
    if x is None:
        n, rest = tf.shape(inv[0])[0], list(folded_shape)
    else:
        n, rest = tf.shape(x)[0], _dims(x, 1)
    in_shape = tf.stack([tf.shape(r_out)[0]] + rest) if isinstance(rest, list) else \
        tf.concat([tf.shape(r_out)[:1], rest], 0)
    total = None
    for (coef, leaf), iz in zip(rule.leaves(), inv):
        if iz is None:
            continue
        terms = _active_terms(leaf, nonneg)
        s = flat_heads(by_head(r_out, n) * iz[None]) if iz.shape[0] != 1 else r_out * iz
        transposed = transpose_weights(op, s, weights, part_kernels(leaf, nonneg), in_shape)
        leaf_total = _signed_maps(terms, transposed) if x is None else \
            _inputs_times_maps(terms, transposed, x, bounds, nonneg, n)
        leaf_total = coef * leaf_total if coef != 1.0 else leaf_total
        total = leaf_total if total is None else total + leaf_total
    return total if total is not None else tf.zeros(in_shape, r_out.dtype)

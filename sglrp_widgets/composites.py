"""Composites: which rule each linear layer gets (the tables of ``docs/methods.md``, "Composites").

A composite is a function ``(layer: LayerContext, params: dict) -> Rule``. Users can override it per layer
name, layer class or predicate with ``rules=`` (see :func:`with_overrides`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import rules as R
from .errors import ExplainError, suggest


@dataclass(frozen=True)
class LayerContext:
    """What a composite may look at: the layer, its family and its position."""

    name: str
    layer: Any
    family: str            # "dense" or "conv"
    first: bool            # reads the model input (through routing layers only)
    relu_followed: bool    # its output goes into a ReLU


Composite = Callable[[LayerContext, dict], R.Rule]


def _everywhere(make):
    return lambda ctx, p: make(p)


def _box(p) -> R.Rule:
    """z_box without bounds of its own: the engine maps the method's bounds to the layer's input."""
    return R.z_box()


def _preset(conv_rule, flat_first: bool):
    def composite(ctx: LayerContext, p: dict) -> R.Rule:
        if flat_first and ctx.first:
            return R.flat()
        return R.epsilon(p.get("epsilon", 0.1)) if ctx.family == "dense" else conv_rule()
    return composite


def _epsilon_plus_flat(ctx: LayerContext, p: dict) -> R.Rule:
    if ctx.first:
        return R.flat()
    return R.z_plus() if ctx.family == "conv" else R.epsilon(p.get("epsilon", 1e-6))


def _epsilon_gamma_box(ctx: LayerContext, p: dict) -> R.Rule:
    if ctx.first:
        return _box(p)
    return R.gamma(p.get("gamma", 0.25)) if ctx.family == "conv" else R.epsilon(p.get("epsilon", 1e-6))


COMPOSITES: dict[str, Composite] = {
    "deep_taylor": _everywhere(lambda p: R.z_plus()),
    "deep_taylor.bounded": lambda ctx, p: _box(p) if ctx.first else R.z_plus(),
    "lrp.z": _everywhere(lambda p: R.z()),
    "lrp.epsilon": _everywhere(lambda p: R.epsilon(p.get("epsilon", 1e-7))),
    "lrp.w_square": _everywhere(lambda p: R.w_square()),
    "lrp.flat": _everywhere(lambda p: R.flat()),
    "lrp.alpha_2_beta_1": _everywhere(lambda p: R.alpha_beta(2.0, 1.0, bias=True)),
    "lrp.alpha_1_beta_0": _everywhere(lambda p: R.alpha_beta(1.0, 0.0, bias=True)),
    "lrp.z_plus": _everywhere(lambda p: R.z_plus()),
    "lrp.sequential_preset_a": _preset(lambda: R.alpha_beta(1.0, 0.0), flat_first=False),
    "lrp.sequential_preset_b": _preset(lambda: R.alpha_beta(2.0, 1.0), flat_first=False),
    "lrp.sequential_preset_a_flat": _preset(lambda: R.alpha_beta(1.0, 0.0), flat_first=True),
    "lrp.sequential_preset_b_flat": _preset(lambda: R.alpha_beta(2.0, 1.0), flat_first=True),
    "lrp.epsilon_plus_flat": _epsilon_plus_flat,
    "lrp.epsilon_gamma_box": _epsilon_gamma_box,
}


def get_composite(name: str) -> Composite:
    if name not in COMPOSITES:
        raise ExplainError(f"Unknown composite {name!r}; composites are {sorted(COMPOSITES)}."
                           f"{suggest(name, COMPOSITES)}")
    return COMPOSITES[name]


def with_overrides(base: Composite, overrides: dict | None, names=()) -> Composite:
    """A composite that uses ``overrides`` where they match and ``base`` elsewhere.

    Keys of ``overrides`` may be a layer name (``"dense_1"``), a layer class (``keras.layers.Conv2D``) or a
    predicate ``f(ctx) -> bool``; values are a :class:`~sglrp_widgets.rules.Rule`, a rule name or
    ``(name, {parameters})``. The first matching key wins, in insertion order. The returned composite's
    ``check_used()`` raises an error naming the keys that matched no layer (``names``: the linear layers).

    Examples
    --------
    >>> Explainer(model, "lrp.epsilon", rules={"predictions": "z_plus", keras.layers.Conv2D: R.gamma(0.5)})
    """
    resolved = check_overrides(overrides)
    used: set[int] = set()

    def composite(ctx: LayerContext, p: dict) -> R.Rule:
        for j, (key, rule) in enumerate(resolved):
            if isinstance(key, str):
                hit = key == ctx.name or key == getattr(ctx.layer, "name", None)
            elif isinstance(key, type):
                hit = isinstance(ctx.layer, key)
            else:
                hit = bool(key(ctx))
            if hit:
                used.add(j)
                return rule
        return base(ctx, p)

    def check_used() -> None:
        unused = [key for j, (key, _) in enumerate(resolved) if j not in used]
        if unused:
            shown = ", ".join(repr(getattr(k, "__name__", k)) for k in unused)
            layers = ", ".join(repr(n) for n in list(names)[:12]) + (" ..." if len(names) > 12 else "")
            raise ExplainError(f"rules= key(s) {shown} match no linear layer of the model. Linear layers "
                               f"(the ones rules apply to): {layers}."
                               + (suggest(unused[0], names) if isinstance(unused[0], str) else ""))

    composite.check_used = check_used
    return composite


def check_overrides(overrides: dict | None) -> list:
    """``rules=`` as a list of (key, Rule); raises a clear error for a bad key or rule."""
    if overrides is None:
        return []
    if not isinstance(overrides, dict):
        raise ExplainError(f"rules= must be a dict {{layer name | class | predicate: rule}}, got "
                           f"{type(overrides).__name__}.")
    resolved = []
    for key, value in overrides.items():
        if not isinstance(key, (str, type)) and not callable(key):
            raise ExplainError(f"rules= key {key!r} is not a layer name, class or predicate.")
        resolved.append((key, R.get_rule(value)))
    return resolved

"""The Explainer: one compiled relevance graph per (model, method, parameters), served for any target.

The target classes are a runtime tensor, so switching the class never retraces. Heads of several targets
(and the target and dual heads of SGLRP/CLRP) go through one forward pass and one batched backward pass.
Results are cached per (weights, method, parameters, image, target) in an LRU bounded in bytes.
"""
from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from . import composites as C
from . import rules as R
from .errors import ExplainError, UnsupportedLayerError, suggest
from .graph import Graph, input_signature_check, read_model
from .methods import METHODS, Method, get_method, validate_params

_GRADIENT_METHODS = [m for m, spec in METHODS.items() if spec.kind != "lrp"]


# ---- results ---------------------------------------------------------------------------------------

@dataclass
class Explanation:
    """What an :class:`Explainer` returns.

    ``relevance`` has the images' shape ``(N, H, W, C)``, or ``(N, K, H, W, C)`` when several targets per image
    were asked for; ``targets`` is ``(N,)`` or ``(N, K)``.
    """

    relevance: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    method: str
    params: dict
    seconds: float = 0.0
    cached: bool = False

    @property
    def probabilities(self) -> np.ndarray:
        z = self.logits.astype(np.float64)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)

    def heatmap(self, relu: bool = False) -> np.ndarray:
        """The display heatmap: relevance summed over channels (positive part only with ``relu=True``)."""
        h = self.relevance.sum(axis=-1)
        return np.maximum(h, 0) if relu else h


class ResultCache:
    """An LRU of per-image results, bounded in bytes."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key, value, size: int | None = None) -> None:
        size = sum(getattr(v, "nbytes", 0) for v in value) if size is None else int(size)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, old_size) = self._items.popitem(last=False)
                self._bytes -= old_size

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


RESULTS = ResultCache()
#: Per-image forward state of LRP explainers (activations, denominators): a class switch on a cached image
#: costs one backward pass.
STATES = ResultCache(max_bytes=512 * 2**20)


# ---- input checks ----------------------------------------------------------------------------------

def _check_images(images, graph: Graph) -> np.ndarray:
    if isinstance(images, tf.Tensor):
        images = images.numpy()
    arr = np.asarray(images)
    if arr.dtype == object:
        raise ExplainError("images must be a numeric array of shape (N, H, W, C); got a ragged/object array.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ExplainError(f"images must be floating point in the model's input space (got dtype {arr.dtype}); "
                           "convert them, e.g. preprocess(images.astype('float32')).")
    input_signature_check(graph, arr)
    if arr.shape[0] == 0:
        raise ExplainError("images is an empty batch (N = 0).")
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        nans = int(np.count_nonzero(np.isnan(arr)))
        raise ExplainError(f"images contain {bad} non-finite values ({nans} NaN, {bad - nans} Inf); "
                           "explanations need finite inputs.")
    return np.ascontiguousarray(arr, dtype=np.float32)


def parse_targets(targets, top_k: int | None, n: int, num_classes: int) -> tuple[np.ndarray, bool]:
    """Targets as an int32 (N, K) array (negative -r-1 = the r-th most probable class) and nested flag."""
    if top_k is not None:
        if targets is not None:
            raise ExplainError("Give either targets or top_k, not both.")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= num_classes:
            raise ExplainError(f"top_k must be an integer in [1, {num_classes}], got {top_k!r}.")
        return np.tile(-np.arange(1, top_k + 1, dtype=np.int32), (n, 1)), True
    if targets is None:
        return np.full((n, 1), -1, np.int32), False
    try:
        arr = np.asarray(targets)
    except ValueError:
        raise ExplainError("targets must be an int, one int per image, or an (N, K) list with the same K for "
                           "every image.") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0) or arr.dtype == bool:
        if arr.dtype.kind == "f" and arr.size and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ExplainError(f"targets must be class indices (integers), got {targets!r}.")
    if arr.ndim == 0:
        arr, nested = np.full((n, 1), int(arr)), False
    elif arr.ndim == 1:
        if arr.shape[0] != n:
            raise ExplainError(f"targets has {arr.shape[0]} entries for {n} images; give one per image, or a "
                               f"nested list like [[a, b]] * {n} for several targets per image.")
        arr, nested = arr[:, None], False
    elif arr.ndim == 2:
        if arr.shape[0] != n or arr.shape[1] == 0:
            raise ExplainError(f"nested targets must have shape (N={n}, K>=1), got {arr.shape}.")
        nested = True
    else:
        raise ExplainError(f"targets must be an int, a list of N ints or an (N, K) list; got shape {arr.shape}.")
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise ExplainError(f"target {int(bad.flat[0])} is out of range: the model has {num_classes} classes "
                           f"(valid targets are 0..{num_classes - 1}).")
    return arr.astype(np.int32), nested


def bounds_from_preprocess(preprocess: Callable, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(preprocess(0), preprocess(255))`` per channel, e.g. about -123.68 and 151.06 for VGG16."""
    def run(v):
        out = preprocess(np.full((1, 1, 1, channels), v, np.float32))
        return np.asarray(out, np.float64).reshape(-1)[-channels:]
    a, b = run(0.0), run(255.0)
    return np.minimum(a, b), np.maximum(a, b)


def _digest(arr: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(arr).tobytes() + str(arr.shape).encode(), digest_size=16).digest()


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_freeze(v) for v in np.asarray(value).tolist()) if np.ndim(value) else float(value)
    return value


def resolve_targets(logits: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """Targets (N, K) with negative entries ``-r-1`` replaced by the r-th most probable class."""
    ranked = np.argsort(-logits, axis=-1, kind="stable")
    rank = np.clip(-spec - 1, 0, logits.shape[-1] - 1)
    return np.where(spec < 0, np.take_along_axis(ranked, rank, axis=1), spec).astype(np.int64)


def _softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def initial_relevance(head: str, logits: np.ndarray, targets: np.ndarray, dual_sums: np.ndarray | None = None,
                      scaling: bool = True) -> np.ndarray:
    """The initial relevance at the logits, (K, N, C) float32, computed in float64 (METHODS.md heads).

    For ``sglrp``/``clrp`` the dual head is folded in: ``R = R_t - s R_d`` with
    ``s = safe_div(<v, R_t>, <v, R_d>)``, where ``v`` (``dual_sums``, (N, C)) gives each logit's total input
    relevance per unit, so that one backward pass gives ``H_t - s H_d`` (the passes are linear in ``R``).
    ``1 - y_t`` is computed as ``sum_{n != t} y_n`` so a confident prediction keeps a non-zero head.
    """
    n, c = logits.shape
    onehot = np.zeros((targets.shape[1], n, c))
    onehot[np.arange(targets.shape[1])[:, None], np.arange(n)[None, :], targets.T] = 1.0
    z = logits.astype(np.float64)[None]
    zt = (onehot * z).sum(-1, keepdims=True)
    if head == "logit":
        return (onehot * zt).astype(np.float32)
    if head == "clrp":
        target, dual = onehot * zt, (1 - onehot) * zt / (c - 1)
    else:
        y = _softmax64(logits)[None]
        yt = (onehot * y).sum(-1, keepdims=True)
        others = ((1 - onehot) * y).sum(-1, keepdims=True)
        if head == "softmax_gradient":
            return (onehot * yt * others - (1 - onehot) * yt * y).astype(np.float32)
        target, dual = onehot * yt * others, (1 - onehot) * yt * y
    if scaling:
        v = dual_sums.astype(np.float64)[None]
        st, sd = (target * v).sum(-1, keepdims=True), (dual * v).sum(-1, keepdims=True)
        s = st / (sd + R.SAFE_EPS * np.where(sd >= 0, 1.0, -1.0))
    else:
        s = 1.0
    return (target - s * dual).astype(np.float32)


# ---- the explainer ---------------------------------------------------------------------------------

class Explainer:
    """Explain a Keras classifier with one method; any target class, no rebuild.

    Parameters
    ----------
    model : keras.Model
        A built Sequential/Functional classifier (nested models, Add/Concatenate branches allowed). A final
        softmax is removed: every method starts from the logits.
    method : str
        A name from :func:`~sglrp_widgets.list_methods`, e.g. ``"sglrp"``, ``"lrp.epsilon"``, ``"grad_cam"``.
    preprocess : callable, optional
        The model's preprocessing function; gives the default z_box bounds ``preprocess(0)``/``preprocess(255)``.
        Images passed to the explainer must already be preprocessed.
    output : int or str, optional
        Which output to explain, for models with several outputs.
    rules : dict, optional
        Per-layer rule overrides for LRP methods: ``{layer name | class | predicate: rule}``.
    cache : ResultCache or None, optional
        Where results are cached (default: the shared cache; ``None`` disables caching).
    **params
        The method's parameters (see ``list_methods()``), e.g. ``epsilon=0.1`` or ``low=-1, high=1``.

    Examples
    --------
    >>> ex = Explainer(model, "lrp.epsilon", epsilon=0.1)
    >>> out = ex(images, targets=[3, 1, 4])
    >>> out.relevance.shape == images.shape
    True
    """

    def __init__(self, model, method: str = "sglrp", *, preprocess: Callable | None = None, output=None,
                 rules: dict | None = None, cache: ResultCache | None | str = "shared", **params):
        import keras
        if not isinstance(model, keras.Model):
            raise ExplainError(f"Explainer needs a keras.Model, got {type(model).__name__}.")
        self.spec: Method = get_method(method)
        self.method = method
        self.params = validate_params(method, params)
        if rules is not None and self.spec.kind != "lrp":
            raise ExplainError(f"rules= only applies to LRP methods, not to {method!r}.")
        self._model_ref = model
        self._preprocess = preprocess
        self._output = output
        self._rules = rules
        self._cache = RESULTS if cache == "shared" else cache
        self._lock = threading.RLock()
        self._graph: Graph | None = None
        self._compiled = None
        self._fingerprint_fn = None
        self._fingerprint: bytes | None = None
        self._derived: dict[int, dict[str, Any]] = {}       # node index -> weight key -> tensor/variable
        self._nonneg: set = set()
        self._denominator_source: dict = {}
        self._layout: list = []
        self._node_rules: dict[int, R.Rule] = {}
        self.trace_count = 0
        overrides = tuple((repr(k), repr(R.get_rule(v))) for k, v in rules.items()) if isinstance(rules, dict) else None
        self._key = (method, _freeze(self.params), overrides, output)
        if preprocess is not None and not callable(preprocess):
            raise ExplainError(f"preprocess must be a function, got {type(preprocess).__name__}.")

    # -- public ------------------------------------------------------------------------------------
    @property
    def model(self):
        m = self._model_ref() if isinstance(self._model_ref, weakref.ref) else self._model_ref
        if m is None:
            raise ExplainError("The model of this explainer has been deleted.")
        return m

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            try:
                self._build()
            except Exception:
                self._graph = None      # an unsupported model fails the same clear way on every call
                raise
        return self._graph

    @property
    def rules(self) -> dict[str, str]:
        """Layer name -> rule used, for LRP methods (after the first call or ``graph`` access)."""
        g = self.graph
        return {g.nodes[i].name: repr(r) for i, r in self._node_rules.items()}

    def __call__(self, images, targets=None, *, top_k: int | None = None) -> Explanation:
        """Explain ``images`` (N, H, W, C) for ``targets`` (None = top-1, int, N ints, or (N, K))."""
        with self._lock:
            start = time.perf_counter()
            graph = self.graph
            x = _check_images(images, graph)
            spec, nested = parse_targets(targets, top_k, x.shape[0], graph.num_classes)
            low_high = self._bounds(x)
            fp = self._refresh()
            base_key = (fp, self._structure, self._key, None if low_high is None else _freeze(low_high))
            n, k = spec.shape
            keyed = self._cache is not None or self.spec.kind == "lrp"
            digests = [_digest(img) for img in x] if keyed else None
            rel = np.empty((n, k) + x.shape[1:], np.float32)
            logits = np.empty((n, graph.num_classes), np.float32)
            resolved = np.empty((n, k), np.int64)
            missing = []
            for i in range(n):
                hit = [self._cache.get((base_key, digests[i], int(t))) for t in spec[i]] if self._cache is not None \
                    else [None]
                if all(h is not None for h in hit):
                    for j, h in enumerate(hit):
                        rel[i, j], logits[i], resolved[i, j] = h
                else:
                    missing.append(i)
            if missing:
                idx = np.asarray(missing)
                if self.spec.kind == "lrp":
                    r, z, t = self._lrp(x[idx], spec[idx], low_high, (base_key, tuple(digests[i] for i in idx)))
                else:
                    r, z, t = (v.numpy() for v in self._run_compiled(x[idx], spec[idx], low_high))
                rel[idx], logits[idx], resolved[idx] = np.moveaxis(r, 0, 1), z, t
                if self._cache is not None:
                    for i in missing:
                        for j in range(k):
                            value = (rel[i, j].copy(), logits[i].copy(), resolved[i, j])
                            self._cache.put((base_key, digests[i], int(spec[i, j])), value)
                            self._cache.put((base_key, digests[i], int(resolved[i, j])), value)
            if self.params.get("relu"):
                np.maximum(rel, 0, out=rel)
            if not nested:
                rel, resolved = rel[:, 0], resolved[:, 0]
            return Explanation(relevance=rel, targets=resolved, logits=logits, method=self.method,
                               params=dict(self.params), seconds=time.perf_counter() - start,
                               cached=not missing)

    def clear(self) -> None:
        """Forget cached results, per-image states and derived weights (after editing weights in place)."""
        self._fingerprint = None
        STATES.clear()
        if self._cache is not None:
            self._cache.clear()

    # -- building ----------------------------------------------------------------------------------
    def _build(self) -> None:
        model = self.model
        kind = self.spec.kind
        graph = read_model(model, fold_batchnorm=(kind == "lrp"), output=self._output)
        self._graph = graph
        # Results are keyed by this and the weights' fingerprint: models that share weights but differ in
        # structure never share results.
        self._structure = hash(tuple((n.kind, n.name, n.class_name, tuple(n.inputs), n.output)
                                     for n in graph.nodes))
        if kind == "lrp":
            self._assign_rules(graph)
            self._nonneg = self._nonneg_values(graph)
        if kind == "cam":
            self._feature = self._cam_value()
        variables = list(model.weights)

        self._fingerprint_fn = tf.function(lambda: weights_fingerprint(variables), autograph=False)

        spec = tf.TensorSpec((None,) + tuple(graph.input_shape), tf.float32)
        tspec = tf.TensorSpec((None, None), tf.int32)
        bspec = [tf.TensorSpec([None], tf.float32)] * 2
        if kind == "lrp":
            self._forward_fn = tf.function(self._counted(self._lrp_forward), input_signature=[spec] + bspec,
                                           autograph=False)
            self._backward_fn = None
            return
        body = {"gradient": self._gradient_body, "cam": self._cam_body}[kind]
        self._compiled = tf.function(self._counted(body), input_signature=[spec, tspec] + bspec)

    def _counted(self, fn):
        def traced(*args):
            self.trace_count += 1
            return fn(*args)
        return traced

    def _assign_rules(self, graph: Graph) -> None:
        opaque = graph.opaque_nodes()
        if opaque:
            node = opaque[0]
            raise UnsupportedLayerError(
                f"Layer {node.name!r} ({node.class_name}) has no LRP rule, so method {self.method!r} cannot "
                f"explain this model. Methods that would work: {', '.join(_GRADIENT_METHODS)}.",
                node.name, node.class_name)
        for node in graph.nodes:
            if node.kind == "activation" and node.activation == "softmax":
                raise UnsupportedLayerError(
                    f"Layer {node.name!r} ({node.class_name}) applies a softmax inside the network; LRP rules "
                    f"only pass a final softmax. Methods that would work: {', '.join(_GRADIENT_METHODS)}.",
                    node.name, node.class_name)
        composite = C.with_overrides(C.get_composite(self.spec.composite), self._rules)
        for i, node in enumerate(graph.nodes):
            if node.kind != "linear":
                continue
            ctx = C.LayerContext(node.name, node.layer, node.op.family, i in graph.first_linear,
                                 i in graph.relu_followed)
            self._node_rules[i] = composite(ctx, self.params)

    def _bounds(self, x: np.ndarray):
        """The z_box bounds (low, high) as arrays, or None when the method needs none."""
        if not self.spec.uses_bounds and not any(r.name == "z_box" for r in self._node_rules.values()):
            return None
        low, high = self.params.get("low"), self.params.get("high")
        if (low is None or high is None) and self._preprocess is not None:
            plow, phigh = bounds_from_preprocess(self._preprocess, x.shape[-1])
            low = plow if low is None else low
            high = phigh if high is None else high
        low = float(x.min()) if low is None else low
        high = float(x.max()) if high is None else high
        low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        if low.ndim and low.shape[0] not in (1, x.shape[-1]) or high.ndim and high.shape[0] not in (1, x.shape[-1]):
            raise ExplainError(f"low/high need one value or one per channel ({x.shape[-1]}); got {low}, {high}.")
        return low, high

    def _run_compiled(self, x, spec, low_high):
        try:
            with _quiet_retracing_notices():
                return self._compiled(tf.constant(x), tf.constant(spec), *self._bound_args(low_high))
        except Exception as exc:  # an ExplainError raised while tracing arrives wrapped by autograph
            cause = exc
            while cause is not None and not isinstance(cause, ExplainError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise cause from None
            raise

    @staticmethod
    def _bound_args(low_high):
        if low_high is None:
            return tf.zeros([1]), tf.zeros([1])
        return tf.reshape(tf.constant(low_high[0]), [-1]), tf.reshape(tf.constant(low_high[1]), [-1])

    def _refresh(self) -> bytes:
        """Fingerprint the model's weights; refresh the derived (modified) weights when they changed."""
        with _quiet_retracing_notices():
            fp = hashlib.blake2b(self._fingerprint_fn().numpy().tobytes(), digest_size=16).digest()
        if fp != self._fingerprint and self.spec.kind == "lrp":
            for i, node in enumerate(self._graph.nodes):
                if node.kind != "linear":
                    continue
                kernel, bias = node.op.params()
                slots = self._derived.setdefault(i, {})
                for key in self._weight_keys(i, node):
                    if key in ("w", "b") and node.op.bn is None:
                        var = node.op.kernel_var if key == "w" else node.op.bias_var
                        if var is not None:        # the model's own variable: always current
                            slots[key] = getattr(var, "value", var)
                            continue
                    value = R.derive_weight(key, kernel, bias)
                    if isinstance(slots.get(key), tf.Variable) and slots[key].shape == value.shape:
                        slots[key].assign(value)
                    else:
                        slots[key] = tf.Variable(value, trainable=False)
        self._fingerprint = fp
        return fp

    def _weight_keys(self, i: int, node) -> set[str]:
        """The parameters node ``i``'s rule reads, skipping terms on negative inputs that cannot occur."""
        keys = {"w", "b"}
        for _, leaf in self._node_rules[i].leaves():
            keys |= {t.weights for t in leaf.terms
                     if not (t.inputs == "x_neg" and node.inputs[0] in self._nonneg)}
            if leaf.bias:
                keys.add(leaf.bias)
        return keys

    # -- compiled bodies -------------------------------------------------------------------------
    @staticmethod
    def _resolve_targets(logits, targets):
        """Negative targets -r-1 become the r-th most probable class of each row (in-graph).

        The gradient and CAM bodies resolve targets from the logits of the same forward pass they
        differentiate; LRP resolves them on the host (``resolve_targets``) from its cached forward state.
        """
        k = tf.shape(targets)[1]
        ranked = tf.math.top_k(logits, k=tf.maximum(k, 1)).indices
        rank = tf.clip_by_value(-targets - 1, 0, tf.maximum(k - 1, 0))
        return tf.where(targets < 0, tf.gather(ranked, rank, batch_dims=1), targets)

    def _linear_params(self, i, node):
        return self._derived[i]["w"], self._derived[i]["b"]

    # LRP: forward once per image (cached), then one backward pass per request ------------------------
    def _lrp_forward(self, images, low, high):
        """Logits and the state the backward pass needs, as a flat list: every node's inputs and the inverse
        stabilized denominators of its rule (``1 / (z + eps sign z)``), so a backward pass only multiplies."""
        graph = self._graph
        logits, values = graph.forward(images, linear_params=self._linear_params, keep=True)
        needed = {"low": low, "high": high}
        for i, node in enumerate(graph.nodes):
            if node.kind == "activation":
                continue
            for v in node.inputs:
                needed[("v", v)] = values[v]
            if node.kind == "linear":
                inv = R.inverse_denominators(self._node_rules[i], node.op, values[node.inputs[0]],
                                             self._derived[i], (low, high), node.inputs[0] in self._nonneg,
                                             values[node.output])
                for j, iz in enumerate(inv):
                    self._denominator_source[(i, j)] = None if iz is None else ("d", i, j)
                    if iz is not None:
                        needed[("d", i, j)] = iz
            elif node.kind in ("pool", "elementwise"):
                needed[("d", i, 0)] = 1.0 / R.stabilize(values[node.output], R.SAFE_EPS)
                self._denominator_source[(i, 0)] = ("d", i, 0)
        self._layout = list(needed)
        state = [needed[key] for key in self._layout]
        if not self._contrastive:
            return logits, state, tf.zeros([0])
        values_, denoms, bounds = self._unpack(state)
        return logits, state, self._dual_sums(values_, denoms, bounds)

    def _unpack(self, state):
        st = dict(zip(self._layout, state))
        values = {key[1]: t for key, t in st.items() if isinstance(key, tuple) and key[0] == "v"}
        denoms = {}
        for (i, j), src in self._denominator_source.items():
            denoms.setdefault(i, []).append(None if src is None else st[src])
        return values, denoms, (st["low"], st["high"])

    def _lrp_backward(self, state, heads):
        values, denoms, bounds = self._unpack(state)
        return self._backward(values, heads, bounds, denoms)

    @property
    def _contrastive(self) -> bool:
        return self.spec.head in ("sglrp", "clrp") and bool(self.params.get("scaling", True))

    def _dual_sums(self, values, denoms, bounds):
        """``v = B^T 1``: the total input relevance per unit of relevance at each logit, (N, C).

        The backward pass ``B`` is linear in the initial relevance, so ``sum(B(R)) = <v, R>`` for any head
        ``R``: SGLRP/CLRP get their scaling ``s`` from ``v`` and need one backward pass per target. ``v``
        comes from pushing ones through the transposed rules, forward maps only (``rules.transpose_*``).
        """
        graph = self._graph
        u = {graph.input_id: tf.ones_like(values[graph.input_id])}
        for i, node in enumerate(graph.nodes):
            us = [u[v] for v in node.inputs]
            if node.kind == "activation":     # relevance passes unchanged; its input is not kept
                u[node.output] = us[0]
                continue
            xs = [values[v] for v in node.inputs]
            if node.kind == "linear":
                out = R.transpose_linear_rule(self._node_rules[i], node.op, xs[0], us[0], self._derived[i],
                                              bounds, node.inputs[0] in self._nonneg, denoms[i])
            elif node.kind == "pool":
                out = node.fn(xs[0] * us[0]) * denoms[i][0]
            elif node.kind == "elementwise":
                a, _ = node.scale_shift()
                out = a * xs[0] * us[0] * denoms[i][0]
            elif node.kind == "add":
                total = tf.add_n(xs)
                out = tf.add_n([ui * R.safe_div(xi, total) for ui, xi in zip(us, xs)])
            else:  # route: the transpose of routing by the gradient is the forward-mode derivative
                with tf.autodiff.ForwardAccumulator(xs, us) as acc:
                    y = node.fn(xs[0] if len(xs) == 1 else xs)
                out = acc.jvp(y)
            u[node.output] = out
        return u[graph.output_id]

    def _compile_backward(self, state) -> None:
        specs = [tf.TensorSpec([None] + list(t.shape[1:]), t.dtype) for t in state]
        heads = tf.TensorSpec([None, self._graph.num_classes], tf.float32)
        self._backward_fn = tf.function(self._counted(self._lrp_backward), input_signature=[specs, heads],
                                        autograph=False)

    def _lrp(self, x, spec, low_high, key):
        """Relevance (K, N, ...), logits and resolved targets for LRP methods."""
        entry = STATES.get((id(self), key))
        if entry is None:
            low, high = self._bound_args(low_high)
            with _quiet_retracing_notices():
                z, state, v = self._forward_fn(tf.constant(x), low, high)
            entry = (z.numpy(), state, v.numpy())
            STATES.put((id(self), key), entry, size=sum(int(np.prod(t.shape)) * 4 for t in state))
        logits, state, dual_sums = entry
        if self._backward_fn is None:
            self._compile_backward(state)
        t = resolve_targets(logits, spec)
        heads = initial_relevance(self.spec.head, logits, t, dual_sums if self._contrastive else None,
                                  scaling=self.params.get("scaling", True))
        k, n = heads.shape[:2]
        with _quiet_retracing_notices():
            rel = self._backward_fn(state, tf.constant(heads.reshape(k * n, -1), tf.float32)).numpy()
        return rel.reshape((k, n) + x.shape[1:]), logits, t

    @staticmethod
    def _nonneg_values(graph: Graph) -> set:
        """Value ids known to be >= 0 (ReLU outputs, and pooling/routing/sums of them)."""
        nonneg = set()
        for node in graph.nodes:
            if node.kind == "activation" and node.activation == "relu" and _floor_is_zero(node):
                nonneg.add(node.output)
            elif node.kind in ("route", "pool", "add") and all(v in nonneg for v in node.inputs):
                nonneg.add(node.output)
        return nonneg

    def _backward(self, values, r_top, bounds, denoms):
        graph = self._graph
        nonneg = self._nonneg
        n = tf.shape(values[graph.input_id])[0]
        rel = {graph.output_id: r_top}
        for i in range(len(graph.nodes) - 1, -1, -1):
            node = graph.nodes[i]
            r = rel.pop(node.output, None)
            if r is None:
                continue
            if node.kind == "activation":     # relevance passes unchanged; its input is not kept
                rel[node.inputs[0]] = rel[node.inputs[0]] + r if node.inputs[0] in rel else r
                continue
            xs = [values[v] for v in node.inputs]
            if node.kind == "linear":
                weights = self._derived[i]
                r_in = [R.apply_linear_rule(self._node_rules[i], node.op, xs[0], r, weights, bounds,
                                            nonneg=node.inputs[0] in nonneg, inv=denoms[i])]
            elif node.kind == "pool":
                s = R.flat_heads(R.by_head(r, n) * denoms[i][0][None])
                shape = tf.concat([tf.shape(r)[:1], tf.shape(xs[0])[1:]], 0)
                g = R.transpose_map(node.fn, s, shape)
                r_in = [R.flat_heads(R.by_head(g, n) * xs[0][None])]
            elif node.kind == "elementwise":
                a, _ = node.scale_shift()
                factor = a * xs[0] * denoms[i][0]
                r_in = [R.flat_heads(R.by_head(r, n) * factor[None])]
            elif node.kind == "add":
                total = tf.add_n(xs)
                r_in = [R.flat_heads(R.by_head(r, n) * R.safe_div(x, total)[None]) for x in xs]
            elif node.kind == "route":
                heads = tf.shape(r)[0] // n
                tiled = [tf.tile(x, tf.concat([[heads], tf.ones([tf.rank(x) - 1], tf.int32)], 0)) for x in xs]
                with tf.GradientTape() as tape:
                    tape.watch(tiled)
                    out = node.fn(tiled[0] if len(tiled) == 1 else tiled)
                r_in = tape.gradient(out, tiled, output_gradients=r)
            else:  # pragma: no cover - opaque nodes are rejected when rules are assigned
                raise AssertionError(node.kind)
            for v, ri in zip(node.inputs, r_in):
                rel[v] = rel[v] + ri if v in rel else ri
        return rel[graph.input_id]

    # gradient family --------------------------------------------------------------------------------
    @staticmethod
    def _tile_targets(images, targets):
        """Rows k*N + n: image n with its k-th target."""
        k = tf.shape(targets)[1]
        x = tf.tile(images, tf.concat([[k], tf.ones([tf.rank(images) - 1], tf.int32)], 0))
        t = tf.reshape(tf.transpose(targets), [-1, 1])
        return x, t

    def _activation_fn(self, mode: str):
        @tf.custom_gradient
        def guided(x):
            y = tf.nn.relu(x)

            def grad(dy):
                return tf.nn.relu(dy) * tf.cast(x > 0, dy.dtype)
            return y, grad

        @tf.custom_gradient
        def deconv(x):
            y = tf.nn.relu(x)

            def grad(dy):
                return tf.nn.relu(dy)
            return y, grad

        special = {"guided_backprop": guided, "deconvnet": deconv}.get(mode)

        def fn(node, x):
            if special is not None and node.activation == "relu" and _plain_relu(node):
                return special(x)
            return node.fn(x)
        return fn

    def _grad_of_target(self, x, t, activation_fn=None, feature=None):
        """d z_t / d x (or d z_t / d feature value) and the logits, for rows of x with targets t (rows, 1)."""
        graph = self._graph
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits, values = graph.forward(x, activation_fn=activation_fn, keep=True)
            tt = self._resolve_targets(logits, t)
            score = tf.reduce_sum(tf.gather(logits, tt, batch_dims=1))
        source = values[feature] if feature is not None else x
        return tape.gradient(score, source), logits, tt, (values[feature] if feature is not None else None)

    def _gradient_body(self, images, targets, low, high):
        n = tf.shape(images)[0]
        x, t = self._tile_targets(images, targets)
        name, p = self.method, self.params
        if name == "smoothgrad":
            span = tf.reduce_max(x, axis=tf.range(1, tf.rank(x)), keepdims=True) - \
                tf.reduce_min(x, axis=tf.range(1, tf.rank(x)), keepdims=True)
            sigma = p["noise"] * span
            logits = self._graph.forward(x)     # targets are resolved on the clean image
            tt = self._resolve_targets(logits, t)
            total = tf.zeros_like(x)
            for i in tf.range(p["n"]):
                # One noise draw per sample, shared by every row: an image's map does not depend on the batch.
                shape = tf.concat([[1], tf.shape(x)[1:]], 0)
                noise = tf.random.stateless_normal(shape, seed=tf.stack([p["seed"], i]))
                g, _, _, _ = self._grad_of_target(x + sigma * noise, tt)
                total += g
            rel = total / float(p["n"])
        elif name == "integrated_gradients":
            base = tf.fill(tf.shape(x), tf.cast(p["baseline"], x.dtype))
            logits = self._graph.forward(x)
            tt = self._resolve_targets(logits, t)
            total = tf.zeros_like(x)
            steps = p["steps"]
            for i in tf.range(1, steps + 1):
                alpha = tf.cast(i, x.dtype) / float(steps)
                g, _, _, _ = self._grad_of_target(base + alpha * (x - base), tt)
                total += g
            rel = (x - base) * total / float(steps)
        else:
            fn = self._activation_fn(name) if name in ("guided_backprop", "deconvnet") else None
            g, logits, tt, _ = self._grad_of_target(x, t, activation_fn=fn)
            rel = x * g if name == "input_x_gradient" else g
        k = tf.shape(targets)[1]
        return R.by_head(rel, n), logits[:n], tf.transpose(tf.reshape(tt, [k, n]))

    # CAM family --------------------------------------------------------------------------------------
    def _cam_value(self) -> int:
        graph = self._graph
        name = self.params.get("layer")
        convs = [nd.name for nd in graph.nodes if nd.kind == "linear" and nd.op.family == "conv"
                 and not nd.op.depthwise_part]
        if name is None:
            if not convs:
                raise ExplainError(f"Method {self.method!r} needs a convolutional layer; the model has none. "
                                   "Use a gradient or LRP method instead.")
            name = convs[-1]
        if name not in graph.feature_value:
            raise ExplainError(f"layer={name!r} is not a layer of the model. Convolutional layers: "
                               f"{', '.join(convs)}.{suggest(name, convs)}")
        value = graph.feature_value[name]
        consumers, nodes = graph.consumers(), graph.nodes
        while len(consumers.get(value, [])) == 1:   # take the map after its BatchNorm / activation
            nxt = nodes[consumers[value][0]]
            if nxt.kind not in ("elementwise", "activation"):
                break
            value = nxt.output
        return value

    def _cam_body(self, images, targets, low, high):
        n = tf.shape(images)[0]
        x, t = self._tile_targets(images, targets)
        g, logits, tt, a = self._grad_of_target(x, t, feature=self._feature)
        if a.shape.rank != 4:
            raise ExplainError(f"Method {self.method!r} needs a 2-D feature map (N, h, w, c); the chosen layer "
                               f"gives shape {a.shape}.")
        if self.method == "grad_cam_plus_plus":
            g2, g3 = g * g, g * g * g
            denom = 2.0 * g2 + tf.reduce_sum(a, axis=(1, 2), keepdims=True) * g3
            alpha = tf.math.divide_no_nan(g2, denom)
            weights = tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2), keepdims=True)
        else:
            weights = tf.reduce_mean(g, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * a, axis=-1, keepdims=True))
        size = tf.shape(x)[1:3]
        cam = tf.image.resize(cam, size, method="bilinear")
        channels = tf.cast(tf.shape(x)[-1], x.dtype)
        if self.method == "guided_grad_cam":
            gb, _, _, _ = self._grad_of_target(x, tt, activation_fn=self._activation_fn("guided_backprop"))
            rel = cam * gb
        else:
            rel = tf.broadcast_to(cam / channels, tf.shape(x))
        k = tf.shape(targets)[1]
        return R.by_head(rel, n), logits[:n], tf.transpose(tf.reshape(tt, [k, n]))


FULL_FINGERPRINT_SIZE = 1 << 18
SAMPLES_PER_VARIABLE = 1 << 14


def weights_fingerprint(variables) -> tf.Tensor:
    """A cheap summary of the weights that changes when they change (training, ``set_weights``, assign).

    Variables up to 2**18 values are summed in full (plain and position-weighted); larger ones through a
    strided sample of about 2**14 values (plus their first and last rows), so a cached result costs
    microseconds, not a pass over the weights. A change confined to unsampled entries of a large kernel
    (a single assigned weight, say) is not seen: call ``Explainer.clear()`` after such surgery.
    """
    parts = []
    for v in variables:
        flat = tf.reshape(tf.convert_to_tensor(v), [-1])
        size = int(np.prod(v.shape))
        if size > FULL_FINGERPRINT_SIZE:
            stride = size // SAMPLES_PER_VARIABLE + 1
            flat = tf.concat([flat[::stride], flat[1::stride * 3 + 1], flat[:64], flat[-64:]], 0)
        flat = tf.cast(flat, tf.float32)
        ramp = tf.cast(tf.range(tf.size(flat)) % 1009, tf.float32) + 1.0
        parts += [tf.reduce_sum(flat), tf.reduce_sum(flat * ramp)]
    return tf.stack(parts) if parts else tf.zeros([0])


class _quiet_retracing_notices:
    """Silence TensorFlow's "triggered tf.function retracing" notice while one Explainer traces.

    Every Explainer owns its own tf.function; TensorFlow counts traces of same-named functions across
    instances and would warn a notebook user who compares several methods, although nothing retraces.
    """

    def __enter__(self):
        self._logger = tf.get_logger()
        self._level = self._logger.level
        self._logger.setLevel("ERROR")

    def __exit__(self, *exc):
        self._logger.setLevel(self._level)
        return False


def _floor_is_zero(node) -> bool:
    """A ReLU node whose output is max(x, 0) from below (no leak, no threshold): its output is >= 0."""
    layer = node.layer
    return getattr(layer, "negative_slope", 0) in (0, 0.0, None) and getattr(layer, "threshold", 0) in (0, 0.0, None)


def _plain_relu(node) -> bool:
    """Exactly max(x, 0): the ReLUs guided backprop and deconvnet modify."""
    return _floor_is_zero(node) and getattr(node.layer, "max_value", None) is None


# ---- the shared cache of explainers ------------------------------------------------------------------

_EXPLAINERS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_EXPLAINERS_LOCK = threading.Lock()


def get_explainer(model, method: str = "sglrp", *, preprocess: Callable | None = None, **params) -> Explainer:
    """The shared :class:`Explainer` for (model, method, parameters); the model is held weakly."""
    resolved = validate_params(method, params)
    key = (method, _freeze(resolved), id(preprocess) if preprocess is not None else None)
    with _EXPLAINERS_LOCK:
        per_model = _EXPLAINERS.setdefault(model, {})
        ex = per_model.get(key)
        if ex is None:
            ex = Explainer(model, method, preprocess=preprocess, **params)
            ex._model_ref = weakref.ref(model)
            per_model[key] = ex
        return ex


_SUPPORT: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def method_support(model, *, output=None) -> dict[str, str | None]:
    """Which methods can explain ``model``: method name -> ``None`` if it can, else the reason it cannot.

    The model is read once (cached per model, held weakly); no image is needed and nothing is traced.

    Examples
    --------
    >>> support = method_support(model)
    >>> [m for m, why in support.items() if why is None][:3]
    ['sglrp', 'clrp', 'sglrp.sequential_a']
    """
    key = output if isinstance(output, (int, str, type(None))) else repr(output)
    with _EXPLAINERS_LOCK:
        cached = _SUPPORT.get(model, {}).get(key)
    if cached is not None:
        return dict(cached)
    support: dict[str, str | None] = {}
    for name, spec in METHODS.items():
        try:
            ex = Explainer(model, name, output=output, cache=None)
            ex.graph                                   # reads the model, assigns rules, finds the CAM layer
            support[name] = None
        except ExplainError as exc:
            support[name] = str(exc)
    with _EXPLAINERS_LOCK:
        _SUPPORT.setdefault(model, {})[key] = support
    return dict(support)


def explain(model, images, method: str = "sglrp", targets=None, *, top_k: int | None = None,
            preprocess: Callable | None = None, **params) -> Explanation:
    """Explain ``images`` with ``method``, reusing the compiled graph and results of earlier calls.

    Examples
    --------
    >>> out = explain(model, images, "sglrp", targets=[340, 386])
    >>> out.relevance.shape == images.shape
    True
    """
    return get_explainer(model, method, preprocess=preprocess, **params)(images, targets, top_k=top_k)

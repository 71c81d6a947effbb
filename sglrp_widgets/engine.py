"""The Explainer: validation, targets, bounds and caches in front of one back end per method family.

A model is read once (``graph.py``), canonicalised (``canonize.py``) and checked against the model itself on
the first call: the replayed logits must equal the model's. LRP methods run on ``lrp.py`` (a cached forward
state per image, one batched backward pass per request), gradient and CAM methods on ``gradient.py``. Targets
are runtime tensors, so switching the class never retraces. Results are cached per (weights, method,
parameters, image, target) in an LRU bounded in bytes (``caching.py``).
"""
from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from . import composites as C
from .background import Background
from .caching import RESULTS, STATES, ResultCache, digest, freeze, weights_fingerprint
from .canonize import canonize
from .compiling import MODES, Pass, quiet_retracing_notices, serving
from .errors import ExplainError
from .gradient import GradientBackend
from .graph import Graph, input_signature_check, model_outputs, read_model, replay_mismatch
from .lrp import DerivedWeights, LRPBackend, blocking_error, blocking_nodes
from .methods import METHODS, Method, get_method, validate_params

STALE = b"stale"        # a fingerprint no weights have: the derived weights are rewritten on the next call
#: ``compile="auto"`` compiles on the first call a graph whose nodes average more multiply-adds per image than
#: this: run as Python, its convolutions lose their fused bias and activation and cost more than tracing saves
#: (VGG16 at 224x224, 4e8: sglrp's first call 1.94 s as Python, 1.53 s compiled on the call). Lighter graphs
#: spend their first call tracing (ResNet50, 3e7: 1.14 s as Python, 2.85 s compiled on the call).
HEAVY_NODE_MACS = 1e8
COMPILE_MODES = ("auto",) + MODES

__all__ = ["Explainer", "Explanation", "ResultCache", "explain", "get_explainer", "method_support"]


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


# ---- what is shared by every explainer of one model -----------------------------------------------------

class _ModelEntry:
    """A model's read graphs (folded for LRP, exact for gradients), their derived weights and the weights'
    fingerprint: read once, shared by every explainer of the model."""

    def __init__(self, model):
        variables = list(model.weights)
        self.fingerprint_pass = Pass(lambda: weights_fingerprint(variables), signature=[])
        self._graphs: dict = {}
        self._derived: dict[int, DerivedWeights] = {}
        self._verified: dict[int, bytes] = {}                # graph -> the weights' fingerprint it last replayed
        self.lock = threading.RLock()

    def graph(self, model, output, fold: bool) -> Graph:
        key = (freeze(output) if not isinstance(output, str) else output, fold)
        with self.lock:
            if key not in self._graphs:
                self._graphs[key] = canonize(read_model(model, output=output), fold=fold)
            return self._graphs[key]

    def derived(self, graph: Graph) -> DerivedWeights:
        with self.lock:
            return self._derived.setdefault(id(graph), DerivedWeights(graph))

    def fingerprint(self) -> bytes:
        """The weights' fingerprint: the same bits eagerly and compiled (integer sums), so its first calls run
        as Python (about 0.1 s on ResNet50, where compiling it costs 0.8 s) while it compiles in the background."""
        import hashlib
        value = self.fingerprint_pass()
        return hashlib.blake2b(value.numpy().tobytes(), digest_size=16).digest()

    def expect(self, model, graph: Graph, x: np.ndarray, fp: bytes) -> Background | None:
        """Start computing the model's own outputs for the replay check (once per graph and weights), in a
        thread: it runs while the first call traces its passes. ``None`` when the graph has been checked."""
        if self._verified.get(id(graph)) == fp:
            return None
        return Background(lambda: model_outputs(model, x[:2]))

    def verify(self, model, graph: Graph, x: np.ndarray, logits: np.ndarray, output, fp: bytes,
               expected: Background | None = None) -> None:
        """Check that the replayed logits equal the model's, once per graph and weights; else name where they
        part. A graph that replayed the model before its weights changed raises :class:`StaleReading`: a layer
        opened into its operations computed a value from its weights while it was read (``ops.matmul(x,
        self.w * 2.0)`` records the product, not the weight), and the model must be read again."""
        if self._verified.get(id(graph)) == fp:
            return
        outputs = expected.result() if expected is not None else None
        problem = replay_mismatch(model, graph, x[:2], logits[:2], output, outputs)
        if problem:
            if id(graph) in self._verified or all(g is not graph for g in self._graphs.values()):   # was forgotten
                self.forget(graph)
                raise StaleReading(problem)
            raise ExplainError(problem)
        self._verified[id(graph)] = fp

    def forget(self, graph: Graph) -> None:
        """Drop a graph read from weights the model no longer has; the next reading starts afresh."""
        with self.lock:
            self._graphs = {key: g for key, g in self._graphs.items() if g is not graph}
            self._derived.pop(id(graph), None)
            self._verified.pop(id(graph), None)


class StaleReading(Exception):
    """A graph no longer replays its model since the weights changed (see :meth:`_ModelEntry.verify`)."""


_MODELS: "weakref.WeakKeyDictionary[Any, _ModelEntry]" = weakref.WeakKeyDictionary()
_MODELS_LOCK = threading.Lock()


def _entry(model) -> _ModelEntry:
    with _MODELS_LOCK:
        entry = _MODELS.get(model)
        if entry is None:
            entry = _MODELS[model] = _ModelEntry(model)
        return entry


# ---- the explainer ---------------------------------------------------------------------------------

class Explainer:
    """Explain a Keras classifier with one method; any target class, no rebuild.

    Parameters
    ----------
    model : keras.Model
        A built Sequential/Functional classifier (nested models, branches, attention, user layers written with
        keras.ops allowed). A final softmax is removed: every method starts from the logits.
    method : str
        A name from :func:`~sglrp_widgets.list_methods`, e.g. ``"sglrp"``, ``"lrp.epsilon"``, ``"grad_cam"``.
    preprocess : callable, optional
        The model's preprocessing function; gives the default z_box bounds ``preprocess(0)``/``preprocess(255)``.
        Images passed to the explainer must already be preprocessed.
    output : int or str, optional
        Which output to explain, for models with several outputs.
    rules : dict, optional
        Per-layer rule overrides for LRP methods: ``{layer name | class | predicate: rule}``, a rule being a
        :mod:`~sglrp_widgets.rules` object, a name (``"z_plus"``) or ``(name, {parameters})``.
    cache : ResultCache or None, optional
        Where results are cached (default: the shared cache; ``None`` disables caching).
    keep_states : bool, optional
        Keep each image's forward state (LRP methods; an LRU of an eighth of the machine's memory), so that
        another class of a seen image costs one backward pass (default). ``False`` for one pass over many
        images, as :func:`~sglrp_widgets.explain_dataset` makes: no memory is held for switches that never come.
    compile : {"auto", "background", "first_call"}, optional
        When the method's passes are compiled (``tf.function``). ``"background"``: calls run them as Python
        until a thread has compiled them, which it starts after the first call; on ResNet50, EfficientNetB0 or
        a ViT the first map comes 2.5-11x sooner (tracing thousands of ops takes seconds) and later calls run
        compiled. ``"first_call"``: the first call compiles them and waits, for scripts that make many calls
        in a row. ``"auto"`` (default): ``"first_call"`` for graphs whose layers are heavy enough that Python
        is slower than tracing (``HEAVY_NODE_MACS``; VGG16 at 224x224), ``"background"`` otherwise.
        :meth:`wait_compiled` waits for the thread. All give the same maps, to float32 rounding.
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
                 rules: dict | None = None, cache: ResultCache | None | str = "shared", keep_states: bool = True,
                 compile: str = "auto", **params):
        import keras
        if not isinstance(model, keras.Model):
            raise ExplainError(f"Explainer needs a keras.Model, got {type(model).__name__}.")
        self.spec: Method = get_method(method)
        self.method = method
        self.params = validate_params(method, params)
        if rules is not None and self.spec.kind != "lrp":
            raise ExplainError(f"rules= only applies to LRP methods, not to {method!r}.")
        overrides = C.check_overrides(rules)
        if preprocess is not None and not callable(preprocess):
            raise ExplainError(f"preprocess must be a function, got {type(preprocess).__name__}.")
        self._model_ref = model
        self._preprocess = preprocess
        self._output = output
        self._rules = rules
        self._cache = RESULTS if cache == "shared" else cache
        if not isinstance(keep_states, (bool, np.bool_)):
            raise ExplainError(f"keep_states must be True or False, got {keep_states!r}.")
        self._keep_states = bool(keep_states)
        if compile not in COMPILE_MODES:
            raise ExplainError(f"compile must be one of {', '.join(map(repr, COMPILE_MODES))}, got {compile!r}.")
        self._compile = compile
        self._lock = threading.RLock()
        self._backend = None
        self.trace_count = 0
        self._key = (method, freeze(self.params), tuple((repr(k), repr(r)) for k, r in overrides) or None,
                     repr(output))

    # -- public ------------------------------------------------------------------------------------
    @property
    def model(self):
        m = self._model_ref() if isinstance(self._model_ref, weakref.ref) else self._model_ref
        if m is None:
            raise ExplainError("The model of this explainer has been deleted.")
        return m

    @property
    def graph(self) -> Graph:
        return self.backend.graph

    @property
    def backend(self):
        """The method family's back end (built on first use; an unsupported model fails the same clear way
        on every call)."""
        if self._backend is None:
            self._backend = self._build()
        return self._backend

    @property
    def rules(self) -> dict[str, str]:
        """Layer name -> rule used, for LRP methods (the layers relevance crosses)."""
        b = self.backend
        if not isinstance(b, LRPBackend):
            return {}
        return {b.graph.nodes[i].name: repr(r) for i, r in sorted(b.rules.items()) if i in b.relevant}

    def __call__(self, images, targets=None, *, top_k: int | None = None) -> Explanation:
        """Explain ``images`` (N, H, W, C) for ``targets`` (None = top-1, int, N ints, or (N, K))."""
        with self._lock, serving():
            start = time.perf_counter()
            try:
                return self._explain(images, targets, top_k, start)
            except StaleReading:           # the weights changed a value read with the model: read it again
                self._backend = None
                STATES.clear()
                return self._explain(images, targets, top_k, start)

    def _explain(self, images, targets, top_k, start) -> Explanation:
        backend = self.backend
        entry = _entry(self.model)
        fp = entry.fingerprint()
        if isinstance(backend, LRPBackend):         # right after building: its first call adopts fp
            backend.derived.refresh(fp)
        graph = backend.graph
        x = _check_images(images, graph)
        spec, nested = parse_targets(targets, top_k, x.shape[0], graph.num_classes)
        low_high = self._bounds(x)
        base_key = (fp, self._structure, self._key, None if low_high is None else freeze(low_high))
        n, k = spec.shape
        keeps_states = self._keep_states and isinstance(backend, LRPBackend)
        digests = [digest(img) for img in x] if self._cache is not None or keeps_states else None
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
            state_key = (id(self), base_key, tuple(digests[i] for i in idx)) if keeps_states else None
            expected = entry.expect(self.model, graph, x[idx], fp)
            r, z, t = self._run(backend, x[idx], spec[idx], low_high, state_key)
            entry.verify(self.model, graph, x[idx], z, self._output, fp, expected)
            self._check_finite(r)
            rel[idx], logits[idx], resolved[idx] = np.moveaxis(r, 0, 1), z, t
            if self._cache is not None:
                for i in missing:
                    for j in range(k):
                        value = (rel[i, j].copy(), logits[i].copy(), resolved[i, j])
                        self._cache.put((base_key, digests[i], int(spec[i, j])), value)
                        self._cache.put((base_key, digests[i], int(resolved[i, j])), value)
        # Compile what ran as Python, in the background: the backward pass first (the worker takes the
        # latest first; a class switch needs only it), then the forward pass, then the fingerprint.
        for p in (entry.fingerprint_pass,) + backend.passes:
            p.compile_soon()
        if self.params.get("relu"):
            np.maximum(rel, 0, out=rel)
        if not nested:
            rel, resolved = rel[:, 0], resolved[:, 0]
        return Explanation(relevance=rel, targets=resolved, logits=logits, method=self.method,
                           params=dict(self.params), seconds=time.perf_counter() - start,
                           cached=not missing)

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Wait for the passes that calls ran as Python to be compiled (``compile="background"``); ``True`` when
        the method's passes run compiled now (``False`` before any call, or on timeout)."""
        if self._backend is None:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        passes = (_entry(self.model).fingerprint_pass,) + self._backend.passes
        return all([p.wait(None if deadline is None else max(deadline - time.monotonic(), 0)) for p in passes])

    def clear(self) -> None:
        """Forget cached results and per-image states, and re-derive modified weights on the next call (after
        editing weights in place)."""
        STATES.clear()
        if self._cache is not None:
            self._cache.clear()
        if isinstance(self._backend, LRPBackend):
            self._backend.derived.fingerprint = STALE

    # -- building ----------------------------------------------------------------------------------
    def _build(self):
        model = self.model
        lrp = self.spec.kind == "lrp"
        graph = _entry(model).graph(model, self._output, fold=lrp)
        # Results are keyed by this and the weights' fingerprint: models that share weights but differ in
        # structure never share results.
        self._structure = hash(tuple((n.kind, n.name, n.class_name, tuple(n.inputs), n.output)
                                     for n in graph.nodes))
        mode = self._compile
        if mode == "auto":
            mode = "first_call" if graph.macs_per_node() > HEAVY_NODE_MACS else "background"
        if not lrp:
            return GradientBackend(graph, self.spec, self.params, self._counted, compile=mode)
        backend = LRPBackend(graph, _entry(model).derived(graph), composite=self.spec.composite,
                             params=self.params, overrides=self._rules, counter=self._counted,
                             contrastive=self.spec.head in ("sglrp", "clrp") and bool(self.params.get("scaling",
                                                                                                     True)),
                             compile=mode)
        blocking = blocking_nodes(graph, backend.relevant)
        if blocking:
            working = [name for name, m in METHODS.items() if m.kind != "lrp"]
            raise blocking_error(self.method, blocking, working)
        return backend

    def _counted(self, fn):
        def traced(*args):
            self.trace_count += 1
            return fn(*args)
        return traced

    def _bounds(self, x: np.ndarray):
        """The z_box bounds (low, high) at the model input as arrays, or None when no rule needs them."""
        if not self.backend.uses_bounds:
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

    def _check_finite(self, relevance: np.ndarray) -> None:
        """A map that overflowed float32 is an error that says why, never a silent NaN picture."""
        if np.isfinite(relevance).all():
            return
        hint = ("its rules amplify relevance wherever a denominator nearly cancels (gamma and epsilon rules with "
                "weights of both signs), and on this model and image the exact map exceeds float32's range"
                if self.spec.kind == "lrp" else "the gradient overflowed float32 on this model and image")
        raise ExplainError(f"Method {self.method!r} produced a non-finite map: {hint}. Try a method with "
                           "sign-definite denominators (lrp, deep_taylor, lrp.z_plus, lrp.alpha_1_beta_0), a larger "
                           "epsilon or gamma, or a gradient method.")

    def _run(self, backend, x, spec, low_high, state_key):
        try:
            with quiet_retracing_notices():
                return backend.explain(x, spec, low_high, state_key, head=self.spec.head,
                                       scaling=self.params.get("scaling", True))
        except Exception as exc:  # an ExplainError raised while tracing arrives wrapped by TensorFlow
            cause = exc
            while cause is not None and not isinstance(cause, ExplainError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise cause from None
            raise


# ---- the shared explainers ---------------------------------------------------------------------------

_EXPLAINERS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_EXPLAINERS_LOCK = threading.Lock()


def get_explainer(model, method: str = "sglrp", *, preprocess: Callable | None = None, rules: dict | None = None,
                  **params) -> Explainer:
    """The shared :class:`Explainer` for (model, method, parameters, rules); the model is held weakly."""
    resolved = validate_params(method, params)
    overrides = tuple((repr(k), repr(r)) for k, r in C.check_overrides(rules)) or None
    key = (method, freeze(resolved), id(preprocess) if preprocess is not None else None, overrides)
    with _EXPLAINERS_LOCK:
        per_model = _EXPLAINERS.setdefault(model, {})
        ex = per_model.get(key)
        if ex is None:
            ex = Explainer(model, method, preprocess=preprocess, rules=rules, **params)
            ex._model_ref = weakref.ref(model)
            per_model[key] = ex
        return ex


def explain(model, images, method: str = "sglrp", targets=None, *, top_k: int | None = None,
            preprocess: Callable | None = None, rules: dict | None = None, **params) -> Explanation:
    """Explain ``images`` with ``method``, reusing the compiled graph and results of earlier calls.

    Examples
    --------
    >>> out = explain(model, images, "sglrp", targets=[340, 386])
    >>> out.relevance.shape == images.shape
    True
    >>> explain(model, images, "lrp.epsilon", rules={"predictions": ("epsilon", {"epsilon": 0.1})})
    """
    return get_explainer(model, method, preprocess=preprocess, rules=rules, **params)(images, targets,
                                                                                        top_k=top_k)


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
    for name in METHODS:
        try:
            Explainer(model, name, output=output, cache=None).backend
            support[name] = None
        except ExplainError as exc:
            support[name] = str(exc)
    with _EXPLAINERS_LOCK:
        _SUPPORT.setdefault(model, {})[key] = support
    return dict(support)

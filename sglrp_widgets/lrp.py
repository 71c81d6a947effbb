"""The LRP back end: a forward pass that keeps what the rules need, then one batched backward pass.

The forward pass (a ``tf.function`` per explainer) returns the logits, the *state* of the nodes that relevance
reaches (input values the handlers read, inverse denominators, mapped z_box bounds; a value that every reader
multiplies its relevance by is kept folded into the inverse of the node that made it, :func:`input_folds`) as a
flat list, and for SGLRP/CLRP the dual sums ``v = B^T 1``. The backward pass (another ``tf.function``) takes a
state and any number of heads ``(H*N, C)`` and returns the relevance at the input. Both are traced once per explainer:
targets are runtime tensors, so a class switch on a seen image costs one backward pass.

Each node kind's rule is its handler (``propagation.py``); linear layers get their rule from the composite
(``composites.py``) with the user's ``rules=`` overrides.
"""
from __future__ import annotations

import functools
import threading
from collections import Counter

import numpy as np
import tensorflow as tf

from . import composites as C
from . import rules as R
from .background import Background
from .caching import STATES
from .compiling import Pass, yield_to_callers
from .errors import UnsupportedLayerError
from .graph import Graph
from .heads import initial_relevance, resolve_targets
from .propagation import Activation, Linear, handler


class DerivedWeights:
    """The modified weights (``w+``, ``w-``, ``w^2``, folded ``W`` and ``b``...) of a graph's linear layers.

    One store per read model, shared by every explainer of that model, refreshed together when the model's
    weights change (:meth:`refresh` with the weights' fingerprint).
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self.slots: dict[int, dict] = {}
        self.fingerprint: bytes | None = None
        self._lock = threading.Lock()

    def require(self, wanted: dict[int, set]) -> None:
        """Make sure node ``i`` has the weights named in ``wanted[i]`` (computed from the current weights), in
        the forms the layer reads them (:func:`stored_keys`)."""
        with self._lock:
            for i, keys in wanted.items():
                slots = self.slots.setdefault(i, {})
                missing = [k for k in stored_keys(self.graph.nodes[i].op, keys) if k not in slots]
                if missing:
                    self._fill(i, missing, slots)

    def refresh(self, fingerprint: bytes) -> None:
        """Re-derive every slot if the weights changed since the last call. The first call adopts the
        fingerprint: :meth:`require` has just derived the slots from the current weights."""
        with self._lock:
            if self.fingerprint is None:
                self.fingerprint = fingerprint
            elif fingerprint != self.fingerprint:
                for i, slots in self.slots.items():
                    self._fill(i, list(slots), slots)
                self.fingerprint = fingerprint

    def _fill(self, i: int, keys, slots: dict) -> None:
        op = self.graph.nodes[i].op
        kernel, bias = op.params()
        for key in sorted(keys, key=lambda k: k != R.FLIPPED + "model"):
            flipped = key.startswith(R.FLIPPED)
            base = key[len(R.FLIPPED):] if flipped else key
            if flipped and base == "w" and not op.folds and R.FLIPPED + "model" in slots:
                slots[key] = slots[R.FLIPPED + "model"]  # the layer's own kernel: one copy
                continue
            if flipped or base.startswith(R.STACKED):    # conv kernels and small stacks: derived whole
                if base == "model":
                    value = tf.convert_to_tensor(op.kernel_var)
                elif base.startswith(R.STACKED):         # small kernels of one rule part, side by side
                    value = tf.concat([R.derive_weight(k, kernel, bias) for k in base[len(R.STACKED):].split("|")],
                                      axis=op.stack_axis)
                else:
                    value = R.derive_weight(base, kernel, bias)
                _store(slots, key, op.flip(value) if flipped else value)
                continue
            if key in ("w", "b") and not op.folds:
                var = op.kernel_var if key == "w" else op.bias_var
                if var is not None:                  # the model's own variable: always current
                    slots[key] = getattr(var, "value", var)
                    continue
            source = bias if key.startswith("b") else kernel
            derive = ((lambda rows: R.derive_weight(key, kernel, rows)) if key.startswith("b")
                      else (lambda rows: R.derive_weight(key, rows, bias)))
            var = slots.get(key)
            if isinstance(var, tf.Variable) and var.shape == source.shape:
                _assign_in_slices(var, derive, source)          # new weights: rewrite in place
            else:                                               # the variable takes the derived tensor's buffer
                slots[key] = tf.Variable(derive(source), trainable=False)

    def get(self, i: int) -> dict:
        return self.slots[i]


def stored_keys(op, keys) -> set[str]:
    """The slots kept for rules that read ``keys`` at linear ``op``. A layer that transposes flipped
    (:attr:`~sglrp_widgets.graph.LinearOp.transposes_flipped`) keeps each kernel's flipped form for its
    transposes (a stack of kernels, read only there, in that form alone); one that also runs flipped applies
    that form as well, its own kernel's included (``flipped:model``), and keeps no other."""
    if not op.transposes_flipped:
        return set(keys)
    kernels = {k for k in keys if not k.startswith("b")}
    out = (set(keys) - kernels) | {R.FLIPPED + k for k in kernels}
    if op.runs_flipped:
        return out | {R.FLIPPED + "model"}
    return out | {k for k in kernels if not k.startswith(R.STACKED)}


def _store(slots: dict, key: str, value: tf.Tensor) -> None:
    """``slots[key] = value``, written into the existing variable when there is one: traced passes hold it."""
    if isinstance(slots.get(key), tf.Variable):
        slots[key].assign(value)
    else:
        slots[key] = tf.Variable(value, trainable=False)


SLICE_VALUES = 1 << 22
#: The largest stacked kernel (``rules.STACKED``) kept: stacking pays on few channels (a first layer's z_box
#: kernels), and a copy of large kernels would cost memory for little.
STACK_MAX_VALUES = 1 << 22


def _assign_in_slices(var: tf.Variable, derive, source: tf.Tensor) -> None:
    """``var = derive(source)`` (an elementwise map), written in place slice by slice along the first axis so
    that a large kernel (VGG16's fc6: 411 MB) never exists twice: peak memory grows by one slice. The raw op
    writes through the variable's handle (``var[a:b].assign`` would read the whole variable per slice)."""
    rows = int(source.shape[0]) if source.shape.rank else 1
    step = max(1, SLICE_VALUES // max(1, int(np.prod(source.shape[1:])))) if source.shape.rank else 1
    if step >= rows:
        var.assign(derive(source))
        return
    rest = [int(d) for d in source.shape[1:]]
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        tf.raw_ops.ResourceStridedSliceAssign(ref=var.handle, begin=[start] + [0] * len(rest), end=[stop] + rest,
                                              strides=[1] * (1 + len(rest)), value=derive(source[start:stop]))


def relevance_flow(graph: Graph) -> set[int]:
    """Indices of the nodes that relevance reaches, walking back from the output along carried inputs."""
    receives = {graph.output_id}
    relevant = set()
    for i in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[i]
        if node.output not in receives:
            continue
        relevant.add(i)
        for v, carried in zip(node.inputs, handler(node).carries(node)):
            if carried:
                receives.add(v)
    return relevant


def blocking_nodes(graph: Graph, relevant: set[int]) -> list:
    """Relevant nodes no rule covers: opaque layers, and a softmax inside the network that is not a gate."""
    return [graph.nodes[i] for i in sorted(relevant) if graph.nodes[i].kind == "opaque"
            or (graph.nodes[i].kind == "activation" and graph.nodes[i].attrs.get("activation") == "softmax")]


def blocking_error(method: str, nodes: list, working: list[str]) -> UnsupportedLayerError:
    """One error naming every blocking layer (name, class, count), what would help, and what works."""
    by_class = Counter(n.class_name for n in nodes)
    names = ", ".join(f"{n.name!r} ({n.class_name})" for n in nodes[:8]) + (" ..." if len(nodes) > 8 else "")
    counts = ", ".join(f"{cls} x{k}" for cls, k in by_class.items())
    first = nodes[0]
    softmax = any(n.kind == "activation" for n in nodes)
    hint = ("A softmax inside the network is only explainable as a gate (a factor of a product); "
            if softmax else "")
    return UnsupportedLayerError(
        f"Method {method!r} cannot explain this model: relevance would have to cross {len(nodes)} layer(s) "
        f"without an LRP rule: {names} [{counts}]. {hint}To make LRP methods work, write these layers with "
        "keras.ops (they are then opened into their operations) or register a rule for their class, e.g. "
        "sglrp_widgets.register_layer(MyLayer, 'identity' | 'route' | 'fixed_linear' | <Handler>). "
        f"Methods that work on this model: {', '.join(working)}.", first.name, first.class_name)


def nonneg_values(graph: Graph) -> set[int]:
    """Value ids known to be >= 0 (ReLU outputs, and pooling/routing/sums of them)."""
    nonneg: set[int] = set()
    for node in graph.nodes:
        if handler(node).nonneg(node, [v in nonneg for v in node.inputs]):
            nonneg.add(node.output)
    return nonneg


#: Whether the state keeps a value that every reader scales by inside the scale of the node that made it
#: (:func:`input_folds`); off, it keeps both (the tests compare the two).
FOLD_INPUTS = True


def _static(shape) -> tuple | None:
    return tuple(shape) if shape is not None and all(isinstance(d, int) for d in shape) else None


def input_folds(graph: Graph, rules: dict, relevant: set[int], nonneg: set[int]) -> dict[tuple[int, int], tuple]:
    """``(i, j)`` -> ``(p, key)``: input ``j`` of node ``i`` is the output of node ``p``, directly or through
    identity-rule activations, and every node that reads it gives it relevance ``x * c``
    (:meth:`Handler.scales_by_input`: z+ on ReLU outputs, epsilon, a residual sum), while ``p``'s backward starts by
    multiplying the relevance at its output by its state entry ``key`` (:meth:`Handler.output_scale_key`: a linear
    layer's one inverse denominator, a sum's). VGG's and ResNet's conv -> ReLU -> conv, ResNet's conv -> add and
    add -> ReLU -> (conv, add).

    Backward, the readers hand their ``c`` to ``p``, which scales their sum by ``key``: so the state keeps the
    product ``x * key`` in place of ``x`` and ``key``, one tensor fewer per folded value (the batch-8 state of VGG16
    880 -> 650 MB, of ResNet50 1000 -> 530 MB), and a class switch makes one product fewer. The maps change by
    float32 rounding only (the factors are multiplied in another order)."""
    if not FOLD_INPUTS:
        return {}
    consumers, nodes = graph.consumers(), graph.nodes
    folds = {}
    for p in sorted(relevant):
        key = handler(nodes[p]).output_scale_key(nodes[p], rules.get(p), bool(nodes[p].inputs) and
                                                 nodes[p].inputs[0] in nonneg)
        shape = _static(nodes[p].out_shape)
        if key is None or shape is None:
            continue
        v = nodes[p].output
        readers = consumers.get(v, [])
        while len(readers) == 1 and type(handler(nodes[readers[0]])) is Activation and \
                len(nodes[readers[0]].inputs) == 1 and _static(nodes[readers[0]].out_shape) == shape:
            v = nodes[readers[0]].output                # through identity-rule activations
            readers = consumers.get(v, [])
        links = [(i, j) for i in readers for j, w in enumerate(nodes[i].inputs) if w == v]
        if v != graph.output_id and links and all(
                i in relevant and nodes[i].inputs.count(v) == 1 and
                handler(nodes[i]).scales_by_input(nodes[i], j, rules.get(i), v in nonneg) for i, j in links):
            folds.update({link: (p, key) for link in links})
    return folds


def assign_rules(graph: Graph, composite_name: str, params: dict, overrides) -> dict[int, R.Rule]:
    """The rule of every linear node: the composite's, or the user's override."""
    composite = C.with_overrides(C.get_composite(composite_name), overrides,
                                 names=[n.name for n in graph.nodes if n.kind == "linear"])
    rules = {}
    for i, node in enumerate(graph.nodes):
        if node.kind == "linear":
            ctx = C.LayerContext(node.name, node.layer, node.op.family, i in graph.first_linear,
                                 i in graph.relu_followed)
            rules[i] = composite(ctx, params)
    composite.check_used()
    return rules


class _Context:
    """What handlers read while tracing: rules, weights, bounds and non-negativity per node, the batch size
    ``n`` and ``ones``, the all-ones ``u`` at the input of the dual-sum pass (a linear layer reading it needs
    no call for its transpose)."""

    def __init__(self, backend: "LRPBackend", n, bounds: dict, ones=None):
        self.backend, self.n, self._bounds, self.ones = backend, n, bounds, ones

    def rule(self, i):
        return self.backend.rules[i]

    def weights(self, i):
        return self.backend.derived.get(i)

    def bounds(self, i):
        return self._bounds.get(i)

    def set_bounds(self, i, bounds) -> None:
        self._bounds[i] = bounds

    def input_nonneg(self, i):
        return self.backend.graph.nodes[i].inputs[0] in self.backend.nonneg

    def folded_shape(self, i, j):
        """The shape (without the batch axis) of node ``i``'s input ``j`` when the state holds that input inside
        the scale of the node that made it (:func:`input_folds`), else ``None``."""
        fold = self.backend.input_folds.get((i, j))
        return None if fold is None else _static(self.backend.graph.nodes[fold[0]].out_shape)


class LRPBackend:
    """Rules, forward state and backward pass of one LRP method on one read model."""

    def __init__(self, graph: Graph, derived: DerivedWeights, *, composite: str, params: dict, overrides,
                 contrastive: bool, counter, compile: str = "background"):
        self.graph = graph
        self.rules = assign_rules(graph, composite, params, overrides)
        self.relevant = relevance_flow(graph)
        self.order = sorted(self.relevant)
        self.nonneg = nonneg_values(graph)
        self.input_folds = input_folds(graph, self.rules, self.relevant, self.nonneg)
        self._last_use = {v: i for i, node in enumerate(graph.nodes) for v in node.inputs}
        self.contrastive = contrastive
        self.derived = derived
        derived.require({i: self._weight_keys(i) for i in self.rules if i in self.relevant})
        self._layout: list = []
        self._state_bytes: dict[tuple, int] = {}
        spec = tf.TensorSpec((None,) + tuple(graph.input_shape), tf.float32)
        bspec = [tf.TensorSpec([None], tf.float32)] * 2
        self.forward_pass = Pass(self._forward, mode=compile, signature=[spec] + bspec, counter=counter,
                                 warm_args=lambda images, low, high: (images[:1], low, high))
        self.backward_pass = Pass(self._backward, mode=compile, counter=counter)
        self.passes = (self.forward_pass, self.backward_pass)

    @property
    def uses_bounds(self) -> bool:
        return any(r.name == "z_box" for i, r in self.rules.items() if i in self.relevant)

    def _weight_keys(self, i: int) -> set[str]:
        """The parameters node ``i``'s rule reads, skipping terms on negative inputs that cannot occur, and the
        kernels of a part with several stacked for one transposed call (``rules.STACKED``)."""
        keys = set()
        nonneg = self.graph.nodes[i].inputs[0] in self.nonneg
        op = self.graph.nodes[i].op
        size = int(np.prod(op.kernel_var.shape))
        for _, leaf in self.rules[i].leaves():
            kernels = R.part_kernels(leaf, nonneg)
            keys |= set(kernels)
            if len(kernels) > 1 and op.stack_axis is not None and size * len(kernels) <= STACK_MAX_VALUES:
                keys.add(R.stacked_key(kernels))
            if leaf.bias:
                keys.add(leaf.bias)
        return keys

    # -- bounds --------------------------------------------------------------------------------------------
    def _mapped_bounds(self, images, low, high) -> dict:
        """The model input's bounds carried along the routes and affine maps in front of the first layers:
        value id -> (low, high), full-shape tensors with a batch axis of 1 (padding puts exact zeros)."""
        graph = self.graph
        if not any(self.rules[i].name == "z_box" for i in graph.first_linear if i in self.relevant):
            return {}
        shape = tf.concat([[1], tf.shape(images)[1:]], 0)
        mapped = {graph.input_id: (tf.zeros(shape) + low, tf.zeros(shape) + high)}
        for j in graph.bounds_path:
            node = graph.nodes[j]
            if node.inputs[0] not in mapped:
                continue
            lo, hi = mapped[node.inputs[0]]
            if node.kind == "affine":
                a, c = node.attrs["affine"]()
                lo, hi = a * lo + c, a * hi + c
                lo, hi = tf.minimum(lo, hi), tf.maximum(lo, hi)
            else:
                lo, hi = node.call([lo]), node.call([hi])
            mapped[node.output] = (lo, hi)
        return mapped

    def _bounds_at(self, i: int, x, mapped: dict):
        """z_box bounds at the input ``x`` of node ``i``: the rule's own; mapped from the model input for a
        first layer; the batch range of the layer's input otherwise. ``None`` when its rule is not z_box."""
        rule = self.rules.get(i)
        if rule is None or rule.name != "z_box":
            return None
        own = rule.params.get("low"), rule.params.get("high")
        if own[0] is not None:
            return tuple(tf.constant(b, tf.float32) for b in own)
        node_input = self.graph.nodes[i].inputs[0]
        if i in self.graph.first_linear and node_input in mapped:
            return mapped[node_input]
        return tf.reduce_min(x), tf.reduce_max(x)

    # -- forward -------------------------------------------------------------------------------------------
    def _forward(self, images, low, high):
        """Logits, the state of the relevant nodes as a flat list, and (SGLRP/CLRP) the dual sums, in one pass
        over the nodes: each node's value, then its state and its transposed map of ``u`` (``v = B^T 1`` at
        the logits), so a linear layer's kernels serve its denominators and its transpose in one call."""
        graph = self.graph
        values = {graph.input_id: images}
        ones = tf.ones_like(images) if self.contrastive else None
        u = {graph.input_id: ones}
        mapped = self._mapped_bounds(images, low, high)
        entries = {("n",): tf.shape(images)[0]}
        ctx = _Context(self, entries[("n",)], {}, ones)
        folded = set()
        for i, node in enumerate(graph.nodes):
            yield_to_callers()
            xs = [values[v] for v in node.inputs]
            if i not in self.relevant:
                values[node.output] = node.run(xs)
                self._release(i, node, values, u)
                continue
            flipped = self.derived.get(i).get(R.FLIPPED + "model") if node.kind == "linear" else None
            y = values[node.output] = node.run(xs, flipped)
            bounds = self._bounds_at(i, xs[0] if xs else None, mapped)
            if bounds is not None:
                ctx.set_bounds(i, bounds)
            h = handler(node)
            if self.contrastive:
                us = [u.get(v) if c else None for v, c in zip(node.inputs, h.carries(node))]
                st, u[node.output] = h.state_and_transpose(node, i, xs, y, us, ctx)
            else:
                st = h.state(node, i, xs, y, ctx)
            for v, need in zip(node.inputs, self._needs(i, node)):
                if need:
                    entries[("v", v)] = values[v]
            for key, t in st.items():
                entries[("s", i, key)] = t
            for j in range(len(xs)):           # (no loop variable: it would hold a value past its last reader)
                fold = self.input_folds.get((i, j))
                if fold is not None and fold not in folded:      # the value's first reader
                    folded.add(fold)
                    entries[("s",) + fold] = entries[("s",) + fold] * xs[j]
            for j, b in enumerate(ctx.bounds(i) or ()):
                entries[("b", i, j)] = b
            self._release(i, node, values, u)
        self._layout = list(entries)
        state = [entries[k] for k in self._layout]
        return values[graph.output_id], state, (u[graph.output_id] if self.contrastive else tf.zeros([0]))

    def _release(self, i: int, node, values: dict, u: dict) -> None:
        """Drop the values node ``i`` was the last to read (the state keeps what the backward pass needs): run
        as Python, the forward pass would otherwise hold every activation of the model at once."""
        for v in node.inputs:
            if self._last_use[v] == i and v != self.graph.output_id:
                values.pop(v, None)
                u.pop(v, None)

    def _unpack(self, state):
        entries = dict(zip(self._layout, state))
        values = {k[1]: t for k, t in entries.items() if k[0] == "v"}
        states: dict[int, dict] = {}
        bounds: dict[int, list] = {}
        for k, t in entries.items():
            if k[0] == "s":
                states.setdefault(k[1], {})[k[2]] = t
            elif k[0] == "b":
                bounds.setdefault(k[1], []).append(t)
        return values, states, _Context(self, entries[("n",)], {i: tuple(b) for i, b in bounds.items()})

    def _needs(self, i: int, node) -> list[bool]:
        """The input values node ``i``'s backward reads: its handler's, less an input the state folds away."""
        return [need and (i, j) not in self.input_folds for j, need in enumerate(handler(node).needs(node))]

    def _inputs(self, i, node, values):
        return [values.get(v) if need else None for v, need in zip(node.inputs, self._needs(i, node))]

    # -- backward ------------------------------------------------------------------------------------------
    def _backward(self, state, heads):
        graph = self.graph
        values, states, ctx = self._unpack(state)
        rel = {graph.output_id: heads}
        for i in reversed(self.order):
            yield_to_callers()
            node = graph.nodes[i]
            r = rel.pop(node.output, None)
            if r is None:
                continue
            h = handler(node)
            r_in = h.backward(node, i, self._inputs(i, node, values), states.get(i, {}), r, ctx)
            for v, ri in zip(node.inputs, r_in):
                if ri is not None:
                    rel[v] = rel[v] + ri if v in rel else ri
        if graph.input_id in rel:
            return rel[graph.input_id]
        return tf.zeros(tf.concat([tf.shape(heads)[:1], graph.input_shape], 0))

    # -- serving -------------------------------------------------------------------------------------------
    def forward(self, images, low, high):
        """Logits, state and dual sums of ``images``. Compiled on the first call (``"first_call"``), the forward
        pass runs while the backward pass is traced in a thread."""
        fwd, bwd = self.forward_pass, self.backward_pass
        if fwd.mode != "first_call" or fwd.compiled or tf.config.functions_run_eagerly():
            return fwd(images, low, high)
        fwd.compile((images, low, high))
        state = fwd.function.get_concrete_function().structured_outputs[1]
        heads = tf.TensorSpec([None, self.graph.num_classes], tf.float32)
        tracing = Background(lambda: bwd.compile((state, heads)))
        out = fwd(images, low, high)
        tracing.result()
        return out

    def backward(self, state, heads):
        """The relevance at the input for ``heads`` (H*N, C) from a forward ``state``."""
        return self.backward_pass(state, heads)

    def _state_size(self, images_shape: tuple, state: list) -> int:
        """Bytes of a forward state, which the images' shape determines: summed once per shape (reading the
        shapes of a ViT's hundred state tensors took 4.7 ms a call, a fifth of its new-image call)."""
        key = (tuple(images_shape), len(state))
        size = self._state_bytes.get(key)
        if size is None:
            size = self._state_bytes[key] = sum(int(np.prod(t.shape)) * t.dtype.size for t in state)
        return size

    def explain(self, x: np.ndarray, spec: np.ndarray, low_high, state_key, *, head: str, scaling: bool):
        """Relevance (K, N, ...), logits (N, C) and resolved targets (N, K) for images ``x`` and targets
        ``spec`` (negative = rank among the top classes); the image's forward state is cached in ``STATES`` under
        ``state_key`` (``None``: not kept)."""
        entry = None if state_key is None else STATES.get(state_key)
        if entry is None:
            z, state, v = self.forward(tf.constant(x), *bound_args(low_high))
            entry = (z.numpy(), state, v.numpy())
            if state_key is not None:
                STATES.put(state_key, entry, size=self._state_size(x.shape, state))
        logits, state, dual_sums = entry
        t = resolve_targets(logits, spec)
        heads = initial_relevance(head, logits, t, dual_sums if self.contrastive else None, scaling=scaling)
        k, n = heads.shape[:2]
        # LRP is linear in the heads: propagate each row at unit scale and scale the map back in float64, so
        # the tiny heads of a confident softmax keep float32's precision instead of sinking into denormals.
        rows = heads.reshape(k * n, -1)
        scale = np.abs(rows).max(axis=1)
        scale[scale == 0] = 1.0
        rel = self.backward(state, tf.constant(rows / scale[:, None], tf.float32)).numpy()
        with np.errstate(over="ignore"):        # a map beyond float32's range: the engine's own clear error
            rel = (rel.reshape(k * n, -1) * scale[:, None]).astype(np.float32)
        return rel.reshape((k, n) + x.shape[1:]), logits, t


def bound_args(low_high):
    """The forward pass's (low, high) arguments: one value or one per channel, at the model's input."""
    if low_high is None:
        return _no_bounds()
    return tuple(tf.constant(np.reshape(np.asarray(b, np.float32), [-1])) for b in low_high)


@functools.cache
def _no_bounds() -> tuple[tf.Tensor, tf.Tensor]:
    """The (low, high) arguments of a method without z_box: made once (two eager ops were 5 % of a ViT call)."""
    return tf.zeros([1]), tf.zeros([1])

"""Canonicalisation: small passes that rewrite a read graph into the form the relevance rules expect.

Each pass takes a :class:`~sglrp_widgets.graph.Graph` and changes it in place; :func:`canonize` runs them in
order. None changes the function the graph computes (``fold_affine`` up to float32 rounding): the engine
checks the replayed logits against the model's on its first call.

- :func:`remove_final_softmax` — every method starts from the logits.
- :func:`prune` — drop what the chosen output does not depend on.
- :func:`mark_gates` — in ``x * g``, a factor ``g`` that is a gate (sigmoid, hard-sigmoid, softmax, tanh,
  possibly through an affine map) or a divisor (``a / b``, ``x * rsqrt(v)``) is held constant; products of two
  signals share relevance equally.
- :func:`fold_affine` — BatchNorm (and any per-channel affine map) directly after a linear layer becomes part
  of that layer's weights (LRP methods only; gradient methods replay the model unfolded).
- :func:`find_first_layers` — the linear layers that read the input (through routing and affine maps only)
  and the nodes that map the input's z_box bounds to them.
- :func:`find_relu_followed` — linear layers whose output goes into a ReLU.
"""
from __future__ import annotations

from .graph import GATE_ACTIVATIONS, Graph, Node

_REMOVABLE_HEADS = {"softmax", "log_softmax"}
_RECIPROCAL_OPS = {"Rsqrt", "Reciprocal"}


def canonize(graph: Graph, *, fold: bool) -> Graph:
    """Run every pass in order (``fold``: fold affine maps into linear layers, for LRP methods)."""
    remove_final_softmax(graph)
    prune(graph)
    mark_gates(graph)                   # before folding: folding may swallow the "+ 3" of a hard-sigmoid
    if fold:
        fold_affine(graph)
    find_first_layers(graph)
    find_relu_followed(graph)
    return graph


def remove_final_softmax(graph: Graph) -> None:
    last = graph.producer().get(graph.output_id)
    node = graph.nodes[last] if last is not None else None
    if node is not None and node.kind == "activation" and node.attrs.get("activation") in _REMOVABLE_HEADS:
        graph.output_id = node.inputs[0]
        graph.softmax_removed = True


def prune(graph: Graph) -> None:
    """Keep only the nodes that the output depends on."""
    needed = {graph.output_id}
    keep = []
    for node in reversed(graph.nodes):
        if node.output in needed:
            keep.append(node)
            needed.update(node.inputs)
    graph.nodes = keep[::-1]


def _uses(graph: Graph) -> dict[int, int]:
    uses = {graph.output_id: 1}
    for node in graph.nodes:
        for v in node.inputs:
            uses[v] = uses.get(v, 0) + 1
    return uses


def fold_affine(graph: Graph) -> None:
    """Fold per-channel affine maps (BatchNorm, LayerScale, ``x * c``...) into the linear layer before them.

    Only when the linear layer's output feeds nothing else, and the map is constant over every axis but the
    channel axis; the rules then see the layer as ``x (W a) + (b a + c)``, while its output is still computed
    as the model computes it (``LinearOp.forward``).
    """
    uses = _uses(graph)
    producer = graph.producer()
    drop = set()
    for i, node in enumerate(graph.nodes):
        if node.kind != "affine" or not node.attrs.get("channelwise"):
            continue
        src = producer.get(node.inputs[0])
        if src is None or src in drop:
            continue
        lin = graph.nodes[src]
        if lin.kind != "linear" or lin.op.kind == "einsum" or uses.get(node.inputs[0], 0) != 1:
            continue
        lin.op = _with_fold(lin.op, node.attrs["affine"], node.call)
        lin.attrs.setdefault("folded", []).append(node.name)
        uses.pop(lin.output, None)
        lin.output = node.output
        lin.out_shape = node.out_shape
        producer[node.output] = src
        drop.add(i)
    graph.nodes = [n for i, n in enumerate(graph.nodes) if i not in drop]


def _with_fold(op, affine, call):
    from dataclasses import replace
    return replace(op, folds=op.folds + (affine,), fold_calls=op.fold_calls + (call,))


def _is_gate(graph: Graph, value: int, producer: dict[int, int]) -> bool:
    """Whether ``value`` is a gate: a sigmoid/hard-sigmoid/softmax/tanh output, possibly through affine maps
    and reshapes. ``relu6(x + 3) / 6`` (MobileNetV3's hard-sigmoid) counts as a hard-sigmoid."""
    node, affine_after = _through(graph, value, producer)
    if node is None or node.kind != "activation":
        return False
    act = node.attrs.get("activation")
    if act in GATE_ACTIVATIONS:
        return True
    if act == "relu6":
        src = producer.get(node.inputs[0])
        return affine_after or (src is not None and graph.nodes[src].kind == "affine")
    return False


def _through(graph: Graph, value: int, producer: dict[int, int]) -> tuple[Node | None, bool]:
    """The first node behind ``value`` that is not an affine map or a single-input reshape, and whether an
    affine map was passed on the way."""
    affine = False
    while value in producer:
        node = graph.nodes[producer[value]]
        if node.kind == "affine" or (node.kind == "route" and len(node.inputs) == 1
                                     and not node.attrs.get("nonlinear")):
            affine = affine or node.kind == "affine"
            value = node.inputs[0]
            continue
        return node, affine
    return None, affine


def _is_reciprocal(graph: Graph, value: int, producer: dict[int, int]) -> bool:
    """Whether ``value`` is ``rsqrt(...)`` or ``reciprocal(...)``, possibly through affine maps and reshapes."""
    node, _ = _through(graph, value, producer)
    return node is not None and node.class_name in _RECIPROCAL_OPS


def mark_gates(graph: Graph) -> None:
    """Set ``attrs["held"]`` of every product and contraction: the positions of the factors held constant.

    Gates are held; the divisor of ``a / b`` is held, and so is a reciprocal factor (``x * rsqrt(mean(x²) +
    eps)``, an RMS normalisation written with ``keras.ops``, is ``x / sqrt(...)``); when every factor is a gate
    (or none is) nothing is held and the factors share relevance equally (the uniform rule).
    """
    producer = graph.producer()
    for node in graph.nodes:
        if node.kind not in ("product", "contraction"):
            continue
        if node.attrs.get("divide"):
            node.attrs["held"] = (1,)
            continue
        divisors = tuple(i for i, v in enumerate(node.inputs) if _is_reciprocal(graph, v, producer))
        if 0 < len(divisors) < len(node.inputs):
            node.attrs["held"] = divisors
            continue
        gates = tuple(i for i, v in enumerate(node.inputs) if _is_gate(graph, v, producer))
        node.attrs["held"] = gates if 0 < len(gates) < len(node.inputs) else ()


def find_first_layers(graph: Graph) -> None:
    """The linear layers that read the input through single-input routes, affine maps and resizing only, and
    those nodes (``graph.bounds_path``, in order): they carry the input's z_box bounds to the layers."""
    consumers = graph.consumers()
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    path, first = [], set()
    frontier = [graph.input_id]
    while frontier:
        value = frontier.pop(0)
        for i in consumers.get(value, []):
            node = graph.nodes[i]
            if node.kind == "linear":
                first.add(i)
            elif len(node.inputs) == 1 and (node.kind == "affine" or node.attrs.get("carries_bounds") or (
                    node.kind == "route" and not node.attrs.get("nonlinear"))):
                if i not in path:
                    path.append(i)
                    frontier.append(node.output)
    graph.first_linear = first
    graph.bounds_path = sorted(path, key=lambda i: index[id(graph.nodes[i])])


def find_relu_followed(graph: Graph) -> None:
    consumers = graph.consumers()
    graph.relu_followed = {
        i for i, node in enumerate(graph.nodes) if node.kind == "linear"
        and any(graph.nodes[c].kind == "activation" and graph.nodes[c].attrs.get("activation") == "relu"
                for c in consumers.get(node.output, []))}

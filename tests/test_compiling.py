"""Passes served as Python until compiled in the background (compiling.py), and the Explainer's compile modes."""
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from sglrp_widgets import Explainer, compiling
from sglrp_widgets.compiling import Pass, _Worker
from sglrp_widgets.errors import ExplainError
from sglrp_widgets.methods import METHODS

L = keras.layers
IMAGES = np.random.default_rng(0).uniform(0, 1, (2, 10, 10, 3)).astype("float32")


def small_net():
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(6, 3, activation="relu", name="c1")(inp)
    y = L.Conv2D(6, 3, padding="same", name="c2")(x)
    x = L.Activation("relu")(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5, name="logits")(x))


class HeldWorker:
    """Stands in for the compile worker: records what is queued and compiles only when told to."""

    def __init__(self):
        self.queued = []

    def submit(self, p):
        self.queued.append(p)
        return True

    def run_all(self):          # the latest first, like the real worker
        while self.queued:
            self.queued.pop()._compile_queued()

    closing = False


@pytest.fixture
def held(monkeypatch):
    worker = HeldWorker()
    monkeypatch.setattr(compiling, "_WORKER", worker)
    return worker


@pytest.mark.parametrize("method", ["sglrp", "lrp.epsilon", "gradient", "grad_cam"])
def test_first_call_runs_as_python_and_later_calls_run_the_passes_compiled_after_it(method, held):
    model = small_net()
    ex = Explainer(model, method, cache=None)
    first = ex(IMAGES, [1, 2])
    assert ex.trace_count == 0                          # nothing traced before the first map
    passes = ex.backend.passes
    assert held.queued[-len(passes):] == list(passes)   # queued after the call: the backward pass on top
    assert not ex.wait_compiled(timeout=0)
    held.run_all()
    assert ex.wait_compiled() and ex.trace_count == len(passes)
    again = ex(IMAGES, [1, 2])
    ex(IMAGES, [3, 0])                                  # a class switch
    assert ex.trace_count == len(passes) and not held.queued
    scale = np.abs(first.relevance).max()
    np.testing.assert_allclose(again.relevance, first.relevance, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(again.logits, first.logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_compiles_after_its_first_call(method, held):
    ex = Explainer(small_net(), method, cache=None)
    ex(IMAGES, [1, 2])
    held.run_all()
    assert [p.error for p in ex.backend.passes] == [None] * len(ex.backend.passes)
    assert ex.wait_compiled()


@pytest.mark.parametrize("method", ["smoothgrad", "integrated_gradients", "grad_cam", "sglrp"])
def test_compiling_a_pass_parses_no_python_source(method, monkeypatch, held):
    """Passes are traced without autograph, which parses the source of every function it converts: CPython 3.11's
    ``ast`` module is not thread-safe (gh-106905), and the worker traces beside the user's thread. Parsing also
    made the gradient methods' tracing slower (ResNet50's gradient, compiled on the call: 6.4 s with, 4.0 s
    without)."""
    import ast
    parsed = []
    real_parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda *a, **k: parsed.append(a) or real_parse(*a, **k))
    params = {"n": 2} if method == "smoothgrad" else {}
    ex = Explainer(small_net(), method, cache=None, compile="first_call", **params)
    ex(IMAGES, [1, 2])
    assert all(p.compiled for p in ex.backend.passes)
    assert parsed == []


def test_first_call_mode_compiles_before_its_first_map_and_queues_nothing(held):
    ex = Explainer(small_net(), "sglrp", cache=None, compile="first_call")
    ex(IMAGES, 1)
    assert ex.trace_count == 2 and all(p.compiled for p in ex.backend.passes)
    assert all(p.mode == "background" for p in held.queued)     # only the weights' fingerprint, shared


def test_background_compilation_finishes_and_the_maps_agree_with_first_call_compilation():
    model = small_net()
    background = Explainer(model, "sglrp", cache=None, keep_states=False)   # each call runs its forward pass
    eager = background(IMAGES, [1, 2])
    assert background.wait_compiled(timeout=120)
    compiled = background(IMAGES, [1, 2])
    reference = Explainer(model, "sglrp", cache=None, compile="first_call")(IMAGES, [1, 2])
    np.testing.assert_array_equal(compiled.relevance, reference.relevance)
    scale = np.abs(reference.relevance).max()
    np.testing.assert_allclose(eager.relevance, reference.relevance, rtol=0, atol=1e-5 * scale)


def test_auto_compiles_heavy_graphs_on_the_first_call_and_light_ones_in_the_background(monkeypatch, held):
    from sglrp_widgets import engine
    model = small_net()
    light = Explainer(model, "sglrp", cache=None)
    light(IMAGES, 1)
    assert light.trace_count == 0 and {p.mode for p in light.backend.passes} == {"background"}
    monkeypatch.setattr(engine, "HEAVY_NODE_MACS", light.graph.macs_per_node() - 1)
    heavy = Explainer(model, "lrp.epsilon", cache=None)
    heavy(IMAGES, 1)
    assert heavy.trace_count == 2 and {p.mode for p in heavy.backend.passes} == {"first_call"}


def test_macs_per_node_counts_the_linear_layers_multiply_adds_for_one_image():
    from sglrp_widgets.canonize import canonize
    from sglrp_widgets.graph import read_model
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, activation="relu")(inp)                  # 6*6 positions x 3*3*3*4
    x = L.DepthwiseConv2D(3, padding="same")(x)                 # 6*6 positions x 3*3*4
    model = keras.Model(inp, L.Dense(5)(L.Flatten()(x)))        # 144*5
    graph = canonize(read_model(model), fold=True)
    assert graph.macs_per_node() * len(graph.nodes) == 36 * 108 + 36 * 36 + 144 * 5


def test_an_unknown_compile_mode_is_a_clear_error():
    with pytest.raises(ExplainError, match="compile must be one of 'auto', 'background', 'first_call'"):
        Explainer(small_net(), "sglrp", compile="later")


def test_a_pass_that_cannot_be_compiled_warns_and_keeps_running_as_python(held):
    def body(x):
        return x * float(x.numpy().sum())      # fine eagerly; a traced tensor has no value
    p = Pass(body, signature=[tf.TensorSpec([None], tf.float32)])
    x = tf.constant([1.0, 2.0])
    np.testing.assert_array_equal(p(x).numpy(), [3.0, 6.0])
    p.compile_soon()
    with pytest.warns(RuntimeWarning, match="could not be compiled and keeps running uncompiled"):
        held.run_all()
    assert not p.compiled and p.error is not None and p.wait(0) is False
    np.testing.assert_array_equal(p(x).numpy(), [3.0, 6.0])
    p.compile_soon()
    assert not held.queued                      # not queued again


def test_the_worker_runs_the_compiled_pass_once_on_its_warm_up_arguments(held):
    rows = tf.Variable(0)

    def body(x):
        rows.assign_add(tf.shape(x)[0])            # counts the rows every run sees, eager or compiled
        return x * 2.0
    p = Pass(body, signature=[tf.TensorSpec([None], tf.float32)], warm_args=lambda x: (x[:1],))
    np.testing.assert_array_equal(p(tf.constant([1.0, 2.0, 3.0])).numpy(), [2.0, 4.0, 6.0])
    p.compile_soon()
    held.run_all()
    assert p.compiled and int(rows.numpy()) == 3 + 1        # the warm-up ran on one row, compiled
    np.testing.assert_array_equal(p(tf.constant([5.0])).numpy(), [10.0])
    assert int(rows.numpy()) == 3 + 1 + 1


def test_a_pass_queued_after_the_worker_closed_is_not_waited_for(monkeypatch):
    worker = _Worker()
    worker.close()
    monkeypatch.setattr(compiling, "_WORKER", worker)
    p = Pass(lambda x: x + 1.0, signature=[tf.TensorSpec([None], tf.float32)])
    p(tf.constant([1.0]))
    p.compile_soon()
    assert p.wait() is False and not p.compiled


def test_the_worker_takes_the_latest_first_skips_passes_nobody_holds_and_stops_at_close():
    worker, order, release = _Worker(), [], threading.Event()

    class Job:
        def __init__(self, name, gate=None):
            self.name, self.gate = name, gate

        def _compile_queued(self):
            if self.gate is not None:
                self.gate.wait(10)
            order.append(self.name)

    blocker, a, b, c = Job("blocker", release), Job("a"), Job("b"), Job("c")
    worker.submit(blocker)
    while worker._stack:                        # the worker has taken the blocker
        threading.Event().wait(0.01)
    for job in (a, b, c):
        worker.submit(job)
    del b                                       # nobody holds it any more: skipped
    release.set()
    while len(order) < 3:
        threading.Event().wait(0.01)
    worker.close()
    assert order == ["blocker", "c", "a"]
    worker.submit(Job("after close"))
    assert order == ["blocker", "c", "a"] and not worker.thread.is_alive()


def test_run_as_python_the_forward_pass_holds_only_the_values_its_state_keeps(monkeypatch, held):
    """Eagerly, a value the forward pass keeps in a dict lives as long as the dict: values are dropped after
    their last reader, so a first call's memory is the state's, not every activation of the model."""
    import weakref

    from sglrp_widgets.caching import STATES
    from sglrp_widgets.graph import Node
    seen, alive_then = [], []
    run = Node.run

    def recording(self, ins, flipped=None):       # what lives while the node runs, besides its own inputs
        alive_then[:] = [(v, ref) for v, ref in seen if ref() is not None and v not in self.inputs]
        out = run(self, ins, flipped)
        seen.append((self.output, weakref.ref(out)))
        return out

    monkeypatch.setattr(Node, "run", recording)
    STATES.clear()
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(6, 3, name="c1")(inp)
    x = L.Activation("relu")(x)
    y = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(x)
    x = L.MaxPooling2D()(L.Add()([x, y]))
    model = keras.Model(inp, L.Dense(5, name="logits")(L.Flatten()(x)))
    ex = Explainer(model, "sglrp", cache=None)
    out = ex(IMAGES, 1)
    graph = ex.backend.graph
    ((_, state, _), _), = STATES._items.values()
    assert len(seen) == len(graph.nodes) and len(alive_then) > 0      # at the last node, the state's values
    held = [v for v, ref in alive_then if ref() is None or not any(ref() is t for t in state)]
    assert held == [], f"values held past their last reader: {held}"
    assert np.isfinite(out.relevance).all()


def test_the_worker_waits_while_a_caller_runs_up_to_its_budget(monkeypatch):
    worker, events = _Worker(), []

    class Job:
        def _compile_queued(self):
            events.append("start")
            compiling.yield_to_callers()
            events.append("traced")

    def until(condition):
        for _ in range(500):
            if condition():
                return True
            threading.Event().wait(0.01)
        return False

    first, second = Job(), Job()
    with compiling.serving():
        compiling.yield_to_callers()                  # a caller's own thread never waits
        worker.submit(first)
        assert until(lambda: events == ["start"])
        threading.Event().wait(0.3)
        assert events == ["start"]                    # paused while the call runs
    assert until(lambda: events == ["start", "traced"])
    monkeypatch.setattr(compiling, "PAUSE_BUDGET_S", 0.2)
    with compiling.serving():                         # a call longer than the budget does not hold it
        worker.submit(second)
        assert until(lambda: events == ["start", "traced"] * 2)
    worker.close()

"""RelevanceExplorer's Python side, driven exactly as the browser drives it.

Messages go through ``Widget._handle_msg`` (the comm callback) with the same payloads the
front end sends (``update`` with a partial state, ``custom``), and everything the kernel sends
back is recorded at ``Widget._send`` (JSON state + binary buffers), so the tests read buffers
the way the browser does. Small Keras models are built here; nothing is downloaded.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("sglrp_widgets.engine")

from sglrp_widgets import viz  # noqa: E402
from sglrp_widgets.engine import Explainer  # noqa: E402
from sglrp_widgets.widget import (  # noqa: E402
    RelevanceExplorer,
    decode_heatmap,
    encode_heatmap,
    faded_contrast,
    format_probability,
    imagenet_class_names,
    legend_words,
    to_display_uint8,
)

ROOT = Path(__file__).resolve().parents[1]
H = W = 16
N_CLASSES = 6
T = 120  # generous timeout for waits: only reached when something is broken


def _preprocess(x):
    return np.asarray(x, np.float32) / 255.0


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((H, W, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(N_CLASSES)(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return (rng.random((3, H, W, 3)) * 255).astype(np.uint8)


class Wire:
    """Records what the kernel sends and sends what the browser would."""

    def __init__(self, widget):
        self.w = widget
        self.sent = []  # (state dict, buffer_paths, buffers)
        self.rid = 1000
        widget._send = self._record

    def _record(self, msg, buffers=None):
        if msg.get("method") == "update":
            self.sent.append((msg["state"], msg.get("buffer_paths", []), list(buffers or [])))

    def update(self, **state):
        self.w._handle_msg({"content": {"data": {"method": "update", "state": state,
                                                 "buffer_paths": []}}, "buffers": []})

    def request(self, **state):
        """A selection change as the browser sends it: the new values and the next request id."""
        self.rid += 1
        self.update(**state, request_id=self.rid)
        return self.rid

    def custom(self, content):
        self.w._handle_msg({"content": {"data": {"method": "custom", "content": content}},
                            "buffers": []})

    def keys_sent(self):
        return [k for s, _, _ in self.sent for k in s] + [
            p[0] for _, paths, _ in self.sent for p in paths]

    def clear(self):
        self.sent.clear()

    def bytes_sent(self):
        return sum(len(json.dumps(s, default=str)) + sum(len(b) for b in bufs) for s, _, bufs in self.sent)


def _explorer(model, images, **kw):
    kw.setdefault("preprocess", _preprocess)
    kw.setdefault("class_names", [f"c{i}" for i in range(N_CLASSES)])
    kw.setdefault("prefetch", False)
    w = RelevanceExplorer(model, images, **kw)
    return w, Wire(w)


def _engine_heatmap(model, image, method, target, **params):
    out = Explainer(model, method, preprocess=_preprocess, **params)(_preprocess(image[None]), targets=[target])
    return np.asarray(out.heatmap())[0]


def _wait_for(pred, timeout=T):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.002)
    return False


# ---------------------------------------------------------------------------------------------
# the map and what travels


def test_initial_state_and_buffer(model, images):
    w, _ = _explorer(model, images, top_k=3)
    try:
        assert w.error == "", w.error
        meta = w.heatmap_meta
        assert (meta["index"], meta["method"], meta["width"], meta["height"]) == (0, "sglrp", W, H)
        assert meta["dtype"] == "float16" and isinstance(w.heatmap, bytes) and len(w.heatmap) == 2 * H * W
        assert len(w.predictions) == 3
        probs = [p["prob"] for p in w.predictions]
        assert probs == sorted(probs, reverse=True)
        assert all(p["percent"].endswith(" %") for p in w.predictions)
        assert w.resolved_target == w.predictions[0]["index"] == meta["target"]
        assert meta["class_name"] == f"c{meta['target']}" and meta["label"] == "SGLRP"
        # what the browser decodes equals the engine's map up to float16 rounding
        ref = _engine_heatmap(model, images[0], "sglrp", meta["target"])
        np.testing.assert_allclose(decode_heatmap(w.heatmap, meta), ref, rtol=2e-3, atol=np.abs(ref).max() / 2048)
        np.testing.assert_allclose(w.explanation, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
        # the colour-scale ends are viz's: percentile and maximum, signed and positive part
        assert meta["scales"]["percentile"][0] == pytest.approx(viz.robust_scale(ref), rel=1e-5)
        assert meta["scales"]["max"][1] == pytest.approx(viz.robust_scale(ref, "max", positive_only=True), rel=1e-5)
        assert meta["legend"] == list(legend_words("sglrp", "Contrastive LRP", meta["class_name"]))
        assert w.image_meta == {"index": 0, "width": W, "height": H}
        assert w.image[:8] == b"\x89PNG\r\n\x1a\n"
        assert w.task == {} and "SGLRP" in w.status
    finally:
        w.close()


def test_status_says_where_sglrp_contrast_fades(images):
    """A class the model is all but sure of (or all but rules out) has SGLRP heads y_t (1 - y_t) below 1e-6: the
    status line says its contrast fades there and names CLRP; a class with a moderate probability gets no note."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((H, W, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inp))
    head = keras.layers.Dense(3)
    confident = keras.Model(inp, head(x))
    head.kernel.assign(np.random.default_rng(0).normal(0, 0.01, (4, 3)).astype(np.float32))
    head.bias.assign(np.array([20.0, 0.0, 1.0], np.float32))       # p about 1 - 8e-9, 2e-9, 6e-9 on every image
    w, wire = _explorer(confident, images, class_names=["a", "b", "c"], method="sglrp")
    try:
        assert w.wait(T) and w.error == ""
        assert w.resolved_target == 0
        assert "a near-certain class: SGLRP's contrast fades here" in w.status and "CLRP" in w.status
        wire.request(target=2)
        assert w.wait(T) and w.resolved_target == 2
        assert "a very unlikely class: SGLRP's contrast fades here" in w.status
        wire.request(method="clrp", target=0)
        assert w.wait(T) and w.heatmap_meta["method"] == "clrp"
        assert "fades" not in w.status
    finally:
        w.close()
    probs = np.array([0.6, 0.3, 0.1])
    assert faded_contrast("sglrp", {}, probs, 0) == ""
    assert faded_contrast("sglrp", {"scaling": False}, np.array([1.0, 0.0, 0.0]), 0) == ""
    assert faded_contrast("lrp", {}, np.array([1.0, 0.0, 0.0]), 0) == ""

def test_class_switch_sends_one_binary_heatmap_and_no_image(model, images):
    w, wire = _explorer(model, images)
    try:
        wire.clear()
        t = (w.resolved_target + 1) % N_CLASSES
        rid = wire.request(target=t)
        assert w.wait(T)
        assert w.error == ""
        assert w.heatmap_meta["target"] == t == w.resolved_target
        assert w.heatmap_meta["request_id"] == rid
        keys = wire.keys_sent()
        assert "heatmap" in keys and "heatmap_meta" in keys
        assert "image" not in keys, "the base image travels once per image"
        hm_msgs = [(s, paths, bufs) for s, paths, bufs in wire.sent if ["heatmap"] in paths]
        assert len(hm_msgs) == 1
        s, paths, bufs = hm_msgs[0]
        assert len(bufs[paths.index(["heatmap"])]) == 2 * H * W
        assert "heatmap" not in s and "heatmap_meta" in s  # binary, and in one message with its metadata
        assert wire.bytes_sent() < 2 * H * W + 5000
    finally:
        w.close()


def test_encode_keeps_small_values_next_to_a_large_one():
    h = np.full((4, 4), 1e-3, np.float32)
    h[0, 0] = 1.0  # a percentile scale shows the 1e-3 pixels: they must survive the transfer
    h[1, 1] = -2e-3
    buf, scale = encode_heatmap(h)
    back = decode_heatmap(buf, {"scale": scale, "height": 4, "width": 4})
    np.testing.assert_allclose(back, h, rtol=1e-3)
    assert encode_heatmap(np.zeros((2, 2)))[1] == 0.0


def test_view_settings_never_compute(model, images):
    w, wire = _explorer(model, images)
    try:
        gen, meta = w._scheduler.generation, dict(w.heatmap_meta)
        wire.clear()
        wire.update(opacity=0.2, colormap="viridis", positive_only=True, norm="max", layout="side", show_boxes=False)
        assert w.wait(T)
        assert w._scheduler.generation == gen and w.heatmap_meta == meta
        assert "heatmap" not in wire.keys_sent() and w.task == {}
        assert (w.opacity, w.colormap, w.positive_only, w.norm, w.layout) == (0.2, "viridis", True, "max", "side")
    finally:
        w.close()


def test_one_browser_message_is_one_request(model, images):
    w, wire = _explorer(model, images)
    try:
        gen = w._scheduler.generation
        wire.request(index=2, target=-1, method="gradient", params={})
        assert w.wait(T)
        assert w._scheduler.generation == gen + 1
        assert (w.heatmap_meta["index"], w.heatmap_meta["method"]) == (2, "gradient")
    finally:
        w.close()


def test_changing_image_sends_it_once_and_resets_target(model, images):
    w, wire = _explorer(model, images)
    try:
        wire.request(target=5)
        assert w.wait(T)
        wire.clear()
        wire.request(index=2, target=-1)
        assert w.wait(T)
        assert w.image_meta["index"] == 2 and w.heatmap_meta["index"] == 2
        assert wire.keys_sent().count("image") == 1
        assert w.heatmap_meta["target"] == w.predictions[0]["index"]
        # index alone (e.g. set from Python) also starts at the top-1 class
        wire.request(target=5)
        assert w.wait(T)
        w.index = 1
        assert w.wait(T)
        assert w.target == -1 and w.heatmap_meta["index"] == 1
        assert w.heatmap_meta["target"] == w.predictions[0]["index"]
    finally:
        w.close()


# ---------------------------------------------------------------------------------------------
# scheduling: stale results, coalescing, priorities, cancel


class Gate:
    """Wraps the widget's engine call: a call for ``target`` blocks until released."""

    def __init__(self, w, target):
        self.started, self.release, self.target = threading.Event(), threading.Event(), target
        self.calls = []
        real = w._explain

        def explain(index, method, params, targets):
            self.calls.append((method, None if targets is None else list(targets)))
            if targets is not None and self.target in targets:
                self.started.set()
                assert self.release.wait(T)
            return real(index, method, params, targets)

        w._explain = explain


def test_stale_result_is_dropped_and_the_new_click_does_not_wait(model, images):
    w, wire = _explorer(model, images)
    try:
        gate = Gate(w, 1)
        wire.clear()
        wire.request(target=1)
        assert gate.started.wait(T)
        rid = wire.request(target=2)  # the user clicks on while class 1 computes
        assert _wait_for(lambda: w.heatmap_meta.get("request_id") == rid), "the click waited for the old one"
        assert w.heatmap_meta["target"] == 2
        gate.release.set()
        assert w.wait(T)
        assert w.dropped == 1
        targets_shown = [s["heatmap_meta"]["target"] for s, _, _ in wire.sent if "heatmap_meta" in s]
        assert 1 not in targets_shown, "a stale map was sent to the browser"
        assert w.heatmap_meta["request_id"] == rid and w.current["target"] == 2
    finally:
        w.close()


def test_rapid_clicks_coalesce(model, images):
    w, wire = _explorer(model, images)
    try:
        gates = [threading.Event(), threading.Event()]
        for g in gates:  # keep both workers busy while the clicks arrive
            running = threading.Event()
            w._scheduler.request(lambda gen, g=g, running=running: (running.set(), g.wait(T)))
            assert running.wait(T)      # taken by a worker: the next request cannot coalesce it away
        gate = Gate(w, -99)
        for t in [1, 2, 3, 4, 5]:
            rid = wire.request(target=t)
        for g in gates:
            g.set()
        assert w.wait(T)
        assert gate.calls == [("sglrp", [5])], gate.calls
        assert w._scheduler.coalesced >= 4
        assert w.heatmap_meta["target"] == 5 and w.heatmap_meta["request_id"] == rid
    finally:
        w.close()


def test_cancel_hides_the_result_and_says_so(model, images):
    w, wire = _explorer(model, images)
    try:
        before = dict(w.heatmap_meta)
        gate = Gate(w, 3)
        wire.request(target=3)
        assert gate.started.wait(T)
        assert w.task["kind"] == "map" and "c3" in w.task["label"]
        wire.custom({"type": "cancel", "what": "map"})
        assert w.task == {} and w.status == "cancelled"
        gate.release.set()
        assert w.wait(T)
        assert w.heatmap_meta == before and w.dropped == 1
    finally:
        w.close()


def test_prefetch_computes_the_top_k_ahead_in_the_background(model, images):
    w, wire = _explorer(model, images, top_k=4, prefetch=True, compute_initial=False)
    try:
        gate = Gate(w, -99)                 # wraps the engine call before anything runs (no race)
        wire.request(index=0, target=-1)
        assert w.wait(T)
        batched = [t for m, t in gate.calls if t is not None]
        # one class first (to measure), then the rest in units of about prefetch_budget
        assert batched[0] and len(batched[0]) == 1 and sum(len(t) for t in batched) == 3
        second = w.predictions[1]["index"]
        wire.request(target=second)
        assert w.wait(T)
        assert w.heatmap_meta["cached"] is True and "cached" in w.status  # the engine's cache
        ref = _engine_heatmap(model, images[0], "sglrp", second)
        np.testing.assert_allclose(w.explanation, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    finally:
        w.close()


def test_a_click_cancels_the_prefetch_and_runs_first(model, images):
    w, wire = _explorer(model, images, top_k=5, prefetch=True, compute_initial=False)
    try:
        assert w.wait(T)
        w.prefetch_budget = 0.0  # one class per unit
        order = []
        real = w._explain
        clicked = threading.Event()

        def explain(index, method, params, targets):
            order.append((index, None if targets is None else tuple(targets)))
            if index == 1 and targets is not None and not clicked.is_set():
                clicked.set()
                wire.request(index=2, target=-1)  # the user acts during the first prefetch unit
            return real(index, method, params, targets)

        w._explain = explain
        wire.request(index=1, target=-1)
        assert w.wait(T)
        assert clicked.is_set()
        i = next(k for k, (idx, t) in enumerate(order) if idx == 1 and t is not None)
        assert order[i + 1] == (2, None), order  # the user's request came next
        assert not [o for o in order[i + 1:] if o[0] == 1], "the prefetch of image 2 went on"
        assert w.heatmap_meta["index"] == 2
    finally:
        w.close()


# ---------------------------------------------------------------------------------------------
# parameters and errors


@pytest.mark.parametrize("state, field, fragment", [
    ({"method": "lrp.epsilon", "params": {"epsilon": -1.0}}, "epsilon", "epsilon"),
    ({"method": "lrp.epsilon", "params": {"epsilon": "abc"}}, "epsilon", "'abc'"),
    ({"method": "sglrp", "params": {"bogus": 1}}, "bogus", "bogus"),
    ({"method": "sglrp", "params": {"low": 2.0, "high": 1.0}}, "high", "low must be smaller than high"),
    ({"method": "no_such_method", "params": {}}, None, "no_such_method"),
    ({"target": 99}, None, "99"),
    ({"index": 7}, None, "7"),
    ({"index": "x"}, None, "index"),
    ({"params": ["not", "a", "dict"]}, None, "params"),
])
def test_bad_browser_values_show_error_and_widget_keeps_working(model, images, state, field, fragment):
    w, wire = _explorer(model, images, boxes=[(0, 0, 8, 8)] * 3)
    try:
        good = dict(w.heatmap_meta)
        assert w.metrics
        wire.request(**state)
        assert w.wait(T)
        assert w.error and fragment in w.error, w.error
        if field:
            assert fragment in w.field_errors[field]
        assert w.task == {} and w.metrics == {}  # no metrics of a map that is not the selection
        assert w.heatmap_meta == good  # the last good map stays, labelled with what it shows
        wire.request(method="gradient", params={}, index=0, target=2)
        assert w.wait(T)
        assert w.error == "" and w.field_errors == {} and w.heatmap_meta["method"] == "gradient"
        assert w.heatmap_meta["target"] == 2
    finally:
        w.close()


def test_one_bound_typed_with_the_other_automatic(model, images):
    w, wire = _explorer(model, images)
    try:
        t = w.resolved_target
        wire.request(params={"low": 0.0})
        assert w.wait(T)
        assert w.error == "", w.error
        assert w.heatmap_meta["params"]["low"] == 0.0 and w.heatmap_meta["params"]["high"] is None
        ref = _engine_heatmap(model, images[0], "sglrp", t, low=[0.0] * 3, high=[1.0] * 3)
        np.testing.assert_allclose(w.explanation, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
        got = eval(w.code, {"Explainer": Explainer, "model": model, "images": images, "preprocess": _preprocess})
        np.testing.assert_allclose(got, w.explanation, rtol=1e-5, atol=1e-7)  # the copied line runs as is
        wire.request(params={"low": [0.0, 0.0, 0.0], "high": 1.0})
        assert w.wait(T)
        assert w.error == "", w.error
    finally:
        w.close()


def test_method_and_params_from_browser(model, images):
    w, wire = _explorer(model, images)
    try:
        wire.request(method="lrp.epsilon", params={"epsilon": 0.5})
        assert w.wait(T)
        assert w.error == "", w.error
        assert w.heatmap_meta["method"] == "lrp.epsilon"
        assert w.heatmap_meta["params"]["epsilon"] == 0.5
        ref = _engine_heatmap(model, images[0], "lrp.epsilon", w.resolved_target, epsilon=0.5)
        np.testing.assert_allclose(w.explanation, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
        # setting the method from Python drops parameters it does not know
        w.method = "gradient"
        assert w.wait(T)
        assert w.error == "" and "epsilon" not in w.params
    finally:
        w.close()


def test_methods_that_cannot_explain_the_model_are_disabled_with_the_reason(images):
    inp = keras.Input((H, W, 3))
    dense_only = keras.Model(inp, keras.layers.Dense(N_CLASSES)(keras.layers.Flatten()(inp)))
    w, wire = _explorer(dense_only, images)
    try:
        specs = {s["name"]: s for s in w.method_specs}
        assert "convolutional" in specs["grad_cam"]["unavailable"]
        assert specs["sglrp"]["unavailable"] is None
        wire.request(method="grad_cam", params={})
        assert w.wait(T)
        assert "cannot explain this model" in w.error and "convolutional" in w.error
    finally:
        w.close()
    with pytest.raises(ValueError, match="cannot explain this model"):
        RelevanceExplorer(dense_only, images, method="grad_cam")


def test_method_specs_restricted_and_constructor_errors(model, images):
    w, _ = _explorer(model, images, methods=["sglrp", "gradient"])
    try:
        assert [s["name"] for s in w.method_specs] == ["sglrp", "gradient"]
        assert all("family" in s and "params" in s and "description" in s for s in w.method_specs)
        json.dumps(w.method_specs)  # JSON-safe
    finally:
        w.close()
    with pytest.raises(ValueError, match="unknown method"):
        RelevanceExplorer(model, images, methods=["nope"])
    with pytest.raises(ValueError, match="class_names"):
        RelevanceExplorer(model, images, class_names=["a", "b"])
    with pytest.raises(ValueError, match="boxes has 1 entries for 3 images"):
        RelevanceExplorer(model, images, boxes=[(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="2 boxes but 1 box_labels"):
        RelevanceExplorer(model, images, boxes=[[(0, 0, 1, 1), (1, 1, 2, 2)]] * 3, box_labels=[[0]] * 3)
    with pytest.raises(ValueError, match="unknown colormap"):
        RelevanceExplorer(model, images, colormap="nope")


# ---------------------------------------------------------------------------------------------
# legibility: colormaps, boxes, metrics, words


def test_any_matplotlib_colormap_is_sent_as_matplotlibs_table(model, images):
    w, wire = _explorer(model, images, colormap="twilight")
    try:
        assert set(w.colormaps) >= {"bwr", "viridis", "twilight"}
        lut = np.frombuffer(bytes.fromhex(w.colormaps["viridis"]["lut"]), np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(lut, viz.colormap_lut("viridis"))
        assert w.colormaps["bwr"]["diverging"] and not w.colormaps["viridis"]["diverging"]
        w.colormap = "cividis"  # from Python: any matplotlib name
        assert "cividis" in w.colormaps
        wire.update(colormap="no-such-map")  # from the browser: rejected with a sentence
        assert "no-such-map" in w.error and w.colormap == "cividis"
    finally:
        w.close()


def test_boxes_are_sent_and_metrics_use_the_chosen_class_box(model, images):
    boxes = [[(0, 0, 8, 8), (8, 8, 16, 16)]] * 3
    w, wire = _explorer(model, images, boxes=boxes, box_labels=[[1, 2]] * 3)
    try:
        assert w.boxes == [{"box": [0, 0, 8, 8], "class": 1, "label": "c1"},
                           {"box": [8, 8, 16, 16], "class": 2, "label": "c2"}]
        from sglrp_widgets import metrics as M

        wire.request(target=2)
        assert w.wait(T)
        mask = M.boxes_to_masks(np.array([[8, 8, 16, 16]]), (H, W))
        assert w.metrics["region"] == "box of c2"
        assert w.metrics["mass_in_box"] == pytest.approx(float(M.mass_in_box(w.explanation[None], mask)[0]))
        assert w.metrics["pointing_game"] == bool(M.pointing_game(w.explanation[None], mask)[0])
        wire.request(target=4)  # not in the image
        assert w.wait(T)
        assert w.metrics["mass_in_box"] is None and w.metrics["note"].startswith("n/a")
    finally:
        w.close()


def test_unlabelled_boxes_dicts_and_masks(model, images):
    w, _ = _explorer(model, images, boxes=[(0, 0, H, W)] * 3)
    try:
        assert w.metrics["region"] == "boxes" and w.metrics["pointing_game"] is True
    finally:
        w.close()
    w, _ = _explorer(model, images, boxes=[{0: (0, 0, 4, 4), 3: [(4, 4, 8, 8), (8, 8, 12, 12)]}] * 3)
    try:
        assert [b["class"] for b in w.boxes] == [0, 3, 3]
    finally:
        w.close()
    masks = np.zeros((3, H, W), bool)
    masks[:, :8] = True
    w, _ = _explorer(model, images, masks=masks)
    try:
        assert w.metrics["region"] == "mask" and 0 <= w.metrics["mass_in_box"] <= 1
    finally:
        w.close()


def test_words_for_the_colour_bar_and_probabilities():
    assert legend_words("sglrp", "Contrastive LRP", "cat") == ("speaks for the other classes",
                                                               "speaks for “cat” over the others")
    assert legend_words("gradient", "Gradient", "cat")[1] == "brighter pixel raises “cat”"
    assert legend_words("lrp", "LRP", "cat") == ("speaks against “cat”", "speaks for “cat”")
    assert legend_words("grad_cam", "CAM", "cat") == ("no evidence", "evidence for “cat”")
    assert [format_probability(p) for p in (0.973, 0.002, 0.0006, 1e-7)] == ["97.3 %", "0.2 %", "0.06 %", "< 0.01 %"]


# ---------------------------------------------------------------------------------------------
# Compare


def test_compare_in_the_widget_row_by_row_and_stale_on_image_change(model, images):
    w, wire = _explorer(model, images)
    try:
        states = []
        w.observe(lambda ch: states.append((ch["new"].get("state"), ch["new"].get("done"), ch["new"].get("total"))),
                  names="compare_grid")
        wire.custom({"type": "compare"})
        assert w.wait(T)
        g = w.compare_grid
        assert g["state"] == "done" and g["done"] == g["total"] == len(g["rows"]) == 4
        assert "top 3 classes · image 1 / 3" in g["title"] and g["title"].startswith("SGLRP, CLRP")
        assert [r["method"] for r in g["rows"]] == ["sglrp", "clrp", "lrp", "gradient"]
        assert ("running", 1, 4) in states and ("running", 3, 4) in states  # k of n as it goes
        row = g["rows"][3]
        dec = decode_heatmap(row["maps"][1], {"scale": row["scales"][1]["max_abs"], "height": H, "width": W})
        ref = _engine_heatmap(model, images[0], "gradient", g["targets"][1]["index"])
        np.testing.assert_allclose(dec, ref, rtol=2e-3, atol=np.abs(ref).max() / 1000)
        # a new image makes an unfinished comparison stale (and stops it)
        gate = Gate(w, g["targets"][0]["index"])
        wire.custom({"type": "compare"})
        assert gate.started.wait(T)
        wire.request(index=1, target=-1)
        gate.release.set()
        assert w.wait(T)
        assert w.compare_grid["state"] == "stale" and w.compare_grid["done"] < 4
    finally:
        w.close()


def test_compare_cancel_and_python_figure(model, images):
    import matplotlib

    matplotlib.use("Agg")
    w, wire = _explorer(model, images)
    try:
        gate = Gate(w, w.resolved_target)
        wire.custom({"type": "compare"})
        assert gate.started.wait(T)
        wire.custom({"type": "cancel", "what": "compare"})
        gate.release.set()
        assert w.wait(T)
        assert w.compare_grid["state"] == "cancelled"
        fig = w.compare(methods=["sglrp", "gradient"], targets=[0, 1])
        assert len(fig.axes) == 2 * 3 + 1        # and the colour key
        assert fig.axes[1].get_title().startswith("c0\n") and fig.axes[1].get_title().endswith("%")
        with pytest.raises(ValueError):
            w.compare(methods=["nope"])
        # in the view's colours: Grad-CAM rows from 0 always, every row with positive-only ticked
        seen = []
        real = viz.plot_grid
        viz.plot_grid = lambda *a, **kw: seen.append(kw["positive_only"]) or real(*a, **kw)
        try:
            w.compare(methods=["sglrp", "grad_cam"], targets=[0])
            w.positive_only = True
            w.compare(methods=["sglrp", "grad_cam"], targets=[0])
        finally:
            viz.plot_grid = real
        assert seen == [[False, True], [True, True]]
    finally:
        w.close()


# ---------------------------------------------------------------------------------------------
# export, code, persistence


def test_export_save_figure_and_static_png_fallback(model, images, tmp_path):
    w, _ = _explorer(model, images, boxes=[(0, 0, 8, 8)] * 3, box_labels=[[0]] * 3)
    try:
        w.save(tmp_path / "map.npy")
        np.testing.assert_array_equal(np.load(tmp_path / "map.npy"), w.explanation)
        fig = w.figure()
        texts = [t.get_text() for t in fig.texts]
        name = w.heatmap_meta["class_name"]
        assert any(t.startswith(f"{name} · ") and t.endswith("%") for t in texts)
        assert "SGLRP · image 1 / 3" in texts
        assert any(w.heatmap_meta["legend"][1] in " ".join(t.split()) for t in texts)   # wrapped under its end
        w.save(tmp_path / "map.png")
        from PIL import Image

        assert Image.open(tmp_path / "map.png").size[0] == 400  # display size, with title and colour bar
        data, _meta = w._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in data
        assert base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
        ov = w.overlay_image()
        assert ov.shape == (H, W, 3) and ov.dtype == np.uint8
    finally:
        w.close()


def test_a_never_negative_method_is_drawn_from_zero_in_python_as_in_the_browser(model, images):
    # Grad-CAM's maps have no negative part: its figure's bar starts at 0 with no "no evidence" end, and its
    # overlay is the positive-only one, while the view setting stays off for the next method
    w, wire = _explorer(model, images, method="grad_cam", colormap="viridis")  # sequential: 0 is its low end
    try:
        assert w.wait(T) and w.heatmap_meta["never_negative_why"] == "Grad-CAM maps are never negative"
        assert w.positive_only is False
        heat = w.explanation
        assert heat.min() >= 0
        texts = [t.get_text() for t in w.figure().texts]
        assert "0" in texts and not any(t.startswith("−") for t in texts)
        assert w.heatmap_meta["legend"][0] not in texts
        assert any(t.endswith("(positive part)") for t in texts)
        expected = viz.display_overlay(w._images.display(0), heat, cmap=w.colormap, opacity=w.opacity,
                                       positive_only=True, norm=w.norm)
        np.testing.assert_array_equal(w.overlay_image(), np.clip(np.rint(expected * 255), 0, 255).astype(np.uint8))
        wire.request(method="sglrp", params={})
        assert w.wait(T) and w.heatmap_meta["never_negative_why"] == ""
        texts = [t.get_text() for t in w.figure().texts]
        assert any(t.startswith("−") for t in texts) and not any(t.endswith("(positive part)") for t in texts)
        # relu keeps only the positive part of any method's map: no negative end either
        wire.request(method="sglrp", params={"relu": True})
        assert w.wait(T) and w.explanation.min() >= 0
        assert w.heatmap_meta["never_negative_why"] == "relu keeps only the positive part of the map"
        texts = [t.get_text() for t in w.figure().texts]
        assert "0" in texts and not any(t.startswith("−") for t in texts)
    finally:
        w.close()


def test_copy_as_code_reproduces_the_map(model, images):
    w, wire = _explorer(model, images)
    try:
        wire.request(method="lrp.epsilon", params={"epsilon": 0.25}, index=1, target=3)
        assert w.wait(T)
        assert "epsilon=0.25" in w.code and "relu" not in w.code  # only what differs from the defaults
        got = eval(w.code, {"Explainer": Explainer, "model": model, "images": images, "preprocess": _preprocess,
                            "np": np})
        np.testing.assert_allclose(got, w.explanation, rtol=1e-5, atol=1e-7)
    finally:
        w.close()


def test_comm_count_counts_browser_messages(model, images):
    w, wire = _explorer(model, images)
    try:
        c = w.comm_count
        wire.update(opacity=0.3)
        wire.request(target=1)
        assert w.wait(T)
        assert w.comm_count == c + 2
    finally:
        w.close()


def test_inputs_paths_lists_floats_and_imagenet_names(model, images, tmp_path):
    from PIL import Image

    paths = []
    for i, im in enumerate(images[:2]):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.repeat(np.repeat(im, 2, 0), 2, 1)).save(p)  # 32x32: resized to 16x16
        paths.append(str(p))
    w = RelevanceExplorer(model, paths, preprocess=_preprocess, prefetch=False)
    assert w.n_images == 2 and w.error == "" and w.image_meta["width"] == W
    assert "PIL.Image.open" in w.code
    w.close()
    floats = images.astype(np.float32) / 255.0  # display floats in 0..1, model takes them as is
    w = RelevanceExplorer(model, list(floats), prefetch=False)
    assert w.error == "" and w.n_images == 3
    np.testing.assert_array_equal(to_display_uint8(floats[0]), images[0])
    w.close()
    with pytest.raises(ValueError, match="does not exist"):
        RelevanceExplorer(model, ["/nonexistent.png"])
    inp = keras.Input((H, W, 3))
    m = keras.Model(inp, keras.layers.Dense(1000)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3, activation="relu")(inp))))
    w = RelevanceExplorer(m, images[:1], method="gradient", compute_initial=False, prefetch=False)
    try:
        assert w.class_names[340] == "zebra" and imagenet_class_names() == w.class_names
    finally:
        w.close()


def test_demo_takes_a_model_name():
    from sglrp_widgets import demo

    w = RelevanceExplorer.demo(next(iter(demo.MODELS)), n_images=2, prefetch=False)
    try:
        assert w.n_images == 2 and w.error == "" and len(w.boxes) == 2
        assert all(b["label"] in demo.class_names for b in w.boxes)
    finally:
        w.close()
    with pytest.raises(ValueError, match="unknown demo model"):
        RelevanceExplorer.demo("nope")


def test_browser_blend_matches_the_python_overlay(tmp_path):
    """The JS module and viz.display_overlay draw the same pixels (one normalisation, one blend), for a signed
    map and for one with no zeros (as Grad-CAM++'s: positive-only draws it from 0, not from its minimum)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    rng = np.random.default_rng(1)
    signed = (rng.normal(size=(8, 8)) ** 3).astype(np.float32)
    heats = [signed, np.abs(signed) + np.float32(0.5 * np.abs(signed).max())]
    img = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    cases = [("bwr", False, "percentile", 0), ("bwr", True, "max", 0), ("viridis", False, "percentile", 0),
             ("viridis", True, "percentile", 0), ("viridis", True, "max", 1), ("bwr", True, "percentile", 1)]
    script = tmp_path / "blend.mjs"
    script.write_text(f"""
import * as W from {json.dumps((ROOT / 'js' / 'widget.js').as_uri())};
const input = JSON.parse(process.argv[2]);
const out = input.cases.map(([name, pos, norm, which]) => {{
  const lut = W.lutFromHex(input.luts[name]);
  const img = new Uint8ClampedArray(input.rgba);
  const scale = W.mapScale({{ scales: input.scales[which] }}, norm, pos);
  const v = W.normalizeHeatmap(Float32Array.from(input.heats[which]), scale, pos);
  return Array.from(W.blend(img, v, lut, 0.8, {{ diverging: name === "bwr", positiveOnly: pos }}));
}});
out.push(input.probs.map(W.formatPercent));
console.log(JSON.stringify(out));
""")
    rgba = np.concatenate([img, np.full((8, 8, 1), 255, np.uint8)], -1).ravel().tolist()
    scales = [{n: [viz.robust_scale(h, n), viz.robust_scale(h, n, positive_only=True)] for n in viz.NORMS}
              for h in heats]
    probs = [0.973, 0.002, 0.0006, 1e-7]
    arg = json.dumps({"cases": cases, "heats": [h.ravel().tolist() for h in heats], "rgba": rgba, "scales": scales,
                      "probs": probs, "luts": {n: viz.colormap_lut(n).tobytes().hex() for n in ("bwr", "viridis")}})
    proc = subprocess.run([node, str(script), arg], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for (name, pos, norm, which), js in zip(cases, result):
        py = viz.display_overlay(img, heats[which], cmap=name, opacity=0.8, positive_only=pos, norm=norm) * 255
        diff = np.abs(np.asarray(js, float).reshape(8, 8, 4)[..., :3] - py)
        assert diff.max() <= 3.0, (name, pos, norm, which, diff.max())  # a 257-entry table vs continuous colours
    assert result[-1] == [format_probability(p) for p in probs]


@pytest.mark.slow
def test_executed_notebook_keeps_a_labelled_static_png(tmp_path, monkeypatch):
    """A notebook executed without a browser (nbclient) stores the widget view AND an image/png
    of the labelled map, so exported / non-interactive notebooks still show it."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    code = """
import numpy as np, keras
from sglrp_widgets import RelevanceExplorer
keras.utils.set_random_seed(0)
inp = keras.Input((16, 16, 3))
x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inp))
model = keras.Model(inp, keras.layers.Dense(3)(x))
imgs = (np.random.default_rng(0).random((1, 16, 16, 3)) * 255).astype("uint8")
RelevanceExplorer(model, imgs, preprocess=lambda x: x / 255.0, prefetch=False)
"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for o in nb.cells[0].outputs if o.get("output_type") == "execute_result"]
    assert outputs, nb.cells[0].outputs
    data = outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in data
    assert base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    ours = [s for s in state.values() if s["state"].get("_anywidget_id") == "sglrp_widgets.widget.RelevanceExplorer"]
    assert ours and ours[0]["state"]["heatmap_meta"]["class_name"]  # what a reopened notebook draws


@pytest.mark.slow
def test_vgg16_switch_while_a_slow_method_runs():
    """Must hold: on VGG16 at 224x224, start a slow method, then change method and class; the new map is
    published before the slow method finishes, after waiting less than one class switch's compute time."""
    keras.utils.set_random_seed(0)
    vgg = keras.applications.VGG16(weights=None, classifier_activation=None)
    pre = keras.applications.vgg16.preprocess_input
    image = (np.random.default_rng(0).random((1, 224, 224, 3)) * 255).astype(np.uint8)
    w, wire = _explorer(vgg, image, preprocess=lambda x: pre(np.array(x, np.float32)), class_names=None,
                        methods=["sglrp", "integrated_gradients"])
    try:
        order = [p["index"] for p in w.predictions]
        # one class switch of SGLRP, measured here (its image's forward state is cached)
        wire.request(target=order[1])
        assert w.wait(600) and w.error == ""
        switch = w.heatmap_meta["seconds"]
        finished = threading.Event()
        real = w._explain

        def explain(index, method, params, targets):
            try:
                return real(index, method, params, targets)
            finally:
                if method == "integrated_gradients":
                    finished.set()

        w._explain = explain
        wire.request(method="integrated_gradients", params={}, target=order[2])
        assert _wait_for(lambda: w._scheduler.request_running() and w._scheduler.started[-1][0]
                         == w._scheduler.generation)
        t0 = time.perf_counter()
        rid = wire.request(method="sglrp", params={}, target=order[3])
        assert _wait_for(lambda: w.heatmap_meta.get("request_id") == rid, timeout=600)
        latency = time.perf_counter() - t0
        assert not finished.is_set(), "the new map waited for the slow method"
        gen, waited = w._scheduler.started[-1]
        assert gen == w.heatmap_meta["generation"]
        print(f"\nclass switch alone {switch:.3f} s; during integrated gradients: published after {latency:.3f} s "
              f"(queued {waited * 1000:.1f} ms, computed {w.heatmap_meta['seconds']:.3f} s)")
        assert waited < switch, "the request waited in the queue longer than a class switch takes"
        assert (w.heatmap_meta["method"], w.heatmap_meta["target"]) == ("sglrp", order[3])
        assert finished.wait(600)
        assert w.wait(600) and w.dropped == 1 and w.heatmap_meta["request_id"] == rid
    finally:
        w.close()

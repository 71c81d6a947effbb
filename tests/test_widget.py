"""RelevanceExplorer's Python side, driven exactly as the browser drives it.

Messages go through ``Widget._handle_msg`` (the comm callback) with the same payloads the
front end sends (``update`` with a partial state, ``custom``), and everything the kernel sends
back is recorded at ``Widget._send`` (JSON state + binary buffers), so the tests read buffers
the way the browser does. A tiny Keras model is built here; nothing is downloaded.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("sglrp_widgets.engine")

from sglrp_widgets.widget import (  # noqa: E402
    RelevanceExplorer,
    dequantize_heatmap,
    imagenet_class_names,
    overlay,
    quantize_heatmap,
    to_display_uint8,
)

H = W = 16
N_CLASSES = 6


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
        widget._send = self._record

    def _record(self, msg, buffers=None):
        if msg.get("method") == "update":
            self.sent.append((msg["state"], msg.get("buffer_paths", []), list(buffers or [])))

    def update(self, **state):
        self.w._handle_msg({"content": {"data": {"method": "update", "state": state,
                                                 "buffer_paths": []}}, "buffers": []})

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
    w = RelevanceExplorer(model, images, **kw)
    return w, Wire(w)


def _engine_heatmap(model, image, method, target, **params):
    from sglrp_widgets.engine import Explainer

    out = Explainer(model, method, preprocess=_preprocess, **params)(_preprocess(image[None]),
                                                                      targets=[target])
    return np.asarray(out.heatmap())[0]


# ---------------------------------------------------------------------------------------------


def test_initial_state_and_buffer(model, images):
    w, _ = _explorer(model, images, top_k=3)
    try:
        assert w.error == "", w.error
        meta = w.heatmap_meta
        assert (meta["index"], meta["method"], meta["width"], meta["height"]) == (0, "sglrp", W, H)
        assert meta["dtype"] == "int8" and isinstance(w.heatmap, bytes) and len(w.heatmap) == H * W
        assert len(w.predictions) == 3
        probs = [p["prob"] for p in w.predictions]
        assert probs == sorted(probs, reverse=True)
        assert w.resolved_target == w.predictions[0]["index"] == meta["target"]
        # what the browser decodes equals the engine's map up to int8 quantisation
        ref = _engine_heatmap(model, images[0], "sglrp", meta["target"])
        dec = dequantize_heatmap(w.heatmap, meta)
        np.testing.assert_allclose(dec, ref, atol=np.abs(ref).max() / 127 * 0.51 + 1e-12)
        np.testing.assert_allclose(w.explanation, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
        assert w.image_meta == {"index": 0, "width": W, "height": H}
        assert w.image[:8] == b"\x89PNG\r\n\x1a\n"
        assert [s["name"] for s in w.method_specs][0] and w.method in {s["name"] for s in w.method_specs}
    finally:
        w.close()


def test_class_switch_sends_one_binary_heatmap_and_no_image(model, images):
    w, wire = _explorer(model, images, prefetch=False)
    try:
        wire.clear()
        t = (w.resolved_target + 1) % N_CLASSES
        wire.update(target=t, request_id=1)
        w.wait()
        assert w.error == ""
        assert w.heatmap_meta["target"] == t == w.resolved_target
        assert w.heatmap_meta["request_id"] == 1
        keys = wire.keys_sent()
        assert "heatmap" in keys and "heatmap_meta" in keys
        assert "image" not in keys, "the base image travels once per image"
        # the heatmap is a binary buffer, never a JSON list
        hm_msgs = [(s, paths, bufs) for s, paths, bufs in wire.sent if ["heatmap"] in paths]
        assert len(hm_msgs) == 1
        s, paths, bufs = hm_msgs[0]
        assert len(bufs[paths.index(["heatmap"])]) == H * W
        assert "heatmap" not in s  # removed from the JSON part
        assert wire.bytes_sent() < 4 * H * W + 4000
        # heatmap and its metadata travel in one message (hold_sync)
        assert "heatmap_meta" in s
    finally:
        w.close()


def test_view_settings_never_compute(model, images):
    w, wire = _explorer(model, images, prefetch=False)
    try:
        gen, meta = w._gen, dict(w.heatmap_meta)
        wire.clear()
        wire.update(opacity=0.2, colormap="viridis", positive_only=True)
        w.wait()
        assert w._gen == gen and w.heatmap_meta == meta
        assert "heatmap" not in wire.keys_sent() and not w.busy
        assert (w.opacity, w.colormap, w.positive_only) == (0.2, "viridis", True)
    finally:
        w.close()


def test_changing_image_sends_it_once_and_resets_target(model, images):
    w, wire = _explorer(model, images, prefetch=False)
    try:
        wire.update(target=5, request_id=1)
        w.wait()
        wire.clear()
        wire.update(index=2, target=-1, request_id=2)
        w.wait()
        assert w.image_meta["index"] == 2 and w.heatmap_meta["index"] == 2
        assert wire.keys_sent().count("image") == 1
        assert w.heatmap_meta["target"] == w.predictions[0]["index"]
        # index alone (e.g. set from Python) also starts at the top-1 class
        wire.update(target=5)
        w.wait()
        w.index = 1
        w.wait()
        assert w.target == -1 and w.heatmap_meta["index"] == 1
        assert w.heatmap_meta["target"] == w.predictions[0]["index"]
    finally:
        w.close()


def test_stale_result_is_dropped(model, images):
    w, wire = _explorer(model, images, prefetch=False)
    try:
        started, release = threading.Event(), threading.Event()
        real = w._compute

        def slow(index, method, params, target):
            if target == 1:
                started.set()
                assert release.wait(30)
            return real(index, method, params, target)

        w._compute = slow
        wire.clear()
        wire.update(target=1, request_id=1)
        assert started.wait(30)
        wire.update(target=2, request_id=2)  # the user clicks on while class 1 computes
        release.set()
        w.wait()
        assert w.dropped == 1
        assert w.heatmap_meta["target"] == 2 and w.heatmap_meta["request_id"] == 2
        targets_shown = [s["heatmap_meta"]["target"] for s, _, _ in wire.sent if "heatmap_meta" in s]
        assert 1 not in targets_shown, "a stale map was sent to the browser"
        assert w.explanation is not None and w.current["target"] == 2
    finally:
        w.close()


def test_rapid_clicks_coalesce(model, images):
    w, wire = _explorer(model, images, prefetch=False)
    try:
        gate = threading.Event()
        w._executor.submit(gate.wait, 30)  # keep the worker busy while the clicks arrive
        computed = []
        real = w._compute
        w._compute = lambda i, m, p, t: (computed.append(t), real(i, m, p, t))[1]
        for k, t in enumerate([1, 2, 3, 4, 5]):
            wire.update(target=t, request_id=k + 1)
        gate.set()
        w.wait()
        assert computed == [5], computed
        assert w.skipped >= 4
        assert w.heatmap_meta["target"] == 5 and w.heatmap_meta["request_id"] == 5
    finally:
        w.close()


def test_prefetch_topk_then_cached(model, images):
    w, wire = _explorer(model, images, top_k=3, prefetch=True)
    try:
        w.wait()
        second = w.predictions[1]["index"]
        wire.update(target=second, request_id=1)
        w.wait()
        assert w.heatmap_meta["cached"] is True and "cached" in w.status
        ref = _engine_heatmap(model, images[0], "sglrp", second)
        np.testing.assert_allclose(w.explanation, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    finally:
        w.close()


@pytest.mark.parametrize("state, fragment", [
    ({"method": "no_such_method", "params": {}}, "no_such_method"),
    ({"method": "lrp.epsilon", "params": {"epsilon": -1.0}}, "epsilon"),
    ({"method": "lrp.epsilon", "params": {"epsilon": "abc"}}, "epsilon"),
    ({"method": "sglrp", "params": {"bogus": 1}}, "bogus"),
    ({"target": 99}, "99"),
    ({"index": 7}, "7"),
    ({"index": "x"}, "index"),
    ({"params": ["not", "a", "dict"]}, "params"),
])
def test_bad_browser_values_show_error_and_widget_keeps_working(model, images, state, fragment):
    w, wire = _explorer(model, images, prefetch=False)
    try:
        good = dict(w.heatmap_meta)
        wire.update(**state, request_id=1)
        w.wait()
        assert w.error and fragment in w.error, w.error
        assert not w.busy
        assert w.heatmap_meta == good  # the last good map stays
        wire.update(method="gradient", params={}, index=0, target=2, request_id=2)
        w.wait()
        assert w.error == "" and w.heatmap_meta["method"] == "gradient"
        assert w.heatmap_meta["target"] == 2
    finally:
        w.close()


def test_method_and_params_from_browser(model, images):
    w, wire = _explorer(model, images, prefetch=False)
    try:
        wire.update(method="lrp.epsilon", params={"epsilon": 0.5}, request_id=1)
        w.wait()
        assert w.error == "", w.error
        assert w.heatmap_meta["method"] == "lrp.epsilon"
        assert w.heatmap_meta["params"]["epsilon"] == 0.5
        ref = _engine_heatmap(model, images[0], "lrp.epsilon", w.resolved_target, epsilon=0.5)
        np.testing.assert_allclose(w.explanation, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
        # setting the method from Python drops parameters it does not know
        w.method = "gradient"
        w.wait()
        assert w.error == "" and "epsilon" not in w.params
    finally:
        w.close()


def test_method_specs_grouped_and_restricted(model, images):
    w, _ = _explorer(model, images, methods=["sglrp", "gradient"], prefetch=False)
    try:
        assert [s["name"] for s in w.method_specs] == ["sglrp", "gradient"]
        assert all("family" in s and "params" in s for s in w.method_specs)
        json.dumps(w.method_specs)  # JSON-safe
    finally:
        w.close()
    with pytest.raises(ValueError, match="unknown method"):
        RelevanceExplorer(model, images, methods=["nope"])
    with pytest.raises(ValueError, match="class_names"):
        RelevanceExplorer(model, images, class_names=["a", "b"])


def test_imagenet_names_for_1000_class_models(images):
    inp = keras.Input((H, W, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inp))
    m = keras.Model(inp, keras.layers.Dense(1000)(x))
    w = RelevanceExplorer(m, images[:1], method="gradient", compute_initial=False, prefetch=False)
    try:
        assert w.class_names[340] == "zebra" and w.class_names[386] == "African elephant"
        assert imagenet_class_names() == w.class_names
    finally:
        w.close()


def test_image_inputs_paths_lists_and_floats(model, images, tmp_path):
    from PIL import Image

    paths = []
    for i, im in enumerate(images[:2]):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.repeat(np.repeat(im, 2, 0), 2, 1)).save(p)  # 32x32: resized to 16x16
        paths.append(str(p))
    w = RelevanceExplorer(model, paths, preprocess=_preprocess, prefetch=False)
    assert w.n_images == 2 and w.error == "" and w.image_meta["width"] == W
    w.close()
    floats = images.astype(np.float32) / 255.0  # display floats in 0..1, model takes them as is
    w = RelevanceExplorer(model, list(floats), prefetch=False)
    assert w.error == "" and w.n_images == 3
    np.testing.assert_array_equal(to_display_uint8(floats[0]), images[0])
    w.close()
    with pytest.raises(ValueError, match="does not exist"):
        RelevanceExplorer(model, ["/nonexistent.png"])


def test_metrics_with_boxes(model, images):
    boxes = [[(0, 0, 8, 8)], [(4, 4, 12, 12), (0, 0, 2, 2)], (0, 0, H, W)]
    w, wire = _explorer(model, images, boxes=boxes, prefetch=False)
    try:
        m = w.metrics
        assert 0.0 <= m["mass_in_box"] <= 1.0 and isinstance(m["pointing_game"], bool)
        wire.update(index=2, target=-1, request_id=1)
        w.wait()
        assert w.metrics["pointing_game"] is True  # the box is the whole image
        pos = np.maximum(w.explanation, 0)
        assert w.metrics["mass_in_box"] == pytest.approx(1.0 if pos.sum() > 0 else 0.0)
    finally:
        w.close()


def test_compare_figure_and_widget_compare(model, images):
    import matplotlib

    matplotlib.use("Agg")
    w, wire = _explorer(model, images, prefetch=False)
    try:
        fig = w.compare(methods=["sglrp", "gradient"], targets=[0, 1])
        assert fig is not None and hasattr(fig, "savefig")
        grid, methods, targets = w._compare_maps(["sglrp", "gradient"], [0, 1], 0)
        assert grid.shape == (2, 2, H, W)
        np.testing.assert_allclose(grid[1, 1], _engine_heatmap(model, images[0], "gradient", 1),
                                   rtol=1e-4, atol=1e-6)
        wire.custom({"type": "compare"})
        w.wait()
        assert w.compare_png[:8] == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(ValueError):
            w.compare(methods=["nope"])
    finally:
        w.close()


def test_export_save_and_static_png_fallback(model, images, tmp_path):
    w, _ = _explorer(model, images, prefetch=False)
    try:
        np.save(tmp_path / "ref.npy", w.explanation)
        w.save(tmp_path / "map.npy")
        np.testing.assert_array_equal(np.load(tmp_path / "map.npy"), np.load(tmp_path / "ref.npy"))
        w.save(tmp_path / "map.png")
        from PIL import Image

        assert Image.open(tmp_path / "map.png").size == (W, H)
        data, _meta = w._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in data
        import base64

        png = base64.b64decode(data["image/png"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        w.close()


def test_comm_count_counts_browser_messages(model, images):
    w, wire = _explorer(model, images, prefetch=False)
    try:
        c = w.comm_count
        wire.update(opacity=0.3)
        wire.update(target=1, request_id=1)
        w.wait()
        assert w.comm_count == c + 2
    finally:
        w.close()


def test_quantize_and_overlay_helpers():
    h = np.array([[1.0, -2.0], [0.5, 0.0]], np.float32)
    buf, scale = quantize_heatmap(h)
    assert len(buf) == 4 and scale == 2.0
    np.testing.assert_allclose(dequantize_heatmap(buf, {"scale": scale, "height": 2, "width": 2}), h,
                               atol=2 / 127)
    assert quantize_heatmap(np.zeros((2, 2)))[1] == 0.0
    img = np.full((2, 2, 3), 100, np.uint8)
    np.testing.assert_array_equal(overlay(img, h, opacity=0.0), img)
    out = overlay(img, h, opacity=1.0)
    assert tuple(out[1, 1]) == (100, 100, 100)  # zero relevance leaves the image (diverging map)
    assert out[0, 1, 2] > out[0, 1, 0]  # negative is blue
    assert tuple(overlay(img, h, opacity=1.0, positive_only=True)[0, 1]) == (100, 100, 100)


@pytest.mark.slow
def test_executed_notebook_keeps_a_static_png(tmp_path):
    """A notebook executed without a browser (nbclient) stores the widget view AND an image/png
    of the current overlay, so exported / non-interactive notebooks still show the map."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = f"""
import sys; sys.path.insert(0, {str(root)!r})
import numpy as np, keras
from sglrp_widgets.widget import RelevanceExplorer
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
    import base64

    assert base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_prefetch_batches_and_stops_when_the_user_moves_on(model, images):
    w, wire = _explorer(model, images, top_k=5, prefetch=True, compute_initial=False)
    try:
        calls = []
        real = w._explainer

        class Spy:
            def __init__(self, ex):
                self.ex = ex

            def __call__(self, x, targets=None, **kw):
                calls.append(targets)
                return self.ex(x, targets=targets, **kw)

        w._explainer = lambda m, p: Spy(real(m, p))
        w.wait()
        nested = [t for t in calls if t is not None and np.ndim(t) == 2]
        # first map (traced, so no speed estimate) -> one class, then the rest in one batch
        assert [len(t[0]) for t in nested] == [1, 3], calls
        assert len({k[3] for k in w._results if k[:2] == (0, "sglrp")}) == 5

        # next image: the user clicks during the prefetch -> the prefetch stops after its chunk
        calls.clear()
        w.prefetch_budget = 0.0  # one class per chunk
        moved = threading.Event()

        class Interrupt(Spy):
            def __call__(self, x, targets=None, **kw):
                out = super().__call__(x, targets=targets, **kw)
                if targets is not None and np.ndim(targets) == 2 and not moved.is_set():
                    moved.set()
                    wire.update(index=2, target=-1, request_id=9)
                return out

        w._explainer = lambda m, p: Interrupt(real(m, p))
        wire.update(index=1, target=-1, request_id=8)
        w.wait()
        w.wait()
        assert moved.is_set()
        after_first = calls[calls.index(next(t for t in calls if t is not None and np.ndim(t) == 2)) + 1:]
        assert after_first and np.ndim(after_first[0]) != 2, calls  # the user's request came next
        assert w.heatmap_meta["index"] == 2 and w.heatmap_meta["request_id"] == 9
    finally:
        w.close()

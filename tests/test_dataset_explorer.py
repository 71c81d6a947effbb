"""DatasetExplorer driven as the browser drives it (trait updates and custom messages through
``Widget._handle_msg``) on a small store of the demo CNN: class picker, overview, gallery pages as binary
buffers, opening an image in the RelevanceExplorer, exporting ids, running SpRAy from the button, and bad
values from the browser (a sentence, never a traceback; the widget keeps working)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("zarr")
pytest.importorskip("anywidget")

from sglrp_widgets import DatasetExplorer, ExplainError, demo
from sglrp_widgets.dataset import explain_dataset
from sglrp_widgets.dataset_browse import StoreBrowser, checked_int
from sglrp_widgets.spray import load_spray, spray
from scenes import scene_folder

ANALYSED = (2, 4)      # classes with SpRAy results in the shared store; the others have none


@pytest.fixture(scope="module")
def scenes():
    images, labels, _ = demo.make_scenes(48, seed=5)
    return images, labels[:, 0]


@pytest.fixture(scope="module")
def model():
    return demo.load_model("cnn")


@pytest.fixture(scope="module")
def store(tmp_path_factory, scenes, model):
    images, labels = scenes
    out = tmp_path_factory.mktemp("dexp") / "s.zarr"
    explain_dataset(model, (images, labels), "sglrp", targets="label", out=out, batch_size=16,
                    preprocess=demo.preprocess, class_names=demo.class_names, progress=False)
    spray(str(out), classes=list(ANALYSED), max_clusters=4, progress=False)
    return str(out)


class Wire:
    """Records what the kernel sends (state updates, custom messages + buffers); sends what the browser would."""

    def __init__(self, widget):
        self.w = widget
        self.states, self.msgs = [], []
        widget._send = self._record

    def _record(self, msg, buffers=None):
        if msg.get("method") == "update":
            self.states.append(msg["state"])
        elif msg.get("method") == "custom":
            self.msgs.append((msg["content"], list(buffers or [])))

    def update(self, **state):
        self.w._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                            "buffers": []})

    def custom(self, content):
        self.w._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})

    def pages(self):
        return [(m, b) for m, b in self.msgs if m.get("type") == "page"]


def test_opens_on_the_first_analysed_class_with_its_overview(store):
    ex = DatasetExplorer(store)
    names = {c["index"]: c for c in ex.classes}
    assert [c for c in names if names[c]["analysed"]] == list(ANALYSED)
    assert sum(c["count"] for c in ex.classes) == 48
    ov = ex.overview
    a = load_spray(store, ANALYSED[0])
    assert ex.cls == ANALYSED[0] and ov["k"] == a.n_clusters == ex.k and ex.cluster == 0
    assert ov["eigenvalues"] == pytest.approx(a.eigenvalues.tolist())
    assert len(ov["points"]) == 2 * len(a.rows) and min(ov["points"]) >= 0 and max(ov["points"]) <= 1
    assert ov["labels"] == a.clusters.tolist()
    assert [c["size"] for c in ov["clusters"]] == np.bincount(a.clusters, minlength=ov["k"]).tolist()
    assert ex.can_open and "model=" in ex.can_open     # no model: says what to pass
    assert ex.notice == "" and ex.error == ""


def test_picking_a_class_and_k_from_the_browser(store):
    ex = DatasetExplorer(store)
    wire = Wire(ex)
    wire.update(cls=ANALYSED[1])
    assert ex.overview["cls"] == ANALYSED[1] and ex.error == ""
    wire.update(k=3)
    a = load_spray(store, ANALYSED[1])
    assert ex.k == 3 and ex.overview["labels"] == a.labels_for(3).tolist()
    assert ex.overview["clusters"][0]["coherence"] == pytest.approx(float(a.coherence_of(3)[0]), abs=1e-4)
    wire.update(cluster=2)
    assert ex.cluster == 2 and ex.error == ""


def test_gallery_pages_are_binary_and_cover_the_cluster_once(store):
    ex = DatasetExplorer(store, cls=ANALYSED[0], page_size=4)
    wire = Wire(ex)
    a = load_spray(store, ANALYSED[0])
    members = np.flatnonzero(a.clusters == 0)
    seen, page = [], 0
    while True:
        wire.custom({"type": "page", "cls": ex.cls, "k": ex.k, "cluster": 0, "page": page})
        meta, (thumbs, heats) = wire.pages()[-1]
        n, h, w = len(meta["items"]), meta["height"], meta["width"]
        assert len(thumbs) == n * h * w * 3 and len(heats) == n * h * w and n <= 4
        rows = [it["row"] for it in meta["items"]]
        group = StoreBrowser(store).group
        np.testing.assert_array_equal(np.frombuffer(thumbs, np.uint8).reshape(n, h, w, 3),
                                      group["thumbnails"].oindex[rows])
        np.testing.assert_array_equal(np.frombuffer(heats, np.int8).reshape(n, h, w), group["heatmaps"].oindex[rows])
        assert [it["scale"] for it in meta["items"]] == pytest.approx(group["heatmap_scale"].oindex[rows].tolist())
        seen += [it["position"] for it in meta["items"]]
        page += 1
        if page >= meta["pages"]:
            break
    assert seen == members.tolist()
    assert meta["total"] == len(members)


@pytest.mark.parametrize("method, params, words", [
    ("grad_cam", {}, "red = evidence for the class; Grad-CAM maps are never negative;"),
    ("sglrp", {"relu": True}, "red = speaks for the class over the others; relu keeps only the positive part of "
                              "the map;"),
])
def test_the_gallery_legend_names_blue_only_where_the_maps_can_be_negative(store, scenes, model, tmp_path,
                                                                           method, params, words):
    signed = DatasetExplorer(store).map_legend          # sglrp: the words of the widget's colour bar
    assert signed.startswith("red = speaks for the class over the others, blue = speaks for the other classes;")
    assert signed.endswith("; each tile has its own scale, shown when you hover over it")
    images, labels = scenes
    out = tmp_path / f"{method}.zarr"
    explain_dataset(model, (images[:8], labels[:8]), method, targets="label", out=out, batch_size=8,
                    preprocess=demo.preprocess, progress=False, **params)
    legend = DatasetExplorer(str(out)).map_legend
    assert legend.startswith(words) and "blue" not in legend and "its own scale" in legend


def test_a_store_of_a_method_this_version_does_not_know_gets_the_generic_legend():
    from sglrp_widgets.dataset_explorer import _map_legend

    assert _map_legend({"method": "future_method", "params": {}}).startswith(
        "red = speaks for the class, blue = speaks against the class;")


def test_browsing_a_store_without_a_model_needs_no_tensorflow(store):
    """Opening the explorer on a store reads the method registry (for the gallery's key), not TensorFlow."""
    code = ("import sys; from sglrp_widgets import DatasetExplorer; "
            f"e = DatasetExplorer({store!r}); assert e.map_legend and e.overview.get('clusters'); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("state, words", [
    ({"cls": 99}, "class must be a whole number in 0..5"),
    ({"cls": 0}, None),                         # a class without SpRAy is a notice, not an error
    ({"k": 9}, "number of clusters must be a whole number in 1..4"),
    ({"k": "2"}, "rejected a value from the browser: The 'k' trait of a DatasetExplorer instance expected an int"),
    ({"cluster": 7}, "cluster must be a whole number in 0.."),
])
def test_bad_values_from_the_browser_are_a_sentence_and_are_undone(store, state, words):
    ex = DatasetExplorer(store, cls=ANALYSED[0])
    before = (ex.cls, ex.k, ex.cluster, dict(ex.overview))
    wire = Wire(ex)
    wire.update(**state)
    if words is None:
        assert ex.error == "" and "spray(store, classes=[0])" in ex.notice and ex.overview == {"cls": 0,
                                                                                                 "name": "circle"}
        return
    assert words in ex.error and "Traceback" not in ex.error
    assert (ex.cls, ex.k, ex.cluster, ex.overview) == before
    assert any(set(s) & {"cls", "k", "cluster"} for s in wire.states)     # the browser gets the old value back
    wire.update(cluster=0)                                                # and keeps working
    wire.custom({"type": "page", "cls": ex.cls, "k": ex.k, "cluster": 0, "page": 0})
    assert wire.pages()[-1][0]["items"]


@pytest.mark.parametrize("msg, words", [
    ({"type": "page", "cls": ANALYSED[0], "k": 1, "cluster": 0, "page": 50}, "page must be a whole number"),
    ({"type": "page", "cls": ANALYSED[0], "k": 1, "cluster": 3, "page": 0}, "cluster must be"),
    ({"type": "page", "cls": 0, "k": 1, "cluster": 0, "page": 0}, "SpRAy has not been run for class 0"),
    ({"type": "page", "cls": None, "k": 1, "cluster": 0, "page": 0}, "class must be"),
    ({"type": "open", "row": -1}, "model="),
    ({"type": "export", "junk": True}, None),
    ("not a dict", None),
])
def test_bad_messages_are_a_sentence(store, msg, words):
    ex = DatasetExplorer(store, cls=ANALYSED[0])
    wire = Wire(ex)
    wire.custom(msg)
    if words is None:
        assert ex.error == ""
        return
    assert words in ex.error and "Traceback" not in ex.error
    if isinstance(msg, dict) and msg["type"] == "page":
        assert wire.pages()[-1][0]["failed"] is True       # the gallery stops waiting


def test_export_puts_the_ids_in_python_and_a_line_that_reproduces_them(store):
    ex = DatasetExplorer(store, cls=ANALYSED[1])
    wire = Wire(ex)
    wire.update(k=2)
    wire.update(cluster=1)
    wire.custom({"type": "export"})
    a = load_spray(store, ANALYSED[1])
    expect = a.ids[a.labels_for(2) == 1]
    np.testing.assert_array_equal(ex.selected_ids, expect)
    assert ex.export["ids"] == expect.tolist() and ex.export["cluster"] == 1
    scope = {}
    assert repr(store) in ex.export["code"]
    exec(ex.export["code"], scope)                    # noqa: S102 - the widget's own one-liner
    np.testing.assert_array_equal(scope["ids"], expect)


def test_clicking_an_image_opens_it_in_one_reused_relevance_explorer(store, scenes, model):
    images, _ = scenes
    ex = DatasetExplorer(store, model, preprocess=demo.preprocess, images=images, cls=ANALYSED[0])
    assert ex.can_open == ""
    wire = Wire(ex)
    wire.custom({"type": "page", "cls": ex.cls, "k": ex.k, "cluster": 0, "page": 0})
    first, second = wire.pages()[-1][0]["items"][:2]
    wire.custom({"type": "open", "row": first["row"]})
    rel = ex.relevance_explorer
    assert ex.error == "" and ex.relevance is rel and ex.opened["id"] == first["id"]
    assert rel.wait(120) and rel.method == "sglrp" and rel.current["target"] == ANALYSED[0]
    np.testing.assert_array_equal(rel._images.display(0), images[first["id"]])
    # the map equals the store's (both sglrp for the row's class, same preprocessing)
    relevance = StoreBrowser(store).group["relevance"][first["row"]].sum(axis=-1)
    np.testing.assert_allclose(rel.explanation, relevance, rtol=1e-4, atol=1e-5 * np.abs(relevance).max())
    wire.custom({"type": "open", "row": second["row"]})
    assert ex.relevance_explorer is rel and rel.wait(120)           # the same instance, the new image
    np.testing.assert_array_equal(rel._images.display(0), images[second["id"]])
    assert ex.opened["id"] == second["id"] and rel.current["target"] == ANALYSED[0]
    other = int(np.flatnonzero(StoreBrowser(store).targets != ANALYSED[0])[0])
    wire.custom({"type": "open", "row": other})                      # a row of another class: refused
    assert "does not explain class" in ex.error and ex.opened["id"] == second["id"]
    ex.close()


def test_image_folder_stores_open_their_files(tmp_path, model):
    scene_folder(tmp_path / "data", 12, seed=3)
    out = tmp_path / "f.zarr"
    explain_dataset(model, tmp_path / "data", "gradient", targets="label", out=out, preprocess=demo.preprocess,
                    progress=False)
    b = StoreBrowser(out)
    assert b.image_source() is None
    path = b.image(0)
    assert path.endswith(".png") and path.endswith(str(b.group["files"][0]))
    ex = DatasetExplorer(out, model, preprocess=demo.preprocess)
    assert ex.can_open == ""


def test_without_images_opening_says_what_to_pass(store, model):
    ex = DatasetExplorer(store, model, preprocess=demo.preprocess)
    assert "pass images=" in ex.can_open
    Wire(ex).custom({"type": "open", "row": int(load_spray(store, ANALYSED[0]).rows[0])})
    assert "pass images=" in ex.error and ex.relevance_explorer is None


def test_run_spray_button_analyses_the_class_and_shows_it(store, tmp_path):
    import shutil

    path = str(tmp_path / "copy.zarr")
    shutil.copytree(store, path)
    ex = DatasetExplorer(path, cls=5)
    assert "Run SpRAy" in ex.notice and ex.overview == {"cls": 5, "name": "star"}
    Wire(ex).custom({"type": "spray"})
    assert ex.wait(120)
    assert ex.busy == "" and ex.error == "" and ex.notice == ""
    assert ex.overview["cls"] == 5 and ex.overview["count"] == load_spray(path, 5).rows.size
    assert [c["analysed"] for c in ex.classes if c["index"] == 5] == [True]


def test_store_browser_checks(store, scenes):
    with pytest.raises(ExplainError, match="images has 3 entries"):
        StoreBrowser(store, images=scenes[0][:3])
    b = StoreBrowser(store)
    b.targets = np.where(b.targets == 1, 0, b.targets)      # as if class 1 had no maps
    with pytest.raises(ExplainError, match="class 1 \\(square\\) has no maps"):
        b.check_class(1)
    assert checked_int(np.int64(2), "k", 1, 3) == 2
    for bad in (True, 2.0, None, "1", 4):
        with pytest.raises(ExplainError, match="k must be a whole number in 1..3"):
            checked_int(bad, "k", 1, 3)


def test_incomplete_store_is_refused_with_what_to_do(store, tmp_path):
    import shutil

    import zarr

    path = str(tmp_path / "partial.zarr")
    shutil.copytree(store, path)
    g = zarr.open_group(path, mode="r+")
    g.attrs["sglrp_widgets"] = {**g.attrs["sglrp_widgets"], "complete": False}
    with pytest.raises(ExplainError, match="not complete"):
        DatasetExplorer(path)


def test_relevance_explorer_set_images_refuses_bad_values_and_keeps_its_images(scenes, model):
    from sglrp_widgets import RelevanceExplorer

    images, _ = scenes
    rel = RelevanceExplorer(model, images[:2], preprocess=demo.preprocess, compute_initial=False, prefetch=False)
    with pytest.raises(ValueError, match="out of range"):
        rel.set_images(images[2:4], index=5)
    assert rel.n_images == 2 and rel._images.display(1).tobytes() == images[1].tobytes()
    rel.set_images(images[5:8], index=2, target=3)
    assert rel.wait(120) and rel.n_images == 3 and rel.current == {**rel.current, "index": 2, "target": 3}
    np.testing.assert_array_equal(rel._images.display(2), images[7])
    rel.close()

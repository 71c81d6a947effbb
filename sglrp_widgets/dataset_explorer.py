"""``DatasetExplorer``: browse a dataset store's SpRAy results in the notebook (a thin anywidget adapter over
:class:`~sglrp_widgets.dataset_browse.StoreBrowser`).

Protocol (traits are the state; custom messages carry the lazily loaded gallery pages):

browser -> kernel
    traits ``cls`` (class index), ``k`` (number of clusters), ``cluster`` (the gallery's cluster);
    messages ``{"type": "page", "cls", "k", "cluster", "page"}``, ``{"type": "open", "row"}``,
    ``{"type": "export"}``, ``{"type": "spray"}`` (run SpRAy for ``cls``)
kernel -> browser
    ``classes`` (index, name, maps, SpRAy done), ``overview`` (eigenvalues, embedding, clusters of ``cls``
    with ``k`` clusters), ``export`` (the exported ids and a line of Python), ``relevance`` (the one
    :class:`~sglrp_widgets.RelevanceExplorer` that shows an opened image), ``opened``, ``status``, ``busy``,
    ``error``, ``notice``; a ``{"type": "page", ...}`` message with two buffers per gallery page (thumbnails
    uint8 (n, h, w, 3), maps int8 (n, h, w), ``value = map / 127 * scale`` per image as in the store)

Every value from the browser is checked against the store; a bad one becomes a sentence in ``error`` and the
selection stays as it was.

Example
-------
>>> from sglrp_widgets import DatasetExplorer                          # doctest: +SKIP
>>> ex = DatasetExplorer("scenes.zarr", model, preprocess=preprocess, images=images)   # doctest: +SKIP
>>> ex                                   # pick a class, a cluster, click an image     # doctest: +SKIP
>>> ex.selected_ids                      # after "Export ids"                           # doctest: +SKIP
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from .dataset_browse import PAGE_SIZE, StoreBrowser
from .errors import ExplainError
from .methods import get_method
from .viz import colour_key, legend_words
from .widget import _front_end


class DatasetExplorer(anywidget.AnyWidget):
    """Pick a class of a dataset store, see SpRAy's eigengap and embedding, browse its clusters' images
    with their maps, open one in a :class:`~sglrp_widgets.RelevanceExplorer`, export a cluster's ids.

    Parameters
    ----------
    store : path or zarr.Group
        A store from :func:`~sglrp_widgets.explain_dataset`; SpRAy results (:func:`~sglrp_widgets.spray.spray`)
        are read per class (a class without them offers a "Run SpRAy" button).
    model : keras.Model, optional
        The model that made the store: needed to open an image in a ``RelevanceExplorer``.
    preprocess : callable, optional
        The ``preprocess`` given to ``explain_dataset``.
    images : array (N, H, W, C) or list of images, optional
        The images given to ``explain_dataset`` (image-folder stores find their files without it).
    cls : int, optional
        The class shown first (default: the first class with SpRAy results).
    page_size : int
        Gallery images per page (loaded as the gallery scrolls).

    Attributes
    ----------
    selected_ids : numpy.ndarray or None
        The image ids of the last exported cluster.
    relevance_explorer : RelevanceExplorer or None
        The explorer showing the last opened image.
    """

    _esm = _front_end("dataset_explorer.js")
    _css = _front_end("dataset_explorer.css")

    cls = t.Int(-1).tag(sync=True)
    k = t.Int(0).tag(sync=True)
    cluster = t.Int(0).tag(sync=True)
    classes = t.List().tag(sync=True)
    overview = t.Dict().tag(sync=True)
    export = t.Dict().tag(sync=True)
    opened = t.Dict().tag(sync=True)
    relevance = anywidget.WidgetTrait().tag(sync=True)
    can_open = t.Unicode("").tag(sync=True)   # why images cannot be opened ("" = they can)
    method_label = t.Unicode("").tag(sync=True)
    map_legend = t.Unicode("").tag(sync=True)    # what the gallery tiles' colours mean
    status = t.Unicode("").tag(sync=True)
    busy = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    notice = t.Unicode("").tag(sync=True)     # why the class has nothing to show (no SpRAy yet)
    comm_count = t.Int(0).tag(sync=True)

    def __init__(self, store: Any, model: Any = None, *, preprocess: Callable | None = None, images: Any = None,
                 cls: int | None = None, page_size: int = PAGE_SIZE, **kwargs: Any) -> None:
        self._browser = StoreBrowser(store, images=images, page_size=page_size)
        self._model, self._preprocess = model, preprocess
        self._lock = threading.RLock()
        self._spray_thread: threading.Thread | None = None
        self.selected_ids: np.ndarray | None = None
        self.relevance_explorer = None
        info = self._browser.info
        classes = self._browser.classes()
        if not classes:
            raise ExplainError("the store has no maps (no row has a target class).")
        if cls is None:
            cls = next((c["index"] for c in classes if c["analysed"]), classes[0]["index"])
        cls = self._browser.check_class(cls)
        reason = ("pass model= (the model that made the store) to open images" if model is None
                  else self._browser.image_source() or "")
        super().__init__(classes=classes, can_open=reason,
                         method_label=f"{info.get('method', '?')} maps of {info.get('num_images', '?')} images",
                         map_legend=_map_legend(info),
                         **kwargs)
        self.on_msg(self._on_custom)
        self._show_class(cls)

    # -- selection -------------------------------------------------------------------------------
    def _show_class(self, cls: int, k: int | None = None) -> None:
        """Publish the overview of ``cls`` (or the notice that it has no SpRAy results)."""
        b = self._browser
        with self.hold_sync():
            self.cls = cls
            self.error = ""
            try:
                ov = b.overview(cls, k)
            except ExplainError as e:
                if cls in b.analysed():
                    raise
                self.overview, self.notice = {"cls": cls, "name": b.class_names[cls]}, str(e)
                self.status = f"{b.class_names[cls]}: no SpRAy results yet"
                return
            self.notice = ""
            self.overview = ov
            self.k = ov["k"]
            self.cluster = 0
            self.status = (f"{ov['name']}: {ov['count']} maps, {ov['k']} cluster{'s' if ov['k'] > 1 else ''}"
                           + (" (the eigengap's choice)" if ov["k"] == ov["eigengap_k"] else ""))

    def _handle_msg(self, msg: dict) -> None:
        with self._lock:
            self.comm_count += 1
            super()._handle_msg(msg)

    def set_state(self, sync_data: dict) -> None:
        """A state update from the browser: checked against the store; a bad value is undone and explained."""
        before = {name: getattr(self, name) for name in ("cls", "k", "cluster")}
        try:
            super().set_state(sync_data)
            wanted = {name: getattr(self, name) for name in before}
            if wanted["cls"] != before["cls"]:
                self._show_class(self._browser.check_class(wanted["cls"]))
            elif wanted["k"] != before["k"]:
                self._browser.check_k(wanted["cls"], wanted["k"])
                self._show_class(wanted["cls"], wanted["k"])
            elif wanted["cluster"] != before["cluster"]:
                self._browser.check_cluster(wanted["cls"], wanted["k"], wanted["cluster"])
        except Exception as e:  # noqa: BLE001 - untrusted browser input: a sentence, never a traceback
            with self.hold_sync():
                for name, value in before.items():
                    setattr(self, name, value)
                self.send_state(list(before))     # the browser may hold the rejected value
                self.error = (f"rejected a value from the browser: {e}" if isinstance(e, t.TraitError)
                              else _sentence(e))

    def _on_custom(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        handlers = {"page": self._send_page, "open": self._open, "export": self._export, "spray": self._run_spray}
        handler = handlers.get(content.get("type"))
        if handler is None:
            return
        try:
            handler(content)
        except Exception as e:  # noqa: BLE001 - every problem is shown in the widget
            self.error = _sentence(e)
            if content.get("type") == "page":    # the gallery stops waiting for this page
                self.send({"type": "page", "failed": True, "page": content.get("page"), "error": self.error})

    # -- messages --------------------------------------------------------------------------------
    def _send_page(self, msg: dict) -> None:
        meta, buffers = self._browser.page(msg.get("cls"), msg.get("k"), msg.get("cluster"), msg.get("page"))
        rows = meta["items"]
        scales = self._browser.group["heatmap_scale"].oindex[[it["row"] for it in rows]] if rows else []
        for item, scale in zip(rows, scales):
            item["scale"] = float(scale)
        self.send({"type": "page", **meta}, buffers=list(buffers))

    def _open(self, msg: dict) -> None:
        """Show the image of a gallery row in the RelevanceExplorer (one, reused), explaining the row's class."""
        if self.can_open:
            raise ExplainError(self.can_open)
        row = self._browser.check_row(self.cls, msg.get("row"))
        image = self._browser.image(row)
        target = int(self._browser.targets[row])
        if self.relevance_explorer is None:
            from .widget import RelevanceExplorer

            info = self._browser.info
            method, params = info.get("method", "sglrp"), dict(info.get("params") or {})
            bounds = info.get("bounds_values")
            if bounds and params.get("low") is None and params.get("high") is None:
                params["low"], params["high"] = bounds    # the maps in the store used the dataset's range
            self.relevance_explorer = RelevanceExplorer(
                self._model, [image], preprocess=self._preprocess, class_names=self._browser.class_names,
                method=method, params={k: v for k, v in params.items() if v is not None}, target=target,
                compute_initial=False)
        else:
            self.relevance_explorer.set_images([image], target=target)
        image_id = int(self._browser.ids[row])
        with self.hold_sync():
            self.relevance = self.relevance_explorer
            self.opened = {"row": row, "id": image_id, "cls": target, "name": self._browser.class_names[target]}
            self.error = ""
            self.status = f"opened image {image_id} ({self._browser.class_names[target]}) below"

    def _export(self, _msg: dict) -> None:
        cls, k, cluster = self.cls, self.k, self.cluster
        ids = self._browser.cluster_ids(cls, k, cluster)
        self.selected_ids = ids
        name = self._browser.class_names[cls]
        with self.hold_sync():
            where = self._browser.path()
            store = repr(where) if where else "store"
            code = (f"from sglrp_widgets.spray import load_spray; a = load_spray({store}, {cls}); "
                    f"ids = a.ids[a.labels_for({k}) == {cluster}]")
            self.export = {"cls": cls, "name": name, "k": k, "cluster": cluster, "ids": ids.tolist(), "code": code,
                           "python": "explorer.selected_ids"}
            self.error = ""
            self.status = f"exported {len(ids)} image ids of cluster {cluster + 1} ({name}) to explorer.selected_ids"

    def _run_spray(self, _msg: dict) -> None:
        """SpRAy for the current class, in a thread (the widget stays responsive); progress in ``busy``."""
        from .spray import spray

        cls = self._browser.check_class(self.cls)
        if self._spray_thread is not None and self._spray_thread.is_alive():
            raise ExplainError("SpRAy is already running; wait for it to finish.")
        path = self._browser.path()
        target = path if path is not None else self._browser.group
        name, count = self._browser.class_names[cls], int(np.sum(self._browser.targets == cls))
        self.busy = f"Running SpRAy on {count} maps of {name}…"

        def work() -> None:
            try:
                spray(target, classes=[cls], progress=False)
                self._browser.forget(cls)
                with self._lock, self.hold_sync():
                    self.classes = self._browser.classes()
                    if self.cls == cls:
                        self._show_class(cls)
            except Exception as e:  # noqa: BLE001 - shown in the widget
                self.error = f"SpRAy failed: {_sentence(e)}"
            finally:
                self.busy = ""

        self._spray_thread = threading.Thread(target=work, name="sglrp-spray", daemon=True)
        self._spray_thread.start()

    # -- Python API ------------------------------------------------------------------------------
    def wait(self, timeout: float | None = 120) -> bool:
        """Block until a SpRAy run started from the widget has finished (scripts and tests)."""
        if self._spray_thread is not None:
            self._spray_thread.join(timeout)
            return not self._spray_thread.is_alive()
        return True

    def close(self) -> None:
        if getattr(self, "relevance_explorer", None) is not None:
            self.relevance_explorer.close()
        super().close()


def _sentence(e: BaseException) -> str:
    return str(e) if isinstance(e, (ExplainError, ValueError)) else f"{type(e).__name__}: {e}"


def _map_legend(info: dict) -> str:
    """The gallery's key to its tiles' colours, in the words of the widget's colour bar; blue is named only where
    the maps can be negative."""
    method, params = info.get("method", ""), info.get("params")
    try:
        key = colour_key(method, params, "red", "blue", "the class")
        why = get_method(method).why_never_negative(params)
    except ExplainError:                # a store from a method this version does not know: the generic words
        low, high = legend_words(method, "", "the class", quoted=False)
        key, why = f"red = {high}, blue = {low}", ""
    return "; ".join(filter(None, (key, why, "each tile has its own scale, shown when you hover over it")))

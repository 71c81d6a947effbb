"""What a dataset explorer shows of a store: classes, SpRAy overviews, gallery pages, cluster ids, images.

One job: read a store written by :func:`~sglrp_widgets.dataset.explain_dataset` (with the ``spray/`` results
of :func:`~sglrp_widgets.spray.spray`) into small JSON-ready pieces and binary pages, validating every value
that may come from a browser (class, number of clusters, cluster, page, row). No widget, no TensorFlow:
:class:`~sglrp_widgets.dataset_explorer.DatasetExplorer` is a thin adapter over this class.

Example
-------
>>> b = StoreBrowser("scenes.zarr")                          # doctest: +SKIP
>>> [c["name"] for c in b.classes()][:2]                      # doctest: +SKIP
['circle', 'square']
>>> meta, (thumbs, maps) = b.page(4, k=2, cluster=0, page=0)  # doctest: +SKIP
>>> b.cluster_ids(4, 2, 0)                                    # doctest: +SKIP
array([ 3, 17, 18, ...])
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExplainError

__all__ = ["PAGE_SIZE", "StoreBrowser", "checked_int"]

#: Gallery images per page (one binary message each).
PAGE_SIZE = 24


def checked_int(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``low..high``, else an :class:`ExplainError` that says what is allowed.

    Example
    -------
    >>> checked_int(3, "cluster", 0, 4)
    3
    >>> checked_int("3", "cluster", 0, 4)
    Traceback (most recent call last):
    ...
    sglrp_widgets.errors.ExplainError: cluster must be a whole number in 0..4, got '3'.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ExplainError(f"{name} must be a whole number in {low}..{high}, got {value!r}.")
    return int(value)


def _spray_hint(cls: int) -> str:
    return f"from sglrp_widgets.spray import spray; spray(store, classes=[{cls}])"


class StoreBrowser:
    """Read-only views of one store for a gallery browser.

    Parameters
    ----------
    store : path or zarr.Group
        A complete store from :func:`~sglrp_widgets.dataset.explain_dataset`.
    images : array (N, H, W, C) or sequence of images, optional
        The images given to ``explain_dataset`` (indexed by the store's ``ids``), for :meth:`image`.
    page_size : int
        Gallery images per page.
    """

    def __init__(self, store: Any, images: Any = None, page_size: int = PAGE_SIZE) -> None:
        from .dataset import open_store

        self.group = open_store(store) if isinstance(store, (str, os.PathLike)) else store
        if "sglrp_widgets" not in self.group.attrs:
            raise ExplainError("this Zarr group is not a dataset store made by explain_dataset.")
        self.info = dict(self.group.attrs["sglrp_widgets"])
        if not self.info.get("complete"):
            raise ExplainError("the store is not complete: run explain_dataset again to finish it (it resumes), "
                               "then spray(store) and open it here.")
        self.page_size = checked_int(page_size, "page_size", 1, 1000)
        self.images = images
        self.targets = self.group["targets"][:]
        self.ids = self.group["ids"][:]
        n_classes = int(self.info["num_classes"])
        names = self.info.get("class_names") or [f"class {i}" for i in range(n_classes)]
        self.class_names = [str(n) for n in names]
        self._analyses: dict[int, Any] = {}
        if images is not None and len(images) < int(self.ids.max(initial=-1)) + 1:
            raise ExplainError(f"images has {len(images)} entries but the store explains image ids up to "
                               f"{int(self.ids.max())}: pass the same images that explain_dataset was given.")

    # -- classes and their SpRAy results ------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def path(self) -> str | None:
        """The store's local folder (for writing SpRAy results), or None."""
        root = getattr(self.group.store, "root", None)
        if root is None:
            return None
        return str(Path(root) / self.group.path) if self.group.path else str(root)

    def analysed(self) -> set[int]:
        if "spray" not in self.group:
            return set()
        root = self.group["spray"]
        if root.attrs.get("store_key") != self.info.get("key"):
            return set()
        return {int(k) for k in root.group_keys() if k.isdigit()}

    def classes(self) -> list[dict]:
        """Every class with maps in the store: index, name, number of maps, SpRAy done or not."""
        present, counts = np.unique(self.targets[self.targets >= 0], return_counts=True)
        done = self.analysed()
        return [{"index": int(c), "name": self.class_names[int(c)], "count": int(n), "analysed": int(c) in done}
                for c, n in zip(present, counts)]

    def check_class(self, cls: Any) -> int:
        cls = checked_int(cls, "class", 0, self.num_classes - 1)
        if not np.any(self.targets == cls):
            raise ExplainError(f"class {cls} ({self.class_names[cls]}) has no maps in this store.")
        return cls

    def analysis(self, cls: Any):
        """The class's :class:`~sglrp_widgets.spray.ClassAnalysis` (cached), or an error that says how to compute it."""
        from .spray import load_spray

        cls = self.check_class(cls)
        if cls not in self._analyses:
            if cls not in self.analysed():
                raise ExplainError(f"SpRAy has not been run for class {cls} ({self.class_names[cls]}): run "
                                   f"`{_spray_hint(cls)}` (or press “Run SpRAy”).")
            self._analyses[cls] = load_spray(self.group, cls)
        return self._analyses[cls]

    def forget(self, cls: int) -> None:
        """Drop a cached analysis (after SpRAy ran again)."""
        self._analyses.pop(int(cls), None)

    def check_k(self, cls: Any, k: Any) -> int:
        a = self.analysis(cls)
        return checked_int(k, "number of clusters", 1, len(a.clusterings))

    def check_cluster(self, cls: Any, k: Any, cluster: Any) -> int:
        k = self.check_k(cls, k)
        return checked_int(cluster, "cluster", 0, k - 1)

    def overview(self, cls: Any, k: Any = None) -> dict:
        """JSON for the eigengap plot, the scatter and the cluster list of one class with ``k`` clusters
        (default: the eigengap's choice)."""
        a = self.analysis(cls)
        k = a.n_clusters if k is None else self.check_k(cls, k)
        labels = a.labels_for(k)
        emb = np.asarray(a.embedding, np.float64)
        lo, hi = emb.min(axis=0), emb.max(axis=0)
        unit = (emb - lo) / np.where(hi > lo, hi - lo, 1.0)
        coherence = a.coherence_of(k)
        clusters = [{"cluster": c, "size": int(np.sum(labels == c)),
                     "coherence": None if not np.isfinite(coherence[c]) else round(float(coherence[c]), 4)}
                    for c in range(k)]
        return {"cls": int(a.cls), "name": self.class_names[a.cls], "k": k, "eigengap_k": int(a.n_clusters),
                "max_k": len(a.clusterings), "eigenvalues": [float(v) for v in a.eigenvalues],
                "points": np.round(unit, 4).ravel().tolist(), "labels": [int(v) for v in labels],
                "rows": [int(r) for r in a.rows], "clusters": clusters, "count": len(a.rows)}

    # -- gallery -------------------------------------------------------------------------------------
    def members(self, cls: Any, k: Any, cluster: Any) -> np.ndarray:
        """Positions (in the class's rows) of one cluster's maps."""
        cluster = self.check_cluster(cls, k, cluster)
        return np.flatnonzero(self.analysis(cls).labels_for(int(k)) == cluster)

    def page(self, cls: Any, k: Any, cluster: Any, page: Any) -> tuple[dict, tuple[bytes, bytes]]:
        """One gallery page: (meta, (thumbnails uint8 (n, h, w, 3), heatmaps int8 (n, h, w)) as bytes)."""
        members = self.members(cls, k, cluster)
        pages = max(1, -(-len(members) // self.page_size))
        page = checked_int(page, "page", 0, pages - 1)
        a = self.analysis(cls)
        part = members[page * self.page_size:(page + 1) * self.page_size]
        rows = a.rows[part]
        thumbs = self.group["thumbnails"].oindex[rows] if len(rows) else np.zeros((0, 1, 1, 3), np.uint8)
        heat = self.group["heatmaps"].oindex[rows] if len(rows) else np.zeros((0, 1, 1), np.int8)
        labels = self.group["labels"].oindex[rows] if len(rows) else np.zeros(0, np.int64)
        items = [{"position": int(p), "row": int(r), "id": int(i),
                  "label": None if lab < 0 else self.class_names[int(lab)] if lab < self.num_classes else int(lab)}
                 for p, r, i, lab in zip(part, rows, a.ids[part], labels)]
        meta = {"cls": int(a.cls), "k": int(k), "cluster": int(cluster), "page": page, "pages": pages,
                "total": len(members), "height": int(thumbs.shape[1]), "width": int(thumbs.shape[2]),
                "items": items}
        return meta, (np.ascontiguousarray(thumbs, np.uint8).tobytes(), np.ascontiguousarray(heat, np.int8).tobytes())

    def cluster_ids(self, cls: Any, k: Any, cluster: Any) -> np.ndarray:
        """Image ids of one cluster (int64, in the store's order)."""
        return np.asarray(self.analysis(cls).ids[self.members(cls, k, cluster)], np.int64)

    # -- the full image of a row -------------------------------------------------------------------
    def check_row(self, cls: Any, row: Any) -> int:
        row = checked_int(row, "row", 0, len(self.targets) - 1)
        if cls is not None and not np.any(self.analysis(cls).rows == row):
            raise ExplainError(f"row {row} does not explain class {cls}: pick an image from this class's gallery.")
        return row

    def image_source(self) -> str | None:
        """Why full images cannot be opened, or None when they can."""
        if self.images is not None:
            return None
        if "files" in self.group and (self.info.get("source") or {}).get("root"):
            return None
        return ("the full images are not in the store: pass images= (the images given to explain_dataset) to "
                "open them")

    def image(self, row: int) -> np.ndarray | str:
        """The full image of a row: an array from ``images``, or the file's path (image-folder stores; the
        explorer loads it at the model's input size)."""
        reason = self.image_source()
        if reason:
            raise ExplainError(reason)
        image_id = int(self.ids[row])
        if self.images is not None:
            return np.asarray(self.images[image_id])
        path = Path(self.info["source"]["root"]) / str(self.group["files"][row])
        if not path.is_file():
            raise ExplainError(f"image file {str(path)!r} is gone: pass images= to open the images.")
        return str(path)

"""Explain a whole dataset into a chunked Zarr store, on one device, several, or several workers.

:func:`explain_dataset` streams images from an array, a ``tf.data.Dataset`` or an image folder through an
:class:`~sglrp_widgets.Explainer` and writes maps, logits, targets and image ids chunk by chunk. Memory stays
flat (a few chunks in flight), a re-run resumes after the last finished chunk, and with a
``tf.distribute.MultiWorkerMirroredStrategy`` each worker explains its own contiguous shard of chunks into
the same store, without locks: every chunk is written by exactly one worker.

Example
-------
>>> from sglrp_widgets import demo
>>> from sglrp_widgets.dataset import explain_dataset
>>> images, labels, _ = demo.make_scenes(256, seed=5)
>>> store = explain_dataset(demo.load_model(), (images, labels[:, 0]), "sglrp", targets="label",
...                         out="scenes.zarr", preprocess=demo.preprocess)   # doctest: +SKIP
>>> store["relevance"].shape, store["targets"][:3]                          # doctest: +SKIP
((256, 64, 64, 3), array([4, 0, 2]))

Store layout (Zarr v3 group; every per-row array is chunked along rows with the same chunk length)
----------------------------------------------------------------------------------------------------
One *row* is one explanation: an image and one target class (``targets="top3"`` gives three rows per
image, next to each other). ``N`` = rows, ``R`` = rows per chunk, ``t`` = preview size (at most 64).

=================  ====================================  ======================================================
array              shape, dtype                          content
=================  ====================================  ======================================================
``relevance``      (N, H, W, C) or (N, H, W), f32 / f16  the maps (``channels="sum"`` stores the channel sum)
``logits``         (N, classes) float32                  the model's logits for the row's image
``targets``        (N,) int64                            the explained class
``ids``            (N,) int64                            the image's position in the data (0-based)
``labels``         (N,) int64                            the true label when the data carry one, else -1
``heatmaps``       (N, t, t') int8                       channel-summed map, area-downsampled; the value is
                                                         ``heatmaps / 127 * heatmap_scale``
``heatmap_scale``  (N,) float32                          ``max |map|`` of each small heatmap
``thumbnails``     (N, t, t', 3) uint8                   the image as displayed, downsampled
``files``          (N,) str                              path relative to the folder (image-folder data only)
``done``           (chunks,) bool, one file per chunk    chunk ``c`` (rows ``c*R`` to ``c*R+R-1``) is complete
=================  ====================================  ======================================================

``heatmaps``/``heatmap_scale`` are what a browser gallery needs (the int8 format of the RelevanceExplorer);
group attributes ``attrs["sglrp_widgets"]`` describe the run (method, parameters, targets, model
fingerprint, class names, chunking, z_box bounds, ``complete``). :func:`sglrp_widgets.spray.spray` adds a
``spray/`` group with one sub-group per class (see that module).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import ExplainError

__all__ = ["explain_dataset", "open_store", "local_worker_configs", "DatasetTargets", "STORE_FORMAT"]

#: Version of the store layout written here.
STORE_FORMAT = 1
#: Images per chunk aim (the chunk is a multiple of the batch size, and at most ``MAX_CHUNK_BYTES`` of maps).
CHUNK_IMAGES = 64
MAX_CHUNK_BYTES = 64 * 2**20
#: Largest side of thumbnails and small heatmaps.
PREVIEW_SIZE = 64
#: How long a worker waits for the chief to create the store.
WORKER_WAIT_S = 600.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_ROW_ARRAYS = ("relevance", "logits", "targets", "ids", "labels", "heatmaps", "heatmap_scale", "thumbnails",
               "files")


# ---- targets ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetTargets:
    """Which classes to explain for every image: the top-k, the true label, or fixed classes.

    Example
    -------
    >>> DatasetTargets.parse("top3", num_classes=10).per_image
    3
    >>> DatasetTargets.parse([2, 5], num_classes=10).explainer_args(4, None)
    {'targets': [[2, 5], [2, 5], [2, 5], [2, 5]]}
    """

    kind: str                     # "top", "label" or "classes"
    k: int = 1
    classes: tuple[int, ...] = ()

    @property
    def per_image(self) -> int:
        return len(self.classes) if self.kind == "classes" else (self.k if self.kind == "top" else 1)

    @classmethod
    def parse(cls, targets: Any, num_classes: int | None = None, top_k: int | None = None) -> "DatasetTargets":
        hint = ('targets must be "top1", "topK" (e.g. "top3"; "topk" with top_k=K), "label" (the true label from '
                "the data), a class index or a list of class indices explained for every image")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
            raise ExplainError(f"top_k must be a positive integer, got {top_k!r}.")
        if targets is None:
            targets = "top1"
        if isinstance(targets, str):
            word = targets.strip().lower()
            if word == "label":
                return cls("label")
            if word == "topk":        # top_k, else the widget's default of 5 (at most every class)
                word = f"top{top_k if top_k is not None else min(5, num_classes or 5)}"
            m = re.fullmatch(r"top(\d+)", word)
            if not m or int(m.group(1)) < 1:
                raise ExplainError(f"{hint}; got {targets!r}.")
            k = int(m.group(1))
            if num_classes is not None and k > num_classes:
                raise ExplainError(f"targets={targets!r} asks for more classes than the model has ({num_classes}).")
            return cls("top", k=k)
        values = np.atleast_1d(np.asarray(targets, dtype=object))
        if values.ndim != 1 or not len(values) or any(
                isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) for v in values):
            raise ExplainError(f"{hint}; got {targets!r}.")
        classes = tuple(int(v) for v in values)
        if len(set(classes)) != len(classes):
            raise ExplainError(f"fixed target classes must be distinct, got {list(classes)}; for one target per "
                               'image pass (images, per_image_targets) as data and targets="label".')
        bad = [c for c in classes if c < 0 or (num_classes is not None and c >= num_classes)]
        if bad:
            raise ExplainError(f"target class {bad[0]} is out of range: the model has {num_classes} classes "
                               f"(0..{(num_classes or 1) - 1}).")
        return cls("classes", classes=classes)

    def explainer_args(self, n: int, labels: np.ndarray | None) -> dict:
        """Keyword arguments for ``Explainer.__call__`` on a batch of ``n`` images."""
        if self.kind == "top":
            return {"top_k": self.k} if self.k > 1 else {"targets": None}
        if self.kind == "label":
            return {"targets": np.asarray(labels, np.int64).tolist()}
        return {"targets": [list(self.classes)] * n}

    def to_json(self) -> dict:
        return {"kind": self.kind, "k": self.k, "classes": list(self.classes)}


# ---- data sources ----------------------------------------------------------------------------------

class _Source:
    """Images (and labels) read chunk by chunk, in a fixed order: row ``i`` is always the same image."""

    kind = "?"
    has_labels = False
    files: list[str] | None = None
    num_images: int | None = None

    def first(self) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def chunks(self, ranges: list[tuple[int, int]]) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(images, labels or None) of each ``(start, stop)`` range, in order (ranges sorted, chunk-aligned)."""
        raise NotImplementedError  # pragma: no cover

    def signature(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def count(self) -> int:
        return int(self.num_images)

    def value_range(self, chunk: int) -> tuple[float, float]:
        """Smallest and largest value over the whole data (one pass, chunk by chunk)."""
        lo, hi = np.inf, -np.inf
        n = self.count()
        for x, _ in self.chunks([(a, min(a + chunk, n)) for a in range(0, n, chunk)]):
            x = np.asarray(x, np.float32)
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
        return lo, hi


def _as_labels(y: Any, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:      # one-hot or probabilities
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1 or y.shape[0] != n:
        raise ExplainError(f"{where}: labels must be one class index per image ({n}), got shape {y.shape}.")
    if not (np.issubdtype(y.dtype, np.integer) or (y.dtype.kind == "f" and np.all(y == np.round(y)))):
        raise ExplainError(f"{where}: labels must be integer class indices, got dtype {y.dtype}.")
    return y.astype(np.int64)


class _ArraySource(_Source):
    kind = "array"

    def __init__(self, images: Any, labels: Any = None):
        x = images.numpy() if hasattr(images, "numpy") and not isinstance(images, np.ndarray) else images
        x = np.asarray(x)
        if x.dtype == object or x.ndim != 4:
            raise ExplainError(f"image arrays must have shape (N, H, W, C), got {x.shape} (dtype {x.dtype}); "
                               "add a channel axis to grayscale images with x[..., None].")
        if x.shape[0] == 0:
            raise ExplainError("the data hold no images (N = 0).")
        self.x = x
        self.num_images = int(x.shape[0])
        self.labels = None if labels is None else _as_labels(labels, self.num_images, "array data")
        self.has_labels = self.labels is not None

    def first(self) -> np.ndarray:
        return self.x[:1]

    def chunks(self, ranges):
        for a, b in ranges:
            yield self.x[a:b], (None if self.labels is None else self.labels[a:b])

    def signature(self) -> dict:
        # a sampled digest (first, last and up to 256 spread images) catches a different array on resume
        # without reading a memory-mapped array of many GB
        n = self.num_images
        pick = np.unique(np.concatenate([[0, n - 1], np.linspace(0, n - 1, min(n, 256)).astype(int)]))
        h = hashlib.blake2b(digest_size=12)
        for i in pick:
            h.update(np.ascontiguousarray(self.x[i]).tobytes())
        if self.labels is not None:
            h.update(self.labels.tobytes())
        return {"kind": self.kind, "shape": list(self.x.shape), "dtype": str(self.x.dtype), "digest": h.hexdigest()}

    def value_range(self, chunk: int) -> tuple[float, float]:
        return float(np.min(self.x)), float(np.max(self.x))


class _TFDataSource(_Source):
    kind = "tf.data"

    def __init__(self, ds: Any):
        import tensorflow as tf

        image_spec, pick = _element_picker(ds.element_spec)
        rank = image_spec.shape.rank
        if rank not in (3, 4):
            raise ExplainError(f"the dataset's images must be (H, W, C) or batched (B, H, W, C); the element spec "
                               f"is {ds.element_spec}.")
        self.has_labels = _has_label(ds.element_spec)
        ds = ds.map(pick)
        if rank == 4:
            ds = ds.unbatch()
        self._ds = ds
        self._spec = str(ds.element_spec)
        card = int(ds.cardinality())
        if card == tf.data.INFINITE_CARDINALITY:
            raise ExplainError("the dataset is infinite (it repeats); explain a finite dataset (drop .repeat()).")
        self.num_images = card if card >= 0 else None

    def count(self) -> int:
        if self.num_images is None:       # unknown cardinality (filter, unbatch, generator): one counting pass
            self.num_images = int(self._ds.reduce(np.int64(0), lambda n, _: n + 1))
        if self.num_images == 0:
            raise ExplainError("the dataset holds no images.")
        return self.num_images

    def first(self) -> np.ndarray:
        for e in self._ds.take(1).as_numpy_iterator():
            return e["image"][None]
        raise ExplainError("the dataset holds no images.")

    def chunks(self, ranges):
        if not ranges:
            return
        start, stop = ranges[0][0], ranges[-1][1]
        wanted = {a: b for a, b in ranges}
        size = ranges[0][1] - ranges[0][0]
        ds = self._ds.skip(start).take(stop - start).batch(size).prefetch(1)
        a = start
        for e in ds.as_numpy_iterator():
            b = a + len(e["image"])
            if a in wanted:      # ranges are chunk-aligned: a chunk not asked for is read and dropped
                if b != wanted[a]:
                    raise ExplainError(f"the dataset yielded {b - a} images for rows {a}..{wanted[a] - 1}: it "
                                       "changed size since the store was made (a dataset must give the same "
                                       "images in the same order on every pass: no shuffling).")
                labels = _as_labels(e["label"], b - a, "dataset") if self.has_labels else None
                yield e["image"], labels
            a = b
        if a < stop:
            raise ExplainError(f"the dataset ended after {a} images, {stop} were expected; it must give the same "
                               "images in the same order on every pass (no shuffling).")

    def signature(self) -> dict:
        return {"kind": self.kind, "element_spec": self._spec}


def _has_label(spec: Any) -> bool:
    if isinstance(spec, dict):
        return any(k in spec for k in ("label", "labels", "y"))
    return isinstance(spec, tuple) and len(spec) >= 2


def _element_picker(spec: Any):
    """The image spec and a map function giving ``{"image": x, "label": y}`` for this element structure."""
    import tensorflow as tf

    if isinstance(spec, tf.TensorSpec):
        return spec, lambda x: {"image": x}
    if isinstance(spec, tuple) and 1 <= len(spec) <= 3 and isinstance(spec[0], tf.TensorSpec):
        if len(spec) == 1:
            return spec[0], lambda x: {"image": x}
        return spec[0], lambda x, y, *_: {"image": x, "label": y}
    if isinstance(spec, dict):
        ik = next((k for k in ("image", "images", "x") if k in spec), None)
        lk = next((k for k in ("label", "labels", "y") if k in spec), None)
        if ik is not None:
            return spec[ik], (lambda d: {"image": d[ik], "label": d[lk]}) if lk else (lambda d: {"image": d[ik]})
    raise ExplainError(f"cannot find the images in dataset elements {spec}; elements must be an image, an "
                       "(image, label) tuple, or a dict with 'image' (and 'label').")


class _FolderSource(_Source):
    kind = "folder"

    def __init__(self, root: Path, size: tuple[int | None, int | None], channels: int,
                 class_names: list[str] | None = None):
        if not root.is_dir():
            raise ExplainError(f"image folder not found: {str(root)!r}")
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ExplainError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {str(root)!r}.")
        self.root, self.files, self.num_images = root, files, len(files)
        self.size, self.channels = size, channels
        self.labels = None
        self.classes: list[str] | None = None
        if all("/" in f for f in files):      # class sub-folders, as keras.utils.image_dataset_from_directory
            folders = sorted({f.split("/", 1)[0] for f in files})
            self.classes = list(class_names) if class_names else folders
            unknown = [d for d in folders if d not in self.classes]
            if unknown:
                raise ExplainError(f"sub-folder {unknown[0]!r} is not a class name; class names: {self.classes}.")
            self.labels = np.array([self.classes.index(f.split("/", 1)[0]) for f in files], np.int64)
            self.has_labels = True

    def _read(self, rel: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self.root / rel
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                h, w = self.size
                if h is not None and w is not None and im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise ExplainError(f"cannot read image {str(path)!r}: {e}") from None
        return arr[..., None] if arr.ndim == 2 else arr

    def first(self) -> np.ndarray:
        return self._read(self.files[0])[None]

    def chunks(self, ranges):
        for a, b in ranges:
            images = [self._read(f) for f in self.files[a:b]]
            shapes = {im.shape for im in images}
            if len(shapes) > 1:
                raise ExplainError(f"images under {str(self.root)!r} differ in size ({sorted(shapes)}) and the "
                                   "model has no fixed input size to resize them to.")
            yield np.stack(images), (None if self.labels is None else self.labels[a:b])

    def signature(self) -> dict:
        digest = hashlib.blake2b("\n".join(self.files).encode(), digest_size=12).hexdigest()
        return {"kind": self.kind, "root": str(self.root.resolve()), "files": digest, "classes": self.classes}


def _as_source(data: Any, model: Any, class_names: list[str] | None) -> _Source:
    if isinstance(data, (str, os.PathLike)):
        shape = getattr(model, "input_shape", None)
        shape = tuple(shape) if isinstance(shape, tuple) and len(shape) == 4 else (None, None, None, 3)
        return _FolderSource(Path(data), (shape[1], shape[2]), int(shape[3] or 3), class_names)
    if type(data).__module__.startswith("tensorflow") and hasattr(data, "element_spec"):
        return _TFDataSource(data)
    if isinstance(data, (tuple, list)) and len(data) == 2 and np.ndim(data[0]) == 4:
        return _ArraySource(data[0], data[1])
    if isinstance(data, (tuple, list)) and len(data) in (1, 2) and not np.ndim(data[0]) == 3:
        raise ExplainError("data as a tuple must be (images, labels) with images of shape (N, H, W, C).")
    return _ArraySource(data)


# ---- devices and workers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Placement:
    """This process's share of the work: worker ``index`` of ``count``, on these local devices."""

    index: int
    count: int
    devices: tuple[str, ...]

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def local_worker_configs(count: int) -> list[str]:
    """The ``TF_CONFIG`` of each of ``count`` workers on this machine (free ports on 127.0.0.1): start one process
    per entry with it in its environment, each creating a ``MultiWorkerMirroredStrategy``, to explain one dataset
    into one store with several local workers."""
    import socket

    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]}
    for s in socks:
        s.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(count)]


def _placement(strategy: Any) -> _Placement:
    import tensorflow as tf

    strategy = tf.distribute.get_strategy() if strategy is None else strategy
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ExplainError(f"strategy must be a tf.distribute.Strategy, got {type(strategy).__name__}.")
    name = type(strategy).__name__
    if "TPU" in name or "ParameterServer" in name:
        raise ExplainError(f"{name} is not supported; use the default strategy, MirroredStrategy (several local "
                           "GPUs) or MultiWorkerMirroredStrategy (several processes or machines).")
    try:
        devices = tuple(strategy.extended.worker_devices)
    except RuntimeError:            # the default strategy: TensorFlow's own placement
        devices = ()
    index, count = 0, 1
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
        tasks = [("chief", i) for i in range(len(cluster.get("chief", [])))]
        tasks += [("worker", i) for i in range(len(cluster.get("worker", [])))]
        if (resolver.task_type, resolver.task_id) in tasks:
            index, count = tasks.index((resolver.task_type, resolver.task_id)), len(tasks)
        elif tasks:
            raise ExplainError(f"task {resolver.task_type}:{resolver.task_id} explains nothing: only chief and "
                               "worker tasks take a shard of the data.")
    return _Placement(index, count, devices)


def _shard(num_chunks: int, index: int, count: int) -> range:
    """Worker ``index``'s contiguous block of chunk indices."""
    return range(num_chunks * index // count, num_chunks * (index + 1) // count)


class _Devices:
    """Explain a batch on every local device at once: one Explainer per device, the batch split evenly."""

    def __init__(self, make_explainer: Callable[[], Any], devices: tuple[str, ...]):
        self.devices = devices if len(devices) > 1 else (None,)
        self.explainers = [make_explainer() for _ in self.devices]
        self._pool = ThreadPoolExecutor(len(self.devices)) if len(self.devices) > 1 else None

    def _one(self, i: int, x: np.ndarray, kwargs: dict):
        if self.devices[i] is None:
            return self.explainers[i](x, **kwargs)
        import tensorflow as tf

        with tf.device(self.devices[i]):
            return self.explainers[i](x, **kwargs)

    def __call__(self, x: np.ndarray, kwargs_of: Callable[[slice], dict]):
        """(relevance (n, K, ...), logits (n, classes), targets (n, K)) of the images ``x``."""
        n = len(x)
        if self._pool is None or n < len(self.devices):
            parts = [slice(0, n)]
        else:
            cuts = np.linspace(0, n, len(self.devices) + 1).astype(int)
            parts = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
        if len(parts) == 1:
            outs = [self._one(0, x, kwargs_of(parts[0]))]
        else:
            outs = list(self._pool.map(lambda ip: self._one(ip[0], x[ip[1]], kwargs_of(ip[1])), enumerate(parts)))
        rel = np.concatenate([_nested(o.relevance, o.targets) for o in outs])
        tg = np.concatenate([np.asarray(o.targets).reshape(len(o.logits), -1) for o in outs])
        return rel, np.concatenate([o.logits for o in outs]), tg

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _nested(relevance: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return relevance[:, None] if np.ndim(targets) == 1 else relevance


# ---- the store -------------------------------------------------------------------------------------

def open_store(path: str | os.PathLike, mode: str = "r") -> Any:
    """Open a store written by :func:`explain_dataset` (a ``zarr.Group``).

    Example
    -------
    >>> store = open_store("scenes.zarr")              # doctest: +SKIP
    >>> store.attrs["sglrp_widgets"]["method"]         # doctest: +SKIP
    'sglrp'
    """
    import zarr

    try:
        group = zarr.open_group(str(path), mode=mode)
    except FileNotFoundError:
        raise ExplainError(f"no dataset store at {str(path)!r}.") from None
    if "sglrp_widgets" not in group.attrs:
        raise ExplainError(f"{str(path)!r} is a Zarr group but not a dataset store made by explain_dataset.")
    return group


def _store_state(path: str) -> tuple[str, dict]:
    """What is at ``path``: ``("absent", {})`` (nothing, or an empty folder), ``("store", run description)``,
    ``("partial", {})`` (a store whose creation was cut short: our arrays, no description yet) or
    ``("foreign", {})`` (anything else)."""
    import zarr

    local = "://" not in path
    if local and (not os.path.exists(path) or (os.path.isdir(path) and not any(os.scandir(path)))):
        return "absent", {}
    try:
        group = zarr.open_group(path, mode="r")
    except Exception:  # noqa: BLE001 - a file, or a folder that is not a Zarr group
        return ("foreign", {}) if local else ("absent", {})
    if "sglrp_widgets" in group.attrs:
        return "store", dict(group.attrs["sglrp_widgets"])
    ours = set(_ROW_ARRAYS) | {"done"}
    return ("partial", {}) if set(group.array_keys()) <= ours and not list(group.group_keys()) else ("foreign", {})


def _preview_shape(h: int, w: int, size: int) -> tuple[int, int]:
    scale = min(1.0, size / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _create_store(path: str, config: dict, layout: dict, source: "_Source", per_image: int, chunk: int) -> dict:
    """Create the group and its arrays; the run description goes in last (the store is ready once it is)."""
    import zarr

    n_img = source.count()
    info = dict(config, **layout, num_images=n_img, per_image=per_image, num_rows=n_img * per_image,
                chunk_images=chunk, chunk_rows=chunk * per_image, num_chunks=-(-n_img // chunk), complete=False,
                seconds=0.0, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    group = zarr.open_group(path, mode="w")
    rows, chunk_rows = info["num_rows"], info["chunk_rows"]
    image_shape = tuple(layout["image_shape"])
    th, tw = _preview_shape(image_shape[0], image_shape[1], config["preview_size"])

    def make(name, shape, dtype, fill):
        group.create_array(name, shape=(rows,) + tuple(shape), chunks=(chunk_rows,) + tuple(shape), dtype=dtype,
                           fill_value=fill)

    make("relevance", image_shape if config["channels"] == "keep" else image_shape[:-1], config["dtype"], 0)
    make("logits", (layout["num_classes"],), "float32", 0)
    make("targets", (), "int64", -1)
    make("ids", (), "int64", -1)
    make("labels", (), "int64", -1)
    make("heatmaps", (th, tw), "int8", 0)
    make("heatmap_scale", (), "float32", 0)
    make("thumbnails", (th, tw, 3), "uint8", 0)
    if source.files is not None:
        make("files", (), str, "")
    group.create_array("done", shape=(info["num_chunks"],), chunks=(1,), dtype="bool", fill_value=False)
    group.attrs["sglrp_widgets"] = info
    return info


def _chunk_previews(raw: np.ndarray, heat: np.ndarray, preview: tuple[int, int]):
    """int8 heatmaps + scales and uint8 thumbnails at ``preview`` size (area-downsampled when smaller)."""
    from .viz import image_to_float

    small = _shrink(heat[..., None].astype(np.float32), preview)[..., 0]
    scale = np.abs(small).reshape(len(small), -1).max(axis=1).astype(np.float32)
    q = np.rint(small / np.where(scale > 0, scale, 1)[:, None, None] * 127).astype(np.int8)
    shown = _shrink(np.stack([image_to_float(im) for im in raw]).astype(np.float32), preview)
    return q, scale, np.clip(np.rint(shown * 255), 0, 255).astype(np.uint8)


def _shrink(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if batch.shape[1:3] == tuple(size):
        return batch
    import tensorflow as tf

    return tf.image.resize(batch, size, method="area").numpy()


def _remove_partial_files(path: str) -> None:
    """Temporary files of chunk writes cut short by a kill (Zarr writes a temp file, then renames it)."""
    if os.path.isdir(path):
        for p in Path(path).rglob("*.partial"):
            p.unlink(missing_ok=True)


# ---- fingerprints ----------------------------------------------------------------------------------

def _model_fingerprint(model: Any) -> dict:
    h = hashlib.blake2b(digest_size=12)
    for w in model.weights:
        v = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        h.update(str((w.path if hasattr(w, "path") else w.name, v.shape, v.dtype)).encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return {"name": model.name, "parameters": int(model.count_params()), "weights": h.hexdigest()}


def _callable_name(fn: Callable | None) -> str | None:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _preprocess_fingerprint(fn: Callable | None, channels: int) -> str | None:
    """What ``fn`` does to a fixed ramp of raw values (names alone do not tell closures apart)."""
    if fn is None:
        return None
    ramp = np.linspace(0.0, 255.0, 4 * channels, dtype=np.float32).reshape(1, 2, 2, channels)
    try:
        value = np.asarray(fn(ramp.copy()), np.float32)
    except Exception:  # noqa: BLE001 - a function that needs real images: fall back on its name
        return _callable_name(fn)
    return hashlib.blake2b(value.tobytes() + str(value.shape).encode(), digest_size=12).hexdigest()


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: np.asarray(v).tolist()))


# ---- the run ---------------------------------------------------------------------------------------

def explain_dataset(model: Any, data: Any, method: str = "sglrp", *, targets: Any = "top1",
                    out: str | os.PathLike, batch_size: int = 32, preprocess: Callable | None = None,
                    strategy: Any = None, top_k: int | None = None, channels: str = "keep",
                    dtype: str = "float32", chunk_size: int | None = None, preview_size: int = PREVIEW_SIZE,
                    class_names: list[str] | None = None, overwrite: bool = False, progress: bool = True,
                    **params: Any) -> Any:
    """Explain every image of a dataset and stream the maps into a chunked Zarr store.

    Parameters
    ----------
    model : keras.Model
        The classifier (any model :class:`~sglrp_widgets.Explainer` supports).
    data : array, (images, labels), tf.data.Dataset or folder path
        Images (N, H, W, C) as the model's raw input (in display space when ``preprocess`` is given); a pair
        ``(images, labels)`` with integer or one-hot labels; a ``tf.data.Dataset`` of images, ``(image,
        label)`` pairs or ``{"image", "label"}`` dicts, batched or not, that gives the same images in the
        same order on every pass (no shuffling); or a folder of image files, read recursively in sorted
        order (resized to the model's input size; class sub-folders give labels, as
        ``keras.utils.image_dataset_from_directory``).
    method : str
        A method from :func:`~sglrp_widgets.list_methods`; its parameters go in ``**params``.
    targets : str, int or list of int
        ``"top1"`` (default; also ``None``), ``"topK"`` (e.g. ``"top3"``, or ``"topk"`` with ``top_k=K``,
        default 5), ``"label"``
        (the data's labels), or a class index / list of classes explained for every image. With K targets
        per image every image takes K consecutive rows.
    out : path
        The Zarr store. If it exists from an earlier run with the same settings, the run resumes there.
    batch_size : int
        Images per explainer call (split across the local devices of a ``MirroredStrategy``).
    preprocess : callable, optional
        Raw images -> model inputs (applied to float32 batches); also gives the z_box bounds, as for
        ``Explainer``. Without it the data are model inputs, and methods with z_box bounds use the range of
        the whole dataset (so a map does not depend on which images share its batch).
    strategy : tf.distribute.Strategy, optional
        Default: the current strategy (``tf.distribute.get_strategy()``). ``MirroredStrategy`` splits each
        batch across its devices; ``MultiWorkerMirroredStrategy`` gives each worker a contiguous shard of the
        chunks: run the same call in every worker; the chief (task 0) returns once the whole store is
        written, the other workers once their shard is.
    channels : {"keep", "sum"}
        Store maps as (N, H, W, C) or their channel sum (N, H, W).
    dtype : {"float32", "float16"}
        dtype of the stored maps.
    chunk_size : int, optional
        Images per chunk (the unit of writing and resuming); default: a multiple of ``batch_size`` near 64.
    preview_size : int
        Largest side of the stored thumbnails and int8 heatmaps (default 64).
    class_names : list of str, optional
        Saved in the store; for a folder with class sub-folders, the names that give the label indices.
    overwrite : bool
        Replace an existing store made with other settings (single-process runs only).
    progress : bool
        Show a tqdm progress bar.
    **params
        The method's parameters, e.g. ``epsilon=0.1``.

    Returns
    -------
    zarr.Group
        The store, read-only; arrays ``relevance``, ``logits``, ``targets``, ``ids`` ... (module docstring).

    Example
    -------
    >>> store = explain_dataset(model, images, "sglrp", out="maps.zarr", preprocess=preprocess)  # doctest: +SKIP
    >>> store["relevance"][:8].shape                                                             # doctest: +SKIP
    (8, 224, 224, 3)
    """
    from .engine import Explainer

    _check_options(batch_size, channels, dtype, chunk_size, preview_size, overwrite, preprocess)
    params.pop("cache", None)
    place = _placement(strategy)
    if overwrite and place.count > 1:
        raise ExplainError("overwrite=True is refused with several workers (one could write into the store "
                           "another is deleting): delete the store first, then start the workers.")
    source = _as_source(data, model, class_names)
    first = source.first()
    want = DatasetTargets.parse(targets, None, top_k)
    if want.kind == "label" and not source.has_labels:
        raise ExplainError('targets="label" needs labels: pass (images, labels), a dataset of (image, label) '
                           "pairs, or a folder with one sub-folder per class.")
    path = os.fspath(out)
    config = _run_config(model, method, params, want, channels, dtype, preview_size, preprocess, source, first)
    info = _resolve_store(path, config, overwrite, place)
    if info is not None and chunk_size is not None and chunk_size != info["chunk_images"]:
        raise ExplainError(f"the store at {path!r} has chunks of {info['chunk_images']} images; chunk_size="
                           f"{chunk_size} differs. Leave chunk_size out to resume, or write to another store.")
    bounds = info["bounds_values"] if info is not None else _dataset_bounds(config, source)
    run_params = dict(params, **({"low": bounds[0], "high": bounds[1]} if bounds is not None else {}))
    devices = _Devices(lambda: Explainer(model, method, preprocess=preprocess, cache=None, keep_states=False,
                                         compile="first_call", **run_params),
                       place.devices)
    try:
        x_first = _model_input(first, preprocess)
        num_classes = int(devices.explainers[0](x_first).logits.shape[1])   # checks model, method, shapes
        want = DatasetTargets.parse(targets, num_classes, top_k)            # and the classes, before writing
        if info is None:                                                    # the chief makes the store
            layout = {"num_classes": num_classes, "image_shape": [int(v) for v in x_first.shape[1:]],
                      "bounds_values": bounds, "class_names": _class_names(class_names, source),
                      "preprocess_name": _callable_name(preprocess)}
            info = _create_store(path, config, layout, source, want.per_image, chunk_size or _default_chunk(
                batch_size, want.per_image * int(np.prod(x_first.shape[1:])) * 4))
        if source.num_images is None:
            source.num_images = info["num_images"]
        elif source.num_images != info["num_images"]:
            raise ExplainError(f"the store at {path!r} holds {info['num_images']} images, the data "
                               f"{source.num_images}.")
        return _run(devices, method, preprocess, source, want, info, path, place, batch_size, progress)
    finally:
        devices.close()


def _run_config(model, method, params, want, channels, dtype, preview_size, preprocess, source, first) -> dict:
    """Everything that decides the store's content, and its digest ``key`` (equal key = resumable)."""
    from .methods import get_method, validate_params

    clean = validate_params(method, {k: v for k, v in params.items() if k not in ("output", "rules")})
    auto_bounds = get_method(method).uses_bounds and preprocess is None and None in (clean.get("low"),
                                                                                      clean.get("high"))
    config = {
        "format": STORE_FORMAT, "method": method, "params": _json_safe(clean),
        "extra": {k: repr(v) for k, v in params.items() if k in ("output", "rules")},
        "targets": want.to_json(), "channels": channels, "dtype": dtype, "preview_size": int(preview_size),
        "preprocess": _preprocess_fingerprint(preprocess, int(first.shape[-1])),
        "model": _model_fingerprint(model), "source": source.signature(),
        "bounds": "dataset range" if auto_bounds else "explainer",
    }
    config["key"] = hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=16).hexdigest()
    return config


def _dataset_bounds(config: dict, source: _Source) -> list | None:
    """z_box bounds for the whole dataset (given ``low``/``high`` win), when no preprocess gives them."""
    if config["bounds"] != "dataset range":
        return None
    low, high = config["params"]["low"], config["params"]["high"]
    if low is None or high is None:
        lo, hi = source.value_range(CHUNK_IMAGES)
        low, high = lo if low is None else low, hi if high is None else high
    return _json_safe([low, high])


def _check_options(batch_size, channels, dtype, chunk_size, preview_size, overwrite, preprocess) -> None:
    def positive_int(name, v):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ExplainError(f"{name} must be a positive integer, got {v!r}.")
    positive_int("batch_size", batch_size)
    if chunk_size is not None:
        positive_int("chunk_size", chunk_size)
    positive_int("preview_size", preview_size)
    if channels not in ("keep", "sum"):
        raise ExplainError(f'channels must be "keep" (maps (N, H, W, C)) or "sum" ((N, H, W)), got {channels!r}.')
    if dtype not in ("float32", "float16"):
        raise ExplainError(f'dtype must be "float32" or "float16", got {dtype!r}.')
    if preprocess is not None and not callable(preprocess):
        raise ExplainError(f"preprocess must be a function, got {type(preprocess).__name__}.")
    if not isinstance(overwrite, bool):
        raise ExplainError(f"overwrite must be True or False, got {overwrite!r}.")


def _default_chunk(batch_size: int, image_bytes: int) -> int:
    aim = max(1, min(CHUNK_IMAGES, MAX_CHUNK_BYTES // max(image_bytes, 1)))
    return batch_size * max(1, aim // batch_size)


def _class_names(class_names, source) -> list[str] | None:
    names = class_names if class_names is not None else getattr(source, "classes", None)
    return None if names is None else [str(n) for n in names]


def _model_input(raw: np.ndarray, preprocess: Callable | None) -> np.ndarray:
    if preprocess is None:
        return raw
    return np.asarray(preprocess(np.asarray(raw, dtype=np.float32)), dtype=np.float32)


def _resolve_store(path: str, config: dict, overwrite: bool, place: _Placement) -> dict | None:
    """The existing run description to resume, or None when this process (the chief) must create the store.

    Other workers wait until the chief has created it."""
    deadline = time.monotonic() + WORKER_WAIT_S
    while True:
        state, info = _store_state(path)
        if state == "foreign":
            raise ExplainError(f"{path!r} exists and is not a dataset store: not touching it; choose another out= "
                               "path (or delete it).")
        if state == "store" and info.get("key") == config["key"]:
            return info
        if state == "store" and not (overwrite and place.is_chief):
            raise ExplainError(f"the store at {path!r} was made with other settings "
                               f"({_difference(info, config)}); pass overwrite=True to replace it, or "
                               "choose another out= path.")
        if place.is_chief:          # absent, cut short while being created, or to be overwritten
            return None
        if time.monotonic() > deadline:
            raise ExplainError(f"worker {place.index} waited {WORKER_WAIT_S:.0f} s for the chief to create the "
                               f"store at {path!r}; is the chief (task 0) running with the same settings?")
        time.sleep(0.2)


def _difference(info: dict, config: dict) -> str:
    diffs = [k for k in config if k != "key" and info.get(k) != config[k]]
    return ", ".join(f"{k}: {info.get(k)!r} -> {config[k]!r}" for k in diffs[:2]) or "format"


def _run(devices, method, preprocess, source, want, info, path, place, batch_size, progress) -> Any:
    import zarr
    from tqdm.auto import tqdm

    _remove_partial_files(path)
    group = zarr.open_group(path, mode="r+")
    n, chunk = info["num_images"], info["chunk_images"]
    mine = _shard(info["num_chunks"], place.index, place.count)
    done = group["done"][mine.start:mine.stop] if len(mine) else np.zeros(0, bool)
    todo = [c for c, d in zip(mine, done) if not d]
    ranges = [(c * chunk, min((c + 1) * chunk, n)) for c in todo]
    total = sum(min((c + 1) * chunk, n) - c * chunk for c in mine)
    bar = tqdm(total=total, initial=total - sum(b - a for a, b in ranges), unit="img", disable=not progress,
               desc=f"{method} (worker {place.index + 1}/{place.count})" if place.count > 1 else method)
    start = time.perf_counter()
    writer = ThreadPoolExecutor(1)
    pending = None
    try:
        for (a, b), (raw, labels) in zip(ranges, _prefetched(source.chunks(ranges))):
            arrays = _explain_chunk(devices, raw, labels, a, want, info, preprocess, batch_size, source)
            if pending is not None:
                pending.result()
            pending = writer.submit(_write_chunk, group, a // chunk, info["chunk_rows"], arrays)
            bar.update(b - a)
        if pending is not None:
            pending.result()
    finally:
        writer.shutdown()
        bar.close()
    seconds = time.perf_counter() - start
    if place.is_chief:
        _wait_for_all(group, progress)
        meta = dict(group.attrs["sglrp_widgets"])
        meta.update(complete=True, seconds=float(meta.get("seconds", 0.0)) + seconds)
        group.attrs["sglrp_widgets"] = meta
    return zarr.open_group(path, mode="r")


def _prefetched(it: Iterator) -> Iterator:
    """Read the next chunk on a thread while the current one is explained."""
    pool = ThreadPoolExecutor(1)
    sentinel = object()
    try:
        future = pool.submit(next, it, sentinel)
        while True:
            item = future.result()
            if item is sentinel:
                return
            future = pool.submit(next, it, sentinel)
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _explain_chunk(devices, raw, labels, first_row_image, want, info, preprocess, batch_size, source) -> dict:
    x = _model_input(raw, preprocess)
    parts = []
    for s in range(0, len(x), batch_size):
        sl = slice(s, s + batch_size)
        lab = None if labels is None else labels[sl]
        parts.append(devices(x[sl], lambda p, lab=lab: want.explainer_args(
            p.stop - p.start, None if lab is None else lab[p])))
    rel = np.concatenate([p[0] for p in parts])                 # (n, K, H, W, C)
    logits = np.concatenate([p[1] for p in parts])
    tg = np.concatenate([p[2] for p in parts])
    n, k = tg.shape
    heat = rel.sum(axis=-1).reshape((n * k,) + rel.shape[2:-1])
    rows_rel = rel.reshape((n * k,) + rel.shape[2:])
    if info["channels"] == "sum":
        rows_rel = heat
    preview = _preview_shape(*rel.shape[2:4], info["preview_size"])
    q, scale, thumbs = _chunk_previews(np.repeat(raw, k, axis=0) if k > 1 else raw, heat, preview)
    ids = np.repeat(np.arange(first_row_image, first_row_image + n, dtype=np.int64), k)
    arrays = {
        "relevance": rows_rel.astype(info["dtype"]), "logits": np.repeat(logits, k, axis=0),
        "targets": tg.reshape(-1).astype(np.int64), "ids": ids,
        "labels": np.repeat(labels, k) if labels is not None else np.full(n * k, -1, np.int64),
        "heatmaps": q, "heatmap_scale": scale, "thumbnails": thumbs,
    }
    if source.files is not None:
        arrays["files"] = np.array(source.files[first_row_image:first_row_image + n]).repeat(k)
    return arrays


def _write_chunk(group: Any, index: int, chunk_rows: int, arrays: dict) -> None:
    a = index * chunk_rows
    for name in _ROW_ARRAYS:
        if name in arrays:
            group[name][a:a + len(arrays[name])] = arrays[name]
    group["done"][index] = True                 # last: a chunk without its flag is redone on resume


def _wait_for_all(group: Any, progress: bool) -> None:
    """The chief waits for the other workers' chunks (their ``done`` flags)."""
    from tqdm.auto import tqdm

    done = group["done"]
    flags = done[:]
    if flags.all():
        return
    with tqdm(total=len(flags), initial=int(flags.sum()), unit="chunk", disable=not progress,
              desc="waiting for the other workers") as bar:
        while not flags.all():
            time.sleep(0.5)
            new = done[:]
            bar.update(int(new.sum()) - int(flags.sum()))
            flags = new


# ---- command line ----------------------------------------------------------------------------------

def _bundled_names() -> list[str]:
    from . import demo

    return list(demo.MODELS)


def add_cli_parser(subparsers: Any, preprocessors: dict) -> argparse.ArgumentParser:
    """Add the ``dataset`` sub-command to the ``sglrp-widgets`` parser."""
    p = subparsers.add_parser(
        "dataset", help="explain a whole dataset into a Zarr store (resumable; several workers via TF_CONFIG)",
        description="Explain every image of a folder (class sub-folders give labels) or of a .npy/.npz file "
                    "into a chunked Zarr store; re-running the same command resumes. With TF_CONFIG set "
                    "(MultiWorkerMirroredStrategy), run the same command in every worker.")
    p.add_argument("--model", required=True, metavar="PATH|NAME",
                   help="a .keras file, or a bundled model (" + ", ".join(_bundled_names()) + ")")
    p.add_argument("--data", required=True, help="image folder, .npy (images) or .npz (arrays 'x'/'images' "
                                                 "and optionally 'y'/'labels')")
    p.add_argument("--method", default="sglrp", help="method name, any case (default: sglrp)")
    p.add_argument("--targets", default="top1",
                   help='"top1", "top3", "label" or class indices such as "3" or "2,5" (default: top1)')
    p.add_argument("--preprocess", choices=sorted(preprocessors), metavar="NAME",
                   help="raw RGB 0..255 -> model input: " + ", ".join(sorted(preprocessors))
                   + " (default: the bundled model's, else guessed from the model's name, and said)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="method parameter (repeatable)")
    p.add_argument("--batch-size", type=int, default=32, help="images explained at once (default: 32)")
    p.add_argument("--chunk-size", type=int, help="images per chunk (default: a multiple of the batch near 64)")
    p.add_argument("--channels", choices=["keep", "sum"], default="keep",
                   help="keep: one map per colour channel; sum: one map per image, the channels added (a third "
                        "of the disk space for RGB)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="number type of the stored maps (float16: half the disk space)")
    p.add_argument("--strategy", choices=["auto", "default", "mirrored", "multiworker"], default="auto",
                   help="auto: multiworker when TF_CONFIG is set, else default")
    p.add_argument("--class-names", help="text file with one class name per line")
    p.add_argument("--overwrite", action="store_true", help="replace a store made with other settings")
    p.add_argument("--spray", action="store_true", help="then run SpRAy on every class (sglrp_widgets.spray)")
    p.add_argument("--unsafe-load", action="store_true", help="load the model with safe_mode=False")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no notes")
    p.add_argument("-o", "--out", required=True, help="the Zarr store (a folder)")
    return p


def cli(args: argparse.Namespace, *, resolve_method: Callable[[str], str],
        parse_params: Callable[[Any, str, bool], dict], choose_preprocess: Callable[..., Callable]) -> int:
    """Run the ``dataset`` sub-command; the method, parameter and preprocessing helpers are the CLI's."""
    from .cli_inputs import class_names_for, load_model, resolve_model

    source = resolve_model(args.model)               # cheap checks first: model file, method, data
    method = resolve_method(args.method)
    params = parse_params(args.param, method, False)
    targets: Any = args.targets
    if re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", targets):
        targets = [int(t) for t in targets.split(",")]
    data = _cli_data(args.data)
    model = load_model(source, args.unsafe_load, args.quiet)
    preprocess = choose_preprocess(args, model, source)
    names, _ = class_names_for(model, source, int(model.output_shape[-1]), args.class_names)
    store = explain_dataset(model, data, method, targets=targets, out=args.out, batch_size=args.batch_size,
                            preprocess=preprocess, strategy=_cli_strategy(args.strategy), chunk_size=args.chunk_size,
                            channels=args.channels, dtype=args.dtype, class_names=names, overwrite=args.overwrite,
                            progress=not args.quiet, **params)
    meta = store.attrs["sglrp_widgets"]
    if not meta.get("complete"):                     # a worker other than the chief: its shard is written
        return 0
    print(f"{args.out}: {meta['num_rows']} maps of {meta['num_images']} images ({method})")
    if args.spray:
        from .spray import spray

        for c, r in spray(args.out, progress=not args.quiet).items():
            name = names[c] if names else f"class {c}"
            print(f"{name}: {len(r.rows)} maps, {r.n_clusters} cluster(s) by eigengap, sizes "
                  f"{np.bincount(r.clusters).tolist()} (cluster 0 most coherent)")
    return 0


def _cli_data(path: str) -> Any:
    p = Path(path)
    if p.is_dir():
        return path
    if not p.is_file():
        raise ExplainError(f"data not found: {path!r} (give an image folder, a .npy or a .npz file)")
    if p.suffix == ".npy":
        return np.load(p, mmap_mode="r", allow_pickle=False)
    if p.suffix == ".npz":
        z = np.load(p, allow_pickle=False)
        xk = next((k for k in ("x", "images") if k in z.files), None)
        if xk is None:
            raise ExplainError(f"{path!r} has arrays {z.files}; name the images 'x' or 'images'")
        yk = next((k for k in ("y", "labels") if k in z.files), None)
        return (z[xk], z[yk]) if yk else z[xk]
    raise ExplainError(f"cannot read data {path!r}: give an image folder, a .npy or a .npz file")


def _cli_strategy(name: str) -> Any:
    import tensorflow as tf

    if name == "auto":
        name = "multiworker" if os.environ.get("TF_CONFIG") else "default"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None

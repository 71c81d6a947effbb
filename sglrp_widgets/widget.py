"""``RelevanceExplorer``: an anywidget notebook widget over the relevance engine.

Protocol (traitlets are the only interface between Python and the browser):

browser -> kernel (the selection; each change schedules one computation)
    ``index``, ``method``, ``params``, ``target`` (-1 = the top-1 class), ``request_id``
browser-only view settings (never trigger a computation; the browser saves them only together
with the next real request, so moving a slider sends nothing)
    ``opacity``, ``colormap``, ``positive_only``
kernel -> browser
    ``image`` (PNG bytes, once per image) + ``image_meta``; ``heatmap`` (int8 bytes, ``q/127*scale``)
    + ``heatmap_meta``; ``predictions`` (top-k), ``resolved_target``, ``status``, ``error``, ``busy``,
    ``metrics``, ``compare_png``, ``comm_count`` (messages received from the browser: a test hook)

Computations run on one worker thread. Requests coalesce (a queued request that is no longer the
latest is skipped) and a finished result is published only if its generation is still current,
so a stale map is never shown.

Example
-------
>>> from sglrp_widgets import RelevanceExplorer, demo            # doctest: +SKIP
>>> images, labels, boxes = demo.make_scenes(8)                  # doctest: +SKIP
>>> RelevanceExplorer(demo.load_model(), images, preprocess=demo.preprocess,
...                   class_names=demo.class_names, boxes=boxes)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import anywidget
import numpy as np
import traitlets as t

_HERE = Path(__file__).parent
_STATIC = _HERE / "static"
_DEFAULT_COMPARE = ("sglrp", "clrp", "lrp", "gradient", "grad_cam")
COLORMAPS = ("bwr", "seismic", "coolwarm", "jet", "inferno", "viridis", "hot", "gray")
_DIVERGING = {"bwr", "seismic", "coolwarm"}


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (index 340 is ``"zebra"``)."""
    with open(_HERE / "data" / "imagenet_classes.json", encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# Pure helpers (also used by tests and benchmarks).


def quantize_heatmap(heat: np.ndarray) -> tuple[bytes, float]:
    """Symmetric int8 quantisation: returns (bytes, scale) with ``value ~= q / 127 * scale``."""
    h = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    scale = float(np.max(np.abs(h))) if h.size else 0.0
    if scale > 0:
        q = np.clip(np.rint(h / scale * 127.0), -127, 127).astype(np.int8)
    else:
        q = np.zeros(h.shape, np.int8)
    return np.ascontiguousarray(q).tobytes(), scale


def dequantize_heatmap(buf: bytes, meta: dict) -> np.ndarray:
    """Inverse of :func:`quantize_heatmap` (what the browser does), shape (height, width)."""
    q = np.frombuffer(bytes(buf), dtype=np.int8).astype(np.float32)
    return (q / 127.0 * float(meta["scale"])).reshape(int(meta["height"]), int(meta["width"]))


def to_display_uint8(img: np.ndarray) -> np.ndarray:
    """Raw image -> uint8 (H, W, 3) for display. Floats in [0, 1] are scaled by 255."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"an image must have shape (H, W, C) or (H, W), got {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 4:
        a = a[..., :3]
    elif a.shape[-1] != 3:
        a = np.repeat(a.mean(axis=-1, keepdims=True), 3, axis=-1)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    a = a.astype(np.float32)
    finite = a[np.isfinite(a)]
    if finite.size and finite.max() <= 1.0 and finite.min() >= 0.0:
        a = a * 255.0
    return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, *, colormap: str = "bwr", opacity: float = 0.6,
            positive_only: bool = False) -> np.ndarray:
    """Blend a heatmap over a uint8 image like the browser does; returns uint8 (H, W, 3).

    Diverging colormaps weight the colour by ``opacity * sqrt(|v|)`` (v = map / max|map|), so zero
    relevance leaves the image visible; sequential ones blend with constant ``opacity``.
    """
    import matplotlib

    img = to_display_uint8(image).astype(np.float32)
    h = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    if positive_only:
        h = np.maximum(h, 0)
    m = float(np.max(np.abs(h))) if h.size else 0.0
    v = h / m if m > 0 else np.zeros_like(h)
    if h.shape != img.shape[:2]:
        from PIL import Image

        v = np.asarray(Image.fromarray(v).resize((img.shape[1], img.shape[0]), Image.BILINEAR))
    diverging = colormap in _DIVERGING
    cmap = matplotlib.colormaps.get(colormap if colormap in COLORMAPS else "bwr")
    tcol = v if (positive_only and not diverging) else (v + 1) / 2
    rgb = cmap(np.clip(tcol, 0, 1))[..., :3] * 255.0
    a = float(np.clip(opacity, 0, 1)) * (np.sqrt(np.minimum(1, np.abs(v))) if diverging else np.ones_like(v))
    out = img + a[..., None] * (rgb - img)
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def _png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _freeze(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _load_images(images: Any, size: tuple[int, int] | None) -> list[np.ndarray]:
    """Array (N,H,W,C), list of arrays, or list of paths -> list of raw arrays."""
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 3 and images.shape[-1] not in (1, 3, 4):
            images = images[..., None]  # (N, H, W) grayscale batch
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f"images must be an array (N, H, W, C), got shape {images.shape}")
        return [images[i] for i in range(images.shape[0])]
    out = []
    for i, im in enumerate(images):
        if isinstance(im, (str, os.PathLike)):
            from PIL import Image

            p = Path(im)
            if not p.exists():
                raise ValueError(f"image {i}: file {str(p)!r} does not exist")
            with Image.open(p) as pil:
                pil = pil.convert("RGB")
                if size is not None and (pil.height, pil.width) != size:
                    pil = pil.resize((size[1], size[0]), Image.BILINEAR)
                out.append(np.asarray(pil, dtype=np.uint8))
        else:
            a = np.asarray(im)
            if a.ndim == 2:
                a = a[..., None]
            if a.ndim != 3:
                raise ValueError(f"image {i} must have shape (H, W, C), got {a.shape}")
            out.append(a)
    if not out:
        raise ValueError("images is empty: pass at least one image")
    return out


# ---------------------------------------------------------------------------------------------


class RelevanceExplorer(anywidget.AnyWidget):
    """Interactive relevance maps for a Keras image classifier.

    Parameters
    ----------
    model : keras.Model
        The classifier (a final softmax is handled by the engine).
    images : array (N, H, W, C), list of arrays, or list of image file paths
        Raw images in display space (uint8 0..255 or float 0..1). Paths are loaded with PIL and
        resized to the model's input size when it is fixed.
    preprocess : callable, optional
        Maps raw images (float32 batch) to model inputs; identity if None. Also passed to the
        engine for the bounded Deep Taylor rule's low/high bounds.
    class_names : list of str, optional
        One name per class; the bundled ImageNet names are used for 1000-class models.
    methods : list of str, optional
        Method names offered in the dropdown (default: the whole registry).
    method : str, default "sglrp"
    params : dict, optional
        Parameters of ``method``.
    top_k : int, default 5
        Predictions listed in the class selector (and computed ahead after the first map).
    boxes : per image a box (y0, x0, y1, x1) or a list of boxes, optional
        Shows mass-in-box and the pointing game for the current map.
    masks : per image a boolean (H, W) mask, optional
    prefetch : bool, default True
        After a map, compute the other top-k classes of the same method in one batched call.
    compute_initial : bool, default True
        Compute the first map before returning (so the static PNG fallback shows it).

    Examples
    --------
    >>> ex = RelevanceExplorer(model, images, preprocess=preprocess)   # doctest: +SKIP
    >>> ex                       # the widget                          # doctest: +SKIP
    >>> ex.explanation.shape     # current map (H, W)                  # doctest: +SKIP
    >>> ex.compare(methods=["sglrp", "gradient"], targets=[340, 386])  # doctest: +SKIP
    """

    _esm = _STATIC / "widget.js"
    _css = _STATIC / "widget.css"

    # selection (browser -> kernel)
    index = t.Int(0).tag(sync=True)
    method = t.Unicode("sglrp").tag(sync=True)
    params = t.Dict().tag(sync=True)
    target = t.Int(-1).tag(sync=True)
    request_id = t.Int(0).tag(sync=True)
    # view settings (browser-only)
    opacity = t.Float(0.6).tag(sync=True)
    colormap = t.Unicode("bwr").tag(sync=True)
    positive_only = t.Bool(False).tag(sync=True)
    # kernel -> browser
    n_images = t.Int(0).tag(sync=True)
    top_k = t.Int(5).tag(sync=True)
    method_specs = t.List().tag(sync=True)
    class_names = t.List().tag(sync=True)
    predictions = t.List().tag(sync=True)
    resolved_target = t.Int(-1).tag(sync=True)
    image = t.Bytes(b"").tag(sync=True)
    image_meta = t.Dict().tag(sync=True)
    heatmap = t.Bytes(b"").tag(sync=True)
    heatmap_meta = t.Dict().tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    metrics = t.Dict().tag(sync=True)
    compare_png = t.Bytes(b"").tag(sync=True)
    comm_count = t.Int(0).tag(sync=True)

    def __init__(self, model: Any, images: Any, *, preprocess: Callable | None = None,
                 class_names: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                 method: str = "sglrp", params: dict | None = None, top_k: int = 5,
                 boxes: Any = None, masks: Any = None, opacity: float = 0.6, colormap: str = "bwr",
                 positive_only: bool = False, prefetch: bool = True, compute_initial: bool = True,
                 cache_size: int = 256, **kwargs: Any) -> None:
        from .methods import list_methods

        self._model = model
        self._preprocess = preprocess
        self._lock = threading.RLock()
        self._gen = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sglrp-explorer")
        self._explainers: dict[tuple[str, str], Any] = {}
        self._results: OrderedDict[tuple, dict] = OrderedDict()
        self._cache_size = int(cache_size)
        self._probs: dict[int, np.ndarray] = {}
        self._inputs: dict[int, np.ndarray] = {}
        self._pngs: dict[int, bytes] = {}
        self._prefetched: set[tuple] = set()
        self._prefetch = bool(prefetch)
        self.prefetch_budget = 1.0  # seconds of compute per prefetch chunk
        self._current: dict | None = None  # the last published result
        self._ready = False  # no scheduling while the constructor sets the initial traits
        self.dropped = 0  # results computed but not shown because the selection moved on
        self.skipped = 0  # queued requests coalesced away before computing

        in_shape = tuple(getattr(model, "input_shape", (None, None, None, None)) or ())
        size = None
        if len(in_shape) == 4 and in_shape[1] and in_shape[2]:
            size = (int(in_shape[1]), int(in_shape[2]))
        self._raw = _load_images(images, size)
        self._n_classes = int(model.output_shape[-1])

        specs = list_methods()
        by_name = {s["name"]: s for s in specs}
        if methods is not None:
            unknown = [m for m in methods if m not in by_name]
            if unknown:
                raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(by_name)}")
            specs = [by_name[m] for m in methods]
        self._specs = {s["name"]: s for s in specs}
        if method not in self._specs:
            raise ValueError(f"method {method!r} is not offered; choose from {list(self._specs)}")

        if class_names is None:
            names = imagenet_class_names() if self._n_classes == 1000 else [
                f"class {i}" for i in range(self._n_classes)]
        else:
            names = [str(c) for c in class_names]
            if len(names) != self._n_classes:
                raise ValueError(f"class_names has {len(names)} names but the model has "
                                 f"{self._n_classes} outputs: pass one name per class")
        self._boxes = self._masks = None
        if boxes is not None:
            if len(boxes) != len(self._raw):
                raise ValueError(f"boxes has {len(boxes)} entries for {len(self._raw)} images: "
                                 "pass one box or list of boxes per image")
            self._boxes = list(boxes)
        if masks is not None:
            if len(masks) != len(self._raw):
                raise ValueError(f"masks has {len(masks)} entries for {len(self._raw)} images")
            self._masks = [np.asarray(m, bool) for m in masks]
        if colormap not in COLORMAPS:
            raise ValueError(f"colormap {colormap!r} is not one of {COLORMAPS}")

        super().__init__(
            n_images=len(self._raw), method_specs=_jsonable(specs), class_names=names,
            top_k=int(top_k), method=method, params=dict(params or {}), opacity=float(opacity),
            colormap=colormap, positive_only=bool(positive_only), **kwargs)
        self.on_msg(self._on_custom)
        self._ready = True
        if compute_initial:
            self._run(self._next_gen(), self._snapshot())
        else:
            self._schedule()

    # -- message handling --------------------------------------------------------------------
    def _handle_msg(self, msg: dict) -> None:
        """Count every message from the browser (test hook), then let ipywidgets handle it."""
        # Under the lock: the worker publishes with hold_sync(), whose batch is per widget, so
        # the comm thread must not change synced traits while a publish is being assembled.
        with self._lock:
            self.comm_count += 1
            super()._handle_msg(msg)

    def set_state(self, sync_data: dict) -> None:
        """Apply a state update from the browser; a value of the wrong type becomes an error."""
        try:
            super().set_state(sync_data)
        except Exception as e:  # noqa: BLE001 - untrusted browser input
            self.error = f"rejected a value from the browser: {type(e).__name__}: {e}"
            self.busy = False

    def _on_custom(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "compare":
            self._executor.submit(self._compare_in_widget)

    @t.observe("method")
    def _on_method(self, change: dict) -> None:
        # A method set from Python without parameters keeps only the parameters it knows;
        # the browser always sends method and params together.
        if "params" in getattr(self, "_property_lock", {}):
            return
        spec = self._specs.get(change["new"])
        if spec is not None:
            known = {p["name"] for p in spec.get("params", [])}
            kept = {k: v for k, v in self.params.items() if k in known}
            if kept != self.params:
                self.params = kept

    @t.observe("index", "method", "params", "target")
    def _on_selection(self, change: dict) -> None:
        if change["name"] == "index" and "target" not in getattr(self, "_property_lock", {}):
            if self.target != -1 and change["old"] != change["new"]:
                self.target = -1  # a new image starts at its top-1 class; that change schedules
                return
        self._schedule()

    # -- scheduling ----------------------------------------------------------------------------
    def _snapshot(self) -> dict:
        return {"index": self.index, "method": self.method, "params": dict(self.params),
                "target": self.target, "request_id": self.request_id}

    def _next_gen(self) -> int:
        with self._lock:
            self._gen += 1
            return self._gen

    def _schedule(self) -> None:
        if not self._ready:
            return
        with self._lock:
            gen = self._next_gen()
            sel = self._snapshot()
            self.busy = True
            self.status = "computing…"
        self._executor.submit(self._run, gen, sel)

    def wait(self, timeout: float | None = 60) -> None:
        """Block until queued computations are done (for scripts and tests)."""
        for _ in range(3):  # a result may enqueue a prefetch
            self._executor.submit(lambda: None).result(timeout)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        super().close()

    # -- model side ----------------------------------------------------------------------------
    def _input(self, index: int) -> np.ndarray:
        if index not in self._inputs:
            x = np.array(self._raw[index], dtype=np.float32, copy=True)[None]
            if self._preprocess is not None:
                x = np.asarray(self._preprocess(x), dtype=np.float32)
            self._inputs[index] = x
        return self._inputs[index]

    def _explainer(self, method: str, params: dict) -> Any:
        from .engine import Explainer

        key = (method, _freeze(params))
        ex = self._explainers.get(key)
        if ex is None:  # built outside the lock: the comm thread never waits for it
            ex = Explainer(self._model, method, preprocess=self._preprocess, **params)
            ex = self._explainers.setdefault(key, ex)
        return ex

    def _validate(self, sel: dict) -> tuple[int, str, dict, int]:
        from .errors import ExplainError
        from .methods import validate_params

        index, method, params, target = sel["index"], sel["method"], sel["params"], sel["target"]
        if not isinstance(index, int) or not 0 <= index < len(self._raw):
            raise ExplainError(f"image index {index!r} is out of range: use 0..{len(self._raw) - 1}")
        if method not in self._specs:
            raise ExplainError(f"unknown method {method!r}: choose one of {list(self._specs)}")
        if not isinstance(params, dict):
            raise ExplainError(f"params must be a dict, got {type(params).__name__}")
        resolved = dict(validate_params(method, dict(params)))
        if not isinstance(target, int) or not -1 <= target < self._n_classes:
            raise ExplainError(f"target class {target!r} is out of range: use 0..{self._n_classes - 1} "
                               "(or -1 for the top prediction)")
        return index, method, resolved, target

    def _store(self, key: tuple, heat: np.ndarray, seconds: float, warm: bool = True) -> dict:
        buf, scale = quantize_heatmap(heat)
        entry = {"heat": heat.astype(np.float32), "bytes": buf, "scale": scale, "seconds": seconds,
                 "warm": warm}
        with self._lock:
            self._results[key] = entry
            self._results.move_to_end(key)
            while len(self._results) > self._cache_size:
                self._results.popitem(last=False)
        return entry

    def _set_probs(self, index: int, out: Any) -> None:
        if index not in self._probs:
            self._probs[index] = np.asarray(out.probabilities, dtype=np.float64).reshape(
                -1, self._n_classes)[0]

    def _compute(self, index: int, method: str, params: dict, target: int) -> tuple[int, dict, bool]:
        """(resolved target, cache entry, cached?)"""
        if target == -1 and index in self._probs:
            target = int(np.argmax(self._probs[index]))
        key = (index, method, _freeze(params), target)
        with self._lock:
            hit = self._results.get(key) if target >= 0 else None
            if hit is not None:
                self._results.move_to_end(key)
        if hit is not None:
            return target, hit, True
        warm = (method, _freeze(params)) in self._explainers  # else this call also traces
        ex = self._explainer(method, params)
        t0 = time.perf_counter()
        out = ex(self._input(index), targets=None if target < 0 else [target])
        seconds = time.perf_counter() - t0
        self._set_probs(index, out)
        target = int(np.asarray(out.targets).reshape(-1)[0])
        heat = np.asarray(out.heatmap(), dtype=np.float32).reshape(out.relevance.shape[1:3])
        entry = self._store((index, method, _freeze(params), target), heat, seconds, warm=warm)
        return target, entry, bool(getattr(out, "cached", False))

    def _predictions(self, index: int) -> list[dict]:
        p = self._probs.get(index)
        if p is None:
            return []
        names = self.class_names
        order = np.argsort(-p)[: max(1, self.top_k)]
        return [{"index": int(i), "name": names[int(i)], "prob": float(p[i])} for i in order]

    def _metrics(self, index: int, heat: np.ndarray) -> dict:
        if self._boxes is None and self._masks is None:
            return {}
        try:
            from . import metrics as M
        except ImportError:  # metrics module not available
            return {}
        H, W = heat.shape
        mask = None
        if self._masks is not None:
            mask = np.asarray(self._masks[index], bool).reshape(H, W)
        if self._boxes is not None:
            b = np.asarray(self._boxes[index]).reshape(-1, 4)
            bm = M.boxes_to_masks(b, (H, W)).any(axis=0)
            mask = bm if mask is None else (mask | bm)
        return {"mass_in_box": float(M.mass_in_box(heat[None], mask[None])[0]),
                "pointing_game": bool(M.pointing_game(heat[None], mask[None])[0])}

    def _send_image(self, index: int) -> None:
        if self.image_meta.get("index") == index:
            return
        disp = to_display_uint8(self._raw[index])
        if index not in self._pngs:
            self._pngs[index] = _png_bytes(disp)
        with self._lock, self.hold_sync():
            self.image = self._pngs[index]
            self.image_meta = {"index": index, "width": int(disp.shape[1]), "height": int(disp.shape[0])}

    # -- the worker ------------------------------------------------------------------------------
    def _run(self, gen: int, sel: dict) -> None:
        if gen != self._gen:
            self.skipped += 1
            return  # coalesced: a newer request is queued
        try:
            index, method, params, target = self._validate(sel)
            if gen == self._gen:
                self._send_image(index)
            target, entry, cached = self._compute(index, method, params, target)
        except Exception as e:  # noqa: BLE001 - every error is shown in the widget
            with self._lock:
                if gen == self._gen:
                    msg = str(e) if _is_user_error(e) else f"{type(e).__name__}: {e}"
                    with self.hold_sync():
                        self.error = msg
                        self.status = "error"
                        self.busy = False
            return
        with self._lock:
            if gen != self._gen:
                self.dropped += 1
                return  # stale: the selection moved on while computing
            heat = entry["heat"]
            secs = entry["seconds"]
            status = (f"{self._specs[method].get('label', method)} · {self.class_names[target]} · "
                      + ("cached" if cached else f"{1000 * secs:.0f} ms"))
            meta = {"index": index, "method": method, "params": params, "target": target,
                    "dtype": "int8", "scale": entry["scale"], "width": int(heat.shape[1]),
                    "height": int(heat.shape[0]), "seconds": secs, "cached": bool(cached),
                    "request_id": sel["request_id"], "generation": gen}
            self._current = {"index": index, "method": method, "params": params,
                             "target": target, "heat": heat}
            try:
                metrics = self._metrics(index, heat)
            except Exception as e:  # noqa: BLE001
                metrics = {"error": str(e)}
            with self.hold_sync():
                self.heatmap = entry["bytes"]
                self.heatmap_meta = meta
                self.predictions = self._predictions(index)
                self.resolved_target = target
                self.metrics = metrics
                self.error = ""
                self.status = status
                self.busy = False
        if self._prefetch:
            self._executor.submit(self._prefetch_topk, gen, index, method, params)

    def _prefetch_topk(self, gen: int, index: int, method: str, params: dict) -> None:
        """Compute the other top-k classes of the current image and method ahead of a click.

        Batched (nested targets: one backward pass for several classes), in chunks sized to
        take about ``prefetch_budget`` seconds each, and abandoned as soon as the user asks for
        something else, so a prefetch never delays a click by more than about one chunk.
        """
        key = (index, method, _freeze(params))
        if gen != self._gen or key in self._prefetched or index not in self._probs:
            return
        order = [int(i) for i in np.argsort(-self._probs[index])[: max(1, self.top_k)]]
        with self._lock:
            todo = [c for c in order if (*key, c) not in self._results]
            # seconds per map of this method, from calls that did not include tracing
            known = [e["seconds"] for k, e in self._results.items()
                     if k[1:3] == key[1:3] and e.get("warm") and e.get("seconds")]
        per_map = min(known) if known else None  # unknown: start with one class and measure
        try:
            ex = self._explainer(method, params)
            x = self._input(index)
            while todo:
                if gen != self._gen:
                    return  # the user moved on: stop, resume next time
                chunk = 1 if per_map is None else int(
                    np.clip(self.prefetch_budget // max(per_map, 1e-3), 1, len(todo)))
                part, todo = todo[:chunk], todo[chunk:]
                t0 = time.perf_counter()
                out = ex(x, targets=[part])
                secs = (time.perf_counter() - t0) / len(part)
                per_map = secs
                heats = np.asarray(out.heatmap(), dtype=np.float32).reshape(
                    len(part), *out.relevance.shape[-3:-1])
                for c, hm in zip(part, heats):
                    self._store((*key, c), hm, secs)
            self._prefetched.add(key)
        except Exception:  # noqa: BLE001 - best effort; a real request reports errors
            return

    # -- Python API --------------------------------------------------------------------------------
    @property
    def explanation(self) -> np.ndarray | None:
        """The current heatmap, float32 (H, W) (channel sum of the relevance), or None."""
        return None if self._current is None else self._current["heat"].copy()

    @property
    def current(self) -> dict | None:
        """What the current map shows: index, method, params, target (a copy)."""
        if self._current is None:
            return None
        return {k: v for k, v in self._current.items() if k != "heat"}

    def overlay_image(self) -> np.ndarray | None:
        """The current map blended over its image with the widget's view settings, uint8 RGB."""
        if self._current is None:
            return None
        return overlay(self._raw[self._current["index"]], self._current["heat"],
                       colormap=self.colormap, opacity=self.opacity,
                       positive_only=self.positive_only)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the current map: ``.npy`` -> the float heatmap, otherwise an image of the overlay."""
        p = Path(path)
        if self._current is None:
            raise ValueError("there is no map yet: wait for the first computation (explorer.wait())")
        if p.suffix.lower() == ".npy":
            np.save(p, self._current["heat"])
        else:
            from PIL import Image

            Image.fromarray(self.overlay_image()).save(p)
        return p

    def compare(self, methods: Sequence[str] | None = None, targets: Sequence[int] | None = None,
                index: int | None = None):
        """A matplotlib figure: rows = methods, columns = classes, for one image.

        Defaults: a few methods of different families and the top-3 classes of the image.
        """
        index = self.index if index is None else int(index)
        grid, methods, targets = self._compare_maps(methods, targets, index)
        return self._compare_figure(index, grid, methods, targets)

    def _compare_maps(self, methods, targets, index):
        from .errors import ExplainError
        from .methods import validate_params

        if methods is None:
            methods = [self.method] + [m for m in _DEFAULT_COMPARE if m != self.method]
            methods = [m for m in methods if m in self._specs][:4]
        methods = list(methods)
        for m in methods:
            if m not in self._specs:
                raise ExplainError(f"unknown method {m!r}: choose from {list(self._specs)}")
        x = self._input(index)
        if targets is None:
            if index not in self._probs:
                m0 = methods[0]
                self._set_probs(index, self._explainer(m0, dict(validate_params(m0, {})))(x))
            targets = [int(i) for i in np.argsort(-self._probs[index])[:3]]
        targets = [int(c) for c in targets]
        for c in targets:
            if not 0 <= c < self._n_classes:
                raise ExplainError(f"target class {c} is out of range: use 0..{self._n_classes - 1}")
        grid = []
        for m in methods:
            params = dict(validate_params(m, dict(self.params) if m == self.method else {}))
            out = self._explainer(m, params)(x, targets=[targets])
            grid.append(np.asarray(out.heatmap(), np.float32).reshape(len(targets), *x.shape[1:3]))
        return np.stack(grid), methods, targets

    def _compare_figure(self, index, grid, methods, targets):
        try:
            from . import viz  # the demo helper's figures, when present
        except ImportError:
            viz = None
        image = to_display_uint8(self._raw[index])
        labels = [self._specs[m].get("label", m) for m in methods]
        cols = [self.class_names[c] for c in targets]
        if viz is not None and hasattr(viz, "plot_grid"):
            try:
                return viz.plot_grid(image, grid, row_labels=labels, col_labels=cols,
                                     cmap=self.colormap)
            except TypeError:
                pass  # another signature: fall back to the local figure
        import matplotlib.pyplot as plt

        R, C = grid.shape[:2]
        fig, axes = plt.subplots(R, C, figsize=(2.2 * C, 2.2 * R), squeeze=False)
        for r in range(R):
            for c in range(C):
                ax = axes[r, c]
                ax.imshow(overlay(image, grid[r, c], colormap=self.colormap, opacity=self.opacity,
                                  positive_only=self.positive_only))
                ax.set_xticks([]), ax.set_yticks([])
                if r == 0:
                    ax.set_title(cols[c], fontsize=9)
                if c == 0:
                    ax.set_ylabel(labels[r], fontsize=9)
        fig.tight_layout()
        return fig

    def _compare_in_widget(self) -> None:
        import matplotlib.pyplot as plt

        try:
            fig = self.compare()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=80)
            plt.close(fig)
            with self._lock:
                self.compare_png = buf.getvalue()
        except Exception as e:  # noqa: BLE001
            with self._lock:
                self.error = f"compare failed: {e}"
                self.send({"type": "compare_error", "message": str(e)})

    # -- static fallback -------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        try:
            img = self.overlay_image()
            if img is not None:
                data = dict(data)
                data["image/png"] = base64.b64encode(_png_bytes(img)).decode("ascii")
        except Exception:  # noqa: BLE001 - the live widget still renders
            pass
        return data, meta


def _is_user_error(e: Exception) -> bool:
    try:
        from .errors import ExplainError
    except ImportError:  # pragma: no cover
        return isinstance(e, ValueError)
    return isinstance(e, (ExplainError, ValueError, TypeError))


def _jsonable(obj: Any) -> Any:
    """Make the registry's specs JSON-safe (tuples -> lists, inf/nan -> None, numpy -> python)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)

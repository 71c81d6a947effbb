"""``RelevanceExplorer``: a thin adapter between the browser (traits), a :class:`~.scheduler.Scheduler`
and the engine (:func:`~sglrp_widgets.explain`, whose caches it reuses) and :mod:`~sglrp_widgets.viz`.

Protocol (traitlets are the only interface between Python and the browser):

browser -> kernel (the selection; one browser message is one request)
    ``index``, ``method``, ``params``, ``target`` (-1 = the top-1 class), ``request_id``;
    custom messages ``{"type": "compare"}``, ``{"type": "cancel", "what": "map" | "compare"}``
browser-only view settings (never computed in the kernel; saved with the next real request)
    ``opacity``, ``colormap``, ``positive_only``, ``norm``, ``layout``, ``show_boxes``
kernel -> browser
    ``image`` (PNG, once per image) + ``image_meta``; ``heatmap`` (float16 bytes, ``value = f * scale``)
    + ``heatmap_meta`` (what the map shows, its colour-scale ends, the legend's words); ``predictions``,
    ``resolved_target``, ``boxes``, ``metrics``, ``code``, ``status``, ``task`` (what is computing),
    ``error`` + ``field_errors`` (a sentence per bad parameter), ``compare`` (the grid, row by row),
    ``method_specs`` (registry + why a method cannot explain this model), ``colormaps`` (matplotlib
    lookup tables), ``comm_count`` (messages received from the browser: a test hook)

The user's latest request always runs next; computing the other top-k classes ahead and the Compare
grid run as small background units that give way to it (see :mod:`sglrp_widgets.scheduler`). A result
for a selection that is no longer current is dropped, never shown.

Example
-------
>>> from sglrp_widgets import RelevanceExplorer                  # doctest: +SKIP
>>> RelevanceExplorer.demo("cnn", n_images=8)                    # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import anywidget
import numpy as np
import traitlets as t

from . import viz
from .imageset import ImageSet, to_display_uint8  # noqa: F401 - to_display_uint8 is part of this module's API
from .methods import get_method
from .scheduler import COMPARE, PREFETCH, Scheduler
from .viz import format_probability, legend_words

_HERE = Path(__file__).parent
_DEFAULT_COMPARE = ("sglrp", "clrp", "lrp", "gradient", "grad_cam")
#: Colormaps offered in the widget's menu; any other matplotlib name can be given from Python.
MENU_COLORMAPS = ("bwr", "seismic", "coolwarm", "RdBu_r", "PiYG", "viridis", "inferno", "magma", "hot", "gray")


def _front_end(name: str) -> Path:
    """The shipped copy in the wheel (``static/``), else the source in ``js/`` (editable installs)."""
    shipped = _HERE / "static" / name
    return shipped if shipped.is_file() else _HERE.parent / "js" / name


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (index 340 is ``"zebra"``)."""
    with open(_HERE / "data" / "imagenet_classes.json", encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# Pure helpers (also used by tests and benchmarks).


def encode_heatmap(heat: np.ndarray) -> tuple[bytes, float]:
    """float16 bytes of ``heat / scale`` (little endian) and ``scale = max|heat|``.

    Half floats keep a relative precision of 1/2048 at every magnitude, so a map shown with a
    percentile scale (far below its maximum) is not reduced to a few grey levels.
    """
    h = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    scale = float(np.max(np.abs(h))) if h.size else 0.0
    q = (h / scale) if scale > 0 else np.zeros_like(h)
    return np.ascontiguousarray(q.astype("<f2")).tobytes(), scale


def decode_heatmap(buf: bytes, meta: dict) -> np.ndarray:
    """Inverse of :func:`encode_heatmap` (what the browser does), shape (height, width)."""
    q = np.frombuffer(bytes(buf), dtype="<f2").astype(np.float32)
    return (q * float(meta["scale"])).reshape(int(meta["height"]), int(meta["width"]))


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _jsonable(obj: Any) -> Any:
    """Make the registry's specs JSON-safe (tuples -> lists, inf/nan -> None, numpy -> python)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _lut_entry(name: str) -> dict:
    return {"lut": viz.colormap_lut(name).tobytes().hex(), "diverging": viz.is_diverging(name)}


#: SGLRP's heads are ``y_t (1 - y_t)`` in size; below this the contract's stabilizer (1e-7) fades its contrast
#: and the map tends to the target's LRP map (``docs/methods.md``, "Heads and post-steps").
FADING_SGLRP_HEAD = 1e-6


def faded_contrast(method: str, params: dict, probs: np.ndarray, target: int) -> str:
    """What the status line adds where SGLRP's contrast fades for ``target`` (a class the model is all but sure
    of, or one it all but rules out), else ``""``."""
    if get_method(method).head != "sglrp" or not params.get("scaling", True):
        return ""
    p = float(probs[target])
    rest = float(np.delete(np.asarray(probs, np.float64), target).sum())       # 1 - p without cancellation
    if p * rest >= FADING_SGLRP_HEAD:
        return ""
    which = "a near-certain class" if p > 0.5 else "a very unlikely class"
    return f"{which}: SGLRP's contrast fades here (the map tends to LRP's); CLRP stays contrastive"


def map_scales(heat: np.ndarray) -> dict:
    """The colour-scale ends the browser may pick from: per norm, [signed, positive part] (viz's definition)."""
    return {norm: [viz.robust_scale(heat, norm), viz.robust_scale(heat, norm, positive_only=True)]
            for norm in viz.NORMS}


def _method_specs(model: Any, methods: Sequence[str] | None) -> list[dict]:
    """The registry's entries offered in the menu, each with ``unavailable``: why it cannot explain ``model``."""
    from . import list_methods
    from .engine import method_support

    specs = _jsonable(list_methods())
    by_name = {s["name"]: s for s in specs}
    if methods is not None:
        unknown = [m for m in methods if m not in by_name]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(by_name)}")
        specs = [by_name[m] for m in methods]
    support = method_support(model)  # once per model, cached by the engine; nothing is traced
    for s in specs:
        s["unavailable"] = support.get(s["name"])
    return specs


def _class_names(n_classes: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return imagenet_class_names() if n_classes == 1000 else [f"class {i}" for i in range(n_classes)]
    names = [str(c) for c in class_names]
    if len(names) != n_classes:
        raise ValueError(f"class_names has {len(names)} names but the model has {n_classes} outputs: "
                         "pass one name per class")
    return names


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
        Methods offered in the menu (default: the whole registry). Methods that cannot explain this
        model are shown disabled, with the reason.
    method : str, default "sglrp"
    params : dict, optional
        Parameters of ``method``.
    top_k : int, default 5
        Predictions listed in the class selector (and computed ahead after each map).
    boxes : per image a box (y0, x0, y1, x1), a list of boxes, or a dict class -> box(es), optional
        Drawn over the image; the metrics (share of relevance in the box, pointing game) use the
        chosen class's own box when the boxes have classes (``box_labels`` or a dict).
    box_labels : per image the class of each box, optional
    masks : per image a boolean (H, W) mask, optional
        A region for the metrics (any class).
    opacity, colormap, positive_only, norm, layout, show_boxes
        Initial view settings (changed in the browser without the kernel). ``colormap``: any matplotlib
        name; ``norm``: ``"percentile"`` (99.5th percentile of the absolute relevance) or ``"max"``; ``layout``:
        ``"overlay"`` or ``"side"`` (image | map | overlay).
    colormaps : list of str, optional
        Colormaps in the menu (default :data:`MENU_COLORMAPS`).
    prefetch : bool, default True
        After each map, compute the other top-k classes of the same method ahead (in the background).
    compute_initial : bool, default True
        Compute the first map before returning (so the static PNG fallback shows it).

    Examples
    --------
    >>> ex = RelevanceExplorer(model, images, preprocess=preprocess)   # doctest: +SKIP
    >>> ex                       # the widget                          # doctest: +SKIP
    >>> ex.explanation.shape     # current map (H, W)                  # doctest: +SKIP
    >>> ex.compare(methods=["sglrp", "gradient"], targets=[340, 386])  # doctest: +SKIP
    """

    _esm = _front_end("widget.js")
    _css = _front_end("widget.css")

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
    norm = t.Enum(viz.NORMS, "percentile").tag(sync=True)
    layout = t.Enum(("overlay", "side"), "overlay").tag(sync=True)
    show_boxes = t.Bool(True).tag(sync=True)
    # kernel -> browser
    n_images = t.Int(0).tag(sync=True)
    top_k = t.Int(5).tag(sync=True)
    method_specs = t.List().tag(sync=True)
    class_names = t.List().tag(sync=True)
    colormaps = t.Dict().tag(sync=True)
    predictions = t.List().tag(sync=True)
    resolved_target = t.Int(-1).tag(sync=True)
    image = t.Bytes(b"").tag(sync=True)
    image_meta = t.Dict().tag(sync=True)
    boxes = t.List().tag(sync=True)
    heatmap = t.Bytes(b"").tag(sync=True)
    heatmap_meta = t.Dict().tag(sync=True)
    metrics = t.Dict().tag(sync=True)
    code = t.Unicode("").tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    task = t.Dict().tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    field_errors = t.Dict().tag(sync=True)
    compare_grid = t.Dict().tag(sync=True)
    comm_count = t.Int(0).tag(sync=True)

    def __init__(self, model: Any, images: Any, *, preprocess: Callable | None = None,
                 class_names: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                 method: str = "sglrp", params: dict | None = None, top_k: int = 5,
                 boxes: Any = None, box_labels: Any = None, masks: Any = None, opacity: float = 0.6,
                 colormap: str = "bwr", positive_only: bool = False, norm: str = "percentile",
                 layout: str = "overlay", show_boxes: bool = True, colormaps: Sequence[str] | None = None,
                 prefetch: bool = True, compute_initial: bool = True, **kwargs: Any) -> None:
        self._model = model
        self._preprocess = preprocess
        self._scheduler = Scheduler(workers=2, name="sglrp-explorer")
        self._lock = self._scheduler.lock
        self._ready = False  # no requests while the constructor sets the initial traits
        self._in_message = False
        self._selection_changed = False
        self._prefetch = bool(prefetch)
        self.prefetch_budget = 1.0  # seconds of compute per prefetch unit
        self._prefetched: set[tuple] = set()  # (index, method, params) whose top-k were computed ahead
        self._probs: dict[int, np.ndarray] = {}
        self._current: dict | None = None  # the last published map
        self._compare_job = None
        self.dropped = 0  # results computed but not shown because the selection moved on

        in_shape = tuple(getattr(model, "input_shape", (None, None, None, None)) or ())
        size = (int(in_shape[1]), int(in_shape[2])) if len(in_shape) == 4 and in_shape[1] and in_shape[2] else None
        self._size = size
        self._images = ImageSet(images, preprocess=preprocess, size=size, boxes=boxes, box_labels=box_labels,
                                masks=masks)
        self._n_classes = int(model.output_shape[-1])

        specs = _method_specs(model, methods)
        self._specs = {s["name"]: s for s in specs}
        if method not in self._specs:
            raise ValueError(f"method {method!r} is not offered; choose from {list(self._specs)}")
        if self._specs[method]["unavailable"]:
            raise ValueError(f"method {method!r} cannot explain this model: {self._specs[method]['unavailable']}")

        names = _class_names(self._n_classes, class_names)
        menu = list(colormaps) if colormaps is not None else list(MENU_COLORMAPS)
        if colormap not in menu:
            menu.append(colormap)
        luts = {name: _lut_entry(name) for name in menu}  # raises ValueError naming an unknown colormap

        super().__init__(
            n_images=len(self._images), method_specs=specs, class_names=names, colormaps=luts,
            top_k=int(top_k), method=method, params=dict(params or {}), opacity=float(opacity),
            colormap=colormap, positive_only=bool(positive_only), norm=norm, layout=layout,
            show_boxes=bool(show_boxes), **kwargs)
        self.on_msg(self._on_custom)
        self._ready = True
        self._request()
        if compute_initial:
            self._scheduler.wait_request(timeout=None)

    @classmethod
    def demo(cls, model: str = "cnn", n_images: int = 8, *, objects: int = 2, seed: int = 0,
             **kwargs: Any) -> "RelevanceExplorer":
        """An explorer of a bundled demo model (a name from ``demo.MODELS``) on synthetic scenes.

        Example
        -------
        >>> RelevanceExplorer.demo("cnn", n_images=4)   # doctest: +SKIP
        """
        from . import demo

        if model not in demo.MODELS:
            raise ValueError(f"unknown demo model {model!r}; bundled: {', '.join(demo.MODELS)}")
        images, labels, boxes = demo.make_scenes(n_images, objects=objects, seed=seed)
        kwargs.setdefault("preprocess", demo.preprocess)
        kwargs.setdefault("class_names", demo.class_names)
        return cls(demo.load_model(model), images, boxes=boxes, box_labels=labels, **kwargs)

    # -- browser messages --------------------------------------------------------------------------
    def _handle_msg(self, msg: dict) -> None:
        """Count every message from the browser, apply it, and make at most one request of it."""
        with self._lock:
            self.comm_count += 1
            self._in_message, self._selection_changed = True, False
            try:
                super()._handle_msg(msg)
            finally:
                self._in_message = False
            if self._selection_changed:
                self._request()

    def set_state(self, sync_data: dict) -> None:
        """Apply a state update from the browser; a value of the wrong type becomes an error."""
        try:
            super().set_state(sync_data)
        except Exception as e:  # noqa: BLE001 - untrusted browser input
            self._selection_changed = False
            self._show_error(f"rejected a value from the browser: {type(e).__name__}: {e}")

    def _on_custom(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "compare":
            self._start_compare()
        elif kind == "cancel":
            if content.get("what") == "compare":
                self._cancel_compare()
            else:
                self.cancel()

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
        if change["name"] == "index" and change["old"] != change["new"]:
            self._cancel_compare(stale=True)
            if self.target != -1 and "target" not in getattr(self, "_property_lock", {}):
                self.target = -1  # a new image starts at its top-1 class; that change makes the request
                return
        if not self._ready:
            return
        if self._in_message:
            self._selection_changed = True  # one request when the whole message is applied
        else:
            self._request()

    @t.validate("colormap")
    def _valid_colormap(self, proposal: dict) -> str:
        name = proposal["value"]
        if name not in self.colormaps:
            try:
                entry = _lut_entry(name)
            except ValueError as e:  # a TraitError rolls the value back (also inside a browser update)
                raise t.TraitError(str(e)) from None
            self.colormaps = {**self.colormaps, name: entry}
        return name

    # -- requests ----------------------------------------------------------------------------------
    def _selection(self) -> dict:
        return {"index": self.index, "method": self.method, "params": dict(self.params),
                "target": self.target, "request_id": self.request_id}

    def _request(self) -> None:
        """Validate the selection now (a sentence per bad field), then schedule its map."""
        sel = self._selection()
        with self._lock:
            problem, fields, resolved = self._check(sel)
            if problem:
                self._scheduler.cancel()
                self._show_error(problem, fields)
                return
            sel["params"] = resolved
            self._scheduler.request(lambda gen: self._serve(gen, sel))
            with self.hold_sync():
                self.error, self.field_errors = "", {}
                self.task = {"kind": "map", "label": self._describe(sel), "request_id": sel["request_id"]}

    def _check(self, sel: dict) -> tuple[str, dict, dict]:
        """(problem or "", field -> sentence, the method's full parameters)."""
        from .engine import Explainer
        from .errors import ExplainError

        index, method, params, target = sel["index"], sel["method"], sel["params"], sel["target"]
        if not isinstance(index, int) or not 0 <= index < len(self._images):
            return f"image index {index!r} is out of range: use 0..{len(self._images) - 1}", {}, {}
        spec = self._specs.get(method)
        if spec is None:
            return f"unknown method {method!r}: choose one of {list(self._specs)}", {}, {}
        if spec["unavailable"]:
            return f"{spec['label']} cannot explain this model: {spec['unavailable']}", {}, {}
        if not isinstance(params, dict):
            return f"params must be a dict, got {type(params).__name__}", {}, {}
        if not isinstance(target, int) or not -1 <= target < self._n_classes:
            return (f"target class {target!r} is out of range: use 0..{self._n_classes - 1} "
                    "(or -1 for the top prediction)"), {}, {}
        fields = {}
        for name, value in params.items():
            try:
                Explainer(self._model, method, cache=None, **{name: value})
            except ExplainError as e:
                fields[name] = str(e)
        if not fields:
            try:
                return "", {}, Explainer(self._model, method, cache=None, **params).params
            except ExplainError as e:  # a rule between parameters (low < high)
                fields = {("high" if "high" in params else next(iter(params), "")): str(e)}
        return "; ".join(fields.values()), fields, {}

    def _describe(self, sel: dict) -> str:
        target = sel["target"]
        what = "the top class" if target < 0 else self.class_names[target]
        return f"{self._specs[sel['method']]['label']} · {what} · image {sel['index'] + 1} / {len(self._images)}"

    def _show_error(self, message: str, fields: dict | None = None) -> None:
        with self._lock, self.hold_sync():
            self.error, self.field_errors = message, dict(fields or {})
            self.metrics, self.task = {}, {}
            self.status = "error"

    def cancel(self) -> None:
        """Stop waiting for the map being computed: it will not be shown (TensorFlow finishes the call)."""
        with self._lock:
            if self._scheduler.cancel():
                with self.hold_sync():
                    self.task = {}
                    self.status = "cancelled"

    # -- the worker side -----------------------------------------------------------------------------
    def _serve(self, gen: int, sel: dict) -> None:
        index, method, params, target = sel["index"], sel["method"], sel["params"], sel["target"]
        try:
            with self._scheduler.publishing(gen) as current:
                if current:
                    self._send_image(index)
            out, heat, seconds = self._explain(index, method, params, [target] if target >= 0 else None)
        except Exception as e:  # noqa: BLE001 - every error is shown in the widget
            with self._scheduler.publishing(gen) as current:
                if current:
                    self._show_error(str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}")
            return
        target = int(np.asarray(out.targets).reshape(-1)[0])
        with self._scheduler.publishing(gen) as current:
            if not current:
                self.dropped += 1
                return
            self._publish(gen, sel, target, heat[0], out, seconds)
            if self._prefetch:
                self._scheduler.background(self._prefetch_units(gen, index, method, params),
                                           priority=PREFETCH, cancel_on_request=True, name="prefetch")

    def _explain(self, index: int, method: str, params: dict, targets: list | None):
        """The engine's maps for one image: (Explanation, heatmaps (K, H, W), seconds)."""
        from .engine import explain

        t0 = time.perf_counter()
        out = explain(self._model, self._images.input(index), method, targets=None if targets is None else [targets],
                      preprocess=self._preprocess, **self._engine_params(params))
        seconds = time.perf_counter() - t0
        self._probs.setdefault(index, np.asarray(out.probabilities, np.float64).reshape(-1, self._n_classes)[0])
        heat = np.asarray(out.heatmap(), np.float32).reshape(-1, *out.relevance.shape[-3:-1])
        return out, heat, seconds

    def _engine_params(self, params: dict) -> dict:
        # One number for low or high next to a per-channel bound (e.g. the other one automatic) trips the
        # engine's cache key (numpy cannot freeze a scalar next to a vector); one number per channel is the
        # same rule.
        channels = self._images.channels
        return {k: [float(v)] * channels if k in ("low", "high") and v is not None and np.ndim(v) == 0 else v
                for k, v in params.items()}

    def _publish(self, gen: int, sel: dict, target: int, heat: np.ndarray, out: Any, seconds: float) -> None:
        index, method, params = sel["index"], sel["method"], sel["params"]
        spec = self._specs[method]
        name = self.class_names[target]
        buf, scale = encode_heatmap(heat)
        prob = float(self._probs[index][target])
        low, high = legend_words(method, spec.get("family", ""), name)
        meta = {"index": index, "method": method, "label": spec.get("label", method), "params": _jsonable(params),
                "target": target, "class_name": name, "probability": prob, "dtype": "float16", "scale": scale,
                "width": int(heat.shape[1]), "height": int(heat.shape[0]), "seconds": seconds,
                "cached": bool(out.cached), "request_id": sel["request_id"], "generation": gen,
                "scales": map_scales(heat), "legend": [low, high]}
        meta["never_negative_why"] = get_method(method).why_never_negative(params)
        self._current = {"index": index, "method": method, "params": params, "target": target, "heat": heat}
        took = "cached" if out.cached else f"{seconds:.2f} s" if seconds >= 1 else f"{1000 * seconds:.0f} ms"
        with self.hold_sync():
            self.heatmap = buf
            self.heatmap_meta = meta
            self.predictions = self._predictions(index)
            self.resolved_target = target
            self.metrics = self._metrics(index, heat, target)
            self.code = self._code(index, method, params, target)
            self.error, self.field_errors, self.task = "", {}, {}
            faded = faded_contrast(method, params, self._probs[index], target)
            self.status = f"{spec.get('label', method)} · {name} · {took}" + (f" · {faded}" if faded else "")

    def _prefetch_units(self, gen: int, index: int, method: str, params: dict) -> Iterator[None]:
        """Compute the other top-k classes of this image and method ahead of a click, a few per unit
        (sized to about ``prefetch_budget`` seconds; one class first to measure)."""
        key = (index, method, json.dumps(_jsonable(params), sort_keys=True))
        if key in self._prefetched or not self._scheduler.is_current(gen):
            return
        order = [int(c) for c in np.argsort(-self._probs[index])[: max(1, self.top_k)]]
        todo = [c for c in order if c != self.resolved_target]
        per_map = None
        while todo:
            n = 1 if per_map is None else int(np.clip(self.prefetch_budget // max(per_map, 1e-3), 1, len(todo)))
            part, todo = todo[:n], todo[n:]
            _, _, seconds = self._explain(index, method, params, part)
            per_map = seconds / len(part)
            yield
        self._prefetched.add(key)

    # -- Compare -----------------------------------------------------------------------------------
    def _compare_plan(self, methods: Sequence[str] | None, targets: Sequence[int] | None,
                      index: int) -> tuple[list[str], list[int]]:
        from .errors import ExplainError

        if methods is None:
            first = self._shown()[0]
            methods = [first] + [m for m in _DEFAULT_COMPARE if m != first]
            methods = [m for m in methods if m in self._specs and not self._specs[m]["unavailable"]][:4]
        methods = list(methods)
        for m in methods:
            if m not in self._specs:
                raise ExplainError(f"unknown method {m!r}: choose from {list(self._specs)}")
            if self._specs[m]["unavailable"]:
                raise ExplainError(f"{m!r} cannot explain this model: {self._specs[m]['unavailable']}")
        if targets is None:
            if index not in self._probs:
                self._explain(index, methods[0], {}, None)
            targets = [int(c) for c in np.argsort(-self._probs[index])[:3]]
        targets = [int(c) for c in targets]
        for c in targets:
            if not 0 <= c < self._n_classes:
                raise ExplainError(f"target class {c} is out of range: use 0..{self._n_classes - 1}")
        return methods, targets

    def _shown(self) -> tuple[str, dict]:
        """The method and parameters of the map on screen (the controls may hold a rejected value)."""
        cur = self._current
        return (cur["method"], dict(cur["params"])) if cur is not None else (self.method, {})

    def _compare_row(self, index: int, method: str, targets: list[int], shown: tuple[str, dict]) -> np.ndarray:
        """Maps (K, H, W) of one method; the method on screen keeps its parameters, the others their defaults."""
        return self._explain(index, method, self._compare_params(method, shown), targets)[1]

    @staticmethod
    def _compare_params(method: str, shown: tuple[str, dict]) -> dict:
        """The parameters a compared method runs with: the method on screen its own, the others their defaults."""
        return shown[1] if method == shown[0] else {}

    def _start_compare(self) -> None:
        """The Compare button: a methods x classes grid of the current image, row by row in the background."""
        self._cancel_compare()
        index, shown = self.index, self._shown()
        disp = self._images.display(index)
        self._set_compare({"state": "running", "index": index, "method": shown[0], "params": _jsonable(shown[1]),
                           "title": f"Compare · image {index + 1} / {len(self._images)}", "rows": [], "done": 0,
                           "total": 0, "image": self._images.png(index), "width": int(disp.shape[1]),
                           "height": int(disp.shape[0])})

        job: list = []  # this comparison's handle, once queued

        def publish(grid: dict) -> None:
            with self._lock:
                if not job[0].cancelled:  # a cancelled or stale grid keeps its state
                    self.compare_grid = grid

        def units() -> Iterator[None]:
            methods, targets = self._compare_plan(None, None, index)
            labels = [self._specs[m].get("label", m) for m in methods]
            publish({
                **self.compare_grid, "total": len(methods),
                "title": f"{', '.join(labels)} × top {len(targets)} classes · image {index + 1} / {len(self._images)}",
                "targets": [{"index": c, "name": self.class_names[c], "probability": float(self._probs[index][c]),
                             "percent": format_probability(self._probs[index][c])} for c in targets]})
            for m, label in zip(methods, labels):
                maps = self._compare_row(index, m, targets, shown)
                rows = list(self.compare_grid.get("rows", []))
                rows.append({"method": m, "label": label, "maps": [encode_heatmap(h)[0] for h in maps],
                             "never_negative_why": get_method(m).why_never_negative(self._compare_params(m, shown)),
                             "scales": [{**map_scales(h), "max_abs": float(np.max(np.abs(h)))} for h in maps]})
                publish({**self.compare_grid, "rows": rows, "done": len(rows),
                         "state": "running" if len(rows) < len(methods) else "done"})
                yield

        def failed(e: BaseException) -> None:
            publish({**self.compare_grid, "state": "error", "error": str(e)})

        job.append(self._scheduler.background(units(), priority=COMPARE, name="compare", on_error=failed))
        self._compare_job = job[0]

    def _set_compare(self, grid: dict) -> None:
        with self._lock:
            self.compare_grid = grid

    def _cancel_compare(self, stale: bool = False) -> None:
        with self._lock:
            job, self._compare_job = self._compare_job, None
            if job is not None and not job.done:
                job.cancel()
                if self.compare_grid.get("state") == "running":
                    self._set_compare({**self.compare_grid, "state": "stale" if stale else "cancelled"})

    # -- per-image helpers ---------------------------------------------------------------------------
    def _send_image(self, index: int) -> None:
        if self.image_meta.get("index") == index:
            return
        disp = self._images.display(index)
        with self._lock, self.hold_sync():
            self.image = self._images.png(index)
            self.image_meta = {"index": index, "width": int(disp.shape[1]), "height": int(disp.shape[0])}
            self.boxes = [{"box": list(b[:4]), "class": b[4], "label": "" if b[4] is None else self.class_names[b[4]]}
                          for b in self._images.boxes(index)]

    def _predictions(self, index: int) -> list[dict]:
        p = self._probs.get(index)
        if p is None:
            return []
        order = np.argsort(-p)[: max(1, self.top_k)]
        return [{"index": int(i), "name": self.class_names[int(i)], "prob": float(p[i]),
                 "percent": format_probability(p[i])} for i in order]

    def _metrics(self, index: int, heat: np.ndarray, target: int) -> dict:
        """Share of the positive relevance in the chosen class's own box (or the mask / any box) and the
        pointing game; "n/a" when the class has no box in this image."""
        from . import metrics as M

        mask, region, note = self._images.region(index, target, self.class_names[target])
        if note:
            return {"region": region, "mass_in_box": None, "pointing_game": None, "note": note}
        if mask is None:
            return {}
        return {"region": region, "mass_in_box": float(M.mass_in_box(heat[None], mask[None])[0]),
                "pointing_game": bool(M.pointing_game(heat[None], mask[None])[0])}

    def _code(self, index: int, method: str, params: dict, target: int) -> str:
        """One line of Python that reproduces the map with the public API (the parameters as the engine got them)."""
        defaults = {p["name"]: p["default"] for p in self._specs[method].get("params", [])}
        args = [repr(method)] + (["preprocess=preprocess"] if self._preprocess is not None else [])
        args += [f"{k}={_jsonable(v)!r}" for k, v in self._engine_params(params).items()
                 if _jsonable(v) != _jsonable(defaults.get(k))]
        return f"Explainer(model, {', '.join(args)})({self._images.code(index)}, targets=[{target}]).heatmap()[0]"

    # -- Python API --------------------------------------------------------------------------------
    def set_images(self, images: Any, *, index: int = 0, target: int = -1, boxes: Any = None,
                   box_labels: Any = None, masks: Any = None) -> None:
        """Show other images of the same model in this explorer (e.g. one picked in a ``DatasetExplorer``):
        the old images' maps are forgotten, and the map of ``index`` for ``target`` (-1: top class) is requested
        with the current method and parameters.

        Example
        -------
        >>> explorer.set_images(more_images, index=2, target=4)   # doctest: +SKIP
        """
        new = ImageSet(images, preprocess=self._preprocess, size=self._size, boxes=boxes, box_labels=box_labels,
                       masks=masks)  # raises before anything changes
        if not 0 <= int(index) < len(new) or not -1 <= int(target) < self._n_classes:
            raise ValueError(f"index {index} / target {target} out of range: use 0..{len(new) - 1} / "
                             f"-1..{self._n_classes - 1}")
        self._cancel_compare()
        with self._lock:
            self._scheduler.cancel()
            self._images, self._current = new, None
            self._probs.clear()
            self._prefetched.clear()
            self._ready = False
            try:
                with self.hold_sync():
                    self.image_meta, self.compare_grid, self.n_images = {}, {}, len(new)
                    self.index, self.target = int(index), int(target)
            finally:
                self._ready = True
        self._request()

    def wait(self, timeout: float | None = 60) -> bool:
        """Block until the requested map and the background work are done (scripts and tests)."""
        return self._scheduler.wait(timeout)

    def close(self) -> None:
        self._scheduler.close()
        super().close()

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
        """The current map over its image as the widget draws it (view settings included), uint8 RGB."""
        if self._current is None:
            return None
        cur = self._current
        rgb = viz.display_overlay(self._images.display(cur["index"]), cur["heat"], cmap=self.colormap,
                                  opacity=self.opacity, positive_only=self._from_zero(cur["method"], cur["params"]),
                                  norm=self.norm)
        return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)

    def figure(self, width: float = 4.0):
        """The current map as a labelled matplotlib figure: class, method, boxes and colour bar."""
        if self._current is None:
            raise ValueError("there is no map yet: wait for the first computation (explorer.wait())")
        cur, meta = self._current, self.heatmap_meta
        target = cur["target"]
        boxes = [] if not self.show_boxes else [
            (*b[:4], "" if b[4] is None else self.class_names[b[4]], b[4] == target)
            for b in self._images.boxes(cur["index"])]
        return viz.explanation_figure(
            self._images.display(cur["index"]), cur["heat"],
            title=f"{self.class_names[target]} · {format_probability(self._probs[cur['index']][target])}",
            subtitle=f"{meta.get('label', cur['method'])} · image {cur['index'] + 1} / {len(self._images)}",
            legend=tuple(meta.get("legend", ("against", "for"))), cmap=self.colormap, opacity=self.opacity,
            positive_only=self._from_zero(cur["method"], cur["params"]), norm=self.norm, boxes=boxes, width=width)

    def _from_zero(self, method: str, params: dict) -> bool:
        """Whether a map of ``method`` with ``params`` is drawn from 0: the positive-only setting, or a map with no
        negative part (its colour bar starts at 0, as the browser's does)."""
        return self.positive_only or bool(get_method(method).why_never_negative(params))

    def save(self, path: str | os.PathLike) -> Path:
        """Save the current map: ``.npy`` -> the float heatmap; another suffix -> the labelled figure."""
        p = Path(path)
        if self._current is None:
            raise ValueError("there is no map yet: wait for the first computation (explorer.wait())")
        if p.suffix.lower() == ".npy":
            np.save(p, self._current["heat"])
        else:
            self.figure().savefig(p)
        return p

    def compare(self, methods: Sequence[str] | None = None, targets: Sequence[int] | None = None,
                index: int | None = None):
        """A matplotlib figure: rows = methods, columns = classes, for one image, in the view's colours (the
        positive-only setting included; Grad-CAM rows from 0, as in the browser's compare grid).

        Defaults: the current method and a few of other families, and the top-3 classes of the image.
        """
        index = self.index if index is None else int(index)
        methods, targets = self._compare_plan(methods, targets, index)
        shown = self._shown()
        grid = np.stack([self._compare_row(index, m, targets, shown) for m in methods])
        p = self._probs[index]
        return viz.plot_grid(self._images.display(index), grid,
                             row_labels=[self._specs[m].get("label", m) for m in methods],
                             col_labels=[f"{self.class_names[c]}\n{format_probability(p[c])}" for c in targets],
                             cmap=self.colormap, norm=self.norm,
                             positive_only=[self._from_zero(m, self._compare_params(m, shown)) for m in methods])

    # -- static fallback -------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        if self._current is not None:
            try:
                data = dict(data)
                data["image/png"] = base64.b64encode(_figure_png(self.figure())).decode("ascii")
            except Exception:  # noqa: BLE001 - the live widget still renders
                pass
        return data, meta


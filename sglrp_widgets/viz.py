"""Static matplotlib figures and PNG export of relevance heatmaps (Agg-safe).

Every function here takes plain numpy arrays, so it works without the engine;
:func:`compare_figure` is the one convenience that calls :func:`sglrp_widgets.engine.explain`.
No function uses ``pyplot``: figures are :class:`matplotlib.figure.Figure` objects that
never pile up in pyplot's figure manager (and are never shown twice). Jupyter renders them
inline once the inline backend is active: run ``%matplotlib inline`` (or import
``matplotlib.pyplot``) once in the notebook. ``fig.savefig(path)`` works anywhere.

Example
-------
>>> import numpy as np
>>> from sglrp_widgets.viz import heatmap_rgba, plot_grid
>>> h = np.array([[-1.0, 0.0, 1.0]])
>>> heatmap_rgba(h)[0, 1].round(2).tolist()   # zero is white in "seismic"
[1.0, 1.0, 1.0, 1.0]
>>> fig = plot_grid(None, np.zeros((2, 3, 8, 8)), ["LRP", "SGLRP"], ["a", "b", "c"])
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .methods import get_method, list_methods

__all__ = [
    "NORMS",
    "colormap_lut",
    "explanation_figure",
    "heatmap_rgba",
    "is_diverging",
    "normalize_heatmap",
    "robust_scale",
    "overlay",
    "plot_grid",
    "save_heatmap_png",
    "compare_figure",
    "display_overlay",
    "image_to_float",
]


#: How a map is scaled to the colour range: ``"percentile"`` ends the scale at the 99.5th percentile of
#: ``|relevance|`` (the brightest 0.5 % of pixels saturate, so a few extreme pixels do not make the rest
#: of the map invisible); ``"max"`` at the largest ``|relevance|``.
NORMS = ("percentile", "max")
PERCENTILE = 99.5

#: Matplotlib colormaps that are centred on zero (their ``_r`` variants too).
_DIVERGING = frozenset({"bwr", "seismic", "coolwarm", "RdBu", "RdBu_r", "RdYlBu", "RdYlGn", "RdGy", "PiYG",
                        "PRGn", "BrBG", "PuOr", "Spectral", "berlin", "managua", "vanimo", "icefire", "vlag"})


def robust_scale(heatmap: Any, norm: str = "percentile", *, positive_only: bool = False) -> float:
    """The value at the ends of the colour scale (``±scale``, or ``scale`` for positive-only maps).

    ``norm="percentile"``: the 99.5th percentile of ``|heatmap|`` (of its positive part with
    ``positive_only``), or the maximum when that percentile is zero (very sparse maps);
    ``norm="max"``: the maximum. 0 for an all-zero map. The widget, its PNG fallback and every figure
    here use this one definition.

    Example
    -------
    >>> h = np.linspace(-1, 1, 1001) ** 3      # a few extreme values
    >>> round(robust_scale(h, "max"), 3), round(robust_scale(h), 3)
    (1.0, 0.988)
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    h = np.asarray(heatmap, dtype=np.float64)
    v = np.maximum(h, 0.0) if positive_only else np.abs(h)
    top = float(v.max()) if v.size else 0.0
    if norm == "max" or top == 0.0:
        return top
    p = float(np.percentile(v, PERCENTILE))
    return p if p > 0.0 else top


def is_diverging(name: str) -> bool:
    """True for colormaps centred on zero (``bwr``, ``seismic``, ``RdBu_r``...): signed maps use the
    centre for zero; sequential ones (``viridis``, ``hot``...) run from low to high."""
    return isinstance(name, str) and (name in _DIVERGING or name.removesuffix("_r") in _DIVERGING)


def colormap_lut(cmap: Any, n: int = 257) -> np.ndarray:
    """``n`` colours of a matplotlib colormap, evenly spaced from 0 to 1, as uint8 (n, 3).

    An odd ``n`` puts 0.5 (zero relevance on a diverging map) exactly on an entry. The widget draws with
    this table, so the browser shows matplotlib's colours exactly.

    Example
    -------
    >>> colormap_lut("bwr")[[0, 128, 256]].tolist()
    [[0, 0, 255], [255, 255, 255], [255, 0, 0]]
    """
    cm = _cmap(cmap)
    rgb = np.asarray(cm(np.linspace(0.0, 1.0, int(n))), dtype=np.float64)[:, :3]
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _cmap(cmap: Any):
    import matplotlib
    import matplotlib.colors

    if isinstance(cmap, str):
        try:
            cm = matplotlib.colormaps[cmap]
        except KeyError:
            raise ValueError(
                f"unknown colormap {cmap!r}; use a matplotlib colormap name such as "
                "'seismic', 'bwr', 'coolwarm' or 'hot'"
            ) from None
        if isinstance(cm, matplotlib.colors.LinearSegmentedColormap):
            # an odd number of entries puts 0.5 (zero relevance) exactly on the centre colour
            cm = cm.resampled(257)
        return cm
    if callable(cmap):
        return cmap
    raise ValueError(f"cmap must be a colormap name or a matplotlib Colormap, got {cmap!r}")


def _as_2d(heatmap: Any, name: str = "heatmap") -> np.ndarray:
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim == 3 and h.shape[-1] == 1:
        h = h[..., 0]
    if h.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (H, W) (sum a (H, W, C) relevance over channels first), "
            f"got shape {h.shape}"
        )
    if not np.all(np.isfinite(h)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return h


def normalize_heatmap(
    heatmap: Any, symmetric: bool = True, vmax: float | None = None, norm: str = "percentile",
    vmin: float | None = None,
) -> np.ndarray:
    """Scale a 2-D heatmap to [0, 1] for a colormap.

    Parameters
    ----------
    heatmap : array_like
        (H, W) relevance map (or (H, W, 1)).
    symmetric : bool
        If True, ``0`` maps to ``0.5`` and ``±vmax`` to ``1``/``0``, with
        ``vmax = robust_scale(heatmap, norm)`` by default: signs keep their meaning. If False,
        the range ``[min, top]`` maps to ``[0, 1]`` (``top``: the 99.5th percentile or the maximum,
        see ``norm``; ``vmax`` replaces it, ``vmin`` replaces ``min``).
    vmax : float, optional
        Fixed scale, e.g. shared by several maps. Values beyond it are clipped.
    norm : {"percentile", "max"}
        How the scale is found when ``vmax`` is not given (:func:`robust_scale`).
    vmin : float, optional
        With ``symmetric=False``: the value at the low end instead of the map's minimum (``0`` draws a map's
        positive part from 0 up, as a colour bar that starts at 0 says). Values below it are clipped.

    Returns
    -------
    numpy.ndarray
        float64 (H, W) in [0, 1]. An all-zero map gives 0.5 (symmetric) or 0.

    Example
    -------
    >>> normalize_heatmap([[-2.0, 0.0, 1.0]], norm="max").tolist()
    [[0.0, 0.5, 0.75]]
    >>> normalize_heatmap([[0.5, 1.0, 2.0]], symmetric=False, norm="max", vmin=0.0).tolist()
    [[0.25, 0.5, 1.0]]
    """
    h = _as_2d(heatmap)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if vmax is not None:
        vmax = float(vmax)
        if not np.isfinite(vmax) or vmax <= 0:
            raise ValueError(f"vmax must be a positive finite number, got {vmax!r}")
    if vmin is not None and not np.isfinite(float(vmin)):
        raise ValueError(f"vmin must be a finite number, got {vmin!r}")
    if vmin is not None and vmax is not None and not symmetric and float(vmin) >= vmax:
        raise ValueError(f"vmin ({vmin!r}) must be below vmax ({vmax!r})")
    if symmetric:
        scale = robust_scale(h, norm) if vmax is None else vmax
        if scale == 0.0:
            return np.full(h.shape, 0.5)
        return np.clip(0.5 + 0.5 * h / scale, 0.0, 1.0)
    lo = float(vmin) if vmin is not None else float(h.min()) if h.size else 0.0
    if vmax is not None:
        hi = vmax
    elif not h.size:
        hi = 0.0
    else:
        hi = float(np.percentile(h, PERCENTILE)) if norm == "percentile" else float(h.max())
        hi = hi if hi > lo else float(h.max())
    if hi <= lo:
        return np.zeros(h.shape)
    return np.clip((h - lo) / (hi - lo), 0.0, 1.0)


def heatmap_rgba(
    heatmap_2d: Any,
    cmap: Any = "seismic",
    symmetric: bool = True,
    vmax: float | None = None,
    norm: str = "percentile",
    vmin: float | None = None,
) -> np.ndarray:
    """Colour a 2-D heatmap.

    Parameters
    ----------
    heatmap_2d : array_like
        (H, W) relevance map, e.g. ``Explanation.heatmap()[i]``.
    cmap : str or Colormap
        Matplotlib colormap; the default ``"seismic"`` shows negative relevance in blue,
        zero in white and positive relevance in red.
    symmetric : bool
        Centre the colormap on zero (see :func:`normalize_heatmap`).
    vmax : float, optional
        Fixed scale instead of the map's own (see ``norm``).
    norm : {"percentile", "max"}
        The map's own scale: its 99.5th percentile of ``|value|`` or its maximum (:func:`robust_scale`).
    vmin : float, optional
        Without ``symmetric``: the value at the colormap's low end (see :func:`normalize_heatmap`).

    Returns
    -------
    numpy.ndarray
        float32 (H, W, 4) RGBA in [0, 1].

    Example
    -------
    >>> rgba = heatmap_rgba([[-1.0, 0.0, 1.0]])
    >>> (rgba[0, 0] * 10).round().tolist(), (rgba[0, 2] * 10).round().tolist()  # dark blue, dark red
    ([0.0, 0.0, 3.0, 10.0], [5.0, 0.0, 0.0, 10.0])
    """
    cm = _cmap(cmap)
    return np.asarray(cm(normalize_heatmap(heatmap_2d, symmetric, vmax, norm, vmin)), dtype=np.float32)


def image_to_float(image: Any) -> np.ndarray:
    """Bring a displayable image to float RGB in [0, 1], shape (H, W, 3).

    uint8 (or any integer) images are divided by 255. Float images already in [0, 1]
    are kept; other float images (e.g. 0..255 floats or a model's preprocessed input)
    are min-max scaled. Grayscale (H, W) or (H, W, 1) is repeated to 3 channels.

    Example
    -------
    >>> image_to_float(np.full((1, 1, 3), 255, np.uint8)).tolist()
    [[[1.0, 1.0, 1.0]]]
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {img.shape}")
    if img.shape[-1] == 4:
        img = img[..., :3]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if np.issubdtype(img.dtype, np.integer) or img.dtype == bool:
        out = img.astype(np.float64) / (1.0 if img.dtype == bool else 255.0)
        return np.clip(out, 0.0, 1.0)
    out = img.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError("image contains non-finite values (NaN or inf)")
    lo, hi = (float(out.min()), float(out.max())) if out.size else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        return out
    if hi > lo:
        return (out - lo) / (hi - lo)
    return np.zeros_like(out)


def overlay(
    image: Any,
    heatmap: Any,
    alpha: float = 0.5,
    cmap: Any = "seismic",
    symmetric: bool = True,
    vmax: float | None = None,
    grayscale: bool = True,
    norm: str = "percentile",
    fade: bool = False,
    vmin: float | None = None,
) -> np.ndarray:
    """Blend a coloured heatmap over an image.

    ``out = (1 - a) * base + a * rgb(heatmap)``, where ``base`` is the image (as grayscale when
    ``grayscale=True``, so the colours of the map stay readable) and ``a = alpha``, or with
    ``fade=True`` ``a = alpha * sqrt(|v|)`` (``v`` the map scaled to [-1, 1]): pixels without relevance
    show the image, moderate relevance stays visible. ``fade=True, grayscale=False`` is what
    :class:`~sglrp_widgets.RelevanceExplorer` draws.

    Parameters
    ----------
    image : array_like
        (H, W, 3), (H, W, 1) or (H, W) image; see :func:`image_to_float`.
    heatmap : array_like
        (H, W) relevance map of the same height and width.
    alpha : float
        Opacity of the heatmap in [0, 1].
    cmap, symmetric, vmax, norm, vmin
        As in :func:`heatmap_rgba`.
    grayscale : bool
        Show the image in gray underneath.
    fade : bool
        Weight the colour by the relevance's magnitude (see above).

    Returns
    -------
    numpy.ndarray
        float32 (H, W, 3) RGB in [0, 1].

    Example
    -------
    >>> img = np.zeros((2, 2, 3), np.uint8)
    >>> overlay(img, np.zeros((2, 2)), alpha=1.0)[0, 0].tolist()  # white = zero relevance
    [1.0, 1.0, 1.0]
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    base = image_to_float(image)
    h = _as_2d(heatmap)
    if h.shape != base.shape[:2]:
        raise ValueError(
            f"heatmap shape {h.shape} does not match the image's height and width {base.shape[:2]}"
        )
    if grayscale:
        g = base @ np.array([0.299, 0.587, 0.114])
        base = np.repeat(g[..., None], 3, axis=-1)
    t = normalize_heatmap(h, symmetric, vmax, norm, vmin)
    rgb = np.asarray(_cmap(cmap)(t), dtype=np.float64)[..., :3]
    a = alpha * np.sqrt(np.abs(2.0 * t - 1.0) if symmetric else t)[..., None] if fade else alpha
    return ((1.0 - a) * base + a * rgb).astype(np.float32)


def _zero_placement(cmap: Any, positive_only: bool, symmetric: bool = True) -> dict:
    """Where 0 sits on the colormap (``symmetric`` and ``vmin`` for :func:`normalize_heatmap`): at a diverging
    colormap's centre, and for signed maps; at a sequential one's low end for a map's positive part, whose colour
    bar starts at 0 (as the widget draws it)."""
    from_zero = positive_only and not is_diverging(cmap)
    return {"symmetric": symmetric and not from_zero, "vmin": 0.0 if from_zero else None}


def display_overlay(
    image: Any,
    heatmap: Any,
    cmap: str = "bwr",
    opacity: float = 0.6,
    positive_only: bool = False,
    norm: str = "percentile",
) -> np.ndarray:
    """What :class:`~sglrp_widgets.RelevanceExplorer` draws: the map over the image in colour.

    Diverging colormaps put zero at their centre and fade with ``|relevance|`` (``fade=True`` in
    :func:`overlay`); sequential ones blend with a constant ``opacity``. ``positive_only`` keeps the
    positive part (scaled by its own :func:`robust_scale`), from 0 at a sequential colormap's low end (also
    where the map has no zeros, as Grad-CAM++'s often has not). Returns float32 (H, W, 3) in [0, 1].

    Example
    -------
    >>> display_overlay(np.zeros((1, 2, 3), np.uint8), [[0.0, 1.0]], opacity=1.0).round(2).tolist()
    [[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]
    """
    h = _as_2d(heatmap)
    if positive_only:
        h = np.maximum(h, 0.0)
    diverging = is_diverging(cmap)
    return overlay(image, h, alpha=float(np.clip(opacity, 0.0, 1.0)), cmap=cmap, grayscale=False, norm=norm,
                   fade=diverging, **_zero_placement(cmap, positive_only))


#: Methods whose sign says how the class score changes with the pixel (not a decomposition of it).
_SENSITIVITY_METHODS = frozenset({"gradient", "guided_backprop", "deconvnet", "smoothgrad"})


def format_probability(p: float) -> str:
    """Always a percentage: ``97.3 %``, ``0.2 %``, ``0.06 %``, ``< 0.01 %``."""
    pct = 100.0 * float(p)
    if pct >= 1.0:
        return f"{pct:.1f} %"
    if pct >= 0.01:
        return f"{pct:.2g} %"
    return "< 0.01 %"


def legend_words(method: str, family: str, class_name: str, quoted: bool = True) -> tuple[str, str]:
    """What the low and the high end of the colour scale mean for ``class_name`` (in quotes unless ``quoted`` is
    false: ``"its class"``)."""
    c = f"“{class_name}”" if quoted else class_name
    if family == "Contrastive LRP":
        return "speaks for the other classes", f"speaks for {c} over the others"
    if method in _SENSITIVITY_METHODS:
        return f"brighter pixel lowers {c}", f"brighter pixel raises {c}"
    if family == "CAM":
        return "no evidence", f"evidence for {c}"
    return f"speaks against {c}", f"speaks for {c}"


def colour_key(method: str, params: dict | None, high: str, low: str, class_name: str = "its class") -> str:
    """What the two ends of a method's colours mean, for pictures without a colour bar: ``"red = speaks for its
    class, blue = speaks against its class"`` (``high``/``low`` name the ends' colours); the low end is left out
    where the maps have no negative part (Grad-CAM, ``relu``). Raises :class:`ExplainError` for an unknown method.
    """
    spec = get_method(method)
    low_words, high_words = legend_words(method, spec.family, class_name, quoted=False)
    key = f"{high} = {high_words}"
    return key if spec.why_never_negative(params) else f"{key}, {low} = {low_words}"


def explanation_figure(
    image: Any,
    heatmap: Any,
    *,
    title: str = "",
    subtitle: str = "",
    legend: tuple[str, str] = ("against", "for"),
    cmap: str = "bwr",
    opacity: float = 0.6,
    positive_only: bool = False,
    norm: str = "percentile",
    boxes: Sequence[tuple] = (),
    width: float = 4.0,
):
    """One map, labelled so that it explains itself: title, the overlay, its boxes and a colour bar.

    Parameters
    ----------
    image, heatmap : array_like
        The image (see :func:`image_to_float`) and its (H, W) map.
    title, subtitle : str
        E.g. the class with its probability, and the method.
    legend : (str, str)
        What the low and the high end of the colour bar mean (e.g. ``("against cat", "for cat")``).
    cmap, opacity, positive_only, norm
        As in :func:`display_overlay`.
    boxes : sequence of (y0, x0, y1, x1, label, highlighted)
        Boxes in image pixels; a highlighted box is drawn solid, the others dashed.
    width : float
        Figure width in inches (100 dpi).

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> fig = explanation_figure(np.zeros((8, 8, 3)), np.eye(8), title="cat 97 %", subtitle="SGLRP",
    ...                          legend=("against cat", "for cat"), boxes=[(1, 1, 5, 5, "cat", True)])
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    h = _as_2d(heatmap)
    pix = display_overlay(image, h, cmap=cmap, opacity=opacity, positive_only=positive_only, norm=norm)
    H, W = h.shape
    top, bar, foot = (0.55 if subtitle else 0.35) if title or subtitle else 0.1, 0.22, 0.75
    img_h = width * H / W
    fig = Figure(figsize=(width, top + img_h + bar + foot), dpi=100)
    total = top + img_h + bar + foot
    ax = fig.add_axes((0.0, (bar + foot) / total, 1.0, img_h / total))
    ax.imshow(pix, interpolation="nearest" if max(H, W) < 256 else "antialiased")
    ax.set_axis_off()
    for y0, x0, y1, x1, label, highlighted in boxes:
        for colour, lw in (("black", 3.0), ("white", 1.4)):
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                                   linewidth=lw if highlighted else lw * 0.7,
                                   linestyle="-" if highlighted else (0, (3, 2))))
        if label:
            ax.text(x0 - 0.5, y0 - 0.5, f" {label} ", fontsize=8, color="white", va="bottom", ha="left",
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0})
    if title:
        fig.text(0.5, 1 - 0.06 / total, title, ha="center", va="top", fontsize=11, fontweight="bold")
    if subtitle:
        fig.text(0.5, 1 - 0.3 / total, subtitle, ha="center", va="top", fontsize=9)
    _draw_ramp(fig.add_axes((0.08, foot / total, 0.84, bar / total)), cmap, positive_only)
    scale = robust_scale(h, norm, positive_only=positive_only)
    # the bar runs from 0 (positive only) or -scale at its left end to +scale at its right end
    numbers = ((0.08, "0"),) if positive_only else ((0.08, f"−{scale:.2g}"), (0.5, "0"))
    numbers += ((0.92, f"+{scale:.2g}"),)
    for x, text in numbers:
        fig.text(x, (foot - 0.05) / total, text, ha={0.08: "left", 0.5: "center"}.get(x, "right"), va="top",
                 fontsize=8)
    # what the ends mean, each under its end and wrapped within half the width
    chars = max(12, int(width * 100 * 0.36 / 5.5))
    words = ("" if positive_only else legend[0]), legend[1]
    for x, ha, text in ((0.08, "left", words[0]), (0.92, "right", words[1])):
        fig.text(x, (foot - 0.22) / total, textwrap.fill(text, chars), ha=ha, va="top", fontsize=8,
                 multialignment=ha)
    how = "maximum" if norm == "max" else "99.5th percentile of |relevance|"
    fig.text(0.5, 0.04 / total, f"colour scale ends at the {how}{' (positive part)' if positive_only else ''}",
             ha="center", va="bottom", fontsize=7, color="#555555")
    return fig


def save_heatmap_png(
    path: str | os.PathLike,
    heatmap: Any,
    image: Any = None,
    cmap: Any = "seismic",
    symmetric: bool = True,
    alpha: float = 0.5,
    vmax: float | None = None,
    scale: int = 1,
    norm: str = "percentile",
    positive_only: bool = False,
) -> Path:
    """Write a heatmap (optionally over its image) as a PNG at the map's own resolution.

    Parameters
    ----------
    path : str or PathLike
        Output file; parent folders must exist.
    heatmap : array_like
        (H, W) relevance map.
    image : array_like, optional
        Image to blend under the map (see :func:`overlay`); without it the PNG is the
        coloured map alone (RGB).
    cmap, symmetric, alpha, vmax, norm
        As in :func:`overlay`.
    scale : int
        Integer upscaling (nearest neighbour) of the written image.
    positive_only : bool
        Keep the positive part, from 0 up, as :func:`display_overlay` does (a sequential colormap's whole range).

    Returns
    -------
    pathlib.Path
        The path written.

    Example
    -------
    >>> save_heatmap_png("/tmp/h.png", np.eye(8) - 0.5)  # doctest: +SKIP
    PosixPath('/tmp/h.png')
    """
    from PIL import Image

    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h = np.maximum(_as_2d(heatmap), 0.0) if positive_only else heatmap
    colours = dict(cmap=cmap, vmax=vmax, norm=norm, **_zero_placement(cmap, positive_only, symmetric))
    if image is None:
        rgb = heatmap_rgba(h, **colours)[..., :3]
    else:
        rgb = overlay(image, h, alpha=alpha, **colours)
    u8 = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    if scale > 1:
        u8 = np.repeat(np.repeat(u8, scale, axis=0), scale, axis=1)
    p = Path(path)
    Image.fromarray(u8, mode="RGB").save(p, format="PNG")
    return p


def plot_grid(
    images: Any,
    maps: Any,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cmap: Any = "seismic",
    symmetric: bool = True,
    shared_scale: bool = False,
    alpha: float | None = None,
    cell_size: float = 1.8,
    title: str | None = None,
    image_label: str = "input",
    norm: str = "percentile",
    positive_only: bool | Sequence[bool] = False,
    legend: tuple[str, str] | None = ("against the column's class", "for the column's class"),
):
    """A rows × columns grid of heatmaps, e.g. methods × classes (as in the SGLRP paper), with its colour key.

    Parameters
    ----------
    images : array_like or None
        Input shown in a leading column: one image (H, W, 3) (shown in the first row), one
        image per row (R, H, W, 3), or None for no image column.
    maps : array_like
        (R, C, H, W) heatmaps: row ``r`` (e.g. a method), column ``c`` (e.g. a target class).
    row_labels, col_labels : sequence of str, optional
        R and C labels.
    cmap, symmetric
        As in :func:`heatmap_rgba`.
    shared_scale : bool
        Use one colour scale (found over all maps as drawn, see ``norm`` and ``positive_only``) for every
        map instead of normalizing each map on its own. Per-map scaling (default) is what the
        literature shows; a shared scale compares magnitudes.
    norm : {"percentile", "max"}
        How a scale is found (:func:`robust_scale`).
    alpha : float, optional
        If given (and images are), draw each map over its row's image with this opacity.
    cell_size : float
        Inches per cell.
    title : str, optional
        Figure title.
    image_label : str
        Title of the image column.
    positive_only : bool or sequence of bool
        For all rows or per row: draw only the maps' positive part, from 0 up, as :func:`display_overlay`
        does (a diverging colormap's upper half, a sequential one's whole range).
        :meth:`RelevanceExplorer.compare <sglrp_widgets.RelevanceExplorer.compare>` passes its positive-only
        setting, and ``True`` for methods whose maps are never negative.
    legend : (str, str) or None
        What the low and the high end of the colours mean, written under the colour bar that runs along the
        bottom of the grid (with how the maps were scaled); ``None`` draws no key. When every row is positive
        only, the bar starts at 0 and the low end's words are left out.

    Returns
    -------
    matplotlib.figure.Figure
        Its first axes are the grid's, row by row; the colour bar's come last.

    Example
    -------
    >>> m = np.random.default_rng(0).normal(size=(3, 2, 16, 16))
    >>> fig = plot_grid(np.zeros((16, 16, 3)), m, ["LRP", "CLRP", "SGLRP"], ["cat", "dog"])
    >>> len(fig.axes)                       # 3 x (image + 2 maps), then the colour bar
    10
    """
    from matplotlib.figure import Figure

    m = np.asarray(maps, dtype=np.float64)
    if m.ndim == 5 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 4:
        raise ValueError(f"maps must have shape (rows, cols, H, W), got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("maps contain non-finite values (NaN or inf)")
    rows, cols, height, width = m.shape
    positive = [bool(p) for p in positive_only] if np.ndim(positive_only) else [bool(positive_only)] * rows
    if len(positive) != rows:
        raise ValueError(f"got {len(positive)} positive_only flags for {rows} rows of maps")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"got {len(row_labels)} row_labels for {rows} rows of maps")
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"got {len(col_labels)} col_labels for {cols} columns of maps")
    if legend is not None and (isinstance(legend, str) or len(legend) != 2
                               or not all(isinstance(w, str) for w in legend)):
        raise ValueError(f"legend must be two strings (what the low and the high end mean) or None, got {legend!r}")
    row_images: list[np.ndarray | None] = [None] * rows  # shown in the image column
    bases: list[np.ndarray | None] = [None] * rows  # under the overlays
    if images is not None:
        im = np.asarray(images)
        if im.ndim == 4:
            if im.shape[0] != rows:
                raise ValueError(f"got {im.shape[0]} images for {rows} rows of maps")
            row_images = [image_to_float(x) for x in im]
            bases = list(row_images)
        else:
            one = image_to_float(im)
            row_images = [one] + [None] * (rows - 1)
            bases = [one] * rows
        for x in bases:
            if x is not None and x.shape[:2] != (height, width):
                raise ValueError(
                    f"image height/width {x.shape[:2]} do not match the maps' {(height, width)}"
                )
    drawn = np.stack([np.maximum(m[r], 0.0) if positive[r] else m[r] for r in range(rows)])
    vmax = None
    if shared_scale:                      # over what is drawn: a positive-only row's negative part is not
        top = robust_scale(drawn, norm) if symmetric else float(np.max(drawn))
        vmax = top if top > 0 else None
    lead = 1 if images is not None else 0
    ncols = cols + lead
    width = cell_size * ncols + (0.6 if row_labels else 0)
    key = None if legend is None else \
        _GridKey.make(cell_size * cols * 0.9, width, legend, all(positive), vmax, norm)
    below = key.inches if key else 0.0                            # inches under the grid for the colour key
    height = cell_size * rows + 0.5 + below
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, ncols, squeeze=False)
    for r in range(rows):
        if lead:
            ax = axes[r, 0]
            if row_images[r] is not None:
                ax.imshow(row_images[r], interpolation="nearest")
                if r == 0:
                    ax.set_title(image_label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(row_images[r] is not None)
        colours = dict(cmap=cmap, vmax=vmax, norm=norm, **_zero_placement(cmap, positive[r], symmetric))
        for c in range(cols):
            ax = axes[r, lead + c]
            base = bases[r]
            h = drawn[r, c]
            if alpha is not None and base is not None:
                pix = overlay(base, h, alpha=alpha, **colours)
            else:
                pix = heatmap_rgba(h, **colours)
            ax.imshow(pix, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and col_labels is not None:
                ax.set_title(str(col_labels[c]), fontsize=9)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(str(row_labels[r]), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, below / height, 1, 1))
    if key:
        key.draw(fig, axes[-1, lead], axes[-1, -1], cmap)
    return fig


def _draw_ramp(cax, cmap: Any, positive_only: bool) -> None:
    """A colour bar's ramp in ``cax``: the colormap from its low end (its middle, for a diverging map drawn from
    0) to its high end."""
    lut = colormap_lut(cmap)
    lo = 0.5 if positive_only and is_diverging(cmap) else 0.0
    cax.imshow(lut[int(round(lo * (len(lut) - 1))):][None], aspect="auto", extent=(0, 1, 0, 1),
               interpolation="nearest")
    cax.set_xticks([]), cax.set_yticks([])


@dataclass(frozen=True)
class _GridKey:
    """The colour key under a grid of maps, laid out for a bar ``width`` inches wide: what the bar's ends mean
    (wrapped within half the bar each), the numbers under it and how the maps were scaled."""

    low: str
    high: str
    numbers: tuple[str, str, str]
    footer: str
    positive_only: bool                                         # the bar starts at 0

    @classmethod
    def make(cls, width: float, fig_width: float, legend: tuple[str, str], positive_only: bool,
             scale: float | None, norm: str) -> "_GridKey":
        chars = max(10, int(width * 72 / 2 / 4.0))            # half the bar, fontsize 8
        low = "" if positive_only else textwrap.fill(legend[0], chars)
        high = textwrap.fill(legend[1], chars)
        top = f"+{scale:.2g}" if scale else ""
        numbers = ("0", "", top) if positive_only else (f"−{scale:.2g}" if scale else "", "0", top)
        how = "maximum" if norm == "max" else "99.5th percentile of |relevance|"
        scaled = "one scale for all maps" if scale else "each map on its own scale"
        footer = textwrap.fill(f"{scaled}, ending at the {how}", max(20, int(fig_width * 72 / 3.9)))
        return cls(low, high, numbers, footer, positive_only)

    @property
    def number_line(self) -> bool:
        """Whether the numbers take a line of their own (a shared scale's, or a bar from 0); else the 0 in the
        middle goes on the words' line."""
        return self.positive_only or any(n and n != "0" for n in self.numbers)

    @property
    def inches(self) -> float:
        """The height the key needs under the grid."""
        words = max(self.low.count("\n"), self.high.count("\n")) + 1
        return 0.32 + 0.15 * self.number_line + 0.15 * words + 0.13 * (self.footer.count("\n") + 1)

    def draw(self, fig, first, last, cmap: Any) -> None:
        """Draw the key below the grid, the bar spanning the map columns (axes ``first`` to ``last``)."""
        height = fig.get_figheight()
        left, right = first.get_position().x0, last.get_position().x1
        y = self.inches - 0.06                                  # inches from the bottom, going down
        _draw_ramp(fig.add_axes((left, (y - 0.18) / height, right - left, 0.18 / height)), cmap, self.positive_only)
        y -= 0.2
        for x, ha, text in zip((left, (left + right) / 2, right), ("left", "center", "right"), self.numbers):
            fig.text(x, y / height, text, ha=ha, va="top", fontsize=8)
        y -= 0.15 * self.number_line
        for x, ha, text in ((left, "left", self.low), (right, "right", self.high)):
            fig.text(x, y / height, text, ha=ha, va="top", fontsize=8, multialignment=ha)
        fig.text(0.5, 0.04 / height, self.footer, ha="center", va="bottom", fontsize=7, color="#555555",
                 multialignment="center")


def compare_figure(
    model: Any,
    image: Any,
    methods: Sequence[str | tuple[str, dict]],
    targets: Sequence[int],
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    class_names: Sequence[str] | None = None,
    raw_image: Any = None,
    **grid_kwargs: Any,
):
    """Explain one image with several methods and targets; return a methods × classes figure.

    Parameters
    ----------
    model : keras.Model
        The classifier.
    image : array_like
        One image (H, W, C) or (1, H, W, C) **in the model's input space** (already
        preprocessed), as for :class:`sglrp_widgets.Explainer`.
    methods : sequence
        Method names (``"sglrp"``, ``"clrp"``, ``"lrp"``, ``"grad_cam"``, ...), or
        ``(name, params)`` pairs to pass parameters.
    targets : sequence of int
        Class indices, one column each.
    preprocess : callable, optional
        The raw→input preprocessing; only used for the bounded Deep Taylor bounds
        (``preprocess(0)``, ``preprocess(255)``), as in the engine.
    class_names : sequence of str, optional
        Names for the column titles.
    raw_image : array_like, optional
        The raw image to show (otherwise ``image`` is min-max scaled for display).
    **grid_kwargs
        Passed to :func:`plot_grid` (``alpha``, ``shared_scale``, ``cmap``, ``title``...).

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> from sglrp_widgets import demo
    >>> imgs, labels, _ = demo.make_scenes(1, objects=2)
    >>> fig = compare_figure(demo.load_model(), demo.preprocess(imgs[0]),
    ...                      ["lrp", "clrp", "sglrp"], labels[0].tolist(),
    ...                      preprocess=demo.preprocess, class_names=demo.class_names,
    ...                      raw_image=imgs[0])  # doctest: +SKIP
    """
    from .engine import explain

    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"image must be one image (H, W, C) or (1, H, W, C), got shape {np.asarray(image).shape}")
    tlist = [int(t) for t in np.asarray(targets).ravel()]
    if not tlist:
        raise ValueError("targets must name at least one class")
    if len(methods) == 0:
        raise ValueError("methods must name at least one method")
    labels = {d["name"]: d.get("label", d["name"]) for d in list_methods()}
    rows, row_labels, probs = [], [], None
    for entry in methods:
        if isinstance(entry, str):
            name, params = entry, {}
        else:
            name, params = entry[0], dict(entry[1])
        out = explain(model, x, method=name, targets=[tlist], preprocess=preprocess, **params)
        rows.append(np.asarray(out.heatmap())[0])  # (K, H, W)
        row_labels.append(labels.get(name, name))
        probs = np.asarray(out.probabilities)[0]
    col_labels = []
    for t in tlist:
        name = class_names[t] if class_names is not None and 0 <= t < len(class_names) else f"class {t}"
        col_labels.append(f"{name}\np={probs[t]:.2f}" if probs is not None else name)
    shown = raw_image if raw_image is not None else x[0]
    return plot_grid(shown, np.stack(rows), row_labels, col_labels, **grid_kwargs)

"""Quantitative evaluation of relevance maps (numpy only).

This module scores explanations without knowing how they were made: it takes
heatmaps as plain arrays and, for the perturbation metrics, the model as a plain
callable. It never imports TensorFlow, Keras, the engine or the widget, so it can
score maps from any library.

Conventions shared by all functions
-----------------------------------
* Everything is batched. ``heatmaps`` has shape ``(N, H, W)`` or ``(N, H, W, C)``;
  a 4-D map is first summed over its channel axis, ``h[n, y, x] = sum_c R[n, y, x, c]``
  (the same display heatmap the engine's ``heatmap()`` returns).
* A target region is given either as boxes, an integer array ``(N, 4)`` of
  ``(y0, x0, y1, x1)`` with ``y1``/``x1`` exclusive (``mask[y0:y1, x0:x1]``),
  or as masks, a boolean (or 0/1) array ``(N, H, W)``.
* Invalid inputs raise :class:`ValueError` whose message names the offending value.

Functions
---------
Localisation: :func:`pointing_game`, :func:`mass_in_box`, :func:`relevance_rank_accuracy`.
Faithfulness (perturbation): :func:`deletion_curve`, :func:`insertion_curve`,
:func:`area_under_curve`, :func:`aopc`.
Helpers: :func:`boxes_to_masks`, :func:`spearman`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence, Union

import numpy as np

__all__ = [
    "boxes_to_masks",
    "pointing_game",
    "mass_in_box",
    "relevance_rank_accuracy",
    "PerturbationCurve",
    "deletion_curve",
    "insertion_curve",
    "area_under_curve",
    "aopc",
    "spearman",
]

ArrayLike = Union[np.ndarray, Sequence]
ModelFn = Callable[[np.ndarray], np.ndarray]
Baseline = Union[str, float, int, np.ndarray]

_BASELINES = ("zero", "mean", "blur")


# ----------------------------------------------------------------------------
# input helpers
# ----------------------------------------------------------------------------
def _as_maps(heatmaps: ArrayLike, name: str = "heatmaps") -> np.ndarray:
    """Return float64 ``(N, H, W)`` maps (channel sum of a 4-D input)."""
    h = np.asarray(heatmaps)
    if h.dtype == object or not (np.issubdtype(h.dtype, np.number) or h.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {h.dtype}")
    if h.ndim == 4:
        h = h.sum(axis=-1, dtype=np.float64)
    elif h.ndim == 3:
        h = h.astype(np.float64)
    else:
        raise ValueError(
            f"{name} must have shape (N, H, W) or (N, H, W, C), got shape {h.shape}; "
            "add a leading batch axis for a single map (e.g. h[None])"
        )
    if h.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {h.shape})")
    if not np.all(np.isfinite(h)):
        bad = int(np.argwhere(~np.isfinite(h))[0][0])
        raise ValueError(f"{name} contains NaN or inf values (first in map {bad})")
    return h


def boxes_to_masks(boxes: ArrayLike, shape: Sequence[int]) -> np.ndarray:
    """Rasterise boxes into boolean masks.

    A box ``(y0, x0, y1, x1)`` covers the pixels ``y0 <= y < y1`` and
    ``x0 <= x < x1`` (``y1``/``x1`` exclusive, like a numpy slice)::

        mask[..., y, x] = (y0 <= y < y1) and (x0 <= x < x1)

    Parameters
    ----------
    boxes : array_like of int, shape (..., 4)
        Boxes ``(y0, x0, y1, x1)``; any leading shape, e.g. ``(N, 4)`` or
        ``(N, K, 4)``.
    shape : (H, W)
        Height and width of the image the boxes live in.

    Returns
    -------
    numpy.ndarray of bool, shape (..., H, W)

    Raises
    ------
    ValueError
        If a box is empty (``y1 <= y0`` or ``x1 <= x0``), reaches outside the
        image, or is not integer-valued.

    Examples
    --------
    >>> boxes_to_masks([[1, 0, 3, 2]], (4, 4)).astype(int)[0]
    array([[0, 0, 0, 0],
           [1, 1, 0, 0],
           [1, 1, 0, 0],
           [0, 0, 0, 0]])
    """
    if len(tuple(shape)) != 2:
        raise ValueError(f"shape must be (H, W), got {tuple(shape)!r}")
    H, W = (int(s) for s in shape)
    if H <= 0 or W <= 0:
        raise ValueError(f"shape must be positive, got {(H, W)}")
    b = np.asarray(boxes)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4) as (y0, x0, y1, x1), got shape {b.shape}")
    if not (np.issubdtype(b.dtype, np.number)) or b.dtype == bool:
        raise ValueError(f"boxes must be integers, got dtype {b.dtype}")
    bad = ~np.all(np.isfinite(b) & (b == np.round(b)), axis=-1).reshape(-1)
    if np.any(bad):
        raise ValueError(
            f"boxes must be integer pixel coordinates, got {b.reshape(-1, 4)[bad][0].tolist()}"
        )
    b = b.astype(np.int64)
    flat = b.reshape(-1, 4)
    for i, (y0, x0, y1, x1) in enumerate(flat):
        idx = np.unravel_index(i, b.shape[:-1]) if b.ndim > 1 else ()
        where = f"box {tuple(int(j) for j in idx)} " if idx != () else "box "
        if y1 <= y0 or x1 <= x0:
            raise ValueError(
                f"{where}(y0, x0, y1, x1)={(int(y0), int(x0), int(y1), int(x1))} is empty: "
                "need y0 < y1 and x0 < x1 (y1/x1 are exclusive)"
            )
        if y0 < 0 or x0 < 0 or y1 > H or x1 > W:
            raise ValueError(
                f"{where}(y0, x0, y1, x1)={(int(y0), int(x0), int(y1), int(x1))} lies outside "
                f"the {H}x{W} image: need 0 <= y0 < y1 <= {H} and 0 <= x0 < x1 <= {W}"
            )
    yy = np.arange(H)[:, None]
    xx = np.arange(W)[None, :]
    y0, x0, y1, x1 = (flat[:, i, None, None] for i in range(4))
    masks = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
    return masks.reshape(b.shape[:-1] + (H, W))


def _as_masks(boxes_or_masks: ArrayLike, n: int, hw: tuple[int, int]) -> np.ndarray:
    """Return boolean ``(N, H, W)`` masks from ``(N, 4)`` boxes or ``(N, H, W)`` masks."""
    m = np.asarray(boxes_or_masks)
    if m.ndim == 2:
        if m.shape != (n, 4):
            raise ValueError(
                f"boxes must have shape (N, 4) = ({n}, 4) to match the heatmaps, got {m.shape}"
            )
        return boxes_to_masks(m, hw)
    if m.ndim == 3:
        if m.shape != (n,) + tuple(hw):
            raise ValueError(
                f"masks must have shape (N, H, W) = {(n,) + tuple(hw)} to match the heatmaps, "
                f"got {m.shape}"
            )
        if m.dtype != bool:
            if not np.issubdtype(m.dtype, np.number) or not np.all((m == 0) | (m == 1)):
                raise ValueError("masks must be boolean or contain only 0 and 1")
            m = m.astype(bool)
        return m
    raise ValueError(
        "boxes_or_masks must be boxes of shape (N, 4) as (y0, x0, y1, x1) or masks of shape "
        f"(N, H, W), got shape {m.shape}"
    )


# ----------------------------------------------------------------------------
# localisation metrics
# ----------------------------------------------------------------------------
def pointing_game(
    heatmaps: ArrayLike, boxes_or_masks: ArrayLike, tolerance: float = 0
) -> np.ndarray:
    """Pointing game (Zhang et al., 2016): does the map's maximum hit the object?

    With ``h`` the (channel-summed) map and ``p* = argmax_p h[p]``::

        hit = min_{q in mask} ||p* - q||_2 <= tolerance

    so ``tolerance=0`` means the maximum pixel itself lies inside the box/mask.
    Ties for the maximum are broken by numpy's ``argmax`` (first pixel in
    row-major order). A constant map (including an all-zero map) points nowhere
    and counts as a miss, as does an empty mask.

    Parameters
    ----------
    heatmaps : array_like, shape (N, H, W) or (N, H, W, C)
        Relevance maps; 4-D maps are summed over channels first.
    boxes_or_masks : array_like, shape (N, 4) or (N, H, W)
        Target boxes ``(y0, x0, y1, x1)`` (exclusive ends) or boolean masks.
    tolerance : float, default 0
        Allowed Euclidean distance in pixels between the maximum and the
        nearest target pixel (Zhang et al. use 15 px at 224 px resolution).

    Returns
    -------
    numpy.ndarray of bool, shape (N,)
        ``True`` where the map hits. ``hits.mean()`` is the pointing accuracy.

    Examples
    --------
    >>> h = np.zeros((1, 4, 4)); h[0, 1, 1] = 1.0
    >>> pointing_game(h, [[0, 0, 2, 2]])
    array([ True])
    >>> pointing_game(h, [[0, 2, 2, 4]]), pointing_game(h, [[0, 2, 2, 4]], tolerance=1)
    (array([False]), array([ True]))
    """
    h = _as_maps(heatmaps)
    n, H, W = h.shape
    masks = _as_masks(boxes_or_masks, n, (H, W))
    tol = float(tolerance)
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    flat = h.reshape(n, -1)
    arg = flat.argmax(axis=1)
    constant = flat.max(axis=1) == flat.min(axis=1)
    py, px = np.unravel_index(arg, (H, W))
    hits = masks[np.arange(n), py, px].copy()
    if tol > 0:
        for i in np.flatnonzero(~hits):
            qy, qx = np.nonzero(masks[i])
            if qy.size:
                d2 = (qy - py[i]) ** 2 + (qx - px[i]) ** 2
                hits[i] = d2.min() <= tol * tol
    hits &= ~constant
    return hits


def mass_in_box(heatmaps: ArrayLike, boxes_or_masks: ArrayLike) -> np.ndarray:
    """Share of the positive relevance that falls inside the box/mask.

    The "relevance mass accuracy" of Arras et al. (2022), computed on the
    positive part of the (channel-summed) map ``h``::

        mass = sum_{p in mask} max(h[p], 0) / sum_p max(h[p], 0)

    A map without positive relevance (``sum_p max(h[p], 0) == 0``) scores **0**
    (it puts no positive evidence on the object). The value lies in [0, 1].
    Note that channels are summed *before* the positive part is taken.

    Parameters
    ----------
    heatmaps : array_like, shape (N, H, W) or (N, H, W, C)
    boxes_or_masks : array_like, shape (N, 4) or (N, H, W)
        Boxes ``(y0, x0, y1, x1)`` (exclusive ends) or boolean masks.

    Returns
    -------
    numpy.ndarray of float64, shape (N,)

    Examples
    --------
    >>> h = np.zeros((1, 4, 4)); h[0, 0, 0] = 3.0; h[0, 3, 3] = 1.0; h[0, 0, 1] = -5.0
    >>> mass_in_box(h, [[0, 0, 2, 2]])
    array([0.75])
    """
    h = _as_maps(heatmaps)
    n, H, W = h.shape
    masks = _as_masks(boxes_or_masks, n, (H, W))
    pos = np.maximum(h, 0.0)
    total = pos.reshape(n, -1).sum(axis=1)
    inside = (pos * masks).reshape(n, -1).sum(axis=1)
    out = np.zeros(n, dtype=np.float64)
    ok = total > 0
    out[ok] = inside[ok] / total[ok]
    return np.clip(out, 0.0, 1.0)


def relevance_rank_accuracy(heatmaps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """Relevance rank accuracy (Arras et al., 2022, CLEVR-XAI).

    With ``K = |mask|`` the number of mask pixels and ``P_K`` the ``K`` pixels
    of highest (signed, channel-summed) relevance::

        rank_accuracy = |P_K intersect mask| / K

    Ties at the K-th value are resolved by their expected value under random
    tie-breaking: if ``g`` pixels are strictly above the K-th largest value
    ``v`` and ``e`` pixels equal ``v`` (``e_in`` of them inside the mask), the
    tied pixels contribute ``e_in * (K - g) / e``. A constant map therefore
    scores ``K / (H W)``, the chance level, instead of an arbitrary value.

    Parameters
    ----------
    heatmaps : array_like, shape (N, H, W) or (N, H, W, C)
    masks : array_like, shape (N, H, W) or boxes (N, 4)
        Ground-truth masks (boxes ``(y0, x0, y1, x1)`` are rasterised).

    Returns
    -------
    numpy.ndarray of float64, shape (N,), values in [0, 1]

    Raises
    ------
    ValueError
        If a mask is empty (``K = 0``; the score is undefined).

    Examples
    --------
    >>> h = np.array([[[4., 3.], [2., 1.]]])
    >>> relevance_rank_accuracy(h, np.array([[[True, False], [True, False]]]))
    array([0.5])
    """
    h = _as_maps(heatmaps)
    n, H, W = h.shape
    m = _as_masks(masks, n, (H, W))
    flat = h.reshape(n, -1)
    fm = m.reshape(n, -1)
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        k = int(fm[i].sum())
        if k == 0:
            raise ValueError(f"mask {i} is empty (K = 0): relevance rank accuracy is undefined")
        v = np.partition(flat[i], flat[i].size - k)[flat[i].size - k]  # K-th largest
        above = flat[i] > v
        equal = flat[i] == v
        g = int(above.sum())
        e = int(equal.sum())
        hits = float((above & fm[i]).sum()) + float((equal & fm[i]).sum()) * (k - g) / e
        out[i] = hits / k
    return out


# ----------------------------------------------------------------------------
# perturbation metrics
# ----------------------------------------------------------------------------
class PerturbationCurve(NamedTuple):
    """Result of :func:`deletion_curve` / :func:`insertion_curve`.

    Attributes
    ----------
    fractions : numpy.ndarray, shape (steps + 1,)
        Fraction of pixels perturbed at each step, ``n_k / (H W)``, from 0 to 1.
    scores : numpy.ndarray, shape (N, steps + 1)
        ``model_fn`` score of the target class at each step.
    """

    fractions: np.ndarray
    scores: np.ndarray


def _gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over H and W of (N, H, W, C) images, edge-replicated."""
    if sigma <= 0:
        return images.copy()
    radius = max(1, int(np.ceil(3.0 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    out = images.astype(np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        acc = np.zeros_like(out)
        size = out.shape[axis]
        for j, w in enumerate(k):
            acc += w * np.take(padded, np.arange(j, j + size), axis=axis)
        out = acc
    return out


def _make_baseline(
    images: np.ndarray, baseline: Baseline, blur_sigma: float, seed: int | None = None,
    noise_range: tuple[float, float] | None = None, allow_uniform: bool = False,
) -> np.ndarray:
    """The image every perturbed pixel is copied from, shape (N, H, W, C)."""
    if isinstance(baseline, str):
        if baseline == "zero":
            return np.zeros_like(images)
        if baseline == "mean":
            return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).copy()
        if baseline == "blur":
            if not np.isfinite(blur_sigma) or blur_sigma < 0:
                raise ValueError(f"blur_sigma must be a finite number >= 0, got {blur_sigma!r}")
            return _gaussian_blur(images, float(blur_sigma))
        if baseline == "uniform" and allow_uniform:
            lo, hi = (images.min(), images.max()) if noise_range is None else noise_range
            lo, hi = float(lo), float(hi)
            if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
                raise ValueError(f"noise_range must be (low, high) with low <= high, got {(lo, hi)}")
            rng = np.random.default_rng(seed)
            return rng.uniform(lo, hi, size=images.shape)
        known = ", ".join(repr(b) for b in (("uniform",) if allow_uniform else ()) + _BASELINES)
        raise ValueError(f"unknown baseline {baseline!r}: use one of {known}, a number or an array")
    b = np.asarray(baseline, dtype=np.float64)
    if b.ndim == 0:
        if not np.isfinite(b):
            raise ValueError(f"baseline must be finite, got {baseline!r}")
        return np.full(images.shape, float(b))
    try:
        out = np.broadcast_to(b, images.shape).astype(np.float64)
    except ValueError:
        raise ValueError(
            f"baseline array of shape {b.shape} does not broadcast to the images' shape {images.shape}"
        ) from None
    if not np.all(np.isfinite(out)):
        raise ValueError("baseline array contains NaN or inf values")
    return out


def _check_images_maps_targets(images, heatmaps, targets):
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got shape {x.shape}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or inf values")
    h = _as_maps(heatmaps)
    if h.shape != x.shape[:3]:
        raise ValueError(
            f"heatmaps of shape {np.shape(heatmaps)} do not match images of shape {x.shape}: "
            "need (N, H, W) or (N, H, W, C) with the same N, H, W"
        )
    t = np.asarray(targets)
    if t.ndim == 0:
        t = np.full(x.shape[0], t)
    if t.shape != (x.shape[0],):
        raise ValueError(f"targets must be an int or shape (N,) = ({x.shape[0]},), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        if np.issubdtype(t.dtype, np.number) and np.all(t == np.round(t)):
            t = t.astype(np.int64)
        else:
            raise ValueError(f"targets must be integer class indices, got {t.tolist()!r}")
    if np.any(t < 0):
        raise ValueError(f"targets must be >= 0, got {t[t < 0][0]}")
    return x, h, t.astype(np.int64)


def _check_steps(steps, limit: int, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"{name} must be a positive int, got {steps!r}")
    if steps < 1 or steps > limit:
        raise ValueError(f"{name} must be between 1 and {limit}, got {steps}")
    return int(steps)


def _order_ranks(scores: np.ndarray) -> np.ndarray:
    """rank[n, j] = position of unit j in descending order (0 = most relevant; stable)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :].repeat(scores.shape[0], 0), axis=1)
    return ranks


def _evaluate(
    model_fn: ModelFn,
    start: np.ndarray,
    end: np.ndarray,
    ranks: np.ndarray,
    counts: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    dtype,
) -> np.ndarray:
    """scores[n, k] = model_fn(where(ranks[n] < counts[k], end[n], start[n]))[target[n]].

    ``ranks`` has shape (N, H, W): the perturbation order of each pixel. The
    ``N * len(counts)`` perturbed images are built and scored ``batch_size`` at a
    time, so memory stays ``O(batch_size * H * W * C)``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n, S = start.shape[0], counts.shape[0]
    pairs = [(i, k) for i in range(n) for k in range(S)]
    out = np.empty((n, S), dtype=np.float64)
    for c0 in range(0, len(pairs), batch_size):
        chunk = pairs[c0:c0 + batch_size]
        ii = np.array([p[0] for p in chunk])
        kk = np.array([p[1] for p in chunk])
        sel = (ranks[ii] < counts[kk][:, None, None])[..., None]
        batch = np.where(sel, end[ii], start[ii]).astype(dtype)
        scores = np.asarray(model_fn(batch))
        if scores.ndim != 2 or scores.shape[0] != len(chunk):
            raise ValueError(
                f"model_fn must return scores of shape (batch, classes) = ({len(chunk)}, C), "
                f"got shape {scores.shape}"
            )
        if np.any(targets[ii] >= scores.shape[1]):
            bad = int(targets[ii][targets[ii] >= scores.shape[1]][0])
            raise ValueError(f"target {bad} is out of range for a model with {scores.shape[1]} classes")
        out[ii, kk] = scores[np.arange(len(chunk)), targets[ii]]
    return out


def _pixel_curve(model_fn, images, heatmaps, targets, steps, baseline, blur_sigma, batch_size,
                 dtype, insertion: bool) -> PerturbationCurve:
    x, h, t = _check_images_maps_targets(images, heatmaps, targets)
    n, H, W, _ = x.shape
    P = H * W
    steps = _check_steps(steps, P)
    base = _make_baseline(x, baseline, blur_sigma)
    ranks = _order_ranks(h.reshape(n, P)).reshape(n, H, W)
    counts = np.rint(np.arange(steps + 1) * P / steps).astype(np.int64)
    start, end = (base, x) if insertion else (x, base)
    scores = _evaluate(model_fn, start, end, ranks, counts, t, batch_size, dtype)
    return PerturbationCurve(counts / P, scores)


def deletion_curve(
    model_fn: ModelFn,
    images: ArrayLike,
    heatmaps: ArrayLike,
    targets: Union[int, ArrayLike],
    steps: int = 64,
    baseline: Baseline = "zero",
    blur_sigma: float = 5.0,
    batch_size: int = 64,
    dtype=np.float32,
) -> PerturbationCurve:
    """Deletion curve (Petsiuk et al., 2018): remove the most relevant pixels first.

    Pixels ``p`` are ordered by decreasing (channel-summed) relevance ``h[p]``
    (ties keep row-major order). At step ``k = 0 .. steps`` the first
    ``n_k = round(k H W / steps)`` pixels are replaced, in every channel, by the
    baseline ``b``::

        x^k[p] = b[p]  if rank(p) < n_k  else  x[p]
        curve[n, k] = model_fn(x^k)[n, t_n]

    A faithful map makes the score drop fast, i.e. a *low* area under the curve
    (:func:`area_under_curve`).

    Parameters
    ----------
    model_fn : callable
        Maps a float batch ``(B, H, W, C)`` (model input space) to scores
        ``(B, classes)``. Whether the scores are probabilities (``softmax``, as
        in Petsiuk et al.) or logits is the caller's choice; the curve is in
        those units. Called with at most ``batch_size`` images at a time.
    images : array_like, shape (N, H, W, C)
        Images in model input space.
    heatmaps : array_like, shape (N, H, W) or (N, H, W, C)
        Relevance maps for ``images``.
    targets : int or array_like of int, shape (N,)
        Class whose score is tracked, per image.
    steps : int, default 64
        Number of perturbation steps (``1 <= steps <= H W``); the curve has
        ``steps + 1`` points, the first on the unperturbed image.
    baseline : {"zero", "mean", "blur"} or float or array, default "zero"
        Value deleted pixels take: ``"zero"`` zeros, ``"mean"`` the image's
        per-channel mean, ``"blur"`` a Gaussian blur of the image (standard
        deviation ``blur_sigma`` px, edges replicated), a number a constant, an
        array anything broadcastable to ``(N, H, W, C)``.
    blur_sigma : float, default 5.0
        Standard deviation of the ``"blur"`` baseline.
    batch_size : int, default 64
        Perturbed images per ``model_fn`` call (bounds memory).
    dtype : numpy dtype, default float32
        Dtype of the batches passed to ``model_fn``.

    Returns
    -------
    PerturbationCurve
        ``(fractions, scores)`` with ``fractions`` shape ``(steps + 1,)``
        (``n_k / (H W)``, 0 to 1) and ``scores`` shape ``(N, steps + 1)``.

    Examples
    --------
    A linear "model" ``f(x) = sum_p w_p x_p`` on an all-ones 2x2 image with the
    weights themselves as the map:

    >>> w = np.array([4., 3., 2., 1.])
    >>> fn = lambda x: x.reshape(len(x), -1) @ w[:, None]
    >>> fr, curve = deletion_curve(fn, np.ones((1, 2, 2, 1)), w.reshape(1, 2, 2), 0, steps=4)
    >>> fr.tolist(), curve.tolist()
    ([0.0, 0.25, 0.5, 0.75, 1.0], [[10.0, 6.0, 3.0, 1.0, 0.0]])
    """
    return _pixel_curve(model_fn, images, heatmaps, targets, steps, baseline, blur_sigma,
                        batch_size, dtype, insertion=False)


def insertion_curve(
    model_fn: ModelFn,
    images: ArrayLike,
    heatmaps: ArrayLike,
    targets: Union[int, ArrayLike],
    steps: int = 64,
    baseline: Baseline = "blur",
    blur_sigma: float = 5.0,
    batch_size: int = 64,
    dtype=np.float32,
) -> PerturbationCurve:
    """Insertion curve (Petsiuk et al., 2018): restore the most relevant pixels first.

    Starts from the baseline ``b`` and copies the original pixels back in order
    of decreasing relevance (same order and ``n_k`` as :func:`deletion_curve`)::

        x^k[p] = x[p]  if rank(p) < n_k  else  b[p]
        curve[n, k] = model_fn(x^k)[n, t_n]

    A faithful map makes the score rise fast, i.e. a *high* area under the
    curve. The default baseline is ``"blur"`` (as in Petsiuk et al.); all
    parameters are those of :func:`deletion_curve`.

    Returns
    -------
    PerturbationCurve
        ``(fractions, scores)``, shapes ``(steps + 1,)`` and ``(N, steps + 1)``.

    Examples
    --------
    >>> w = np.array([4., 3., 2., 1.])
    >>> fn = lambda x: x.reshape(len(x), -1) @ w[:, None]
    >>> insertion_curve(fn, np.ones((1, 2, 2, 1)), w.reshape(1, 2, 2), 0, steps=4,
    ...                 baseline="zero").scores.tolist()
    [[0.0, 4.0, 7.0, 9.0, 10.0]]
    """
    return _pixel_curve(model_fn, images, heatmaps, targets, steps, baseline, blur_sigma,
                        batch_size, dtype, insertion=True)


def area_under_curve(curve: ArrayLike, fractions: ArrayLike | None = None) -> np.ndarray:
    """Area under a perturbation curve by the trapezoid rule on [0, 1].

    With ``S + 1`` points at ``f_0 .. f_S`` (default: equally spaced, ``f_k = k / S``)::

        AUC = sum_{k=1}^{S} (f_k - f_{k-1}) (c_{k-1} + c_k) / 2

    Parameters
    ----------
    curve : array_like, shape (S + 1,) or (N, S + 1)
        Scores, e.g. ``deletion_curve(...).scores``.
    fractions : array_like, shape (S + 1,), optional
        x-positions (increasing, within [0, 1]); e.g. ``deletion_curve(...).fractions``.

    Returns
    -------
    float or numpy.ndarray of shape (N,)

    Examples
    --------
    >>> area_under_curve([[10., 6., 3., 1., 0.]])
    array([3.75])
    """
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim not in (1, 2) or c.shape[-1] < 2:
        raise ValueError(f"curve must have shape (S+1,) or (N, S+1) with S >= 1, got {c.shape}")
    S1 = c.shape[-1]
    if fractions is None:
        f = np.linspace(0.0, 1.0, S1)
    else:
        f = np.asarray(fractions, dtype=np.float64)
        if f.shape != (S1,):
            raise ValueError(f"fractions must have shape ({S1},) to match the curve, got {f.shape}")
        if np.any(np.diff(f) < 0) or f[0] < 0 or f[-1] > 1:
            raise ValueError("fractions must be increasing and lie within [0, 1]")
    area = (np.diff(f) * (c[..., 1:] + c[..., :-1]) / 2.0).sum(axis=-1)
    return float(area) if c.ndim == 1 else area


def aopc(
    model_fn: ModelFn,
    images: ArrayLike,
    heatmaps: ArrayLike,
    targets: Union[int, ArrayLike],
    region: int = 8,
    steps: int | None = None,
    baseline: Baseline = "uniform",
    seed: int | None = 0,
    noise_range: tuple[float, float] | None = None,
    blur_sigma: float = 5.0,
    batch_size: int = 64,
    dtype=np.float32,
    return_curve: bool = False,
):
    """Area over the MoRF perturbation curve (AOPC; Samek et al., 2017).

    The image is cut into non-overlapping ``region x region`` patches (the last
    row/column of patches may be smaller). Each patch ``r`` gets the summed
    relevance ``h_r = sum_{p in r} h[p]``; patches are perturbed in decreasing
    order of ``h_r`` ("most relevant first", ties in row-major order). At step
    ``k`` the first ``k`` patches are replaced by the baseline ``b``::

        x^0 = x,   x^k = x^{k-1} with patch r_k set to b
        AOPC = 1 / (L + 1) * sum_{k=0}^{L} ( f(x^0) - f(x^k) )

    with ``f(x) = model_fn(x)[t]`` and ``L = steps``. Higher is better. The
    default baseline, as in Samek et al., is uniform noise: each image's noise
    is drawn once from ``U(low, high)`` with ``numpy.random.default_rng(seed)``
    (``noise_range=(low, high)``, default the batch's minimum and maximum), so
    a fixed ``seed`` gives reproducible numbers.

    Parameters
    ----------
    model_fn : callable
        ``(B, H, W, C)`` float batch -> ``(B, classes)`` scores (probabilities
        or logits, the caller's choice; AOPC is in those units).
    images : array_like, shape (N, H, W, C)
    heatmaps : array_like, shape (N, H, W) or (N, H, W, C)
    targets : int or array_like of int, shape (N,)
    region : int, default 8
        Patch side length in pixels.
    steps : int, optional
        Number of perturbation steps ``L`` (``1 <= L <=`` number of patches);
        default: all patches.
    baseline : {"uniform", "zero", "mean", "blur"} or float or array, default "uniform"
        What a perturbed patch becomes (see :func:`deletion_curve`).
    seed : int or None, default 0
        Seed of the uniform noise.
    noise_range : (float, float), optional
        Range of the uniform noise.
    blur_sigma, batch_size, dtype
        As in :func:`deletion_curve`.
    return_curve : bool, default False
        Also return the curve ``f(x^k)``, shape ``(N, L + 1)``.

    Returns
    -------
    numpy.ndarray of shape (N,), or (aopc, curve) if ``return_curve``

    Examples
    --------
    Four 1x1 "patches" with a linear model ``f(x) = sum_p w_p x_p``:

    >>> w = np.array([4., 3., 2., 1.])
    >>> fn = lambda x: x.reshape(len(x), -1) @ w[:, None]
    >>> aopc(fn, np.ones((1, 2, 2, 1)), w.reshape(1, 2, 2), 0, region=1, baseline="zero")
    array([6.])
    """
    x, h, t = _check_images_maps_targets(images, heatmaps, targets)
    n, H, W, _ = x.shape
    if isinstance(region, bool) or not isinstance(region, (int, np.integer)) or region < 1:
        raise ValueError(f"region must be a positive int (patch side in pixels), got {region!r}")
    region = int(region)
    gh, gw = -(-H // region), -(-W // region)
    R = gh * gw
    L = R if steps is None else _check_steps(steps, R, "steps (number of regions perturbed)")
    base = _make_baseline(x, baseline, blur_sigma, seed=seed, noise_range=noise_range,
                          allow_uniform=True)
    # region id of each pixel and summed relevance per region
    rid = (np.arange(H)[:, None] // region) * gw + (np.arange(W)[None, :] // region)
    rsum = np.zeros((n, R))
    for r in range(R):
        rsum[:, r] = h[:, rid == r].sum(axis=1)
    rrank = _order_ranks(rsum)                       # (N, R)
    ranks = rrank[:, rid]                            # (N, H, W): rank of each pixel's region
    counts = np.arange(L + 1, dtype=np.int64)
    curve = _evaluate(model_fn, x, base, ranks, counts, t, batch_size, dtype)
    val = (curve[:, :1] - curve).mean(axis=1)
    return (val, curve) if return_curve else val


# ----------------------------------------------------------------------------
# rank correlation
# ----------------------------------------------------------------------------
def _average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties get the mean of their ranks."""
    order = np.argsort(v, kind="stable")
    s = v[order]
    # start index of each group of equal values
    new = np.concatenate(([True], s[1:] != s[:-1]))
    starts = np.flatnonzero(new)
    ends = np.concatenate((starts[1:], [s.size]))
    avg = (starts + ends + 1) / 2.0                  # mean of ranks start+1 .. end
    group = np.cumsum(new) - 1
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = avg[group]
    return ranks


def spearman(a: ArrayLike, b: ArrayLike) -> Union[float, np.ndarray]:
    """Spearman rank correlation, ties given their average rank.

    ``rho`` is the Pearson correlation of the ranks ``r(a)``, ``r(b)``::

        rho = sum_i (r(a)_i - mean r(a)) (r(b)_i - mean r(b))
              / sqrt( sum_i (r(a)_i - mean r(a))^2 * sum_i (r(b)_i - mean r(b))^2 )

    which equals ``1 - 6 sum d_i^2 / (n (n^2 - 1))`` when there are no ties.
    If either input is constant the correlation is undefined and ``nan`` is
    returned (as in scipy).

    Parameters
    ----------
    a, b : array_like, same shape
        1-D inputs give one correlation. Inputs with 2 or more dimensions are
        batched: one correlation per index of the first axis, over all the
        other axes flattened (e.g. two stacks of heatmaps ``(N, H, W)``).

    Returns
    -------
    float (1-D inputs) or numpy.ndarray of shape (N,)

    Examples
    --------
    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40])
    1.0
    >>> round(spearman([1, 2, 3, 4], [1, 2, 2, 3]), 6)   # ties: sqrt(0.9)
    0.948683
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape, got {x.shape} and {y.shape}")
    if x.ndim == 0:
        raise ValueError("spearman needs arrays, got scalars")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("spearman inputs contain NaN or inf values")
    single = x.ndim == 1
    x2 = x.reshape(1, -1) if single else x.reshape(x.shape[0], -1)
    y2 = y.reshape(1, -1) if single else y.reshape(y.shape[0], -1)
    if x2.shape[1] < 2:
        raise ValueError(f"spearman needs at least 2 values per sample, got {x2.shape[1]}")
    out = np.empty(x2.shape[0], dtype=np.float64)
    for i in range(x2.shape[0]):
        rx = _average_ranks(x2[i])
        ry = _average_ranks(y2[i])
        rx -= rx.mean()
        ry -= ry.mean()
        den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
        out[i] = (rx * ry).sum() / den if den > 0 else np.nan
    out = np.clip(out, -1.0, 1.0)
    return float(out[0]) if single else out

"""The images an explorer shows: loading, display pixels, model inputs, and their labelled regions.

One job: turn what a user passes (arrays, lists, file paths; boxes with or without classes; masks) into
per-image display pixels, PNG bytes, preprocessed model inputs, and the region a metric should use for a
class. Numpy and Pillow only; no TensorFlow, no widget.

Example
-------
>>> import numpy as np
>>> s = ImageSet(np.zeros((2, 8, 8, 3), np.uint8), boxes=[[(0, 0, 4, 4)], [(2, 2, 6, 6)]], box_labels=[[3], [1]])
>>> len(s), s.input(1).shape, s.boxes(1)
(2, (1, 8, 8, 3), [(2, 2, 6, 6, 1)])
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np


def to_display_uint8(img: np.ndarray) -> np.ndarray:
    """Raw image -> uint8 (H, W, 3) for display. Floats in [0, 1] are scaled by 255, others clipped."""
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


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def load_images(images: Any, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Array (N, H, W, C), list of arrays, or list of paths -> list of raw arrays (paths resized to ``size``)."""
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


def _regions(boxes: Any, box_labels: Any, n: int) -> list[list[tuple]] | None:
    """Per image a list of ``(y0, x0, y1, x1, class or None)``."""
    if boxes is None:
        if box_labels is not None:
            raise ValueError("box_labels needs boxes: pass boxes=[...] with one class per box")
        return None
    if len(boxes) != n:
        raise ValueError(f"boxes has {len(boxes)} entries for {n} images: pass one box or list of boxes "
                         "per image (or a dict class -> box)")
    if box_labels is not None and len(box_labels) != n:
        raise ValueError(f"box_labels has {len(box_labels)} entries for {n} images: pass one class per box")
    out = []
    for i, entry in enumerate(boxes):
        if isinstance(entry, dict):
            pairs = [(b, int(c)) for c, bs in entry.items() for b in np.asarray(bs, float).reshape(-1, 4)]
        else:
            arr = np.asarray(entry, float).reshape(-1, 4)
            labels: list = [None] * len(arr)
            if box_labels is not None:
                labels = [int(c) for c in np.asarray(box_labels[i]).reshape(-1)]
                if len(labels) != len(arr):
                    raise ValueError(f"image {i}: {len(arr)} boxes but {len(labels)} box_labels")
            pairs = list(zip(arr, labels))
        out.append([(*(int(round(v)) for v in b), c) for b, c in pairs])
    return out


class ImageSet:
    """Images with their display pixels, model inputs and regions (boxes with optional classes, masks).

    Parameters
    ----------
    images : array (N, H, W, C), list of arrays, or list of image file paths
        Raw images in display space (uint8 0..255 or float 0..1).
    preprocess : callable, optional
        Raw float32 batch -> model input (identity if None).
    size : (H, W), optional
        Size that image files are resized to (the model's input size).
    boxes, box_labels, masks
        As in :class:`~sglrp_widgets.RelevanceExplorer`.
    """

    def __init__(self, images: Any, *, preprocess: Callable | None = None, size: tuple[int, int] | None = None,
                 boxes: Any = None, box_labels: Any = None, masks: Any = None) -> None:
        self.source = images
        self.preprocess = preprocess
        self._raw = load_images(images, size)
        self._regions = _regions(boxes, box_labels, len(self._raw))
        self._masks = None
        if masks is not None:
            if len(masks) != len(self._raw):
                raise ValueError(f"masks has {len(masks)} entries for {len(self._raw)} images")
            self._masks = [np.asarray(m, bool) for m in masks]
        self._inputs: dict[int, np.ndarray] = {}
        self._pngs: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self._raw)

    def display(self, index: int) -> np.ndarray:
        """uint8 (H, W, 3)."""
        return to_display_uint8(self._raw[index])

    def png(self, index: int) -> bytes:
        if index not in self._pngs:
            self._pngs[index] = png_bytes(self.display(index))
        return self._pngs[index]

    def input(self, index: int) -> np.ndarray:
        """The model input of one image, float32 (1, H, W, C) (preprocessed once)."""
        if index not in self._inputs:
            x = np.array(self._raw[index], dtype=np.float32, copy=True)[None]
            if self.preprocess is not None:
                x = np.asarray(self.preprocess(x), dtype=np.float32)
            self._inputs[index] = x
        return self._inputs[index]

    @property
    def channels(self) -> int:
        return int(self.input(0).shape[-1])

    def boxes(self, index: int) -> list[tuple]:
        """``(y0, x0, y1, x1, class or None)`` per box of one image."""
        return [] if self._regions is None else list(self._regions[index])

    def region(self, index: int, target: int, class_name: str) -> tuple[np.ndarray | None, str, str]:
        """(mask or None, what it is, note): the chosen class's own boxes when boxes have classes, else all
        boxes; a mask is added. ``note`` says why there is no region ("n/a: ...")."""
        from . import metrics as M

        H, W = self._raw[index].shape[:2]
        mask, what = None, ""
        boxes = self.boxes(index)
        if boxes:
            labelled = any(b[4] is not None for b in boxes)
            own = [b[:4] for b in boxes if b[4] == target] if labelled else [b[:4] for b in boxes]
            what = f"box of {class_name}" if labelled else "boxes"
            if labelled and not own:
                return None, what, f"n/a: no box of “{class_name}” in this image"
            mask = M.boxes_to_masks(np.asarray(own).reshape(-1, 4), (H, W)).any(axis=0)
        if self._masks is not None:
            m = np.asarray(self._masks[index], bool).reshape(H, W)
            mask = m if mask is None else (mask | m)
            what = f"{what} + mask" if what else "mask"
        return mask, what, ""

    def code(self, index: int) -> str:
        """A Python expression for the model input of one image, in the user's own names
        (``images``, ``preprocess``)."""
        src = self.source
        if isinstance(src, np.ndarray) and src.ndim == 4:
            x = f"images[{index}:{index + 1}]"
        else:
            item = src if isinstance(src, (str, os.PathLike)) else list(src)[index]
            if isinstance(item, (str, os.PathLike)):
                h, w = self._raw[index].shape[:2]
                x = f"np.asarray(PIL.Image.open({str(item)!r}).convert('RGB').resize(({w}, {h})), 'float32')[None]"
            else:
                x = f"np.asarray(images[{index}], 'float32')[None]"
        return f"preprocess({x})" if self.preprocess is not None else x

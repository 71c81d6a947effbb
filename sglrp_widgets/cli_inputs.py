"""What the command line reads: model files, images, class names and the preprocessing to use.

Everything here checks the user's input before any heavy work and raises :class:`CliError` with a
message that says what was wrong and what to do. Nothing here imports TensorFlow except
:func:`load_model`, so a wrong file is reported in well under a second.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "CliError",
    "PREPROCESSORS",
    "KERAS_APPLICATIONS",
    "RESIZE_MODES",
    "ModelSource",
    "resolve_model",
    "load_model",
    "note",
    "guess_preprocess",
    "converter_preprocess",
    "read_image",
    "class_names_for",
    "class_labels_for_files",
]


class CliError(Exception):
    """A user mistake: reported as one line on stderr, exit status 2."""


# ------------------------------------------------------------------ preprocessing
def _imagenet(mode: str) -> Callable[[np.ndarray], np.ndarray]:
    def fn(x: np.ndarray) -> np.ndarray:
        from keras.applications import imagenet_utils

        # copy: keras' preprocess_input may work in place on float32 arrays
        arr = np.array(x, dtype=np.float32, copy=True)
        return np.asarray(imagenet_utils.preprocess_input(arr, mode=mode), dtype=np.float32)

    return fn


def _none(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _scale01(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32) / np.float32(255.0)


_MODES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "none": (_none, "raw 0..255 floats (models that preprocess inside, e.g. EfficientNet, ConvNeXt)"),
    "scale01": (_scale01, "x / 255 (the bundled demo models)"),
    "tf": (_imagenet("tf"), "x / 127.5 - 1"),
    "caffe": (_imagenet("caffe"), "RGB->BGR, minus the ImageNet channel means"),
    "torch": (_imagenet("torch"), "x / 255, then the ImageNet mean/std normalization"),
}

#: keras.applications families: (pattern on ``model.name``, ``--preprocess`` name, mode). The mode is the
#: one the family's ``preprocess_input`` applies; families that normalise inside the model take ``none``.
KERAS_APPLICATIONS: tuple[tuple[str, str, str], ...] = (
    (r"^vgg16$", "vgg16", "caffe"),
    (r"^vgg19$", "vgg19", "caffe"),
    (r"^resnet(50|101|152)v2$", "resnet_v2", "tf"),
    (r"^resnet-rs", "resnet_rs", "none"),
    (r"^resnet(50|101|152)?$", "resnet50", "caffe"),
    (r"^mobilenet_?v3", "mobilenet_v3", "none"),
    (r"^mobilenetv2", "mobilenet_v2", "tf"),
    (r"^mobilenet", "mobilenet", "tf"),
    (r"^inception_resnet_v2$", "inception_resnet_v2", "tf"),
    (r"^inception_v3$", "inception_v3", "tf"),
    (r"^xception$", "xception", "tf"),
    (r"^nasnet", "nasnet", "tf"),
    (r"^densenet", "densenet", "torch"),
    (r"^efficientnetv2", "efficientnet_v2", "none"),
    (r"^efficientnet", "efficientnet", "none"),
    (r"^convnext", "convnext", "none"),
    (r"^regnet", "regnet", "none"),
)

#: ``--preprocess`` choices: name -> (function from raw 0..255 RGB to model input, description).
PREPROCESSORS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = dict(_MODES)
for _pattern, _name, _mode in KERAS_APPLICATIONS:
    PREPROCESSORS.setdefault(_name, (_MODES[_mode][0], f"= {_mode} (keras.applications.{_name})"))


def guess_preprocess(model_name: str) -> str | None:
    """The ``--preprocess`` name for a keras.applications model, from its ``name``; None if unknown.

    Examples
    --------
    >>> guess_preprocess("vgg16"), guess_preprocess("mobilenetv2_1.00_224"), guess_preprocess("functional")
    ('vgg16', 'mobilenet_v2', None)
    """
    low = str(model_name).lower()
    for pattern, name, _mode in KERAS_APPLICATIONS:
        if re.search(pattern, low):
            return name
    return None


def converter_preprocess(model: Any) -> tuple[Callable[[np.ndarray], np.ndarray], str] | None:
    """A keras_hub classifier's own preprocessing, from its image converter (``model.preprocessor
    .image_converter``): raw 0..255 RGB times its ``scale`` plus its ``offset`` (each one number or one per
    channel), and a description; None for a model without one. Resizing is left to ``--resize``."""
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    if converter is None or getattr(converter, "data_format", "channels_last") == "channels_first":
        return None
    scale, offset = getattr(converter, "scale", None), getattr(converter, "offset", None)
    factor = np.float32(1.0) if scale is None else np.asarray(scale, np.float32)
    shift = np.float32(0.0) if offset is None else np.asarray(offset, np.float32)

    def from_converter(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32) * factor + shift

    def shown(v: Any) -> str:
        values = [f"{float(a):.4g}" for a in np.ravel(v)]
        return values[0] if len(values) == 1 else f"[{', '.join(values)}]"

    return from_converter, f"x * {shown(factor)} + {shown(shift)}, from its image converter"


# ------------------------------------------------------------------ models
@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a bundled demo model (``bundled`` is its name) or a file."""

    path: Path
    bundled: str | None = None


def _bundled_models() -> dict[str, Any]:
    from . import demo

    return dict(demo.MODELS)


def resolve_model(spec: str) -> ModelSource:
    """Turn ``--model`` (a bundled model's name, ``demo``, or a path) into a checked :class:`ModelSource`.

    Checks the file's format without importing TensorFlow: a ``.keras`` file must be a zip archive with
    ``config.json``, an ``.h5`` file an HDF5 file with a model config.
    """
    from . import demo

    models = _bundled_models()
    name = demo.DEFAULT_MODEL if spec == "demo" else spec
    if name in models:
        return ModelSource(models[name].path, bundled=name)
    path = Path(spec)
    if not path.exists():
        from .errors import suggest

        raise CliError(f"model file not found: {spec!r} (bundled models: {', '.join(models)}; "
                       f"or give the path of a .keras file){suggest(spec, models)}")
    _check_model_file(path)
    bundled = next((n for n, m in models.items() if m.path.resolve() == path.resolve()), None)
    return ModelSource(path, bundled=bundled)


def _check_model_file(path: Path) -> None:
    what = f"{str(path)!r} is not a Keras model file"
    if path.is_dir():
        raise CliError(f"{what}: it is a folder. Keras 3 loads single .keras files (model.save('m.keras')); "
                       "a TensorFlow SavedModel folder must be re-saved as .keras")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise CliError(f"{what}: a .keras file is a zip archive and this one is not "
                           "(save the model with model.save('name.keras'))")
        with zipfile.ZipFile(path) as zf:
            if "config.json" not in zf.namelist():
                raise CliError(f"{what}: the zip archive has no config.json "
                               "(save the model with model.save('name.keras'))")
        return
    if suffix in (".h5", ".hdf5"):
        with open(path, "rb") as f:
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                raise CliError(f"{what}: an .h5 file is an HDF5 file and this one is not")
        import h5py

        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise CliError(f"{what}: the HDF5 file holds no model config (weights only?); build the model "
                               "in Python, call load_weights, and save it with model.save('name.keras')")
        return
    hint = " (it is a .keras archive: rename it to end in .keras)" if _is_keras_zip(path) else ""
    raise CliError(f"{what}: Keras loads files ending in .keras (or legacy .h5){hint}")


def _is_keras_zip(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return "config.json" in zf.namelist()


def note(msg: str, quiet: bool = False) -> None:
    """A ``sglrp-widgets: note: ...`` line on stderr (what the CLI chose for the user), unless ``quiet``."""
    if not quiet:
        print(f"sglrp-widgets: note: {msg}", file=sys.stderr)


def load_model(source: ModelSource, unsafe: bool = False, quiet: bool = False) -> Any:
    """Load the model (bundled models from the demo's cache; files with Keras's ``safe_mode``). A model trained
    with mixed precision is loaded as its float32 copy, with a note."""
    if source.bundled:
        from . import demo

        return demo.load_model(source.bundled)
    import keras

    try:
        model = keras.saving.load_model(source.path, safe_mode=not unsafe)
    except Exception as e:  # noqa: BLE001 - every loading failure is a user-facing error
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = ""
        if not unsafe and ("safe_mode" in str(e) or "lambda" in str(e).lower()):
            hint = " (the model contains code that safe mode refuses; pass --unsafe-load only if you trust the file)"
        raise CliError(f"cannot load model {str(source.path)!r}: {type(e).__name__}: {first}{hint}") from None
    from .graph import float32_copy, half_precision_layers

    if half_precision_layers(model):
        note(f"model {model.name!r} computes in half precision (mixed precision); explaining a float32 copy "
             "with the same weights", quiet)
        model = float32_copy(model)
    return model


# ------------------------------------------------------------------ images
#: ``--resize`` modes for images whose size differs from the model's input.
RESIZE_MODES = {
    "crop": "scale the short side to fit, then cut the centre (keeps the aspect ratio; ImageNet evaluation)",
    "pad": "scale the long side to fit, then pad with black (keeps the aspect ratio and the whole image)",
    "stretch": "scale each side to fit (distorts the aspect ratio)",
    "none": "refuse images of another size",
}


def _fit(im: Any, size: tuple[int, int], mode: str) -> tuple[Any, str]:
    """Resize a PIL image to ``size`` = (H, W) with ``mode``; returns the image and what was done."""
    from PIL import Image

    h, w = size
    sw, sh = im.size
    if mode == "stretch":
        return im.resize((w, h), Image.BILINEAR), f"stretched to {w}x{h} (aspect ratio not kept)"
    if mode == "crop":
        k = max(w / sw, h / sh)
        nw, nh = max(w, round(sw * k)), max(h, round(sh * k))
        scaled = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - w) // 2, (nh - h) // 2
        return scaled.crop((left, top, left + w, top + h)), f"scaled to {nw}x{nh} and centre-cropped to {w}x{h}"
    k = min(w / sw, h / sh)
    nw, nh = min(w, max(1, round(sw * k))), min(h, max(1, round(sh * k)))
    canvas = Image.new(im.mode, (w, h))
    canvas.paste(im.resize((nw, nh), Image.BILINEAR), ((w - nw) // 2, (h - nh) // 2))
    return canvas, f"scaled to {nw}x{nh} and padded with black to {w}x{h}"


def read_image(path: Path, size: tuple[int | None, int | None], channels: int,
               resize: str = "crop") -> tuple[np.ndarray, str | None]:
    """Read one image as float32 raw values (0..255) at the model's input size.

    Returns the array and, when the image had to be resized, a sentence saying how (``None`` otherwise).
    ``.npy`` files are used as they are and must already have the model's size.
    """
    h, w = size
    if path.suffix.lower() == ".npy":
        try:
            arr = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        except Exception as e:  # noqa: BLE001
            raise CliError(f"cannot read image {str(path)!r}: {e}") from None
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] != channels:
            raise CliError(f"image {str(path)!r} has shape {arr.shape}; expected (H, W, {channels})")
        if (h is not None and arr.shape[0] != h) or (w is not None and arr.shape[1] != w):
            raise CliError(f"image {str(path)!r} has shape {arr.shape}; the model expects {(h, w, channels)} "
                           "(.npy arrays are never resized)")
        return arr, None
    from PIL import Image, UnidentifiedImageError

    note = None
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if h is not None and w is not None and im.size != (w, h):
                if resize == "none":
                    raise CliError(f"image {str(path)!r} is {im.size[0]}x{im.size[1]} (W x H) and the model takes "
                                   f"{w}x{h}; resize it, or pass --resize crop, pad or stretch")
                original = im.size
                im, how = _fit(im, (h, w), resize)
                note = f"{path} is {original[0]}x{original[1]}, the model takes {w}x{h}: {how} (--resize {resize})"
            arr = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as e:
        raise CliError(f"cannot read image {str(path)!r}: {e}") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr, note


# ------------------------------------------------------------------ class names
def _names_from_file(path: str, n: int) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"class names file not found: {path!r}")
    names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(names) != n:
        raise CliError(f"class names file {path!r} has {len(names)} names; the model has {n} classes")
    return names


def _names_from_model(model: Any, source: ModelSource | None, n: int) -> list[str] | None:
    """The model's own class names: a ``class_names`` attribute, or a ``class_names`` list in the
    ``metadata.json`` of its ``.keras`` archive."""
    candidates = [getattr(model, "class_names", None)]
    if source is not None and source.path.suffix.lower() == ".keras" and zipfile.is_zipfile(source.path):
        with zipfile.ZipFile(source.path) as zf:
            if "metadata.json" in zf.namelist():
                try:
                    candidates.append(json.loads(zf.read("metadata.json")).get("class_names"))
                except (ValueError, AttributeError):
                    pass
    for names in candidates:
        if isinstance(names, (list, tuple)) and len(names) == n and all(isinstance(s, str) for s in names):
            return list(names)
    return None


def class_names_for(model: Any, source: ModelSource | None, n: int,
                    names_file: str | None = None) -> tuple[list[str] | None, str]:
    """The class names to print and to put in file names, and where they came from.

    In this order: ``--class-names FILE``; the model's own names (see :func:`_names_from_model`); the
    bundled demo model's names; ImageNet's names for a 1000-class model. Otherwise ``None``: classes are
    then shown by index only (a 6-class model of yours is not labelled with the demo's shapes).
    """
    if names_file:
        return _names_from_file(names_file, n), f"file {names_file!r}"
    own = _names_from_model(model, source, n)
    if own is not None:
        return own, "the model"
    if source is not None and source.bundled:
        from . import demo

        names = list(getattr(_bundled_models()[source.bundled], "class_names", None) or demo.class_names)
        if len(names) == n:
            return names, f"the bundled {source.bundled!r} model"
    if n == 1000:
        data = Path(__file__).with_name("data") / "imagenet_classes.json"
        return list(json.loads(data.read_text(encoding="utf-8"))), "ImageNet (a 1000-class model)"
    return None, "none known (pass --class-names FILE)"


def class_labels_for_files(names: Sequence[str] | None, n: int) -> list[str]:
    """A short, file-name-safe label per class: the name (``great_white_shark``), with the index appended
    where two names would give the same label (``crane-134``), or the index alone when names are unknown.

    Examples
    --------
    >>> class_labels_for_files(["cat", "hot dog", "cat"], 3)
    ['cat-0', 'hot_dog', 'cat-2']
    >>> class_labels_for_files(None, 2)
    ['0', '1']
    """
    if names is None:
        return [str(i) for i in range(n)]
    slugs = [re.sub(r"[^A-Za-z0-9.+-]+", "_", s).strip("_.") or str(i) for i, s in enumerate(names)]
    counts: dict[str, int] = {}
    for s in slugs:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else f"{s}-{i}" for i, s in enumerate(slugs)]

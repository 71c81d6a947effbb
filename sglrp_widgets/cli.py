"""Command-line entry point ``sglrp-widgets``.

Two sub-commands:

``sglrp-widgets demo [-o OUT.png] [--methods M ...]``
    Explain both objects of two-object demo scenes with several methods using the bundled
    demo model, and write a methods × classes figure (path printed on stdout).

``sglrp-widgets explain --model PATH --image FILE ... --method M [--target N | --top-k K] -o OUTDIR``
    Explain image files with any Keras classifier and write one heatmap PNG per image and
    class (plus the raw relevance as ``.npy`` with ``--npy``).

User mistakes (missing file, unloadable model, unknown method, bad target...) end with a
one-line ``sglrp-widgets: error: ...`` on stderr and exit status 2.

Example
-------
>>> from sglrp_widgets.cli import main
>>> main(["demo", "-o", "/tmp/sglrp_demo.png"])  # doctest: +SKIP
/tmp/sglrp_demo.png
0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import numpy as np

from . import dataset

__all__ = ["main", "PREPROCESSORS", "CliError"]

PROG = "sglrp-widgets"
DEFAULT_DEMO_METHODS = ["lrp", "clrp", "sglrp", "lrp.epsilon", "gradient", "grad_cam"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy"}


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


#: ``--preprocess`` choices: raw 0..255 RGB -> model input.
PREPROCESSORS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "none": (_none, "raw 0..255 floats"),
    "scale01": (_scale01, "x / 255 (the demo model)"),
    "tf": (_imagenet("tf"), "x / 127.5 - 1"),
    "caffe": (_imagenet("caffe"), "RGB->BGR, minus ImageNet channel means"),
    "torch": (_imagenet("torch"), "x / 255, ImageNet mean/std normalization"),
    "vgg16": (_imagenet("caffe"), "= caffe (keras.applications.vgg16.preprocess_input)"),
    "vgg19": (_imagenet("caffe"), "= caffe"),
    "resnet50": (_imagenet("caffe"), "= caffe"),
    "mobilenet": (_imagenet("tf"), "= tf"),
    "mobilenet_v2": (_imagenet("tf"), "= tf"),
    "inception_v3": (_imagenet("tf"), "= tf"),
    "xception": (_imagenet("tf"), "= tf"),
    "densenet": (_imagenet("torch"), "= torch"),
}


# ------------------------------------------------------------------ progress bar
class Progress:
    """A minimal text progress bar on a stream (redrawn in place on a terminal).

    Example
    -------
    >>> import io
    >>> s = io.StringIO()
    >>> p = Progress(4, stream=s, width=4)
    >>> p.update(2); p.close()
    >>> s.getvalue().splitlines()[-1].startswith("[####] 4/4")
    True
    """

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30, label: str = "images"):
        self.total = max(int(total), 0)
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.label = label
        self.done = 0
        self.start = time.perf_counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def _line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        el = time.perf_counter() - self.start
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {self.label} {el:.1f} s"

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self.tty:
            self.stream.write("\r" + self._line())
            self.stream.flush()

    def close(self) -> None:
        self.done = self.total
        self.stream.write(("\r" if self.tty else "") + self._line() + "\n")
        self.stream.flush()


# ------------------------------------------------------------------ helpers
def _method_names() -> list[str]:
    from .methods import list_methods

    return [m["name"] for m in list_methods()]


def _check_methods(methods: Sequence[str]) -> None:
    known = _method_names()
    for m in methods:
        if m not in known:
            raise CliError(f"unknown method {m!r}; choose from: {', '.join(known)}")


def _load_model(path: str, unsafe: bool) -> Any:
    if path == "demo":
        from . import demo

        return demo.load_model()
    p = Path(path)
    if not p.exists():
        raise CliError(f"model file not found: {path!r}")
    import keras

    try:
        return keras.saving.load_model(p, safe_mode=not unsafe)
    except Exception as e:  # noqa: BLE001 - every loading failure is a user-facing error
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = ""
        if not unsafe and ("safe_mode" in str(e) or "lambda" in str(e).lower()):
            hint = " (the model contains code that safe mode refuses; pass --unsafe-load only if you trust the file)"
        raise CliError(f"cannot load model {path!r}: {type(e).__name__}: {first}{hint}") from None


def _read_image(path: Path, size: tuple[int | None, int | None], channels: int) -> np.ndarray:
    """Read one image as float32 raw values (0..255), resized to the model's input size."""
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise CliError(f"cannot read image {str(path)!r}: {e}") from None
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] != channels:
            raise CliError(f"image {str(path)!r} has shape {arr.shape}; expected (H, W, {channels})")
        h, w = size
        if (h is not None and arr.shape[0] != h) or (w is not None and arr.shape[1] != w):
            raise CliError(f"image {str(path)!r} has shape {arr.shape}; the model expects {(h, w, channels)}")
        return arr
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            h, w = size
            if h is not None and w is not None and im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as e:
        raise CliError(f"cannot read image {str(path)!r}: {e}") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr


def _fail(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------ sub-commands
def _cmd_demo(args: argparse.Namespace) -> int:
    methods = args.methods or DEFAULT_DEMO_METHODS
    _check_methods(methods)
    if args.scenes < 1:
        raise CliError(f"--scenes must be >= 1, got {args.scenes}")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise CliError(f"--alpha must be in [0, 1], got {args.alpha}")
    out = Path(args.output)
    if not out.parent.exists():
        raise CliError(f"output folder does not exist: {str(out.parent)!r}")

    import matplotlib

    matplotlib.use("Agg", force=False)
    from . import demo
    from .engine import explain
    from .methods import list_methods
    from .viz import plot_grid

    model = demo.load_model()
    labels_of = {m["name"]: m.get("label", m["name"]) for m in list_methods()}
    # pick scenes where the model ranks both present classes as its top-2 (a fair showcase:
    # the figure is about explaining two correct classes, not about mistakes)
    pool, labels, _ = demo.make_scenes(40 * args.scenes, objects=2, seed=args.seed)
    x_pool = demo.preprocess(pool)
    probs = np.asarray(model.predict(x_pool, verbose=0))
    top2 = np.sort(np.argsort(-probs, axis=1)[:, :2], axis=1)
    good = np.flatnonzero(np.all(top2 == np.sort(labels, axis=1), axis=1))
    chosen = list(good[: args.scenes]) + [i for i in range(len(pool)) if i not in set(good)]
    chosen = chosen[: args.scenes]

    x = x_pool[chosen]
    targets = labels[chosen]
    maps = []
    for m in methods:
        res = explain(model, x, method=m, targets=targets.tolist(), preprocess=demo.preprocess)
        maps.append(np.asarray(res.heatmap()))  # (S, 2, H, W)
    maps_arr = np.stack(maps)  # (M, S, 2, H, W)
    paths = []
    for s, idx in enumerate(chosen):
        col_labels = [f"{demo.class_names[t]}\np={probs[idx, t]:.2f}" for t in targets[s]]
        fig = plot_grid(
            pool[idx],
            maps_arr[:, s],
            [labels_of.get(m, m) for m in methods],
            col_labels,
            alpha=args.alpha,
            title=f"demo scene {idx} (seed {args.seed}): methods x classes",
        )
        path = out if args.scenes == 1 else out.with_name(f"{out.stem}_{s}{out.suffix or '.png'}")
        fig.savefig(path, dpi=args.dpi)
        paths.append(path)
        print(path)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    # cheap checks first: files, method, options
    missing = [f for f in args.image if not Path(f).is_file()]
    if missing:
        raise CliError(f"image file not found: {missing[0]!r}")
    if args.model != "demo" and not Path(args.model).exists():
        raise CliError(f"model file not found: {args.model!r}")
    _check_methods([args.method])
    if args.top_k is not None and args.top_k < 1:
        raise CliError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise CliError(f"--alpha must be in [0, 1], got {args.alpha}")
    params: dict[str, Any] = {}
    for item in args.param or []:
        if "=" not in item:
            raise CliError(f"--param must look like NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        params[k.strip()] = _parse_value(v.strip())
    if args.relu:
        params["relu"] = True
    if args.scale < 1:
        raise CliError(f"--scale must be >= 1, got {args.scale}")
    from .viz import _cmap

    _cmap(args.cmap)  # raises ValueError naming an unknown colormap before any work
    if params:
        from .methods import validate_params

        validate_params(args.method, params)  # raises ExplainError (a ValueError) naming the bad value
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise CliError(f"output path exists and is not a folder: {str(outdir)!r}")

    prep_name = args.preprocess or ("scale01" if args.model == "demo" else "none")
    prep = PREPROCESSORS[prep_name][0]
    model = _load_model(args.model, args.unsafe_load)
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4:
        raise CliError(f"the model must take one image input (N, H, W, C), its input shape is {model.input_shape}")
    _, h, w, c = shape
    if c not in (1, 3):
        raise CliError(f"the model expects {c} input channels; only 1 (gray) or 3 (RGB) are supported")
    n_classes = int(model.output_shape[-1])
    if args.target is not None and not 0 <= args.target < n_classes:
        raise CliError(f"--target {args.target} is out of range: the model has {n_classes} classes (0..{n_classes - 1})")
    if args.top_k is not None and args.top_k > n_classes:
        raise CliError(f"--top-k {args.top_k} exceeds the model's {n_classes} classes")

    from .engine import explain

    outdir.mkdir(parents=True, exist_ok=True)
    names = _class_names(n_classes, args.class_names)
    paths = [Path(f) for f in args.image]
    stems = _unique_stems(paths)
    progress = Progress(len(paths), stream=sys.stderr) if len(paths) > 1 else None
    written = 0
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        raw = np.stack([_read_image(p, (h, w), c) for p in chunk])
        x = prep(raw)
        if args.target is not None:
            targets: Any = [args.target] * len(chunk)
        else:
            k = args.top_k or 1
            p_ = np.asarray(model.predict(x, verbose=0))
            targets = np.argsort(-p_, axis=1)[:, :k].tolist()
        res = explain(model, x, method=args.method, targets=targets, preprocess=prep, **params)
        rel = np.asarray(res.relevance)
        heat = np.asarray(res.heatmap())
        tg = np.asarray(res.targets)
        probs = np.asarray(res.probabilities)
        if rel.ndim == 4:  # one map per image -> (N, 1, ...)
            rel, heat, tg = rel[:, None], heat[:, None], tg[:, None]
        for i, p in enumerate(chunk):
            stem = stems[start + i]
            for j in range(tg.shape[1]):
                t = int(tg[i, j])
                # plain string joins: method names ("lrp.epsilon") and stems may contain dots
                png_path = outdir / f"{stem}_{args.method}_{t}.png"
                npy_path = outdir / f"{stem}_{args.method}_{t}.npy"
                img = raw[i] if c == 3 else raw[i, ..., 0]
                from .viz import save_heatmap_png

                save_heatmap_png(
                    png_path, heat[i, j],
                    image=img.astype(np.uint8) if args.alpha is not None else None,
                    alpha=args.alpha if args.alpha is not None else 0.5,
                    cmap=args.cmap, scale=args.scale,
                )
                if args.npy:
                    np.save(npy_path, rel[i, j].astype(np.float32))
                written += 1
                if args.verbose:
                    print(f"{p}: class {t} ({names[t]}) p={probs[i, t]:.3f} -> {png_path}")
        if progress:
            progress.update(len(chunk))
    if progress:
        progress.close()
    print(f"wrote {written} heatmap(s) to {outdir}")
    return 0


def _parse_value(v: str) -> Any:
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _class_names(n: int, path: str | None) -> list[str]:
    if path:
        p = Path(path)
        if not p.is_file():
            raise CliError(f"class names file not found: {path!r}")
        names = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
        if len(names) != n:
            raise CliError(f"class names file {path!r} has {len(names)} names; the model has {n} classes")
        return names
    if n == 6:
        from . import demo

        return list(demo.class_names)
    if n == 1000:
        import json

        data = Path(__file__).with_name("data") / "imagenet_classes.json"
        if data.is_file():
            return list(json.loads(data.read_text(encoding="utf-8")))
    return [f"class {i}" for i in range(n)]


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        s = p.stem
        if s in seen:
            seen[s] += 1
            s = f"{s}-{seen[s]}"
        else:
            seen[s] = 0
        out.append(s)
    return out


# ------------------------------------------------------------------ parser / main
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Explain Keras image classifiers with SGLRP, CLRP, LRP, gradient and CAM methods.",
    )
    sub = ap.add_subparsers(dest="command", metavar="{demo,explain,dataset}")
    sub.required = True

    d = sub.add_parser("demo", help="explain two-object demo scenes and write a methods x classes figure")
    d.add_argument("-o", "--output", default="sglrp_demo.png", help="output figure (default: sglrp_demo.png)")
    d.add_argument("--methods", nargs="+", metavar="M", help=f"methods (default: {' '.join(DEFAULT_DEMO_METHODS)})")
    d.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    d.add_argument("--scenes", type=int, default=1, help="number of scenes; >1 writes OUT_0.png, OUT_1.png, ...")
    d.add_argument("--alpha", type=float, default=None, help="draw maps over the image with this opacity")
    d.add_argument("--dpi", type=int, default=120)

    e = sub.add_parser("explain", help="write heatmap PNGs for image files")
    e.add_argument("--model", required=True, help="a .keras model file, or 'demo' for the bundled demo model")
    e.add_argument("--image", nargs="+", required=True, metavar="FILE", help="image files (PNG/JPEG/... or .npy)")
    e.add_argument("--method", default="sglrp", help="method name (default: sglrp)")
    g = e.add_mutually_exclusive_group()
    g.add_argument("--target", type=int, help="class index to explain (default: the top-1 class)")
    g.add_argument("--top-k", type=int, help="explain the K most probable classes of each image")
    e.add_argument(
        "--preprocess", choices=sorted(PREPROCESSORS),
        help="raw RGB 0..255 -> model input (default: scale01 for --model demo, else none)",
    )
    e.add_argument("--param", action="append", metavar="NAME=VALUE", help="method parameter (repeatable)")
    e.add_argument("--npy", action="store_true", help="also save the relevance (H, W, C) as float32 .npy")
    e.add_argument("--unsafe-load", action="store_true", help="load the model with safe_mode=False (trusted files only)")
    e.add_argument("--alpha", type=float, default=None, help="blend the map over the image with this opacity")
    e.add_argument("--cmap", default="seismic", help="matplotlib colormap (default: seismic)")
    e.add_argument("--relu", action="store_true", help="keep only the positive relevance (the methods' relu=True)")
    e.add_argument("--scale", type=int, default=1, help="integer upscaling of the PNGs")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--class-names", help="text file with one class name per line")
    e.add_argument("-v", "--verbose", action="store_true", help="print one line per heatmap")
    e.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    dataset.add_cli_parser(sub, PREPROCESSORS)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sglrp-widgets`` command line; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for a user error (message on stderr).

    Example
    -------
    >>> main(["explain", "--model", "missing.keras", "--image", "x.png", "-o", "out"])  # doctest: +SKIP
    sglrp-widgets: error: image file not found: 'x.png'
    2
    """
    # TensorFlow's C++ start-up chatter (no GPU found, oneDNN notes) is not for a command-line user;
    # Python-level errors still surface. TF_CPP_MIN_LOG_LEVEL set by the caller wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "dataset":
            return dataset.cli(args, _load_model, PREPROCESSORS, _parse_value)
        return _cmd_explain(args)
    except CliError as e:
        return _fail(str(e))
    except ValueError as e:  # ExplainError and other user-input errors from the library
        return _fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Command-line entry point ``sglrp-widgets``.

Sub-commands:

``sglrp-widgets demo [--model NAME] [-o OUT.png] [--methods M ...]``
    Explain both objects of two-object demo scenes with several methods using a bundled demo model
    (``--model``: any name in :data:`sglrp_widgets.demo.MODELS`), and write a methods x classes figure
    (path printed on stdout).

``sglrp-widgets explain --model PATH|NAME --image FILE ... --method M [--target T | --top-k K] -o OUTDIR``
    Explain image files with any Keras classifier and write one heatmap PNG per image and class, named
    ``<image>_<method>_<class>.png`` (plus the raw relevance as ``.npy`` with ``--npy``).

``sglrp-widgets methods``
    List the methods with their family and parameters.

Nothing happens silently: an image of another size is resized as ``--resize`` says and a note says how;
a missing ``--preprocess`` is guessed from the model's name and the guess is printed; a map that is all
zero (a blank PNG) gets a warning, and ``--strict`` turns it into exit status 1. User mistakes (missing or
wrong file, unknown method, bad target...) end with one ``sglrp-widgets: error: ...`` line on stderr and
exit status 2. The methods are described in ``docs/methods.md``.

Example
-------
>>> from sglrp_widgets.cli import main
>>> main(["demo", "-o", "/tmp/sglrp_demo.png"])  # doctest: +SKIP
/tmp/sglrp_demo.png
0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np

from . import dataset, demo
from .cli_inputs import (
    KERAS_APPLICATIONS,
    PREPROCESSORS,
    RESIZE_MODES,
    CliError,
    class_labels_for_files,
    class_names_for,
    converter_preprocess,
    guess_preprocess,
    load_model,
    note,
    read_image,
    resolve_model,
)
from .errors import suggest
from .methods import METHODS, get_method, list_methods, validate_params
from .viz import _cmap, colour_key, explanation_figure, format_probability, legend_words, plot_grid, save_heatmap_png

__all__ = ["main", "PREPROCESSORS", "CliError", "resolve_method"]

PROG = "sglrp-widgets"
DEFAULT_DEMO_METHODS = ["lrp", "clrp", "sglrp", "lrp.epsilon", "gradient", "grad_cam"]
EXIT_USER_ERROR = 2
EXIT_DEGENERATE = 1


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


# ------------------------------------------------------------------ messages
def _note(msg: str, args: argparse.Namespace) -> None:
    note(msg, getattr(args, "quiet", False))


def _warn(msg: str) -> None:
    print(f"{PROG}: warning: {msg}", file=sys.stderr)


def _fail(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return EXIT_USER_ERROR


# ------------------------------------------------------------------ methods
def resolve_method(name: str) -> str:
    """The registry name for ``name``, ignoring case and treating ``-`` and spaces as ``_``.

    Examples
    --------
    >>> resolve_method("SGLRP"), resolve_method("Grad-CAM"), resolve_method("lrp.Epsilon")
    ('sglrp', 'grad_cam', 'lrp.epsilon')
    """

    def key(s: str) -> str:
        return "".join("_" if ch in "- " else ch for ch in s.strip().lower())

    by_key = {key(m): m for m in METHODS}
    if key(name) in by_key:
        return by_key[key(name)]
    hint = suggest(key(name), by_key).strip() or "Run `sglrp-widgets methods` to see them all."
    raise CliError(f"unknown method {name!r}. {hint} Methods: {', '.join(METHODS)}")


def _support_reason(model: Any, method: str) -> str | None:
    from .engine import method_support

    return method_support(model).get(method)


# ------------------------------------------------------------------ sub-commands
def _cmd_methods(args: argparse.Namespace) -> int:
    for m in list_methods():
        params = ", ".join(f"{p['name']}={p['default']!r}" for p in m["params"] if p["name"] != "relu")
        print(f"{m['name']:32s} {m['family']:16s} {m['description']}" + (f" [{params}]" if params else ""))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    methods = [resolve_method(m) for m in args.methods] if args.methods else None
    if args.scenes < 1:
        raise CliError(f"--scenes must be >= 1, got {args.scenes}")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise CliError(f"--alpha must be in [0, 1], got {args.alpha}")
    out = Path(args.output)
    if not out.parent.exists():
        raise CliError(f"output folder does not exist: {str(out.parent)!r}")

    import matplotlib

    matplotlib.use("Agg", force=False)
    from .engine import explain

    model = demo.load_model(args.model)
    if methods is None:   # the defaults this model supports (a ViT has no convolution for Grad-CAM)
        methods = [m for m in DEFAULT_DEMO_METHODS if _support_reason(model, m) is None]
    for m in methods:
        why = _support_reason(model, m)
        if why is not None:
            raise CliError(f"method {m!r} cannot explain the {args.model!r} model: {why.splitlines()[0]}")
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
    for s, idx in enumerate(chosen):
        col_labels = [f"{demo.class_names[t]}\np={probs[idx, t]:.2f}" for t in targets[s]]
        fig = plot_grid(
            pool[idx],
            maps_arr[:, s],
            [METHODS[m].label for m in methods],
            col_labels,
            alpha=args.alpha,
            title=f"{args.model} model, demo scene {idx} (seed {args.seed}): methods x classes",
        )
        path = out if args.scenes == 1 else out.with_name(f"{out.stem}_{s}{out.suffix or '.png'}")
        fig.savefig(path, dpi=args.dpi)
        print(path)
    return 0


def _parse_params(items: Sequence[str] | None, method: str, relu: bool) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise CliError(f"--param must look like NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        params[k.strip()] = _parse_value(v.strip())
    if relu:
        params["relu"] = True
    if params:
        validate_params(method, params)  # raises ExplainError (a ValueError) naming the bad value
    return params


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


def _choose_preprocess(args: argparse.Namespace, model: Any, source: Any) -> Any:
    """The preprocessing function: ``--preprocess``, the bundled model's, or a guess said out loud."""
    if args.preprocess:
        return PREPROCESSORS[args.preprocess][0]
    if source.bundled:
        return demo.preprocess
    own = converter_preprocess(model)
    if own is not None:
        _note(f"no --preprocess given; using the model's own preprocessing ({own[1]}). Pass --preprocess to "
              "choose another.", args)
        return own[0]
    guess = guess_preprocess(model.name)
    if guess is not None:
        _note(f"no --preprocess given; the model is named {model.name!r}, so using --preprocess {guess} "
              f"({PREPROCESSORS[guess][1]}). Pass --preprocess to choose another.", args)
        return PREPROCESSORS[guess][0]
    _note(f"no --preprocess given and the model's name {model.name!r} is not a keras.applications one: "
          "feeding raw 0..255 values (--preprocess none). If the model was trained on scaled inputs, pass "
          "--preprocess scale01, tf, caffe or torch (see `sglrp-widgets explain --help`).", args)
    return PREPROCESSORS["none"][0]


def _parse_target(value: str | None, names: Sequence[str] | None, n_classes: int) -> int | None:
    """``--target``: a class index or (when names are known) a class name, any case."""
    if value is None:
        return None
    try:
        t = int(value)
    except ValueError:
        if names is None:
            raise CliError(f"--target {value!r} is not a class index, and the model's class names are unknown "
                           "(pass --class-names FILE to use names)") from None
        lowered = [s.lower() for s in names]
        if value.strip().lower() not in lowered:
            raise CliError(f"--target {value!r} is not a class of the model.{suggest(value, names)}")
        return lowered.index(value.strip().lower())
    if not 0 <= t < n_classes:
        raise CliError(f"--target {t} is out of range: the model has {n_classes} classes (0..{n_classes - 1})")
    return t


def _degenerate(heat: np.ndarray) -> str | None:
    """Why a display heatmap says nothing (a blank or broken PNG), or None."""
    if not np.all(np.isfinite(heat)):
        return "has NaN or infinite values"
    if np.ptp(heat) == 0:
        return "is all zero (the PNG is blank)" if not np.any(heat) else "is constant (the PNG is one colour)"
    return None


def _cmd_explain(args: argparse.Namespace) -> int:
    # cheap checks first (no TensorFlow): files, method, options
    missing = [f for f in args.image if not Path(f).is_file()]
    if missing:
        raise CliError(f"image file not found: {missing[0]!r}")
    source = resolve_model(args.model)
    method = resolve_method(args.method)
    if args.top_k is not None and args.top_k < 1:
        raise CliError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise CliError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.scale < 1:
        raise CliError(f"--scale must be >= 1, got {args.scale}")
    params = _parse_params(args.param, method, args.relu)

    _cmap(args.cmap)  # raises ValueError naming an unknown colormap before any work
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise CliError(f"output path exists and is not a folder: {str(outdir)!r}")

    model = load_model(source, args.unsafe_load, args.quiet)
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4:
        raise CliError(f"the model must take one image input (N, H, W, C), its input shape is {model.input_shape}")
    _, h, w, c = shape
    if c not in (1, 3):
        raise CliError(f"the model expects {c} input channels; only 1 (gray) or 3 (RGB) are supported")
    n_classes = int(model.output_shape[-1])
    names, names_from = class_names_for(model, source, n_classes, args.class_names)
    if args.verbose:
        _note(f"class names: {names_from}", args)
    target = _parse_target(args.target, names, n_classes)
    if args.top_k is not None and args.top_k > n_classes:
        raise CliError(f"--top-k {args.top_k} exceeds the model's {n_classes} classes")
    prep = _choose_preprocess(args, model, source)

    from .engine import explain

    positive_only = _positive_only(get_method(method), args)

    labels = class_labels_for_files(names, n_classes)
    paths = [Path(f) for f in args.image]
    stems = _unique_stems(paths)
    progress = Progress(len(paths), stream=sys.stderr) if len(paths) > 1 else None
    written, degenerate = 0, 0
    outdir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        raw = _read_batch(chunk, (h, w), c, args)
        x = prep(raw)
        if target is not None:
            targets: Any = [target] * len(chunk)
        else:
            p_ = np.asarray(model.predict(x, verbose=0))
            targets = np.argsort(-p_, axis=1)[:, : args.top_k or 1].tolist()
        res = explain(model, x, method=method, targets=targets, preprocess=prep, **params)
        rel, heat, tg = np.asarray(res.relevance), np.asarray(res.heatmap()), np.asarray(res.targets)
        probs = np.asarray(res.probabilities)
        if rel.ndim == 4:  # one map per image -> (N, 1, ...)
            rel, heat, tg = rel[:, None], heat[:, None], tg[:, None]
        for i, p in enumerate(chunk):
            img = np.rint(np.clip(raw[i] if c == 3 else raw[i, ..., 0], 0, 255)).astype(np.uint8)     # RGB 0..255
            for j in range(tg.shape[1]):
                t = int(tg[i, j])
                # plain string joins: method names ("lrp.epsilon") and stems may contain dots
                base = f"{stems[start + i]}_{method}_{labels[t]}"
                png_path = outdir / f"{base}.png"
                if args.figure:
                    _save_figure(png_path, img, heat[i, j], names[t] if names else f"class {t}", probs[i, t],
                                 method, p.name, args)
                else:
                    save_heatmap_png(png_path, heat[i, j], image=img if args.alpha is not None else None,
                                     alpha=args.alpha if args.alpha is not None else 0.5, cmap=args.cmap,
                                     scale=args.scale, positive_only=positive_only)
                if args.npy:
                    np.save(outdir / f"{base}.npy", rel[i, j].astype(np.float32))
                written += 1
                class_text = f"class {t}" + (f" ({names[t]})" if names else "")
                problem = _degenerate(heat[i, j])
                if problem:
                    degenerate += 1
                    _warn(f"{png_path}: the {method} map of {class_text} {problem}; {method} finds no evidence "
                          "for this class in this image (try another method, e.g. gradient, or another class)")
                if args.verbose:
                    print(f"{p}: {class_text} p={probs[i, t]:.3f} -> {png_path}")
        if progress:
            progress.update(len(chunk))
    if progress:
        progress.close()
    print(f"wrote {written} heatmap(s) to {outdir}")
    if not args.figure:
        print(_bare_map_legend(method, args))
    if degenerate and args.strict:
        print(f"{PROG}: error: {degenerate} of {written} map(s) are degenerate (--strict)", file=sys.stderr)
        return EXIT_DEGENERATE
    return 0


def _save_figure(path: Path, image: np.ndarray, heat: np.ndarray, class_name: str, probability: float,
                 method: str, source: str, args: argparse.Namespace) -> None:
    """The labelled figure of one map: the image under it, class and probability, method and file, a colour bar
    that says what its ends mean."""
    spec = get_method(method)
    fig = explanation_figure(image, heat, title=f"{class_name} · {format_probability(probability)}",
                             subtitle=f"{spec.label} · {source}", legend=legend_words(method, spec.family, class_name),
                             cmap=args.cmap, opacity=0.6 if args.alpha is None else args.alpha,
                             positive_only=_positive_only(spec, args), width=4.0 * args.scale)
    fig.savefig(path)


def _positive_only(spec, args: argparse.Namespace) -> bool:
    """Whether the maps have no negative part to show: ``--relu``, or a method whose maps are never negative."""
    return bool(spec.why_never_negative({"relu": args.relu}))


#: Colour maps whose low and high ends the summary names by colour.
_END_COLOURS = {"seismic": ("blue", "red"), "bwr": ("blue", "red"), "coolwarm": ("blue", "red"),
                "RdBu_r": ("blue", "red")}


def _bare_map_legend(method: str, args: argparse.Namespace) -> str:
    """What the colours of bare maps mean (a line under the summary): the PNGs carry no legend of their own."""
    low_end, high_end = _END_COLOURS.get(args.cmap, (f"the low end of {args.cmap}", f"the high end of {args.cmap}"))
    meaning = colour_key(method, {"relu": args.relu}, high_end, low_end)
    return (f"colours: {meaning} (the class is in each file's name); each map is scaled to its own 99.5th "
            "percentile of |relevance|; --figure writes labelled figures")


def _read_batch(chunk: Sequence[Path], size: tuple[int | None, int | None], channels: int,
                args: argparse.Namespace) -> np.ndarray:
    arrays = []
    for p in chunk:
        arr, resized = read_image(p, size, channels, args.resize)
        if resized:
            _note(resized, args)
        arrays.append(arr)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise CliError(f"the model takes images of any size, but these differ ({', '.join(map(str, shapes))}); "
                       "pass --batch-size 1 or give images of one size")
    return np.stack(arrays)


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
def _preprocess_guide() -> str:
    families: dict[str, list[str]] = {}
    for _pattern, name, mode in KERAS_APPLICATIONS:
        families.setdefault(mode, []).append(name)
    lines = ["choosing --preprocess: use what the model was trained on.",
             "  your own model: the scaling you used in training (x/255 -> scale01; none if the model",
             "    rescales inside, e.g. with a Rescaling layer).",
             "  keras.applications models (the same as their preprocess_input):"]
    lines += [f"    {mode:8s} {', '.join(names)}" for mode, names in families.items()]
    lines += ["  without --preprocess: the bundled models' own; else a guess from the model's name",
              "    (the list above), said on stderr; else none (raw 0..255)."]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    bundled = ", ".join(f"{n} ({m.description})" for n, m in demo.MODELS.items())
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Explain Keras image classifiers with SGLRP, CLRP, LRP, gradient and CAM methods. "
                    "Methods and formulas: docs/methods.md.",
    )
    sub = ap.add_subparsers(dest="command", metavar="{demo,explain,methods,dataset}")
    sub.required = True

    d = sub.add_parser("demo", help="explain two-object demo scenes and write a methods x classes figure")
    d.add_argument("--model", default=demo.DEFAULT_MODEL, choices=list(demo.MODELS), metavar="NAME",
                   help=f"bundled model: {bundled} (default: {demo.DEFAULT_MODEL})")
    d.add_argument("-o", "--output", default="sglrp_demo.png", help="output figure (default: sglrp_demo.png)")
    d.add_argument("--methods", nargs="+", metavar="M",
                   help=f"methods (default: those of {' '.join(DEFAULT_DEMO_METHODS)} the model supports)")
    d.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    d.add_argument("--scenes", type=int, default=1, help="number of scenes; >1 writes OUT_0.png, OUT_1.png, ...")
    d.add_argument("--alpha", type=float, default=None, help="draw maps over the image with this opacity")
    d.add_argument("--dpi", type=int, default=120, help="resolution of the figure in dots per inch (default: 120)")

    e = sub.add_parser("explain", help="write heatmap PNGs for image files",
                       epilog=_preprocess_guide(), formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--model", required=True, metavar="PATH|NAME",
                   help=f"a .keras model file, or a bundled model: {bundled}")
    e.add_argument("--image", nargs="+", required=True, metavar="FILE", help="image files (PNG/JPEG/... or .npy)")
    e.add_argument("--method", default="sglrp", help="method name, any case (default: sglrp; list: "
                                                     "`sglrp-widgets methods`)")
    g = e.add_mutually_exclusive_group()
    g.add_argument("--target", metavar="CLASS", help="class index or name to explain (default: the top-1 class)")
    g.add_argument("--top-k", type=int, help="explain the K most probable classes of each image")
    e.add_argument("--preprocess", choices=sorted(PREPROCESSORS), metavar="NAME",
                   help="raw RGB 0..255 -> model input: " + ", ".join(sorted(PREPROCESSORS))
                   + " (see below; default: guessed, and said)")
    e.add_argument("--resize", choices=list(RESIZE_MODES), default="crop",
                   help="images of another size than the model's input: "
                   + "; ".join(f"{k}: {v}" for k, v in RESIZE_MODES.items()) + " (default: crop)")
    e.add_argument("--param", action="append", metavar="NAME=VALUE", help="method parameter (repeatable)")
    e.add_argument("--npy", action="store_true", help="also save the relevance (H, W, C) as float32 .npy")
    e.add_argument("--unsafe-load", action="store_true", help="load the model with safe_mode=False (trusted files only)")
    e.add_argument("--alpha", type=float, default=None, help="blend the map over the image with this opacity")
    e.add_argument("--cmap", default="seismic", help="matplotlib colormap (default: seismic)")
    e.add_argument("--relu", action="store_true", help="keep only the positive relevance (the methods' relu=True)")
    e.add_argument("--scale", type=int, default=1, help="integer upscaling of the PNGs (of a figure's width)")
    e.add_argument("--figure", action="store_true",
                   help="write labelled figures instead of bare maps: the image under the map, the class and its "
                        "probability, the method and a colour bar that says what its ends mean")
    e.add_argument("--batch-size", type=int, default=16, help="images explained at once (default: 16)")
    e.add_argument("--class-names", metavar="FILE",
                   help="text file with one class name per line (default: the model's own names, the bundled "
                        "model's, ImageNet's for 1000 classes, else class indices)")
    e.add_argument("--strict", action="store_true",
                   help=f"exit with status {EXIT_DEGENERATE} when a map is degenerate (all zero, constant or "
                        "not finite); without it such maps only get a warning")
    e.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr (warnings and errors remain)")
    e.add_argument("-v", "--verbose", action="store_true", help="print one line per heatmap")
    e.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)")

    sub.add_parser("methods", help="list the methods, their family and parameters")
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
        0 on success, 1 when ``--strict`` finds a degenerate map, 2 for a user error (message on stderr).

    Example
    -------
    >>> main(["explain", "--model", "missing.keras", "--image", "x.png", "-o", "out"])  # doctest: +SKIP
    sglrp-widgets: error: image file not found: 'x.png'
    2
    """
    # TensorFlow's C++ start-up lines are kept off stderr by `import sglrp_widgets` (see _quiet.py).
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "methods":
            return _cmd_methods(args)
        if args.command == "dataset":
            return dataset.cli(args, resolve_method=resolve_method, parse_params=_parse_params,
                               choose_preprocess=_choose_preprocess)
        return _cmd_explain(args)
    except CliError as e:
        return _fail(str(e))
    except ValueError as e:  # ExplainError and other user-input errors from the library
        return _fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Model-parameter randomization test (Adebayo et al., 2018) on a bundled demo model.

Cascading randomization: at level ``k`` the kernels of the last ``k`` linear
layers (Conv2D/Dense, and each MultiHeadAttention as one unit; counted from the
logits down) of a copy of the demo model are re-initialised (Glorot-normal with
Keras's fans, seeded, biases set to zero; everything else, BatchNorm statistics,
LayerNormalization and position embeddings included, keeps its trained value). The copy is made with
``keras.models.clone_model`` + ``set_weights``; the original model is untouched.

For every method and level we explain the *same* images for the *same* target
(the trained model's top-1 class) and compute, per image, the Spearman rank
correlation (:func:`sglrp_widgets.metrics.spearman`, ties averaged) between the
original and the randomized heatmap (channel sum), both of ``|map|`` and of the
signed map. Level 0 is an unmodified copy explained without the result cache:
it checks that copying and the method are deterministic (correlation 1). A method that explains the model should lose the correlation as
more of the model is randomized (low values = passes the sanity check); a
method whose map survives randomization is mostly showing the input.

Run (about 2.5-3 min on a 2-core CPU)::

    python benchmarks/sanity.py                          # the demo CNN, 16 scenes, seed 11
    python benchmarks/sanity.py --n 8 --methods sglrp,lrp,gradient
    python benchmarks/sanity.py --model vit              # the demo ViT (any name of demo.MODELS)

It prints two markdown tables (mean over images; ``nan`` = a map was constant)
and writes ``benchmarks/results/sanity.png`` and ``sanity.json`` (``--out``); for a model
other than the default CNN the files are named after it (``sanity_vit.json``, ...).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

from _setup import (  # noqa: E402  (also puts the repo on sys.path)
    QUALITY_METHODS as DEFAULT_METHODS, ROOT, add_model_option, result_stem, shown,
)

import numpy as np  # noqa: E402

from sglrp_widgets import metrics  # noqa: E402

LINEAR = ("Conv1D", "Conv2D", "Conv3D", "Dense", "DepthwiseConv2D", "SeparableConv2D", "EinsumDense",
          "MultiHeadAttention")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_option(p)
    p.add_argument("--n", type=int, default=16, help="number of one-object scenes (default 16)")
    p.add_argument("--seed", type=int, default=11, help="scene seed (default 11)")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the re-initialisation")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated method names, or 'all'")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def linear_layers(model):
    """Linear layers in model order (recursing into nested models), as (path, layer)."""
    import keras

    found = []

    def walk(m, prefix):
        for i, layer in enumerate(m.layers):
            if isinstance(layer, keras.Model):
                walk(layer, prefix + (i,))
            elif type(layer).__name__ in LINEAR:
                found.append((prefix + (i,), layer))

    walk(model, ())
    return found


def layer_at(model, path):
    layer = model
    for i in path:
        layer = layer.layers[i]
    return layer


def reinitialise(layer, rng):
    """Glorot-normal kernels (Keras's fans: receptive field × the last two axes), zero biases, in place.

    Works on layers with sub-layers too (a MultiHeadAttention's query/key/value/output projections):
    every variable named ``kernel``/``depthwise_kernel``/``pointwise_kernel`` is redrawn, every ``bias``
    zeroed, anything else (normalisation parameters) kept.
    """
    for v in layer.weights:
        name = v.path.rsplit("/", 1)[-1]
        shape = tuple(v.shape)
        if name.endswith("kernel"):
            rf = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = rf * shape[-2], rf * shape[-1]
            v.assign(rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=shape).astype(v.dtype))
        elif name == "bias":
            v.assign(np.zeros(shape, dtype=v.dtype))


def randomized_copy(model, k, init_seed):
    """Copy of ``model`` with the kernels of its last ``k`` linear layers re-initialised."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    lin = linear_layers(model)
    for j, (path, orig) in enumerate(lin[::-1][:k]):
        layer = layer_at(clone, path)
        assert layer.name == orig.name, (layer.name, orig.name)
        reinitialise(layer, np.random.default_rng([init_seed, len(lin) - 1 - j]))  # same draw at every level
    return clone


def main(argv=None) -> int:
    args = parse_args(argv)
    from sglrp_widgets import Explainer, demo, list_methods

    catalogue = {m["name"]: m for m in list_methods()}
    methods = list(catalogue) if args.methods == "all" else [
        m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in catalogue]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; available: {sorted(catalogue)}")

    model = demo.load_model(args.model)
    images, labels, _ = demo.make_scenes(args.n, objects=1, seed=args.seed)
    x = demo.preprocess(images)
    probs = np.asarray(model(x, training=False))
    targets = probs.argmax(axis=1).astype(np.int64)
    lin = linear_layers(model)
    names = [layer.name for _, layer in lin]
    L = len(lin)
    levels = list(range(0, L + 1))
    level_names = ["0: copy"] + [f"{k}: +{names[L - k]}" for k in levels[1:]]

    print(f"# Model-parameter randomization (cascading, top down) of the demo {args.model}: "
          f"{len(x)} scenes (seed {args.seed}), "
          f"{len(methods)} methods, {L} linear layers: {', '.join(names)}")
    print(f"target = the trained model's top-1 class (accuracy vs labels "
          f"{100 * np.mean(targets == np.asarray(labels)[:, 0]):.0f}%)\n")

    maps0 = {}
    t0 = time.perf_counter()
    for m in methods:
        maps0[m] = np.asarray(Explainer(model, m, preprocess=demo.preprocess)(x, targets=targets)
                              .heatmap(), dtype=np.float64)
    nl = len(levels)
    rho_abs = {m: np.full((nl, len(x)), np.nan) for m in methods}
    rho_sgn = {m: np.full((nl, len(x)), np.nan) for m in methods}
    const = {m: np.zeros(nl, dtype=int) for m in methods}
    for li, k in enumerate(levels):
        clone = randomized_copy(model, k, args.init_seed)
        for m in methods:
            # level 0 (an unmodified copy) bypasses the result cache, which is keyed by the weights:
            # it checks that the copy and the method are deterministic (ceiling of 1.0)
            kw = {"cache": None} if k == 0 else {}
            hk = np.asarray(Explainer(clone, m, preprocess=demo.preprocess, **kw)(x, targets=targets)
                            .heatmap(), dtype=np.float64)
            h0 = maps0[m]
            for i in range(len(x)):
                rho_abs[m][li, i] = metrics.spearman(np.abs(h0[i]).ravel(), np.abs(hk[i]).ravel())
                rho_sgn[m][li, i] = metrics.spearman(h0[i].ravel(), hk[i].ravel())
            const[m][li] = int(np.sum(np.ptp(hk.reshape(len(x), -1), axis=1) == 0))
        print(f"  level {k}/{L} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        del clone
        gc.collect()

    def table(rho, title):
        print(f"## {title}\n")
        print("Mean over images of the per-image Spearman correlation between the trained and the "
              "randomized model's map; column k = the last k linear layers re-initialised "
              "(column 0: an unmodified copy, recomputed without the cache). "
              "'(j const)': j maps were constant, so their correlation is undefined and left out.\n")
        print("| method | " + " | ".join(level_names) + " |")
        print("|---|" + "---|" * nl)
        for m in methods:
            cells = []
            for li in range(nl):
                v = rho[m][li]
                cell = "nan" if np.all(np.isnan(v)) else f"{np.nanmean(v):.2f}"
                if const[m][li]:
                    cell += f" ({const[m][li]} const)"
                cells.append(cell)
            print(f"| {m} | " + " | ".join(cells) + " |")
        print()

    table(rho_abs, "Spearman rank correlation of |map|")
    table(rho_sgn, "Spearman rank correlation of the signed map")

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem("sanity", args.model)
    summary = {
        "model": args.model, "n_scenes": len(x), "seed": args.seed, "init_seed": args.init_seed, "levels": level_names,
        "abs": {m: [None if np.all(np.isnan(v)) else float(np.nanmean(v)) for v in rho_abs[m]]
                for m in methods},
        "signed": {m: [None if np.all(np.isnan(v)) else float(np.nanmean(v)) for v in rho_sgn[m]]
                   for m in methods},
        "constant_maps": {m: const[m].tolist() for m in methods},
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    if not args.no_plot:
        plot(methods, catalogue, rho_abs, rho_sgn, level_names, out_dir / f"{stem}.png", args.model)
        print(f"plot: {shown(out_dir / f'{stem}.png')}")
    print(f"numbers: {shown(out_dir / f'{stem}.json')}")
    return 0


def plot(methods, catalogue, rho_abs, rho_sgn, level_names, path, model_name):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"Contrastive LRP": "-", "LRP": "--", "Gradient": ":", "CAM": "-."}
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    xs = np.arange(len(level_names))
    for ax, rho, title in ((axes[0], rho_abs, "|map|"), (axes[1], rho_sgn, "signed map")):
        for i, m in enumerate(methods):
            ys = [np.nanmean(v) if not np.all(np.isnan(v)) else np.nan for v in rho[m]]
            ax.plot(xs, ys, styles.get(catalogue[m].get("family", ""), "-"), marker="o", ms=3,
                    color=cmap(i % 20), label=m)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(xs, level_names, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"Spearman(original, randomized) of the {title}")
        ax.set_ylim(-0.5, 1.05)
    axes[0].set_ylabel("mean Spearman rank correlation")
    axes[1].legend(fontsize=7, ncol=2, loc="upper right")
    fig.suptitle(f"Cascading model-parameter randomization (Adebayo et al. 2018) of the demo {model_name}: "
                 "lower = more sensitive to the model", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())

"""Class discrimination of relevance methods on two-object demo scenes.

Every scene holds two objects of different classes with known boxes. For every
method and for each of the two present classes as the target, we measure

* ``on_target``  share of positive relevance inside the target object's box
  (:func:`sglrp_widgets.metrics.mass_in_box`),
* ``on_other``   share of positive relevance inside the *other* object's box,
* ``discrimination = on_target - on_other`` (in [-1, 1]; 1 = all positive
  evidence on the asked-for object, none on the other one),
* ``pointing``   pointing-game hit rate on the target box (and how often the
  maximum lands on the other object instead),
* ``rank_acc``   relevance rank accuracy on the target box.

Statistics are over all (scene, target) pairs: mean ± standard deviation, and
the median. SGLRP is compared with LRP and CLRP on discrimination with paired
per-pair differences and a bootstrap confidence interval that resamples
*scenes* (the two targets of a scene are not independent).

Run (about 40 s on a 2-core CPU; about 2.5 min with ``--faithfulness``)::

    python benchmarks/discrimination.py                 # the demo CNN, 40 scenes, seed 2024
    python benchmarks/discrimination.py --faithfulness  # + deletion/insertion AUC and AOPC
    python benchmarks/discrimination.py --n 80 --seed 7 --methods sglrp,clrp,lrp
    python benchmarks/discrimination.py --model vit     # the demo ViT (any name of demo.MODELS)

It prints a markdown table and writes ``benchmarks/results/discrimination.png``,
``discrimination_examples.png`` and ``discrimination.json`` (``--out`` to change); for a model other
than the default CNN the files are named after it (``discrimination_vit.json``, ...). The recorded
tables are this script's output with ``--faithfulness``, e.g.
``python benchmarks/discrimination.py --faithfulness --model vit > benchmarks/results/discrimination_vit.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _setup import (  # noqa: E402  (also puts the repo on sys.path)
    QUALITY_METHODS as DEFAULT_METHODS, ROOT, add_model_option, result_stem, shown,
)

import numpy as np  # noqa: E402

from sglrp_widgets import metrics  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_option(p)
    p.add_argument("--n", type=int, default=40, help="number of two-object scenes (default 40)")
    p.add_argument("--seed", type=int, default=2024, help="scene seed (default 2024)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated method names, or 'all' for every method in list_methods()")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    p.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG figures")
    p.add_argument("--faithfulness", action="store_true",
                   help="also score deletion/insertion AUC and AOPC (model probabilities) per method")
    p.add_argument("--steps", type=int, default=32, help="deletion/insertion steps (default 32)")
    return p.parse_args(argv)


def bootstrap_ci(per_scene: np.ndarray, reps: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of the mean of per-pair values (N scenes, K targets), resampling scenes."""
    rng = np.random.default_rng(seed)
    n = per_scene.shape[0]
    idx = rng.integers(0, n, size=(reps, n))
    means = per_scene[idx].reshape(reps, -1).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def sign_test_p(diffs: np.ndarray) -> float:
    """Exact two-sided sign test p-value (zeros dropped)."""
    from math import comb

    d = diffs[diffs != 0]
    n = d.size
    if n == 0:
        return 1.0
    k = int(min((d > 0).sum(), (d < 0).sum()))
    p = sum(comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return float(min(1.0, 2 * p))


def main(argv=None) -> int:
    args = parse_args(argv)
    from sglrp_widgets import Explainer, demo, list_methods

    catalogue = {m["name"]: m for m in list_methods()}
    if args.methods == "all":
        methods = list(catalogue)
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in catalogue]
        if unknown:
            raise SystemExit(f"unknown method(s) {unknown}; available: {sorted(catalogue)}")

    images, labels, boxes = demo.make_scenes(args.n, objects=2, seed=args.seed)
    labels = np.asarray(labels, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.int64)
    keep = labels[:, 0] != labels[:, 1]
    if not keep.all():
        print(f"note: dropping {int((~keep).sum())} scene(s) whose two objects share a class")
        images, labels, boxes = images[keep], labels[keep], boxes[keep]
    n = len(images)
    x = demo.preprocess(images)
    model = demo.load_model(args.model)
    probs = np.asarray(model(x, training=False))
    p_targets = np.take_along_axis(probs, labels, axis=1)
    top2 = np.argsort(-probs, axis=1)[:, :2]
    both_top2 = np.mean([set(top2[i]) == set(labels[i]) for i in range(n)])
    H, W = x.shape[1:3]
    masks_t = metrics.boxes_to_masks(boxes, (H, W))            # (N, 2, H, W)

    print(f"# Discrimination benchmark: {n} two-object scenes (seed {args.seed}), "
          f"{len(methods)} methods, 2 targets per scene -> {2 * n} (scene, target) pairs")
    print(f"model: demo {args.model} ({demo.MODELS[args.model].description}); "
          f"mean p(target) = {p_targets.mean():.3f}; both present classes are the "
          f"model's top-2 in {100 * both_top2:.0f}% of scenes\n")

    results = {}
    heat_store = {}
    for name in methods:
        ex = Explainer(model, name, preprocess=demo.preprocess)
        t0 = time.perf_counter()
        out = ex(x, targets=labels.tolist())
        wall = time.perf_counter() - t0
        heat = np.asarray(out.heatmap(relu=False), dtype=np.float64)   # (N, 2, H, W)
        if heat.shape != (n, 2, H, W):
            raise RuntimeError(f"{name}: heatmap shape {heat.shape}, expected {(n, 2, H, W)}")
        if not np.array_equal(np.asarray(out.targets), labels):
            raise RuntimeError(f"{name}: out.targets {np.asarray(out.targets)[:3]} != requested")
        heat_store[name] = heat
        on_t = np.empty((n, 2)); on_o = np.empty((n, 2))
        pt = np.empty((n, 2), bool); po = np.empty((n, 2), bool); ra = np.empty((n, 2))
        for k in range(2):
            h = heat[:, k]
            mt, mo = masks_t[:, k], masks_t[:, 1 - k]
            on_t[:, k] = metrics.mass_in_box(h, mt)
            on_o[:, k] = metrics.mass_in_box(h, mo)
            pt[:, k] = metrics.pointing_game(h, mt)
            po[:, k] = metrics.pointing_game(h, mo)
            ra[:, k] = metrics.relevance_rank_accuracy(h, mt)
        results[name] = dict(on_target=on_t, on_other=on_o, disc=on_t - on_o, point=pt,
                             point_other=po, rank_acc=ra, seconds=wall,
                             label=catalogue[name].get("label", name),
                             family=catalogue[name].get("family", ""))
        print(f"  {name:<22s} {wall:6.2f} s", file=sys.stderr)

    # ------------------------------------------------------------------ table
    def ms(a):
        a = np.asarray(a, dtype=np.float64).ravel()
        return f"{a.mean():.3f} ± {a.std():.3f}"

    print("Values: mean ± std over all (scene, target) pairs; median in brackets for discrimination.\n")
    print("| method | family | on target | on other | discrimination (median) | pointing hit | "
          "max on other | rank acc. | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    order = sorted(methods, key=lambda m: -results[m]["disc"].mean())
    for name in order:
        r = results[name]
        print(f"| {name} | {r['family']} | {ms(r['on_target'])} | {ms(r['on_other'])} | "
              f"{ms(r['disc'])} ({np.median(r['disc']):.3f}) | {100 * r['point'].mean():.0f}% | "
              f"{100 * r['point_other'].mean():.0f}% | {ms(r['rank_acc'])} | {r['seconds']:.2f} |")

    # ------------------------------------------------------------------ SGLRP vs LRP / CLRP
    verdicts = {}
    if "sglrp" in results:
        print("\n## Does SGLRP beat LRP and CLRP on discrimination?\n")
        print("Paired over (scene, target) pairs; 95% CI by bootstrap over scenes "
              f"({args.bootstrap} resamples); sign test on the per-pair differences.\n")
        print("| comparison | mean diff | 95% CI | SGLRP better in | sign test p |")
        print("|---|---|---|---|---|")
        for other in ("lrp", "clrp"):
            if other not in results:
                continue
            d = results["sglrp"]["disc"] - results[other]["disc"]
            lo, hi = bootstrap_ci(d, args.bootstrap)
            p = sign_test_p(d.ravel())
            win = float((d > 0).mean())
            print(f"| SGLRP − {other.upper()} | {d.mean():+.3f} | [{lo:+.3f}, {hi:+.3f}] | "
                  f"{100 * win:.0f}% of pairs | {p:.2g} |")
            verdicts[other] = dict(mean_diff=float(d.mean()), ci=[lo, hi], win=win, p=p)
        print()
        for other, v in verdicts.items():
            if v["ci"][0] > 0:
                word = "YES: SGLRP discriminates better than"
            elif v["ci"][1] < 0:
                word = "NO: SGLRP discriminates WORSE than"
            else:
                word = "NOT SHOWN: no significant difference between SGLRP and"
            print(f"- {word} {other.upper()} (mean difference {v['mean_diff']:+.3f}, "
                  f"95% CI [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]) on these {n} scenes.")

    # ------------------------------------------------------------------ faithfulness (optional)
    faith = {}
    if args.faithfulness:
        def model_fn(b):   # probabilities (the demo model ends in a softmax)
            return np.asarray(model(b, training=False))

        xx = np.repeat(x, 2, axis=0)                  # pairs (scene, target) in row order
        tt = labels.reshape(-1)
        for name in methods:
            hh = heat_store[name].reshape((-1,) + heat_store[name].shape[2:])
            t0 = time.perf_counter()
            dele = metrics.deletion_curve(model_fn, xx, hh, tt, steps=args.steps, baseline="mean",
                                          batch_size=256)
            ins = metrics.insertion_curve(model_fn, xx, hh, tt, steps=args.steps, baseline="blur",
                                          batch_size=256)
            ao = metrics.aopc(model_fn, xx, hh, tt, region=8, steps=16, baseline="uniform", seed=0,
                              noise_range=(0.0, 1.0), batch_size=256)
            faith[name] = dict(
                deletion_auc=metrics.area_under_curve(dele.scores, dele.fractions),
                insertion_auc=metrics.area_under_curve(ins.scores, ins.fractions),
                aopc=ao)
            print(f"  faithfulness {name:<22s} {time.perf_counter() - t0:6.2f} s", file=sys.stderr)
        print("\n## Faithfulness (target-class probability; mean ± std over (scene, target) pairs)\n")
        print(f"Deletion: most relevant pixels first replaced by the image's mean colour, {args.steps} "
              "steps (lower AUC = better). Insertion: from a Gaussian-blurred image (sigma 5 px), "
              "most relevant pixels restored first (higher = better). AOPC: 8x8 regions, "
              "first 16 of 64 regions replaced by U(0, 1) noise (seed 0; higher = better).\n")
        print("| method | deletion AUC ↓ | insertion AUC ↑ | AOPC ↑ |")
        print("|---|---|---|---|")
        for name in sorted(methods, key=lambda m: faith[m]["deletion_auc"].mean()):
            f = faith[name]
            print(f"| {name} | {ms(f['deletion_auc'])} | {ms(f['insertion_auc'])} | {ms(f['aopc'])} |")

    # ------------------------------------------------------------------ files
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem("discrimination", args.model)
    summary = {
        "model": args.model, "n_scenes": n, "seed": args.seed,
        "mean_p_target": float(p_targets.mean()), "both_present_top2": float(both_top2),
        "methods": {
            m: {k: (float(np.mean(v)) if isinstance(v, np.ndarray) else v)
                for k, v in r.items()} | {"disc_std": float(r["disc"].std()),
                                          "disc_median": float(np.median(r["disc"]))}
            for m, r in results.items()
        },
        "sglrp_vs": verdicts,
        "faithfulness": {m: {k: float(np.mean(v)) for k, v in f.items()} for m, f in faith.items()},
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    if not args.no_plot:
        plot(results, order, out_dir / f"{stem}.png", n, args.model)
        examples(images, labels, boxes, heat_store, out_dir / f"{stem}_examples.png")
        print(f"\nplots: {shown(out_dir / f'{stem}.png')} , {shown(out_dir / f'{stem}_examples.png')}")
    print(f"numbers: {shown(out_dir / f'{stem}.json')}")
    return 0


def plot(results, order, path, n, model_name):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 0.42 * len(order) + 1.8), sharey=True,
                             gridspec_kw={"width_ratios": [2, 1]})
    y = np.arange(len(order))[::-1]
    ax = axes[0]
    for off, key, col, lab in ((0.2, "on_target", "tab:green", "on target box"),
                               (-0.2, "on_other", "tab:red", "on other object's box")):
        m = [results[k][key].mean() for k in order]
        s = [results[k][key].std() for k in order]
        ax.barh(y + off, m, height=0.38, xerr=s, color=col, alpha=0.8, label=lab,
                error_kw=dict(lw=0.8, alpha=0.6))
    ax.scatter([results[k]["disc"].mean() for k in order], y, color="k", zorder=3, s=18,
               label="discrimination (difference)")
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(y, order)
    ax.set_xlabel("share of positive relevance (mean ± std)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Demo {model_name}: relevance on the asked-for vs the other object ({n} scenes × 2 targets)")
    ax = axes[1]
    ax.barh(y + 0.2, [100 * results[k]["point"].mean() for k in order], height=0.38,
            color="tab:green", label="max on target")
    ax.barh(y - 0.2, [100 * results[k]["point_other"].mean() for k in order], height=0.38,
            color="tab:red", label="max on other object")
    ax.set_xlabel("pointing game (% of pairs)")
    ax.set_xlim(0, 100)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def examples(images, labels, boxes, heat_store, path, scene=0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from sglrp_widgets import demo

    names = [m for m in ("sglrp", "clrp", "lrp", "gradient", "grad_cam") if m in heat_store]
    if not names:
        return
    fig, axes = plt.subplots(2, len(names) + 1, figsize=(2.2 * (len(names) + 1), 4.6))
    for k in range(2):
        axes[k, 0].imshow(images[scene])
        cls = demo.class_names[labels[scene, k]]
        axes[k, 0].set_title(f"target: {cls}", fontsize=9)
        for j, name in enumerate(names):
            h = heat_store[name][scene, k]
            v = np.abs(h).max() or 1.0
            ax = axes[k, j + 1]
            ax.imshow(h, cmap="bwr", vmin=-v, vmax=v)
            if k == 0:
                ax.set_title(name, fontsize=9)
        for j in range(len(names) + 1):
            for obj, (ec, ls) in ((k, ("lime", "-")), (1 - k, ("gold", "--"))):
                y0, x0, y1, x1 = boxes[scene, obj]
                axes[k, j].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                               ec=ec, ls=ls, lw=1.2))
            axes[k, j].axis("off")
    fig.suptitle("Red = positive, blue = negative relevance (symmetric scale per map); "
                 "green box = target object, dashed gold = the other object", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())

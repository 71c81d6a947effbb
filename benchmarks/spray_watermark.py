"""Does SpRAy find the Clever Hans? Purity and recall of the top-ranked cluster on held-out watermark scenes.

    python benchmarks/spray_watermark.py [--images 3000] [--fractions 0.5 0.8] [--methods sglrp lrp ...] [--write]

The bundled ``watermark`` model (trained on scenes where 95 % of the rings carry a watermark) explains
``--images`` held-out single-object scenes (seed ``HELD_OUT_SEED``, never used in training) for their true
label with each method; SpRAy runs on the ring class. For the cluster SpRAy ranks first (cluster 0, with
the eigengap's number of clusters): **purity** = share of watermarked images in it, **recall** = share of
the ring class's watermarked images it holds. ``--fractions`` sets the share of watermarked rings in the
held-out set (0.5: a cluster's purity is easy to tell from the base rate). Also prints the model's
behaviour on fresh scenes (``train_watermark.evaluate``).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _setup  # noqa: F401  (quiet TF, repository on sys.path)

import numpy as np  # noqa: E402

from sglrp_widgets import demo  # noqa: E402
from sglrp_widgets.dataset import explain_dataset  # noqa: E402
from sglrp_widgets.demo.train_watermark import HELD_OUT_SEED, evaluate  # noqa: E402
from sglrp_widgets.demo.watermark import WATERMARK_BOX, WATERMARK_CLASS, make_watermark_scenes  # noqa: E402
from sglrp_widgets.spray import spray  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "spray_watermark.md"


def box_share(store, rows) -> float:
    """Median share of the positive relevance inside the watermark's box."""
    y0, x0, y1, x1 = WATERMARK_BOX
    heat = np.maximum(store["relevance"].oindex[rows].sum(axis=-1), 0)
    return float(np.median(heat[:, y0:y1, x0:x1].sum(axis=(1, 2)) / np.maximum(heat.sum(axis=(1, 2)), 1e-30)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.8])
    ap.add_argument("--methods", nargs="+", default=["sglrp", "clrp", "lrp", "lrp.epsilon", "gradient", "grad_cam"])
    ap.add_argument("--write", action="store_true", help="save the table to " + str(RESULTS))
    args = ap.parse_args(argv)

    model = demo.load_model("watermark")
    behaviour = evaluate(model, n=2000)
    lines = [f"# SpRAy on the watermark demo ({args.images} held-out scenes, seed {HELD_OUT_SEED}, class ring)", "",
             f"`python benchmarks/spray_watermark.py --images {args.images} --fractions "
             f"{' '.join(map(str, args.fractions))} --methods {' '.join(args.methods)}`", "",
             "Model behaviour on 2,000 fresh scenes (seed 9200): " + ", ".join(
                 f"{k} {v:.3f}" for k, v in behaviour.items()), "",
             "| watermarked rings | method | ring maps | clusters (eigengap) | top cluster | purity | recall | "
             "relevance share in the watermark box (marked rings, median) | SpRAy s |",
             "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for fraction in args.fractions:
            images, labels, marked = make_watermark_scenes(args.images, seed=HELD_OUT_SEED, fraction=fraction)
            for method in args.methods:
                out = f"{tmp}/{method}_{fraction}.zarr"
                store = explain_dataset(model, (images, labels), method, targets="label", out=out,
                                        preprocess=demo.preprocess, progress=False)
                t = time.perf_counter()
                r = spray(out, classes=[WATERMARK_CLASS], progress=False)[WATERMARK_CLASS]
                seconds = time.perf_counter() - t
                is_marked = marked[r.ids]
                top = r.clusters == 0
                purity, recall = float(is_marked[top].mean()), float(top[is_marked].mean())
                share = box_share(store, r.rows[is_marked])
                lines.append(f"| {fraction:.0%} | `{method}` | {len(r.rows)} | {r.n_clusters} | "
                             f"{int(top.sum())} | {purity:.3f} | {recall:.3f} | {share:.3f} | {seconds:.1f} |")
                print(lines[-1], flush=True)
    if args.write:
        RESULTS.write_text("\n".join(lines) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Every keras.applications family (and the bundled ViT): method time ÷ a plain input gradient, same run.

    python benchmarks/bench_families.py [--size 224] [--repeats 3] [--families VGG16 ResNet50 ...]

For each family: the smallest model (random weights, 1000 ImageNet classes, logits head), one image of
``size`` x ``size`` (the ViT demo model keeps its 64 x 64), batch 1. The baseline is a ``tape.gradient`` of the
target logit through the Keras model, compiled with ``tf.function``. Each method is timed on a new image every
call (no per-image state can be reused); each ratio is the median over ``--repeats`` pairs of runs made
alternately with the baseline, so both sides see the same background load, once the explainer's passes run
compiled (``Explainer.wait_compiled``). ``first s`` is the first call (reading the model, the replay check, its
passes as Python or, on VGG16, compiled on the call: ``compile="auto"``). Prints a markdown table
(``benchmarks/results/families_224.md``).
"""
from __future__ import annotations

import argparse
import sys

import _setup  # noqa: F401  (quiet TensorFlow, repository on sys.path)
import keras
import numpy as np
import tensorflow as tf
from bench_engine import paired, plain_gradient, timed

from sglrp_widgets import demo
from sglrp_widgets.engine import Explainer

A = keras.applications
FAMILIES = {
    "VGG16": A.VGG16, "ResNet50": A.ResNet50, "ResNet50V2": A.ResNet50V2, "DenseNet121": A.DenseNet121,
    "InceptionV3": A.InceptionV3, "InceptionResNetV2": A.InceptionResNetV2, "Xception": A.Xception,
    "MobileNet": A.MobileNet, "MobileNetV2": A.MobileNetV2, "MobileNetV3Small": A.MobileNetV3Small,
    "EfficientNetB0": A.EfficientNetB0, "EfficientNetV2B0": A.EfficientNetV2B0, "NASNetMobile": A.NASNetMobile,
    "ConvNeXtTiny": A.ConvNeXtTiny, "ViT (demo)": None,
}
METHODS = ["sglrp", "lrp.epsilon", "gradient"]


def build(name: str, size: int):
    if FAMILIES[name] is None:
        return demo.load_model("vit")
    return FAMILIES[name](weights=None, input_shape=(size, size, 3), classifier_activation=None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    args = ap.parse_args(argv)
    print(f"size={args.size} batch=1 tf={tf.__version__} keras={keras.__version__} repeats={args.repeats} (median)")
    print()
    print("| family | layers | plain gradient s | " + " | ".join(f"{m} ÷ gradient" for m in METHODS) + " | "
          + " | ".join(f"{m} first s" for m in METHODS) + " |")
    print("|---|---|---|" + "---|" * (2 * len(METHODS)))
    rng = np.random.default_rng(0)
    for name in args.families:
        model = build(name, args.size)
        shape = tuple(model.input_shape[1:])
        x = rng.uniform(0, 255, (1,) + shape).astype("float32")
        t = np.array([3], "int32")

        gradient = plain_gradient(model)
        baseline = lambda: gradient(x, t)  # noqa: E731
        timed(baseline)
        base = float(np.median([timed(baseline) for _ in range(args.repeats)]))
        counter = iter(range(1, 10**6))
        ratios, firsts = [], []
        for method in METHODS:
            ex = Explainer(model, method, cache=None)
            firsts.append(timed(lambda: ex(x + np.float32(next(counter) * 1e-3), t)))
            ex.wait_compiled()          # steady calls: once the passes compiled in the background run compiled
            _, ratio = paired(lambda: ex(x + np.float32(next(counter) * 1e-3), t), baseline, args.repeats)
            ratios.append(ratio)
        print(f"| {name} | {len(model.layers)} | {base:.3f} | " + " | ".join(f"{r:.2f}" for r in ratios) + " | "
              + " | ".join(f"{f:.1f}" for f in firsts) + " |", flush=True)
        del model
        keras.backend.clear_session()


if __name__ == "__main__":
    sys.exit(main())

"""Set-up shared by the quality benchmark scripts (discrimination.py, sanity.py).

Quiet TensorFlow's C++ logs, put the repository on ``sys.path`` (so the scripts run from a checkout
without installing), and the default list of methods they compare.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUALITY_METHODS = [
    "sglrp", "clrp", "lrp", "deep_taylor", "lrp.epsilon", "lrp.alpha_1_beta_0",
    "gradient", "input_x_gradient", "guided_backprop", "integrated_gradients", "smoothgrad",
    "grad_cam", "grad_cam_plus_plus", "guided_grad_cam",
]


def add_model_option(parser) -> None:
    """``--model NAME``: which bundled demo model (``sglrp_widgets.demo.MODELS``) the script explains."""
    from sglrp_widgets import demo

    parser.add_argument(
        "--model", default=demo.DEFAULT_MODEL, choices=list(demo.MODELS),
        help=f"bundled demo model to explain (default {demo.DEFAULT_MODEL}): "
        + "; ".join(f"{m.name}: {m.description}" for m in demo.MODELS.values()),
    )


def result_stem(stem: str, model: str) -> str:
    """File stem of a script's results for a demo model: ``stem`` for the default model, else ``stem_model``."""
    from sglrp_widgets import demo

    return stem if model == demo.DEFAULT_MODEL else f"{stem}_{model}"


def shown(path) -> str:
    """A path as the scripts print it: relative to the repository when inside it (no machine paths in results)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

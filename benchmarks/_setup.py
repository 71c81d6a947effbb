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

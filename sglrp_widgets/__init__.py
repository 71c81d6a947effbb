"""sglrp_widgets: explain Keras image classifiers with SGLRP, CLRP, LRP, gradient and CAM methods.

What each method computes (rules, composites, heads, post-steps, the layers covered, references):
``docs/methods.md``.

Examples
--------
>>> from sglrp_widgets import Explainer, explain, list_methods
>>> out = Explainer(model, "sglrp")(images, targets=[340])
"""
from __future__ import annotations

from . import _quiet

_quiet.install()  # before anything imports TensorFlow: keeps its C++ start-up lines off stderr

__version__ = "0.1.0"

__all__ = ["Explainer", "Explanation", "explain", "list_methods", "method_support", "register_layer",
           "float32_copy", "RelevanceExplorer", "ExplainError", "explain_dataset", "DatasetExplorer"]


def __getattr__(name):
    # Imported lazily: `import sglrp_widgets.metrics` must not pay for TensorFlow.
    if name in ("Explainer", "Explanation", "explain", "method_support"):
        from . import engine
        return getattr(engine, name)
    if name == "register_layer":
        from .propagation import register_layer
        return register_layer
    if name == "float32_copy":
        from .graph import float32_copy
        return float32_copy
    if name == "list_methods":
        from .methods import list_methods
        return list_methods
    if name == "ExplainError":
        from .errors import ExplainError
        return ExplainError
    if name == "explain_dataset":
        from .dataset import explain_dataset
        return explain_dataset
    if name == "DatasetExplorer":
        from .dataset_explorer import DatasetExplorer
        return DatasetExplorer
    if name == "RelevanceExplorer":
        from .widget import RelevanceExplorer
        return RelevanceExplorer
    raise AttributeError(f"module 'sglrp_widgets' has no attribute {name!r}")

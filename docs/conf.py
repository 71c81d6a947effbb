"""Sphinx configuration: Markdown pages (MyST) and the API reference from the numpy-style docstrings.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (the tests do the same).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))            # document this checkout, not an installed copy
os.environ.setdefault("SGLRP_WIDGETS_OFFLINE", "1")

project = "sglrp_widgets"
author = "the sglrp_widgets authors"
copyright = "the sglrp_widgets authors"  # noqa: A001 - Sphinx's name

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True     # dataclass fields listed under "Attributes" are not documented twice
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False}

html_theme = "alabaster"
html_title = "sglrp_widgets"

"""The documentation: it builds with Sphinx without a single warning, the methods page covers every
method of the registry, and the README and docstrings point to it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS_PAGE = ROOT / "docs" / "methods.md"


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    out = tmp_path / "html"
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                        str(ROOT / "docs"), str(out)], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-4000:]
    methods = (out / "methods.html").read_text(encoding="utf-8")
    for anchor in ("rules-for-linear-layers", "layers-of-modern-classifiers", "composites", "heads-and-post-steps",
                   "gradient-and-cam-methods", "choices-where-the-literature-leaves-one", "references"):
        assert f'id="{anchor}"' in methods, anchor
    api = (out / "api.html").read_text(encoding="utf-8")
    for name in ("sglrp_widgets.engine.Explainer", "sglrp_widgets.engine.explain",
                 "sglrp_widgets.widget.RelevanceExplorer", "sglrp_widgets.methods.list_methods",
                 "sglrp_widgets.cli.main", "sglrp_widgets.propagation.register_layer",
                 "sglrp_widgets.dataset.explain_dataset", "sglrp_widgets.spray.spray",
                 "sglrp_widgets.dataset_explorer.DatasetExplorer"):
        assert f'id="{name}"' in api, name
    datasets = (out / "datasets.html").read_text(encoding="utf-8")
    for anchor in ("step-1-explain-dataset", "what-the-store-holds", "step-2-spray", "step-3-datasetexplorer",
                   "from-the-command-line"):
        assert f'id="{anchor}"' in datasets, anchor
    assert 'href="api.html#sglrp_widgets.dataset.explain_dataset"' in datasets   # the guide links the reference
    widget = (out / "widget.html").read_text(encoding="utf-8")
    for anchor in ("what-to-pass", "the-controls", "reading-the-picture", "from-python", "saved-notebooks"):
        assert f'id="{anchor}"' in widget, anchor
    assert 'href="api.html#sglrp_widgets.widget.RelevanceExplorer"' in widget


def test_methods_page_covers_the_registry():
    from sglrp_widgets.methods import METHODS

    text = METHODS_PAGE.read_text(encoding="utf-8")
    missing = [name for name in METHODS if f"`{name}`" not in text]
    assert not missing, f"docs/methods.md does not describe: {missing}"
    composites = {m.composite for m in METHODS.values() if m.composite}
    assert not [c for c in composites if f"`{c}`" not in text]
    for rule in ("### z (LRP-0)", "### epsilon", "### z+", "### alpha_beta", "### gamma", "### w_square", "### flat",
                 "### z_box"):
        assert rule in text, rule
    for layer in ("Affine elementwise maps", "Scaled sums", "Grouped and depthwise", "Gated products",
                  "Products of two signals", "Elementwise nonlinearities", "LayerNormalization", "MultiHeadAttention"):
        assert f"**{layer}" in text, layer
    assert len(re.findall(r"^- [A-Z].*\(\d{4}\)\.", text, flags=re.M)) >= 15, "references"


def test_readme_and_docstrings_point_to_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/methods.md)" in readme
    assert "../shared/" not in readme, "the README must not point outside the repository"
    for module in ("__init__.py", "cli.py"):
        assert "docs/methods.md" in (ROOT / "sglrp_widgets" / module).read_text(encoding="utf-8"), module


@pytest.mark.slow
def test_the_datasets_page_worked_example_runs_and_prints_what_it_says(tmp_path):
    pytest.importorskip("zarr")
    pytest.importorskip("sklearn")
    page = (ROOT / "docs" / "datasets.md").read_text(encoding="utf-8")
    example = re.search(r"## A worked example.*?```python\n(.*?)```", page, flags=re.S).group(1)
    r = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    n_clusters, marked_share = r.stdout.split()[-2:]
    assert n_clusters == "2"                                      # "the eigengap's number of groups: 2"
    assert abs(float(marked_share) - 0.9) < 0.05                  # "about 0.9"
    assert (tmp_path / "rings.zarr").is_dir()

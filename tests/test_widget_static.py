"""The front end has one source (js/), which the build ships in the wheel; the bundled class names (no TF)."""

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_committed_copy_of_the_front_end():
    tracked = subprocess.run(["git", "ls-files", "sglrp_widgets/static"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0:  # a git checkout (not an unpacked sdist)
        assert tracked.stdout.strip() == "", "sglrp_widgets/static/ is built from js/, never committed"


def test_an_editable_checkout_loads_js_directly():
    from sglrp_widgets.widget import RelevanceExplorer, _front_end

    if not (ROOT / "sglrp_widgets" / "static").exists():  # a checkout, not an installed wheel
        assert _front_end("widget.js") == ROOT / "js" / "widget.js"
    assert str(RelevanceExplorer._esm) == _front_end("widget.js").read_text()
    assert str(RelevanceExplorer._css) == _front_end("widget.css").read_text()
    from sglrp_widgets.dataset_explorer import DatasetExplorer

    assert str(DatasetExplorer._esm) == _front_end("dataset_explorer.js").read_text()
    assert str(DatasetExplorer._css) == _front_end("dataset_explorer.css").read_text()


def test_the_wheel_ships_the_front_end_demo_model_and_class_names(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("sglrp_widgets-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for name in ("widget.js", "widget.css", "dataset_explorer.js", "dataset_explorer.css"):
            assert zf.read(f"sglrp_widgets/static/{name}") == (ROOT / "js" / name).read_bytes()
        names = zf.namelist()
    assert "sglrp_widgets/demo/demo_model.keras" in names
    assert "sglrp_widgets/data/imagenet_classes.json" in names
    assert "sglrp_widgets/scheduler.py" in names
    assert not [n for n in names if "__pycache__" in n or "node_modules" in n]


def test_the_sdist_builds_the_same_wheel_contents(tmp_path):
    """An sdist carries js/, so a wheel built from it (what pip does from PyPI) ships the front end too."""
    proc = subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sdist = next(tmp_path.glob("sglrp_widgets-*.tar.gz"))
    with tarfile.open(sdist) as tf:
        names = tf.getnames()
    assert any(n.endswith("/js/widget.js") for n in names) and any(n.endswith("/js/widget.css") for n in names)
    assert not [n for n in names if "node_modules" in n or "/artifacts/" in n]


def test_module_has_no_runtime_dependencies():
    for name in ("widget.js", "dataset_explorer.js"):
        src = (ROOT / "js" / name).read_text()
        assert not [line for line in src.splitlines() if line.startswith("import ")], name
    pkg = json.loads((ROOT / "js" / "package.json").read_text())
    assert not pkg.get("dependencies"), "the widget module must not need runtime npm packages"


def test_imagenet_class_names():
    names = json.loads((ROOT / "sglrp_widgets" / "data" / "imagenet_classes.json").read_text())
    assert len(names) == 1000
    assert names[340] == "zebra"
    assert names[386] == "African elephant"
    assert names[0] == "tench"
    assert all(isinstance(n, str) and n for n in names)

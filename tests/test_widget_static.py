"""The shipped front end equals the js/ source, and the bundled class names are right (no TF)."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_static_files_equal_js_source():
    for name in ("widget.js", "widget.css"):
        src = (ROOT / "js" / name).read_bytes()
        shipped = (ROOT / "sglrp_widgets" / "static" / name).read_bytes()
        assert shipped == src, f"sglrp_widgets/static/{name} differs from js/{name}: run `cd js && npm run build`"


def test_the_wheel_ships_the_front_end_demo_model_and_class_names(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("sglrp_widgets-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for name in ("widget.js", "widget.css"):
            assert zf.read(f"sglrp_widgets/static/{name}") == (ROOT / "js" / name).read_bytes()
        names = zf.namelist()
    assert "sglrp_widgets/demo/demo_model.keras" in names
    assert "sglrp_widgets/data/imagenet_classes.json" in names


def test_module_has_no_runtime_dependencies():
    src = (ROOT / "js" / "widget.js").read_text()
    assert "import " not in "\n".join(l for l in src.splitlines() if l.startswith("import"))
    pkg = json.loads((ROOT / "js" / "package.json").read_text())
    assert not pkg.get("dependencies"), "the widget module must not need runtime npm packages"


def test_test_hooks_present_in_module():
    src = (ROOT / "js" / "widget.js").read_text()
    assert '"sglrp-explorer"' in src
    for role in ("class-select", "method-select", "opacity", "heatmap", "status"):
        assert f'role: "{role}"' in src, role


def test_imagenet_class_names():
    names = json.loads((ROOT / "sglrp_widgets" / "data" / "imagenet_classes.json").read_text())
    assert len(names) == 1000
    assert names[340] == "zebra"
    assert names[386] == "African elephant"
    assert names[0] == "tench"
    assert all(isinstance(n, str) and n for n in names)

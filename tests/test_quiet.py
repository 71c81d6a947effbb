"""`import sglrp_widgets` keeps TensorFlow's C++ and absl start-up lines out of terminals and notebooks,
unless the user asks for them (SGLRP_WIDGETS_TF_LOGS=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what TensorFlow 2.16+ prints on import without help (absl's pre-init notice, oneDNN, CUDA probing)
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cuda", "cpu_feature_guard")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "SGLRP_WIDGETS_TF_LOGS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def _stderr_of(code: str, **extra) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(**extra),
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    return r.stderr


@pytest.mark.slow
def test_terminal_is_quiet_unless_asked():
    code = "import sglrp_widgets.engine, tensorflow as tf; print(float(tf.reduce_sum(tf.ones(3))))"
    assert _stderr_of(code) == ""
    loud = _stderr_of(code, SGLRP_WIDGETS_TF_LOGS="1")  # the same import, logs asked for: they are there
    assert any(n in loud for n in NOISE), loud


def test_python_errors_still_surface():
    """Descriptor 2 is restored before an import error propagates, and Python's own stderr works."""
    code = ("import sys, sglrp_widgets, importlib; from sglrp_widgets import _quiet\n"
            "with _quiet.stderr_fd_silenced():\n    import os; os.write(2, b'hidden\\n')\n"
            "os.write(2, b'shown\\n'); print('py', file=sys.stderr)")
    assert _stderr_of(code) == "shown\npy\n"


@pytest.mark.slow
def test_notebook_shows_no_red_block(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from sglrp_widgets import demo, explain\n"
        "model = demo.load_model()\n"
        "images = demo.preprocess(demo.make_scenes(1)[0])\n"
        "print(explain(model, images, 'sglrp').relevance.shape)")])
    saved = {k: os.environ.get(k) for k in ("TF_CPP_MIN_LOG_LEVEL", "SGLRP_WIDGETS_TF_LOGS", "PYTHONPATH")}
    os.environ.update({k: v for k, v in _env().items() if k == "PYTHONPATH"})
    for k in ("TF_CPP_MIN_LOG_LEVEL", "SGLRP_WIDGETS_TF_LOGS"):
        os.environ.pop(k, None)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = nb.cells[0].outputs
    assert [o.get("name") for o in outputs if o.output_type == "stream"] == ["stdout"], outputs
    assert "(1, 64, 64, 3)" in outputs[0].text

"""Retake the README's widget picture (notebooks/figures/widget.png) from a plain install.

Builds the wheel, installs it into a fresh virtual environment (``--system-site-packages`` for TensorFlow
and Jupyter, ``--no-deps``), checks that the kernel imports sglrp_widgets from that install (not from this
checkout), opens the browser tests' notebook in JupyterLab 4 from that environment, runs it and
screenshots the notebook. Offline; needs /usr/bin/chromium.

    python tests/browser/readme_figure.py [-o notebooks/figures/widget.png]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import conftest as harness  # noqa: E402  (the browser tests' server and notebook)

ROOT = harness.ROOT


def plain_install(tmp: Path) -> Path:
    """A venv with the built wheel installed; returns its python."""
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *map(str, wheels.glob("*.whl"))],
                   check=True)
    where = subprocess.run([str(python), "-c", "import sglrp_widgets; print(sglrp_widgets.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp, env={"PATH": "/usr/bin:/bin"}).stdout
    if not where.startswith(str(venv)):
        raise SystemExit(f"the plain install is shadowed: sglrp_widgets comes from {where.strip()}")
    return python


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default=str(ROOT / "notebooks" / "figures" / "widget.png"))
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        python = plain_install(tmp)
        # JupyterLab and its extensions (anywidget's) come from the base environment, like the rest of the
        # system site-packages this venv sees
        os.environ["JUPYTER_PATH"] = str(Path(sys.base_prefix) / "share" / "jupyter")
        root = tmp / "work"
        root.mkdir()
        srv = harness.Server("lab-light", root, tmp / "server.log", python=str(python), checkout=False)
        try:
            srv.wait_ready()
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=harness.CHROMIUM, args=harness.CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1180})
                page.goto(srv.url(), wait_until="domcontentloaded", timeout=120_000)
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
                time.sleep(3)
                for _ in range(3):
                    if page.locator(".jp-Dialog .jp-mod-accept").count():
                        page.locator(".jp-Dialog .jp-mod-accept").first.click()
                    time.sleep(1)
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                canvas = page.locator(".sglrp-explorer canvas[data-role=heatmap]").first
                canvas.wait_for(timeout=300_000)
                deadline = time.time() + 300
                while not canvas.get_attribute("data-map") and time.time() < deadline:
                    time.sleep(0.5)
                # the caption exists only in this version: a kernel importing another install fails here
                page.locator(".sglrp-explorer [data-role=caption]").first.wait_for(timeout=10_000)
                time.sleep(2)  # let the first prefetch settle, so the status line shows the map
                page.locator(".jp-Notebook .jp-Cell").first.screenshot(path=args.output)  # the cell and its output
                browser.close()
        finally:
            srv.stop()
    print(args.output)


if __name__ == "__main__":
    main()

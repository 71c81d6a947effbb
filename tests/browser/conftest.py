"""Real-browser harness: a JupyterLab 4 / Notebook 7 server on 127.0.0.1 and headless Chromium.

Each server gets a random free port, a random token, ``--no-browser`` and a temporary root dir
holding a generated notebook that shows a ``RelevanceExplorer`` of the bundled demo model on
two-object synthetic scenes with boxes (nothing is downloaded).
Servers are stopped (process group terminated) when the fixture ends. Screenshots go to
``artifacts/browser/``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "artifacts" / "browser"

NOTEBOOK_CODE = f"""\
import sys
sys.path.insert(0, {str(ROOT)!r})
from sglrp_widgets import demo
from sglrp_widgets.widget import RelevanceExplorer

model = demo.load_model()   # the bundled, trained demo model (nothing is downloaded)
images, labels, boxes = demo.make_scenes(3, objects=2, seed=0)  # two shapes per scene + their boxes
explorer = RelevanceExplorer(model, images, preprocess=demo.preprocess,
                             class_names=demo.class_names, boxes=boxes, prefetch=False)
explorer
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path) -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "explorer-cell",
                   "metadata": {}, "outputs": [], "source": NOTEBOOK_CODE}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))


class Server:
    def __init__(self, kind: str, root: Path, log: Path):
        self.kind, self.root = kind, root
        self.port, self.token = _free_port(), secrets.token_hex(16)
        app = "lab" if kind == "lab" else "notebook"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["JUPYTER_RUNTIME_DIR"] = str(root / ".runtime")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        cmd = [sys.executable, "-m", "jupyter", app, "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        if kind == "lab":
            cmd += ["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                    "--LabApp.extension_manager=readonly"]
        self.logf = open(log, "w")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"{self.kind} server did not start within {timeout}s")

    def url(self, notebook: str) -> str:
        path = f"lab/tree/{notebook}" if self.kind == "lab" else f"notebooks/{notebook}"
        return f"{self.base}/{path}?token={self.token}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its kernels (own group)
                self.proc.wait(20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self.logf.close()


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    for mod in ("playwright.sync_api", "jupyterlab", "notebook", "anywidget"):
        try:
            __import__(mod)
        except ImportError:
            return f"{mod} is not installed"
    return None


@pytest.fixture(scope="session")
def browser():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(params=["lab", "notebook"], scope="module")
def server(request, tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp(f"jupyter-{request.param}")
    _write_notebook(root / "explorer.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob(f"{request.param}-*"):  # screenshots of an earlier run
        old.unlink()
    log = ARTIFACTS / f"{request.param}-server.log"
    srv = Server(request.param, root, log)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    """Print where the screenshots are, also when output capture hides the tests' prints."""
    if ARTIFACTS.is_dir():
        shots = sorted(ARTIFACTS.glob("*.png"))
        if shots:
            terminalreporter.write_sep("-", "browser screenshots")
            for p in shots:
                terminalreporter.write_line(str(p))

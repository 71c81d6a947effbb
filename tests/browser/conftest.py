"""Real-browser harness: JupyterLab 4 (light and dark), Notebook 7 and marimo on 127.0.0.1, headless Chromium.

Each server gets a free port, a random token (Jupyter), ``--no-browser``/``--headless`` and a temporary root
holding a generated notebook that shows a ``RelevanceExplorer`` of the bundled demo model on two-object
synthetic scenes with labelled boxes (nothing is downloaded). The cell is what a user of a plain install
types: the package is found on ``PYTHONPATH`` (this checkout), not through a ``sys.path`` line.
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
KINDS = ["lab-light", "lab-dark", "notebook", "marimo"]

NOTEBOOK_CODE = """\
from sglrp_widgets import RelevanceExplorer, demo

images, labels, boxes = demo.make_scenes(8, objects=2, seed=0)
explorer = RelevanceExplorer(demo.load_model("cnn"), images, preprocess=demo.preprocess,
                             class_names=demo.class_names, boxes=boxes, box_labels=labels)
explorer"""

MARIMO_APP = '''\
import marimo

app = marimo.App(width="full")


@app.cell
def _():
{code}
    return


if __name__ == "__main__":
    app.run()
'''

# JupyterLab / Notebook 7 user settings: no news pop-up; the dark variant picks JupyterLab Dark.
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"}}
DARK_SETTINGS = {"@jupyterlab/apputils-extension/themes.jupyterlab-settings": {"theme": "JupyterLab Dark"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, code: str = NOTEBOOK_CODE) -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "explorer-cell",
                   "metadata": {}, "outputs": [], "source": code}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))


def _write_settings(folder: Path, settings: dict) -> None:
    for rel, value in settings.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(value))


class Server:
    """One front end serving ``root`` on 127.0.0.1 (a free port), stopped with its kernels by ``stop()``."""

    def __init__(self, kind: str, root: Path, log: Path, python: str = sys.executable, checkout: bool = True,
                 code: str = NOTEBOOK_CODE):
        """``checkout``: import sglrp_widgets from this checkout (PYTHONPATH); False: from ``python``'s install.
        ``code``: the notebook's one cell (default: a RelevanceExplorer of the demo model)."""
        self.kind, self.root = kind, root
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if checkout:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env["JUPYTER_RUNTIME_DIR"] = str(root / ".runtime")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if kind == "marimo":
            self.app = "explorer.py"
            (root / self.app).write_text(MARIMO_APP.format(code="\n".join(
                "    " + line if line else "" for line in code.splitlines())))
            cmd = [python, "-m", "marimo", "run", self.app, "--headless", "--host", "127.0.0.1",
                   "--port", str(self.port), "--token-password", self.token, "--no-sandbox", "--no-check"]
        else:
            self.app = "explorer.ipynb"
            write_notebook(root / self.app, code)
            settings = root / ".settings"
            _write_settings(settings, {**LAB_SETTINGS, **(DARK_SETTINGS if kind == "lab-dark" else {})})
            env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
            app = "notebook" if kind == "notebook" else "lab"
            # `-m jupyterlab` / `-m notebook`, not `-m jupyter lab` (which runs whichever jupyter-lab script
            # is first on PATH): the server, and so its kernels, use `python`
            cmd = [python, "-m", "notebook" if app == "notebook" else "jupyterlab", "--no-browser",
                   "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}"]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                cmd.append("--allow-root")  # CI containers run as root
            if app == "lab":
                cmd += ["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                        "--LabApp.extension_manager=readonly"]
        self.logf = open(log, "w")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"

    @property
    def jupyter(self) -> bool:
        return self.kind != "marimo"

    def wait_ready(self, timeout: float = 120) -> None:
        probe = f"{self.base}/api/status?token={self.token}" if self.jupyter else f"{self.base}/health"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"{self.kind} server did not start within {timeout}s")

    def url(self) -> str:
        if self.kind == "marimo":
            return f"{self.base}/?access_token={self.token}"
        path = f"notebooks/{self.app}" if self.kind == "notebook" else f"lab/tree/{self.app}"
        return f"{self.base}/{path}?token={self.token}"

    def api(self, method: str, path: str):
        req = urllib.request.Request(f"{self.base}/api/{path}?token={self.token}", method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel, as when the notebook is reopened another day."""
        for k in self.api("GET", "kernels"):
            self.api("DELETE", f"kernels/{k['id']}")

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


def skip_reason(kind: str = "lab") -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    mods = ["playwright.sync_api", "anywidget"] + (["marimo"] if kind == "marimo" else ["jupyterlab", "notebook"])
    for mod in mods:
        try:
            __import__(mod)
        except ImportError:
            return f"{mod} is not installed"
    return None


@pytest.fixture(scope="session")
def browser():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def serve(kind: str, tmp_path_factory, prefix: str = "", code: str = NOTEBOOK_CODE):
    """A running server of ``kind`` whose notebook holds ``code`` (a generator for a fixture); artifacts are
    named ``<prefix><kind>-*`` and an earlier run's are removed first."""
    reason = skip_reason(kind)
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp(f"{prefix}front-end-{kind}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob(f"{prefix}{kind}-*"):  # screenshots of an earlier run
        old.unlink()
    srv = Server(kind, root, ARTIFACTS / f"{prefix}{kind}-server.log", code=code)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=KINDS, scope="module")
def server(request, tmp_path_factory):
    yield from serve(request.param, tmp_path_factory)


def pytest_terminal_summary(terminalreporter):
    """Print where the screenshots are, also when output capture hides the tests' prints."""
    if ARTIFACTS.is_dir():
        shots = sorted(ARTIFACTS.glob("*.png"))
        if shots:
            terminalreporter.write_sep("-", "browser screenshots")
            for p in shots:
                terminalreporter.write_line(str(p))

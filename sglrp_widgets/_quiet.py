"""Keep TensorFlow's C++ start-up log lines out of terminals and notebooks.

Importing TensorFlow 2.16+ writes lines such as ``WARNING: All log messages before absl::InitializeLog()
is called are written to STDERR`` and ``I0000 ... oneDNN custom operations are on`` straight to file
descriptor 2, before ``TF_CPP_MIN_LOG_LEVEL`` is consulted; in Jupyter they show up as a red block.
:func:`install` (called first thing by ``import sglrp_widgets``) does two things, and imports nothing
heavy itself:

- sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless it is already set: TensorFlow's later C++ lines (device set-up
  such as ``failed call to cuInit`` on a machine without a GPU; problems still raise Python exceptions),
- wraps the first ``import tensorflow`` so that file descriptor 2 points to ``os.devnull`` while
  TensorFlow's module body runs. Python exceptions raised by that import still propagate with their
  traceback (the descriptor is restored first); ``sys.stderr`` of a Jupyter kernel is untouched.

Set ``SGLRP_WIDGETS_TF_LOGS=1`` before importing ``sglrp_widgets`` to see every line (for example to
debug a GPU set-up). Importing TensorFlow *before* ``sglrp_widgets`` also leaves its output alone.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import os
import sys

SHOW_LOGS_ENV = "SGLRP_WIDGETS_TF_LOGS"


def wants_logs() -> bool:
    """True when the user asked for TensorFlow's start-up lines (``SGLRP_WIDGETS_TF_LOGS=1``)."""
    return os.environ.get(SHOW_LOGS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def stderr_fd_silenced():
    """Point file descriptor 2 at ``os.devnull`` for the duration of the block (Python's ``sys.stderr``
    object is flushed first and keeps working)."""
    try:
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - a closed or odd stderr must not break the import
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (some embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader's ``exec_module`` with descriptor 2 silenced."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # the module must look as if the real loader had loaded it (importlib.resources, reloads)
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with stderr_fd_silenced():
            self._loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """One-shot meta path finder: wraps the loader of the top-level ``tensorflow`` package."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Quiet TensorFlow's start-up (see the module docstring); idempotent, a no-op when logs are wanted."""
    if wants_logs():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())

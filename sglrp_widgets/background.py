"""A function run in a thread while the caller goes on: the first call of an explainer traces one pass
while TensorFlow executes another (TensorFlow releases the GIL while it executes)."""
from __future__ import annotations

import threading


class Background:
    """``fn()`` run in a thread (TensorFlow releases the GIL while it executes): :meth:`result` waits for it and
    returns its value or raises its exception."""

    def __init__(self, fn):
        self._value, self._error = None, None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self._value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = exc

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value

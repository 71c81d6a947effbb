"""Errors raised for user mistakes.

Every error says what was wrong, with the offending value, and what to do instead.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class ExplainError(ValueError):
    """A user-facing error: bad input, unknown method or parameter, unsupported model."""


class UnsupportedLayerError(ExplainError):
    """A layer of the model has no rule for the requested method."""

    def __init__(self, message: str, layer_name: str = "", layer_class: str = ""):
        super().__init__(message)
        self.layer_name = layer_name
        self.layer_class = layer_class


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the nearest valid choice, or ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""

"""Heads: the initial relevance at the logits (``docs/methods.md``, "Heads and post-steps"), in float64 on the host.

For SGLRP and CLRP the dual head is folded into the target head with the scaling ``s`` computed from the dual
sums ``v`` (``lrp.py``), so one backward pass gives ``H_target - s H_dual``.
"""
from __future__ import annotations

import numpy as np

from .rules import SAFE_EPS


def resolve_targets(logits: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """Targets (N, K) with negative entries ``-r-1`` replaced by the r-th most probable class."""
    ranked = np.argsort(-logits, axis=-1, kind="stable")
    rank = np.clip(-spec - 1, 0, logits.shape[-1] - 1)
    return np.where(spec < 0, np.take_along_axis(ranked, rank, axis=1), spec).astype(np.int64)


def _softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def initial_relevance(head: str, logits: np.ndarray, targets: np.ndarray, dual_sums: np.ndarray | None = None,
                      scaling: bool = True) -> np.ndarray:
    """The initial relevance at the logits, (K, N, C) float64 (``docs/methods.md``, heads).

    For ``sglrp``/``clrp`` the dual head is folded in: ``R = R_t - s R_d`` with
    ``s = safe_div(<v, R_t>, <v, R_d>)``, where ``v`` (``dual_sums``, (N, C)) gives each logit's total input
    relevance per unit, so that one backward pass gives ``H_t - s H_d`` (the passes are linear in ``R``).
    ``1 - y_t`` is computed as ``sum_{n != t} y_n`` so a confident prediction keeps a non-zero head.
    """
    n, c = logits.shape
    onehot = np.zeros((targets.shape[1], n, c))
    onehot[np.arange(targets.shape[1])[:, None], np.arange(n)[None, :], targets.T] = 1.0
    z = logits.astype(np.float64)[None]
    zt = (onehot * z).sum(-1, keepdims=True)
    if head == "logit":
        return onehot * zt
    if head == "clrp":
        target, dual = onehot * zt, (1 - onehot) * zt / (c - 1)
    else:
        y = _softmax64(logits)[None]
        yt = (onehot * y).sum(-1, keepdims=True)
        others = ((1 - onehot) * y).sum(-1, keepdims=True)
        if head == "softmax_gradient":
            return onehot * yt * others - (1 - onehot) * yt * y
        target, dual = onehot * yt * others, (1 - onehot) * yt * y
    if scaling:
        v = dual_sums.astype(np.float64)[None]
        st, sd = (target * v).sum(-1, keepdims=True), (dual * v).sum(-1, keepdims=True)
        s = st / (sd + SAFE_EPS * np.where(sd >= 0, 1.0, -1.0))
    else:
        s = 1.0
    return target - s * dual

"""Caches: results and per-image forward states in LRUs bounded in bytes, keyed by a fingerprint of the
weights, so training or ``set_weights`` never serves a stale map."""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict

import numpy as np
import tensorflow as tf


class ResultCache:
    """An LRU of per-image results, bounded in bytes."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key, value, size: int | None = None) -> None:
        size = sum(getattr(v, "nbytes", 0) for v in value) if size is None else int(size)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, old_size) = self._items.popitem(last=False)
                self._bytes -= old_size

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


def state_budget() -> int:
    """Bytes the per-image LRP states may hold: an eighth of the machine's memory, between 512 MB and 4 GB
    (``SGLRP_WIDGETS_STATE_CACHE_MB`` overrides it). VGG16's state is about 160 MB per image, so a 24 GB
    machine keeps two batches of eight and a class switch on them costs one backward pass."""
    override = os.environ.get("SGLRP_WIDGETS_STATE_CACHE_MB")
    if override:
        return int(float(override) * 2**20)
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        physical = 4 * 2**30
    return int(min(max(physical // 8, 512 * 2**20), 4 * 2**30))


RESULTS = ResultCache()
#: Per-image forward state of LRP explainers (activations, denominators): a class switch on a cached image
#: costs one backward pass.
STATES = ResultCache(max_bytes=state_budget())


def digest(arr: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(arr).tobytes() + str(arr.shape).encode(), digest_size=16).digest()


def freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(freeze(v) for v in np.asarray(value).tolist()) if np.ndim(value) else float(value)
    return value


FULL_FINGERPRINT_SIZE = 1 << 16
SAMPLES_PER_VARIABLE = 1 << 12
RAMP_PERIOD = 1009          # a prime: two swapped values share a weight only 1009 * k positions apart


def weights_fingerprint(variables) -> tf.Tensor:
    """A cheap summary of the weights that changes when they change (training, ``set_weights``, assign).

    Variables up to 2**16 values are summed in full, all of them concatenated into one vector; larger ones
    through a strided sample of about 2**12 values (plus their first and last 64). Each vector gives its plain
    sum and a sum weighted by the position modulo a prime (so swapped values count), both from the vector's
    column sums once folded into rows of ``RAMP_PERIOD``. The sums run over the values' bits as int32,
    wrapping around: integer sums do not depend on the order of the additions, so the summary is the same
    bits eagerly, compiled, or on any number of threads. A few ops per variable (tracing stays quick on models
    with hundreds of variables); on ResNet50 it costs about 3 ms a call (the float sums of every value up to
    2**18 it replaces cost 17-26 ms). A change confined to unsampled entries of a large kernel (a single
    assigned weight, say) is not seen: call ``Explainer.clear()`` after such surgery.
    """
    def flat(v):
        t = tf.reshape(tf.convert_to_tensor(v), [-1])
        return t if t.dtype == tf.float32 else tf.cast(t, tf.float32)

    ramp = tf.constant(np.arange(1, RAMP_PERIOD + 1), tf.int32)

    def sums(parts):
        pad = -sum(int(p.shape[0]) for p in parts) % RAMP_PERIOD
        bits = tf.bitcast(tf.concat(parts + [tf.zeros([pad])], 0), tf.int32)
        rows = tf.reshape(bits, [-1, RAMP_PERIOD])
        columns = tf.reduce_sum(rows, 0)             # one pass; the weights apply to the 1009 column sums
        return tf.stack([tf.reduce_sum(columns), tf.reduce_sum(columns * ramp)])

    small = [flat(v) for v in variables if int(np.prod(v.shape)) <= FULL_FINGERPRINT_SIZE]
    parts = [sums(small)] if small else []
    for v in variables:
        size = int(np.prod(v.shape))
        if size > FULL_FINGERPRINT_SIZE:
            stride = size // SAMPLES_PER_VARIABLE + 1
            t = flat(v)
            parts.append(sums([t[::stride], t[1::stride * 3 + 1], t[:64], t[-64:]]))
    return tf.concat(parts, 0) if parts else tf.zeros([0], tf.int32)

"""Keras layer classes of the bundled demo models (imported by ``demo.load_model`` before loading).

The ViT's learned position embedding is a small layer of the user's own kind on purpose: its ``call``
is written with ``keras.ops`` only, so that the engine can open it into those ops like any user's layer.
Loading ``demo_vit.keras`` with ``keras.saving.load_model`` directly needs this module imported first
(``import sglrp_widgets.demo.layers``); ``demo.load_model("vit")`` does it.

Example
-------
>>> import numpy as np
>>> from sglrp_widgets.demo.layers import PositionEmbedding
>>> layer = PositionEmbedding()
>>> layer(np.zeros((2, 5, 8), "float32")).shape  # doctest: +SKIP
(2, 5, 8)
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["PositionEmbedding"]


@keras.saving.register_keras_serializable(package="sglrp_widgets")
class PositionEmbedding(keras.layers.Layer):
    """Add a learned vector to each token: ``(batch, tokens, dim) -> (batch, tokens, dim)``.

    Parameters
    ----------
    stddev : float
        Standard deviation of the normal initializer of the embedding (ViT's 0.02 by default).
    **kwargs
        Passed to :class:`keras.layers.Layer` (``name``, ``dtype``, ...).
    """

    def __init__(self, stddev: float = 0.02, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stddev = float(stddev)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                f"PositionEmbedding expects inputs of shape (batch, tokens, dim) with known tokens and dim, "
                f"got {input_shape}"
            )
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(input_shape[1], input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=self.stddev),
        )

    def call(self, x: Any) -> Any:
        return x + self.position_embedding

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "stddev": self.stddev}

"""Train the bundled demo CNN (deterministic; CPU, a few minutes).

Run ``python -m sglrp_widgets.demo.train`` to rebuild ``demo_model.keras`` next to this
file. The script generates its training set on the fly (:func:`training.training_data`:
single-object scenes with one-hot labels, two-object scenes with 0.5/0.5 soft labels),
trains a small CNN (foldable Conv→BatchNormalization→ReLU blocks, a residual ``Add``,
global average pooling and a softmax ``Dense`` head) and prints two quality figures on
fresh seeds: the top-1 accuracy on single-object scenes, and the share of two-object
scenes whose two classes are the model's top-2.

Example
-------
``python -m sglrp_widgets.demo.train --out /tmp/demo_model.keras``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import training
from .scenes import class_names

#: 8,000 single- and 8,000 two-object scenes, 12 epochs of Adam, learning rate 2e-3 cosine-decayed to 4e-5.
RECIPE = training.Recipe(single=8000, double=8000, epochs=12, batch_size=64, learning_rate=2e-3, lr_floor=0.02)


def build_model(num_classes: int = len(class_names)) -> Any:
    """The demo architecture (untrained).

    Only layers the engine supports: Conv2D, BatchNormalization directly after a
    Conv2D without activation (foldable), ReLU, Add, MaxPooling2D,
    GlobalAveragePooling2D and a softmax Dense.

    Example
    -------
    >>> build_model().count_params() < 300_000  # doctest: +SKIP
    True
    """
    import keras
    from keras import layers

    def conv_bn_relu(x: Any, filters: int, name: str) -> Any:
        x = layers.Conv2D(filters, 3, padding="same", name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inp = keras.Input((64, 64, 3), name="image")
    x = conv_bn_relu(inp, 16, "conv1")
    x = layers.MaxPooling2D(2, name="pool1")(x)  # 32x32
    x = conv_bn_relu(x, 32, "conv2")
    x = layers.MaxPooling2D(2, name="pool2")(x)  # 16x16
    # residual block: x + BN(conv(relu(BN(conv(x)))))
    y = conv_bn_relu(x, 32, "res_a")
    y = layers.Conv2D(32, 3, padding="same", name="res_b")(y)
    y = layers.BatchNormalization(name="res_b_bn")(y)
    x = layers.Add(name="res_add")([x, y])
    x = layers.ReLU(name="res_relu")(x)
    x = layers.MaxPooling2D(2, name="pool3")(x)  # 8x8
    x = conv_bn_relu(x, 64, "conv_last")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="sglrp_demo_shapes")


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, evaluate and save the demo CNN; returns the quality figures (see :func:`training.run`)."""
    return training.main(
        build_model, RECIPE, out=Path(__file__).with_name("demo_model.keras"),
        prog="python -m sglrp_widgets.demo.train", description=__doc__.split("\n")[0], argv=argv,
    )


if __name__ == "__main__":
    main()

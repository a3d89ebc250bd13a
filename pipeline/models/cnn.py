"""Seed 000's convolutional family: (conv 3x3 -> max-pool 2x2) per entry of `filters`, then dense layers.

The default is the seed's best model: conv 64 -> pool -> conv 128 -> pool -> dense 512 -> output.
"""

from __future__ import annotations

from pydantic import PositiveInt

from pipeline.models.common import ArchParams, Head, model_input, output_head


class CnnParams(ArchParams):
    filters: list[PositiveInt] = [64, 128]
    dense: list[PositiveInt] = [512]
    kernel_size: PositiveInt = 3


def build(input_shape: tuple[int, int, int], head: Head, params: CnnParams):
    import keras

    inputs, x = model_input(input_shape)
    for filters in params.filters:
        x = keras.layers.Conv2D(filters, params.kernel_size, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    for units in params.dense:
        x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, output_head(x, head), name="cnn")

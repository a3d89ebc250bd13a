"""Multi-layer perceptron on raw pixels: seed 000's baseline (one hidden layer) and seed 004's 256-256-256."""

from __future__ import annotations

from pydantic import PositiveInt

from pipeline.models.common import ArchParams, Head, model_input, output_head


class MlpParams(ArchParams):
    hidden: list[PositiveInt] = [512]


def build(input_shape: tuple[int, int, int], head: Head, params: MlpParams):
    import keras

    inputs, x = model_input(input_shape)
    x = keras.layers.Flatten()(x)
    for units in params.hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, output_head(x, head), name="mlp")

"""Multi-layer perceptron on raw pixels: seed 000's baseline (one hidden layer of 512) and seed
004's 256-256-256."""

from __future__ import annotations

from pydantic import PositiveInt

from pipeline.train.models.common import Head, output_head
from pipeline.train.settings import ArchParams


class MlpParams(ArchParams):
    hidden: list[PositiveInt] = [512]


def build(x, head: Head, params: MlpParams):
    import keras

    x = keras.layers.Flatten()(x)
    for units in params.hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
    return output_head(x, head)

"""Seed 002's PyTorch ConvNet for MNIST, in Keras (9,098 parameters at 28x28x1, 10 classes).

conv 8 3x3 (same, ReLU) -> max-pool 2 -> conv 16 3x3 (same, ReLU) -> max-pool 2 -> linear -> softmax.
Like the seed, every weight starts from N(0, 0.01) and every bias at zero (`init: seed`);
`init: keras` uses Keras' defaults instead.
"""

from __future__ import annotations

from typing import Literal

from pipeline.train.models.common import Head, output_head
from pipeline.train.settings import ArchParams, HeadKind


class ConvnetParams(ArchParams):
    head: HeadKind | None = "softmax"  # seed 002's output, also for two classes
    init: Literal["seed", "keras"] = "seed"


def build(x, head: Head, params: ConvnetParams):
    import keras

    init = (
        {"kernel_initializer": keras.initializers.RandomNormal(0.0, 0.01), "bias_initializer": "zeros"}
        if params.init == "seed"
        else {}
    )
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", **init)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", **init)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    return output_head(x, head, **init)

"""LeNet-5 as seed 004 builds it for MNIST (44,426 parameters at 28x28x1, 10 classes).

conv 6 5x5 (valid, ReLU) -> average-pool 2 -> conv 16 5x5 (valid, ReLU) -> average-pool 2 ->
dense 120 -> dense 84 -> softmax. The seed feeds 28x28 digits straight in (the paper padded to 32x32).
"""

from __future__ import annotations

from pipeline.train.models.common import Head, output_head
from pipeline.train.settings import ArchParams, HeadKind


class Lenet5Params(ArchParams):
    head: HeadKind | None = "softmax"  # seed 004's output, also for two classes


def build(x, head: Head, params: Lenet5Params):
    import keras

    x = keras.layers.Conv2D(6, 5, padding="valid", activation="relu")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Conv2D(16, 5, padding="valid", activation="relu")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(120, activation="relu")(x)
    x = keras.layers.Dense(84, activation="relu")(x)
    return output_head(x, head)

"""AlexNet exactly as seed 001 builds it in TF2 (62,380,346 parameters at 227x227x3, 2 classes).

conv 96 11x11 stride 4 (valid) -> max-pool 3/2 -> conv 256 5x5 -> max-pool 3/2 -> conv 384 3x3 ->
conv 384 3x3 -> conv 256 3x3 -> max-pool 3/2 -> dense 4096 -> dense 4096 -> dense 1000 -> head.
Convolutions are He-normal initialised; the seed keeps ImageNet's 1000-unit layer (with ReLU) in
front of its two-class softmax, and so do we. The paper's extras, which the seed leaves out, are
options: local response normalisation after the first two convolutions and dropout after the two
4096-unit layers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pipeline.train.models.common import Head, output_head
from pipeline.train.settings import ArchParams, HeadKind


class AlexnetParams(ArchParams):
    head: HeadKind | None = "softmax"  # seed 001: two-way softmax
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # the paper: 0.5
    lrn: bool = False  # the paper's local response normalisation (k=2, n=5, alpha=1e-4, beta=0.75)


def build(x, head: Head, params: AlexnetParams):
    import keras

    from pipeline.train.models.layers import LocalResponseNormalization

    def conv(x, filters, size, strides=1, padding="same"):
        return keras.layers.Conv2D(
            filters, size, strides=strides, padding=padding, activation="relu", kernel_initializer="he_normal"
        )(x)

    def pool(x):
        return keras.layers.MaxPooling2D(pool_size=3, strides=2)(x)

    x = conv(x, 96, 11, strides=4, padding="valid")
    if params.lrn:
        x = LocalResponseNormalization()(x)
    x = pool(x)
    x = conv(x, 256, 5)
    if params.lrn:
        x = LocalResponseNormalization()(x)
    x = pool(x)
    x = conv(x, 384, 3)
    x = conv(x, 384, 3)
    x = conv(x, 256, 3)
    x = pool(x)
    x = keras.layers.Flatten()(x)
    for units in (4096, 4096):
        x = keras.layers.Dense(units, activation="relu")(x)
        if params.dropout:
            x = keras.layers.Dropout(params.dropout)(x)
    x = keras.layers.Dense(1000, activation="relu")(x)
    return output_head(x, head)

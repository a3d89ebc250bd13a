"""Seed 003's pre-activation network for CIFAR-10: units of BatchNorm -> ReLU -> conv 3x3.

3 units of 64 -> max-pool 2 -> 3 of 128 -> max-pool 2 -> 3 of 256 -> dropout 0.5 -> average
pool -> softmax. The seed averages an 8x8 map (its 32x32 input after two pools); a global average
pool is the same there and works at any input size.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PositiveInt

from pipeline.train.models.common import Head, output_head
from pipeline.train.settings import ArchParams, HeadKind


class PreactParams(ArchParams):
    head: HeadKind | None = "softmax"  # seed 003's output, also for two classes
    filters: list[PositiveInt] = [64, 128, 256]  # one stage per entry, a 2x2 max-pool between stages
    units: PositiveInt = 3  # BN -> ReLU -> conv units per stage
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5


def build(x, head: Head, params: PreactParams):
    import keras

    for stage, filters in enumerate(params.filters):
        if stage:
            x = keras.layers.MaxPooling2D(2)(x)
        for _ in range(params.units):
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.Activation("relu")(x)
            x = keras.layers.Conv2D(filters, 3, padding="same")(x)
    if params.dropout:
        x = keras.layers.Dropout(params.dropout)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return output_head(x, head)

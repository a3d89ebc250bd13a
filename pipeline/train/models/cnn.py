"""Seed 000's convolutional family: (conv 3x3 -> max-pool 2x2) per entry of `filters`, then dense
layers, then the head.

The default (`cnn`) is this project's default-run model: conv 64 -> conv 128 -> dense 512. The
presets are the seed's variants as its author's notebook builds them (every conv 3x3 without
padding + max-pool 2x2, two hidden dense layers before the sigmoid unit):

- `cnn-24`: one conv of 24 kernels, two dense layers of 256;
- `cnn-48x2`: two convs of 48, the same dense layers;
- `cnn-128x2`: two convs of 128, the same dense layers (67% best accuracy in the seed);
- `cnn-64-128-fc512`: conv 64 -> conv 128, dense layers doubled to 512 (75%, Pearson 0.42).

The seed's text gives the kernel counts and says the last model doubled the dense size to 512;
the 256 of the earlier variants follows from that doubling.
"""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from pipeline.train.models.common import Head, output_head
from pipeline.train.settings import ArchParams


class CnnParams(ArchParams):
    filters: list[PositiveInt] = [64, 128]
    dense: list[PositiveInt] = [512]
    kernel_size: PositiveInt = 3
    padding: Literal["same", "valid"] = "same"


# The seed's variants, as data: each is `cnn` with these defaults (a `train.<preset>` section may
# still change any of them).
PRESETS: dict[str, dict] = {
    "cnn-24": {"filters": [24], "dense": [256, 256], "padding": "valid"},
    "cnn-48x2": {"filters": [48, 48], "dense": [256, 256], "padding": "valid"},
    "cnn-128x2": {"filters": [128, 128], "dense": [256, 256], "padding": "valid"},
    "cnn-64-128-fc512": {"filters": [64, 128], "dense": [512, 512], "padding": "valid"},
}


def build(x, head: Head, params: CnnParams):
    import keras

    for filters in params.filters:
        x = keras.layers.Conv2D(filters, params.kernel_size, padding=params.padding, activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    for units in params.dense:
        x = keras.layers.Dense(units, activation="relu")(x)
    return output_head(x, head)

"""Pieces every architecture shares: the in-graph input stage (augmentation, normalisation) and the
output head. (Their params types, `Augment` and `ArchParams`, are in pipeline.core.config.)

Nothing here imports Keras at module level: the registry is read by the config loader, which must
stay fast. Builders import Keras when called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.train.settings import Augment, HeadKind


@dataclass(frozen=True)
class Head:
    """The output layer: `units` outputs with `activation` (sigmoid for one binary unit, else softmax)."""

    units: int
    activation: HeadKind


@dataclass(frozen=True)
class Preprocess:
    """What happens to the uint8 pixels inside the model, before the architecture proper.

    In the graph, so `predict` feeds raw arrays and the GPU does the work: augmentation (training
    only), then either rescaling to [0, 1] or per-channel standardisation with the training split's
    `mean` and `std` (pixel units).
    """

    augment: Augment = field(default_factory=Augment)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def augmentation(augment: Augment):
    """ImageDataGenerator's transforms as Keras preprocessing layers, in its order, one Sequential
    named `augment` (identity outside training). Edges are filled with the nearest pixel, as
    ImageDataGenerator did."""
    import keras

    layers = []
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation / 360, fill_mode="nearest"))
    if augment.shift:
        layers.append(keras.layers.RandomTranslation(augment.shift, augment.shift, fill_mode="nearest"))
    if augment.shear:
        # Keras counts shear as a displacement fraction and flips its sign at random. A range, not a
        # float: Keras 3 saves a float as (-f, f) and then refuses to load it.
        shear = math.tan(math.radians(augment.shear))
        layers.append(keras.layers.RandomShear(x_factor=(0.0, shear), y_factor=(0.0, 0.0), fill_mode="nearest"))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom, augment.zoom, fill_mode="nearest"))
    if augment.flip != "none":
        layers.append(keras.layers.RandomFlip(augment.flip))
    return keras.Sequential(layers, name="augment")


def model_input(input_shape: tuple[int, int, int], preprocess: Preprocess):
    """The `pixels` input (raw 0-255 values) and the tensor the architecture starts from."""
    import keras

    inputs = keras.Input(shape=input_shape, name="pixels")
    x = inputs
    if preprocess.augment.active:
        x = augmentation(preprocess.augment)(x)
    if preprocess.mean is None:
        x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    else:
        variance = [s * s for s in preprocess.std]
        x = keras.layers.Normalization(mean=list(preprocess.mean), variance=variance, name="normalize")(x)
    return inputs, x


def output_head(x, head: Head, **dense_options):
    """The last layer, in float32 even under mixed precision (softmax and losses need the range)."""
    import keras

    return keras.layers.Dense(head.units, activation=head.activation, dtype="float32", name="head", **dense_options)(x)

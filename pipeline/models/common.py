"""Pieces every architecture shares: the typed training options, the hyperparameters base, the
in-graph input stage (augmentation, normalisation) and the output head.

Nothing here imports Keras at module level: the registry is read by `pipeline --help` and the
config loader, which must stay fast. Builders import Keras when called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

Optimizer = Literal["adam", "sgd"]
Loss = Literal["mse", "binary_crossentropy", "categorical_crossentropy"]
HeadKind = Literal["sigmoid", "softmax"]
# rescale: pixels / 255 (seeds 000, 001, 002, 004); standardize: per-channel (x - mean) / std of the
# training split (seed 003).
Normalize = Literal["rescale", "standardize"]
Strategy = Literal["auto", "mirrored", "multi_worker"]


def _mixed_precision(value: Any) -> Any:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError(f"expected auto, true or false, got {value!r}")


# auto: mixed_float16 on a GPU, float32 otherwise.
MixedPrecision = Annotated[Literal["auto"] | bool, BeforeValidator(_mixed_precision)]


class Augment(BaseModel):
    """Random transforms, active in training only, in the units of Keras 2's ImageDataGenerator
    (what the seeds used): rotation and shear in degrees, shift and zoom as fractions."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    rotation: NonNegativeFloat = 0.0  # up to +- this many degrees
    shift: Annotated[float, Field(ge=0, lt=1)] = 0.0  # up to +- this fraction of height and of width
    shear: Annotated[float, Field(ge=0, lt=90)] = 0.0  # up to +- this many degrees
    zoom: Annotated[float, Field(ge=0, lt=1)] = 0.0  # scale in [1 - zoom, 1 + zoom], per axis
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in AUGMENT_PRESETS:
                raise ValueError(
                    f"unknown augmentation {data!r}; valid choices: {', '.join(AUGMENT_PRESETS)}, "
                    "or a mapping of rotation, shift, shear, zoom, flip"
                )
            return AUGMENT_PRESETS[data]
        return data

    @property
    def active(self) -> bool:
        return self != Augment()


AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "seed001": {"rotation": 10.0, "shift": 0.1, "shear": 0.1, "zoom": 0.1},  # AlexNet tutorial
    "seed003": {"rotation": 10.0, "shift": 5 / 32, "flip": "horizontal"},  # CIFAR-10 components tutorial
}


class ArchParams(BaseModel):
    """Hyperparameters of one architecture (`train.<arch>` in params.yaml).

    Besides the shape of the network, a section may override any per-model training setting for
    this architecture only (seed 000 tuned the learning rate per model: 1e-5 for its MLP). `None`
    means "use the shared `train.<setting>`".
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    learning_rate: PositiveFloat | None = None
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    optimizer: Optimizer | None = None
    momentum: NonNegativeFloat | None = None
    loss: Loss | None = None
    head: HeadKind | None = None
    augment: Augment | None = None
    normalize: Normalize | None = None
    early_stopping: NonNegativeInt | None = None
    mixed_precision: MixedPrecision | None = None
    jit_compile: bool | None = None


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

"""Pieces every architecture shares: the typed hyperparameters base, the input and the output head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt

Optimizer = Literal["adam", "sgd"]
Loss = Literal["mse", "binary_crossentropy", "categorical_crossentropy"]


class ArchParams(BaseModel):
    """Hyperparameters of one architecture (`train.<arch>` in params.yaml).

    Besides the shape of the network, a section may override the training settings for this
    architecture only: seed 000 tuned the learning rate per model (1e-5 for its MLP).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    learning_rate: PositiveFloat | None = None
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    optimizer: Optimizer | None = None
    loss: Loss | None = None


@dataclass(frozen=True)
class Head:
    """The output layer: `units` outputs with `activation` (sigmoid for one binary unit, else softmax)."""

    units: int
    activation: Literal["sigmoid", "softmax"]


def model_input(input_shape: tuple[int, int, int]):
    """uint8 pixels in, floats in [0, 1] out: normalisation lives in the graph, so predict feeds raw arrays."""
    import keras

    inputs = keras.Input(shape=input_shape, name="pixels")
    return inputs, keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)


def output_head(x, head: Head):
    import keras

    return keras.layers.Dense(head.units, activation=head.activation, name="head")(x)

"""The training settings and an architecture's hyperparameters: what the models and the training
loop take (`pipeline.train.params` assembles them into the `train` section with the registry)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from pipeline.core.config import Section, between

Epochs = between(0, 100_000)
BatchSize = between(0, 1_000_000)
Patience = between(0, 100_000, low_inclusive=True)
Seed = between(0, 2**32 - 1, low_inclusive=True)
LearningRate = between(0.0, 10.0, float)
Momentum = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
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


class Augment(Section):
    """Random transforms, active in training only, in the units of Keras 2's ImageDataGenerator
    (what the seeds used): rotation and shear in degrees, shift and zoom as fractions."""

    rotation: Annotated[float, Field(ge=0, le=180, allow_inf_nan=False)] = 0.0  # up to +- this many degrees
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


class ArchParams(Section):
    """Hyperparameters of one architecture (`train.<arch>`): the base of each family's params.

    Besides the shape of the network, a section may override any per-model training setting for
    this architecture only (seed 000 tuned the learning rate per model: 1e-5 for its MLP). `None`
    means "use the shared `train.<setting>`".
    """

    learning_rate: LearningRate | None = None
    epochs: Epochs | None = None
    batch_size: BatchSize | None = None
    optimizer: Optimizer | None = None
    momentum: Momentum | None = None
    loss: Loss | None = None
    head: HeadKind | None = None
    augment: Augment | None = None
    normalize: Normalize | None = None
    early_stopping: Patience | None = None
    mixed_precision: MixedPrecision | None = None
    jit_compile: bool | None = None


class TrainSettings(Section):
    """Training settings that an architecture's section may override (the `train` stage's params in
    dvc.yaml are exactly these, a test checks it)."""

    epochs: Epochs = 8
    batch_size: BatchSize = 32
    optimizer: Optimizer = "adam"
    learning_rate: LearningRate = 3e-4
    momentum: Momentum = 0.9  # sgd only (seeds 002 and 004: 0)
    loss: Loss = "mse"
    seed: Seed = 0
    head: HeadKind = "sigmoid"  # for two classes; more classes always use softmax
    augment: Augment = Field(default_factory=Augment)  # none, seed001, seed003 or a mapping; training only
    normalize: Normalize = "rescale"  # rescale (x / 255) or standardize (per-channel mean/std, seed 003)
    early_stopping: Patience = 0  # patience in epochs on val_loss; 0 = off
    mixed_precision: MixedPrecision = "auto"  # auto = on a GPU only
    jit_compile: bool = False  # XLA
    strategy: Strategy = "auto"  # auto (all local GPUs when several), mirrored, multi_worker (TF_CONFIG)

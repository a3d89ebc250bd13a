"""The registry of architectures: name -> builder, typed hyperparameters, presets and what it reproduces.

Importing this package does not import TensorFlow; `build_model` imports Keras when called.
A builder takes the preprocessed input tensor, the head and its params and returns the output
tensor; `build_model` adds the shared input stage (augmentation, normalisation) and wraps a Model.
Presets (`cnn-24`, ...) are registry entries that share a family's builder and params with other
defaults, kept as data beside the family (`cnn.PRESETS`). A new architecture is a module in this
folder (params class + `build`) and one registry line below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.train.models import alexnet, cnn, convnet, lenet5, mlp, preact
from pipeline.train.models.common import Head, Preprocess
from pipeline.train.settings import ArchParams, TrainSettings


@dataclass(frozen=True)
class Architecture:
    build: Callable[[object, Head, ArchParams], object]
    params: type[ArchParams]
    summary: str
    reproduces: str  # the seed tutorial and what of it
    dataset: str  # the dataset its seed trained on
    input_shape: tuple[int, int, int]  # the seed's input, for `pipeline models`
    classes: int
    preset: dict = field(default_factory=dict)  # defaults over the family's params

    def parse(self, raw: dict) -> ArchParams:
        """The params of a `train.<arch>` section: the section's values over the preset's."""
        return self.params.model_validate({**self.preset, **raw})


_CATS_DOGS = ("cats vs dogs at 1/4 scale", (94, 125, 3), 2)
ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture(
        mlp.build,
        mlp.MlpParams,
        "flatten -> dense hidden layers",
        "seed 000 baseline (one hidden layer of 512); seed 004's 256-256-256 with hidden=[256,256,256]",
        *_CATS_DOGS,
    ),
    "cnn": Architecture(
        cnn.build,
        cnn.CnnParams,
        "(conv 3x3 -> max-pool) per filter count -> dense",
        "seed 000 family; default conv 64 -> conv 128 -> dense 512",
        *_CATS_DOGS,
    ),
    "cnn-24": Architecture(
        cnn.build,
        cnn.CnnParams,
        "conv 24 -> dense 256 -> dense 256",
        "seed 000: one conv layer of 24 kernels, two dense",
        *_CATS_DOGS,
        cnn.PRESETS["cnn-24"],
    ),
    "cnn-48x2": Architecture(
        cnn.build,
        cnn.CnnParams,
        "conv 48 -> conv 48 -> dense 256 x 2",
        "seed 000: two conv layers of 48",
        *_CATS_DOGS,
        cnn.PRESETS["cnn-48x2"],
    ),
    "cnn-128x2": Architecture(
        cnn.build,
        cnn.CnnParams,
        "conv 128 -> conv 128 -> dense 256 x 2",
        "seed 000: two conv layers of 128 (67%)",
        *_CATS_DOGS,
        cnn.PRESETS["cnn-128x2"],
    ),
    "cnn-64-128-fc512": Architecture(
        cnn.build,
        cnn.CnnParams,
        "conv 64 -> conv 128 -> dense 512 x 2",
        "seed 000: its best (75%, Pearson 0.42)",
        *_CATS_DOGS,
        cnn.PRESETS["cnn-64-128-fc512"],
    ),
    "alexnet": Architecture(
        alexnet.build,
        alexnet.AlexnetParams,
        "AlexNet: 5 conv, 3 max-pool, dense 4096-4096-1000",
        "seed 001 (TF2 AlexNet, 2 ImageNet synsets)",
        "ImageNet ships vs bikes",
        (227, 227, 3),
        2,
    ),
    "lenet5": Architecture(
        lenet5.build,
        lenet5.Lenet5Params,
        "conv 6 5x5 -> avg-pool -> conv 16 5x5 -> avg-pool -> 120 -> 84",
        "seed 004 (Keras LeNet-5)",
        "MNIST",
        (28, 28, 1),
        10,
    ),
    "convnet": Architecture(
        convnet.build,
        convnet.ConvnetParams,
        "conv 8 -> max-pool -> conv 16 -> max-pool -> linear",
        "seed 002 (PyTorch ConvNet)",
        "MNIST",
        (28, 28, 1),
        10,
    ),
    "preact": Architecture(
        preact.build,
        preact.PreactParams,
        "(BN -> ReLU -> conv 3x3) x 3 per stage: 64, 128, 256; dropout 0.5",
        "seed 003 (pre-activation units)",
        "CIFAR-10",
        (32, 32, 3),
        10,
    ),
}


def build_model(
    arch: str, input_shape: tuple[int, int, int], head: Head, params: ArchParams, preprocess: Preprocess | None = None
):
    """A Keras model: raw pixels in, the head's probabilities out."""
    import keras

    from pipeline.train.models.common import model_input

    inputs, x = model_input(tuple(input_shape), preprocess or Preprocess())
    return keras.Model(inputs, ARCHITECTURES[arch].build(x, head, params), name=arch.replace("-", "_"))


def describe_models(
    for_arch: Callable[[str], tuple[TrainSettings, ArchParams]],
    input_shape: tuple[int, int, int] | None = None,
    classes: int | None = None,
    archs: list[str] | None = None,
) -> list[dict]:
    """Each architecture and preset (or those in `archs`) with its parameter count, built (not
    trained) at `input_shape` and `classes`, or at its seed's own input and classes. The head and
    the hyperparameters are `for_arch(name)`'s (`TrainParams.for_arch`: the params' `train.<arch>`);
    `params` is None where the input is too small."""
    from pipeline.train.runtime import head_for, keras_seeded

    keras = keras_seeded(0)
    rows = []
    for name, arch in ARCHITECTURES.items():
        if archs and name not in archs:
            continue
        shape, n_classes = tuple(input_shape or arch.input_shape), classes or arch.classes
        settings, params = for_arch(name)
        head = head_for(n_classes, settings.head)
        try:
            count, note = build_model(name, shape, head, params).count_params(), ""
        except ValueError:  # a feature map shrank below zero
            count, note = None, f"input {'x'.join(map(str, shape))} is too small for it"
        finally:
            keras.backend.clear_session()
        rows.append(
            {
                "arch": name,
                "params": count,
                "input_shape": list(shape),
                "classes": n_classes,
                "head": f"{head.units} {head.activation}",
                "layers": arch.summary,
                "reproduces": arch.reproduces,
                "dataset": arch.dataset,
                **({"note": note} if note else {}),
            }
        )
    return rows

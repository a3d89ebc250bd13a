"""The registry of architectures: name -> builder and its typed hyperparameters.

Importing this package does not import TensorFlow; builders import Keras when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.models import cnn, mlp
from pipeline.models.common import ArchParams, Head


@dataclass(frozen=True)
class Architecture:
    build: Callable[[tuple[int, int, int], Head, ArchParams], object]
    params: type[ArchParams]
    summary: str


ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture(mlp.build, mlp.MlpParams, "flatten -> dense hidden layers (seed 000 baseline)"),
    "cnn": Architecture(cnn.build, cnn.CnnParams, "conv/pool blocks -> dense (seed 000 best: 64-128-fc512)"),
}

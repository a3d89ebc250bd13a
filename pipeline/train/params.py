"""The train stage's params (`train` in params.yaml): the shared training settings, the
architectures to train, and one section per architecture (`train.<arch>`, from the ARCHITECTURES
registry) with its hyperparameters and any setting for it alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, model_validator

from pipeline.core.config import RegistrySection, check_choice
from pipeline.train.models import ARCHITECTURES
from pipeline.train.settings import ArchParams, TrainSettings


class TrainParams(RegistrySection, TrainSettings):
    NAME = "train"
    KIND = "architecture"

    archs: Annotated[list[str], Field(min_length=1)] = ["mlp", "cnn"]

    @classmethod
    def registry(cls) -> Mapping[str, Any]:
        return ARCHITECTURES

    @model_validator(mode="after")
    def _check(self) -> TrainParams:
        for arch in self.archs:
            check_choice("train.archs", arch, ARCHITECTURES)
        return self

    def for_arch(self, arch: str) -> tuple[TrainSettings, ArchParams]:
        """The settings for one architecture: its section's overrides on top of the shared ones."""
        params = self.section(arch)
        base = {name: getattr(self, name) for name in TrainSettings.model_fields}
        overrides = {
            name: getattr(params, name) for name in ArchParams.model_fields if getattr(params, name) is not None
        }
        return TrainSettings(**{**base, **overrides}), params

"""The survey and prepare stages' params (`survey` and `prepare` in params.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import PositiveFloat, PositiveInt, model_validator

from pipeline.core.config import MAX_FILE_BYTES, MAX_PIXELS, MAX_SIDE, Bytes, Pixels, Section, between
from pipeline.core.engine import EngineParams
from pipeline.core.errors import ConfigError


class SurveyParams(Section):
    sample: between(0, 1_000_000_000, low_inclusive=True) = 0  # 0 = every image
    seed: int = 0


class PrepareParams(EngineParams):
    """`prepare`; groups of images (a shard, or a slice of a folder) are prepared one task each on
    `engine` (EngineParams)."""

    NAME = "prepare"

    size: Literal["auto"] | tuple[PositiveInt, PositiveInt] = "auto"  # [height, width] (each at most MAX_SIDE) or auto
    scale: between(0.0, 16.0, float) = 0.125  # auto size = most common shape x scale (seed 000: 0.25)
    aspect: Literal["stretch", "pad", "center-crop"] = "stretch"
    color: Literal["rgb", "grayscale"] = "rgb"
    train_size: PositiveInt | PositiveFloat = 0.8  # a count (int) or a fraction (float)
    val_size: PositiveInt | PositiveFloat = 0.2
    seed: int = 0
    # Duplicates kept out of the split (pipeline.prepare.duplicates): none; exact = the same bytes;
    # near = also the same picture resized, re-encoded, cropped a little (difference hash within
    # near_distance bits). One item of each group is kept (a training one where the source fixed the
    # split), so no validation image duplicates a training image; skipped.csv names the item kept.
    dedupe: Literal["none", "exact", "near"] = "exact"
    near_distance: between(0, 32, low_inclusive=True) = 8  # bits of 64; 8 measured best (benchmarks/RESULTS.md)
    max_pixels: Pixels = MAX_PIXELS  # images larger than this (from the header) are skipped, never decoded
    max_file_bytes: Bytes = MAX_FILE_BYTES  # larger files are skipped unread (also what `predict` reads)

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        """Union-typed keys get their own message: pydantic's lists every branch of the union."""
        if not isinstance(data, dict):
            return data
        size = data.get("size", "auto")
        if size != "auto":
            if not (
                isinstance(size, list | tuple)
                and len(size) == 2
                and all(_positive_int(v) and v <= MAX_SIDE for v in size)
            ):
                raise ConfigError(
                    f"prepare.size: expected auto or [height, width] of integers from 1 to {MAX_SIDE}, got {size!r}"
                )
            data = {**data, "size": tuple(size)}
        for key in ("train_size", "val_size"):
            value = data.get(key, 0.5)
            if not (_positive_int(value) and value <= 10**9 or (isinstance(value, float) and 0 < value <= 1)):
                raise ConfigError(
                    f"prepare.{key}: expected a count (integer > 0) or a fraction (0 < float <= 1), got {value!r}"
                )
        train, val = data.get("train_size", 0.8), data.get("val_size", 0.2)
        if isinstance(train, float) and isinstance(val, float) and train + val > 1 + 1e-9:
            raise ConfigError(f"prepare.train_size + prepare.val_size = {train + val:g} exceeds 1")
        return data


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0

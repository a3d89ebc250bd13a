"""The audit stage's params (`audit` in params.yaml)."""

from __future__ import annotations

from pipeline.core.config import MAX_FILE_BYTES, MAX_PIXELS, Bytes, Pixels, between
from pipeline.core.engine import EngineParams


class AuditParams(EngineParams):
    """`audit`; the hash pass runs one task per group of images (a shard, or a slice of a folder) on
    `engine` (EngineParams)."""

    NAME = "audit"

    near_distance: between(0, 32, low_inclusive=True) = 8  # bits of the 64-bit difference hash
    top: between(0, 1000, low_inclusive=True) = 8  # groups and label issues drawn on the page
    max_pixels: Pixels = MAX_PIXELS
    max_file_bytes: Bytes = MAX_FILE_BYTES

"""The evaluate and compare stages' params (`evaluate` and `compare` in params.yaml)."""

from __future__ import annotations

from pipeline.core.config import Section, between


class EvaluateParams(Section):
    thresholds: between(0, 10_000) = 10  # evenly spaced thresholds swept for best_threshold_accuracy (seed 000: 10)


class CompareParams(Section):
    sort: str = "best_threshold_accuracy"

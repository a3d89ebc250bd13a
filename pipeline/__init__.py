"""pipeline: reproducible image-classification experiments (fetch, survey, prepare, train, evaluate, compare)."""

__version__ = "0.1.0"

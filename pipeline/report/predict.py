"""Classify image files with a trained model, preprocessed exactly as `prepare` did for training.

The size, aspect mode and colour come from the prepared data's meta.json and go through the same
function `prepare` uses (`pipeline.core.images.load`), so a file gets the same pixels it would have had
in the training arrays. A file that cannot be read or decoded becomes a Prediction with an error;
the other files are still predicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.config import MAX_FILE_BYTES, MAX_PIXELS
from pipeline.core.errors import ImageError, InputError
from pipeline.core.files import read_capped
from pipeline.core.images import load, validate
from pipeline.core.prepared import read_meta


@dataclass(frozen=True)
class Prediction:
    path: str
    cls: str | None  # the predicted class; None when the file failed
    probability: float | None  # of the predicted class
    error: str | None = None


def default_arch(metrics_dir: Path, sort: str, archs: list[str], data: Path) -> str:
    """The best architecture by `sort` (compare's order) among those evaluated on the prepared data
    in `data` (the same fingerprint); the first of `archs` when nothing was evaluated yet. A model
    evaluated on other data (an earlier dataset's leftover) is never picked."""
    from pipeline.core.prepared import fingerprint
    from pipeline.report.compare import compare, read_dataset

    try:
        comparison = compare(metrics_dir, sort)
    except InputError:
        return archs[0]
    current = fingerprint(data)
    for arch in comparison.frame.index:
        identity = read_dataset(metrics_dir / f"{arch}.json")
        if identity and identity.get("fingerprint") == current:
            return str(arch)
    others = ", ".join(f"{arch} ({label})" for arch, label in comparison.datasets.items())
    raise InputError(
        f"no model in {metrics_dir} was evaluated on the current {data} (fingerprint {current[:8]}): {others}; "
        "run `dvc repro` (or `pipeline train` and `pipeline evaluate`), or choose one with --arch"
    )


def read_image(
    path: Path,
    size: tuple[int, int],
    aspect: str,
    color: str,
    max_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """One file as the model's input; ImageError says why it cannot be. The caps are prepare's
    (`prepare.max_file_bytes`, `prepare.max_pixels`): /dev/zero or a pixel bomb is refused, not read.
    A link the user names is followed (it is their file), then read like any other."""
    data = read_capped(path.resolve(), max_bytes)
    validate(data, max_pixels, min_side=1)  # catches what decoding would hide: wrong signature, truncation, pixel bombs
    return load(data, size, aspect, color)


def predict(
    paths: list[Path], model_path: Path, data: Path, max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS
) -> list[Prediction]:
    """The predicted class and its probability for each of `paths`, in order."""
    from pipeline.train.runtime import load_model, predict_probs

    if not paths:
        raise InputError("no image files given: pipeline predict IMAGE...")
    meta = read_meta(data)
    model = load_model(model_path)
    shape = list(meta["input_shape"])
    if list(model.input_shape[1:]) != shape:
        raise InputError(
            f"{model_path} takes {model.input_shape[1:]} inputs but {data}/meta.json says {shape}: "
            "retrain, or pass the --data it was trained on"
        )
    size = (shape[0], shape[1])
    images: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            images[i] = read_image(path, size, meta["aspect"], meta["color"], max_bytes, max_pixels)
        except ImageError as exc:
            errors[i] = str(exc)
    probs = predict_probs(model, np.stack(list(images.values()))) if images else np.zeros((0, len(meta["classes"])))
    by_row = dict(zip(images, probs))
    out = []
    for i, path in enumerate(paths):
        if i in errors:
            out.append(Prediction(str(path), None, None, errors[i]))
            continue
        best = int(by_row[i].argmax())
        out.append(Prediction(str(path), meta["classes"][best], round(float(by_row[i][best]), 6)))
    return out

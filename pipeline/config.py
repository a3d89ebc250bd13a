"""params.yaml -> frozen, typed config, one model per stage section.

Everything tunable is validated here and nowhere else: an unknown key, a wrong type or an unknown
source/architecture becomes a ConfigError naming the key, the bad value and the valid choices.
`dvc exp run -S` accepts typos silently, so this strictness is what catches them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML, YAMLError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from pipeline.download import DownloadSettings
from pipeline.errors import ConfigError
from pipeline.models import ARCHITECTURES
from pipeline.models.common import ArchParams, Augment, Loss, MixedPrecision, Normalize, Optimizer, Strategy
from pipeline.sources import SOURCES

PARAMS_FILE = Path("params.yaml")
# Default locations of the stages' inputs and outputs (dvc.yaml passes the same paths explicitly).
RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
LIVE_DIR = Path("dvclive")  # per-epoch training metrics (dvclive), one folder per architecture
REPORTS_DIR = Path("reports")
PLOTS_DIR = Path("plots")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _split_registry_sections(data: Any, registry: dict, kind: str) -> Any:
    """Move keys named after registry entries (`train.cnn`, `fetch.synthetic`) into `sections`."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    sections = {name: data.pop(name) for name in list(data) if name in registry}
    for name, value in sections.items():
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"the {kind} section '{name}' must be a mapping, got {value!r}")
    data["sections"] = {name: value or {} for name, value in sections.items()}
    return data


class FetchConfig(Section):
    source: str = "synthetic"
    download: DownloadSettings = Field(default_factory=DownloadSettings)
    sections: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        return _split_registry_sections(data, SOURCES, "source")

    @model_validator(mode="after")
    def _check(self) -> "FetchConfig":
        _check_choice("fetch.source", self.source, SOURCES)
        parsed = {name: _parse(SOURCES[name].params, raw, f"fetch.{name}") for name, raw in self.sections.items()}
        object.__setattr__(self, "sections", parsed)
        return self

    def params_for(self, source: str) -> BaseModel:
        _check_choice("source", source, SOURCES)
        return self.sections.get(source) or SOURCES[source].params()


class SurveyConfig(Section):
    sample: NonNegativeInt = 0  # 0 = every image
    seed: int = 0


class PrepareConfig(Section):
    size: Literal["auto"] | tuple[PositiveInt, PositiveInt] = "auto"  # [height, width] or auto
    scale: PositiveFloat = 0.125  # auto size = most common shape x scale (seed 000: 0.25)
    aspect: Literal["stretch", "pad", "center-crop"] = "stretch"
    color: Literal["rgb", "grayscale"] = "rgb"
    train_size: PositiveInt | PositiveFloat = 0.8  # a count (int) or a fraction (float)
    val_size: PositiveInt | PositiveFloat = 0.2
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        """Union-typed keys get their own message: pydantic's lists every branch of the union."""
        if not isinstance(data, dict):
            return data
        size = data.get("size", "auto")
        if size != "auto":
            if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_positive_int(v) for v in size)):
                raise ConfigError(f"prepare.size: expected auto or [height, width] of positive integers, got {size!r}")
            data = {**data, "size": tuple(size)}
        for key in ("train_size", "val_size"):
            value = data.get(key, 0.5)
            if not (_positive_int(value) or (isinstance(value, float) and 0 < value <= 1)):
                raise ConfigError(f"prepare.{key}: expected a count (integer > 0) or a fraction (0 < float <= 1), got {value!r}")
        train, val = data.get("train_size", 0.8), data.get("val_size", 0.2)
        if isinstance(train, float) and isinstance(val, float) and train + val > 1 + 1e-9:
            raise ConfigError(f"prepare.train_size + prepare.val_size = {train + val:g} exceeds 1")
        return data


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class TrainSettings(Section):
    """Training settings that an architecture's section may override."""

    epochs: PositiveInt = 8
    batch_size: PositiveInt = 32
    optimizer: Optimizer = "adam"
    learning_rate: PositiveFloat = 3e-4
    momentum: NonNegativeFloat = 0.9  # sgd only (seeds 002 and 004: 0)
    loss: Loss = "mse"
    seed: NonNegativeInt = 0
    head: Literal["sigmoid", "softmax"] = "sigmoid"  # for two classes; more classes always use softmax
    augment: Augment = Field(default_factory=Augment)  # none, seed001, seed003 or a mapping; training only
    normalize: Normalize = "rescale"  # rescale (x / 255) or standardize (per-channel mean/std, seed 003)
    early_stopping: NonNegativeInt = 0  # patience in epochs on val_loss; 0 = off
    mixed_precision: MixedPrecision = "auto"  # auto = on a GPU only
    jit_compile: bool = False  # XLA
    strategy: Strategy = "auto"  # auto (all local GPUs when several), mirrored, multi_worker (TF_CONFIG)

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TrainConfig(TrainSettings):
    archs: list[str] = ["mlp", "cnn"]
    sections: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        return _split_registry_sections(data, ARCHITECTURES, "architecture")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        for arch in self.archs:
            _check_choice("train.archs", arch, ARCHITECTURES)
        parsed = {name: _parse(ARCHITECTURES[name].params, raw, f"train.{name}") for name, raw in self.sections.items()}
        object.__setattr__(self, "sections", parsed)
        return self

    def for_arch(self, arch: str) -> tuple[TrainSettings, ArchParams]:
        """The settings for one architecture: its section's overrides on top of the shared ones."""
        _check_choice("architecture", arch, ARCHITECTURES)
        params: ArchParams = self.sections.get(arch) or ARCHITECTURES[arch].params()
        base = {name: getattr(self, name) for name in TrainSettings.model_fields}
        overrides = {name: getattr(params, name) for name in ArchParams.model_fields if getattr(params, name) is not None}
        return TrainSettings(**{**base, **overrides}), params


class EvaluateConfig(Section):
    thresholds: PositiveInt = 10  # evenly spaced thresholds swept for best_threshold_accuracy (seed 000: 10)


class CompareConfig(Section):
    sort: str = "best_threshold_accuracy"


class Params(Section):
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    survey: SurveyConfig = Field(default_factory=SurveyConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)


def _check_choice(key: str, value: str, choices: dict) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: unknown value {value!r}; valid choices: {', '.join(sorted(choices))}")


def _parse(model: type[BaseModel], data: Any, where: str) -> BaseModel:
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, model, where)) from None


def _describe(exc: ValidationError, model: type[BaseModel], where: str) -> str:
    """One line for the first problem: the dotted key, the bad value and what would be valid."""
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"] if part != "sections"]
    key = ".".join([where, *loc] if where else loc) or where
    if err["type"] == "extra_forbidden":
        fields = _fields_at(model, loc[:-1])
        return f"{key}: unknown key; valid keys: {', '.join(fields)}"
    cause = err.get("ctx", {}).get("error")
    message = str(cause) if isinstance(cause, (ConfigError, ValueError)) else err["msg"]
    if isinstance(cause, ConfigError):
        return message
    return f"{key}: {message} (got {err['input']!r})" if "input" in err and err["type"] != "value_error" else f"{key}: {message}"


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys valid at a dotted location: the model's fields plus its registry sections."""
    for part in loc:
        field = model.model_fields.get(part)
        registry_model = _registry_model(model, part)
        if field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            model = field.annotation
        elif registry_model is not None:
            model = registry_model
        else:
            return []
    names = [name for name in model.model_fields if name != "sections"]
    if model is TrainConfig:
        names += list(ARCHITECTURES)
    elif model is FetchConfig:
        names += list(SOURCES)
    return names


def _registry_model(model: type[BaseModel], part: str) -> type[BaseModel] | None:
    if model is TrainConfig and part in ARCHITECTURES:
        return ARCHITECTURES[part].params
    if model is FetchConfig and part in SOURCES:
        return SOURCES[part].params
    return None


def as_dict(params: Params) -> dict:
    """The params in params.yaml's own shape (registry sections back under their section)."""
    data = params.model_dump(mode="json")
    for section in ("fetch", "train"):
        data[section].update(data[section].pop("sections"))
    return data


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating sections as needed (command-line overrides)."""
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    data[last] = value


def load_params(path: Path = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Params:
    """Read params.yaml (a missing file means all defaults) and apply dotted overrides."""
    data: Any = {}
    if path.exists():
        try:
            # ruamel reads YAML 1.2 exactly as DVC does (PyYAML would read `1e-5` as a string).
            data = YAML(typ="safe", pure=True).load(path.read_text()) or {}
        except YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(Params.model_fields)})")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, dotted, value)
    return _parse(Params, data, "")

"""params.yaml -> frozen, typed config, one model per stage section.

Everything tunable is validated here and nowhere else: an unknown key, a wrong type or an unknown
source/architecture becomes a ConfigError naming the key, the bad value and the valid choices.
`dvc exp run -S` accepts typos silently, so this strictness is what catches them.

Two sections hold registries: `fetch.<source>` and `train.<arch>` are each validated by the params
model of that registry entry (`pipeline.fetch.sources.SOURCES`, `pipeline.train.models.ARCHITECTURES`).
The registries are imported only when such a section is validated, so a stage that reads only its
own section (`load_section`) imports nothing of the other stages: this module is part of every
stage's DVC dependencies, and imports only pydantic and ruamel.yaml.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)
from ruamel.yaml import YAML, YAMLError

from pipeline.core.errors import ConfigError
from pipeline.core.paths import PARAMS_FILE


class Section(BaseModel):
    """The base of every params model: unknown keys and loose types are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- Types shared by several sections ---------------------------------------------------------


# Every number has a finite, sane range: a value far outside it is a typo or an attack, and would
# otherwise fail later, slowly (a 30 GB allocation, a training run that diverges to NaN).
def _between(low: float, high: float, kind: type = int, low_inclusive: bool = False) -> Any:
    bounds = {"ge" if low_inclusive else "gt": low, "le": high}
    return Annotated[kind, Field(**bounds, allow_inf_nan=False) if kind is float else Field(**bounds)]


MAX_SIDE = 8192  # pixels per side of a prepared image
MAX_PIXELS = 100_000_000  # per image, read from the header before decoding (decompression bombs)
MAX_FILE_BYTES = 50_000_000  # per image file or download
Count = _between(0, 1_000_000_000)
Epochs = _between(0, 100_000)
BatchSize = _between(0, 1_000_000)
Patience = _between(0, 100_000, low_inclusive=True)
Seed = _between(0, 2**32 - 1, low_inclusive=True)
LearningRate = _between(0.0, 10.0, float)
Momentum = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
Seconds = _between(0.0, 86_400.0, float)
Pixels = _between(0, 1_000_000_000)
Bytes = _between(0, 10**12)

# A SHA-256 pin; "" (`-S fetch.<source>.sha256=`) means no check, as null does in params.yaml.
# Where per-shard work runs (pipeline.core.engine): local = a process pool on this machine; dask =
# dask.distributed, at `scheduler` (tcp://HOST:8786) or, when it is "", a local cluster on 127.0.0.1.
EngineName = Literal["local", "dask"]
Workers = _between(0, 1024, low_inclusive=True)  # local processes (and local Dask workers); 0 = one per core


def _check_engine(section: str, engine: str, scheduler: str) -> None:
    if scheduler and not scheduler.startswith(("tcp://", "tls://")):
        raise ConfigError(
            f"{section}.scheduler: {scheduler!r} is not a Dask scheduler address; expected tcp://HOST:PORT (or tls://)"
        )
    if scheduler and engine != "dask":
        raise ConfigError(
            f"{section}.scheduler: {scheduler!r} is for {section}.engine dask (got {engine!r}); set {section}.engine: dask or leave the scheduler empty"
        )


Sha256 = Annotated[str, Field(pattern=r"^([0-9a-fA-F]{64})?$"), AfterValidator(str.lower)]
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


class DownloadSettings(Section):
    """`fetch.download`: HTTP and image checks for every source that downloads."""

    concurrency: _between(0, 1024) = 32
    connect_timeout: Seconds = 5.0  # seconds
    read_timeout: Seconds = 10.0  # seconds between bytes
    total_timeout: Seconds = 60.0  # seconds for one URL, all attempts included
    retries: _between(0, 100, low_inclusive=True) = 3
    backoff: _between(0.0, 600.0, float, low_inclusive=True) = 0.5  # seconds, doubled after each retry
    max_redirects: _between(0, 100, low_inclusive=True) = 5
    max_bytes: Bytes = MAX_FILE_BYTES  # per image; larger bodies are aborted, never buffered
    max_archive_bytes: Bytes = 10_000_000_000  # per archive (cats-dogs 0.8 GB); an endless body stops here
    user_agent: str = "pipeline (reproducible image datasets)"
    # Image checks applied to every downloaded image (see pipeline.core.images.validate).
    max_pixels: Pixels = MAX_PIXELS  # from the header, before decoding (decompression bombs)
    min_side: _between(0, MAX_SIDE) = 16
    placeholder_sha256: list[str] = []  # more "image unavailable" placeholders to reject, besides Flickr's
    # URL-list downloads: decode = decode every image (at 1/8 size for JPEG), ~0.85 ms of CPU per
    # 40 KB JPEG, as much as the HTTP exchange; header = magic bytes, size from the header and an
    # end-of-image check for truncation, no pixel decode (prepare decodes later anyway, and records
    # what fails); auto = header in the shard layout (millions of URLs), decode in class folders.
    verify: Literal["auto", "decode", "header"] = "auto"


# --- Sections that hold a registry ------------------------------------------------------------


class RegistrySection(Section):
    """A section whose keys named after registry entries (`fetch.synthetic`, `train.cnn`) hold that
    entry's own params. Subclasses name the registry as "module:attribute"; an entry has `params`
    (its model) and `parse(raw)` (its params from a section's mapping, presets applied)."""

    REGISTRY: ClassVar[str]
    NAME: ClassVar[str]  # the section's name in params.yaml
    KIND: ClassVar[str]  # what an entry is called in messages
    sections: dict[str, Any] = {}

    @classmethod
    def registry(cls) -> dict:
        module, attribute = cls.REGISTRY.split(":")
        return getattr(importlib.import_module(module), attribute)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        """Move keys that are not fields into `sections`; only then is the registry needed."""
        if not isinstance(data, dict):
            return data
        extra = [name for name in data if name not in cls.model_fields]
        if not extra:
            return data
        registry = cls.registry()
        data = dict(data)
        sections = {name: data.pop(name) for name in extra if name in registry}
        for name, value in sections.items():
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"the {cls.KIND} section '{name}' must be a mapping, got {value!r}")
        return {**data, "sections": {name: value or {} for name, value in sections.items()}}

    @model_validator(mode="after")
    def _parse_sections(self) -> RegistrySection:
        if self.sections:
            registry = self.registry()
            parsed = {
                name: _parse(registry[name].params, raw, f"{self.NAME}.{name}", registry[name].parse)
                for name, raw in self.sections.items()
            }
            object.__setattr__(self, "sections", parsed)
        return self

    def section(self, name: str) -> BaseModel:
        """The params of entry `name`: its section, or its defaults when it has none."""
        registry = self.registry()
        _check_choice(self.KIND, name, registry)
        return self.sections.get(name) or registry[name].parse({})


class FetchConfig(RegistrySection):
    REGISTRY: ClassVar[str] = "pipeline.fetch.sources:SOURCES"
    NAME: ClassVar[str] = "fetch"
    KIND: ClassVar[str] = "source"

    source: str = "synthetic"
    download: DownloadSettings = Field(default_factory=DownloadSettings)
    # Where and how URL-list sources (imagenet) store what they fetch (see pipeline.fetch.shards):
    # folder = <class>/<sha256>.<ext> files + manifest.csv; shards = webdataset tars + parquet
    # manifests, one task per shard; auto = shards above AUTO_SHARDS candidate URLs.
    layout: Literal["auto", "folder", "shards"] = "auto"
    shard_size: _between(0, 99_999) = 10_000  # candidate URLs per shard
    engine: EngineName = "local"
    scheduler: str = ""
    workers: Workers = 0

    @model_validator(mode="after")
    def _check(self) -> FetchConfig:
        _check_choice("fetch.source", self.source, self.registry())
        _check_engine("fetch", self.engine, self.scheduler)
        return self

    def sharding(self) -> Any:
        """The layout and engine settings, as pipeline.fetch.shards.Sharding."""
        from pipeline.fetch.shards import Sharding

        return Sharding(self.layout, self.shard_size, self.engine, self.scheduler, self.workers)


class SurveyConfig(Section):
    sample: _between(0, 1_000_000_000, low_inclusive=True) = 0  # 0 = every image
    seed: int = 0


class PrepareConfig(Section):
    size: Literal["auto"] | tuple[PositiveInt, PositiveInt] = "auto"  # [height, width] (each at most MAX_SIDE) or auto
    scale: _between(0.0, 16.0, float) = 0.125  # auto size = most common shape x scale (seed 000: 0.25)
    aspect: Literal["stretch", "pad", "center-crop"] = "stretch"
    color: Literal["rgb", "grayscale"] = "rgb"
    train_size: PositiveInt | PositiveFloat = 0.8  # a count (int) or a fraction (float)
    val_size: PositiveInt | PositiveFloat = 0.2
    seed: int = 0
    max_pixels: Pixels = MAX_PIXELS  # images larger than this (from the header) are skipped, never decoded
    max_file_bytes: Bytes = MAX_FILE_BYTES  # larger files are skipped unread (also what `predict` reads)
    # A shard-layout dataset is prepared one task per shard on this engine (a folder always in this
    # process, as before).
    engine: EngineName = "local"
    scheduler: str = ""
    workers: Workers = 0

    @model_validator(mode="after")
    def _check_scheduler(self) -> PrepareConfig:
        _check_engine("prepare", self.engine, self.scheduler)
        return self

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        """Union-typed keys get their own message: pydantic's lists every branch of the union."""
        if not isinstance(data, dict):
            return data
        size = data.get("size", "auto")
        if size != "auto":
            if not (
                isinstance(size, (list, tuple))
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


class TrainConfig(RegistrySection, TrainSettings):
    REGISTRY: ClassVar[str] = "pipeline.train.models:ARCHITECTURES"
    NAME: ClassVar[str] = "train"
    KIND: ClassVar[str] = "architecture"

    archs: Annotated[list[str], Field(min_length=1)] = ["mlp", "cnn"]

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        for arch in self.archs:
            _check_choice("train.archs", arch, self.registry())
        return self

    def for_arch(self, arch: str) -> tuple[TrainSettings, ArchParams]:
        """The settings for one architecture: its section's overrides on top of the shared ones."""
        params = self.section(arch)
        base = {name: getattr(self, name) for name in TrainSettings.model_fields}
        overrides = {
            name: getattr(params, name) for name in ArchParams.model_fields if getattr(params, name) is not None
        }
        return TrainSettings(**{**base, **overrides}), params


class EvaluateConfig(Section):
    thresholds: _between(0, 10_000) = 10  # evenly spaced thresholds swept for best_threshold_accuracy (seed 000: 10)


class CompareConfig(Section):
    sort: str = "best_threshold_accuracy"


class Params(Section):
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    survey: SurveyConfig = Field(default_factory=SurveyConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)


# --- Errors -----------------------------------------------------------------------------------


def _check_choice(key: str, value: str, choices: dict) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: unknown value {value!r}; valid choices: {', '.join(sorted(choices))}")


def _parse(model: type[BaseModel], data: Any, where: str, validate=None) -> BaseModel:
    """`model` from `data` (or `validate(data)`), any problem as one ConfigError line."""
    try:
        data = data if data is not None else {}
        return validate(data) if validate else model.model_validate(data)
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
    return (
        f"{key}: {message} (got {err['input']!r})"
        if "input" in err and err["type"] != "value_error"
        else f"{key}: {message}"
    )


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys valid at a dotted location: the model's fields plus its registry's entries."""
    for part in loc:
        field = model.model_fields.get(part)
        if field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            model = field.annotation
        elif issubclass(model, RegistrySection) and part in model.registry():
            model = model.registry()[part].params
        else:
            return []
    names = [name for name in model.model_fields if name != "sections"]
    return names + list(model.registry()) if issubclass(model, RegistrySection) else names


# --- Loading ----------------------------------------------------------------------------------


def as_dict(params: Params) -> dict:
    """The params in params.yaml's own shape (registry sections back under their section)."""
    data = params.model_dump(mode="json")
    for name, field in Params.model_fields.items():
        if issubclass(field.annotation, RegistrySection):
            data[name].update(data[name].pop("sections"))
    return data


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating sections as needed (command-line overrides)."""
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    data[last] = value


def _read(path: Path, overrides: dict[str, Any] | None) -> dict:
    """params.yaml as a dict (a missing file means all defaults), dotted overrides applied."""
    data: Any = {}
    if path.is_dir():
        raise ConfigError(f"--params {path}: is a folder, not a params file")
    if path.exists():
        try:
            # ruamel reads YAML 1.2 exactly as DVC does (PyYAML would read `1e-5` as a string).
            data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8")) or {}
        except YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(Params.model_fields)})")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, dotted, value)
    return data


def load_params(path: Path = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Params:
    """Every section of params.yaml, validated, with dotted overrides applied."""
    return _parse(Params, _read(path, overrides), "")


def load_section(name: str, path: Path = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Section:
    """One section of params.yaml, validated, with the overrides that fall in it. The other sections
    are validated only where an override touches them (a typo in `-S` fails whatever the command);
    `pipeline check-params` validates everything."""
    data = _read(path, overrides)
    unknown = [key for key in data if key not in Params.model_fields]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key; valid keys: {', '.join(Params.model_fields)}")
    for other in sorted({dotted.split(".")[0] for dotted in overrides or {}} - {name}):
        _parse(Params.model_fields[other].annotation, data.get(other), other)
    return _parse(Params.model_fields[name].annotation, data.get(name), name)

"""params.yaml -> frozen, typed sections: the machinery every stage's params module uses.

Each stage owns its section (`pipeline.fetch.params`, `pipeline.prepare.params`,
`pipeline.train.params`, `pipeline.report.params`); `pipeline.params` names them. This module only
gives them a base class and shared types, reads the file, applies dotted overrides, assembles
sections into one model and turns any validation problem into one ConfigError line naming the key,
the bad value and the valid choices (`dvc exp run -S` accepts typos silently, so this strictness is
what catches them). It imports no stage: it is part of every stage's DVC dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from ruamel.yaml import YAML, YAMLError

from pipeline.core.errors import ConfigError


class Section(BaseModel):
    """The base of every params model: unknown keys and loose types are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- Types shared by several sections ---------------------------------------------------------


# Every number has a finite, sane range: a value far outside it is a typo or an attack, and would
# otherwise fail later, slowly (a 30 GB allocation, a training run that diverges to NaN).
def between(low: float, high: float, kind: type = int, low_inclusive: bool = False) -> Any:
    bounds = {"ge" if low_inclusive else "gt": low, "le": high}
    return Annotated[kind, Field(**bounds, allow_inf_nan=False) if kind is float else Field(**bounds)]


MAX_SIDE = 8192  # pixels per side of a prepared image
MAX_PIXELS = 100_000_000  # per image, read from the header before decoding (decompression bombs)
MAX_FILE_BYTES = 50_000_000  # per image file or download
Count = between(0, 1_000_000_000)
Seconds = between(0.0, 86_400.0, float)
Pixels = between(0, 1_000_000_000)
Bytes = between(0, 10**12)
# A SHA-256 pin; "" (`-S fetch.<source>.sha256=`) means no check, as null does in params.yaml.
Sha256 = Annotated[str, Field(pattern=r"^([0-9a-fA-F]{64})?$"), AfterValidator(str.lower)]


def check_choice(key: str, value: str, choices: Mapping) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: unknown value {value!r}; valid choices: {', '.join(sorted(choices))}")


# --- Sections that hold a registry ------------------------------------------------------------


class RegistrySection(Section):
    """A section whose keys named after registry entries (`fetch.synthetic`, `train.cnn`) hold that
    entry's own params. Subclasses return their registry from `registry()`; an entry has `params`
    (its model) and `parse(raw)` (its params from a section's mapping, presets applied)."""

    NAME: ClassVar[str]  # the section's name in params.yaml
    KIND: ClassVar[str]  # what an entry is called in messages
    sections: dict[str, Any] = {}

    @classmethod
    def registry(cls) -> Mapping[str, Any]:
        raise NotImplementedError

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        """Move keys that are registry entries into `sections` (unknown keys stay, and fail)."""
        if not isinstance(data, dict):
            return data
        registry = cls.registry()
        entries = [name for name in data if name not in cls.model_fields and name in registry]
        if not entries:
            return data
        data = dict(data)
        sections = {name: data.pop(name) for name in entries}
        for name, value in sections.items():
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"the {cls.KIND} section '{name}' must be a mapping, got {value!r}")
        return {**data, "sections": {name: value or {} for name, value in sections.items()}}

    @model_validator(mode="after")
    def _parse_sections(self) -> RegistrySection:
        if self.sections:
            registry = self.registry()
            parsed = {
                name: parse(registry[name].params, raw, f"{self.NAME}.{name}", registry[name].parse)
                for name, raw in self.sections.items()
            }
            object.__setattr__(self, "sections", parsed)
        return self

    def section(self, name: str) -> BaseModel:
        """The params of entry `name`: its section, or its defaults when it has none."""
        registry = self.registry()
        check_choice(self.KIND, name, registry)
        return self.sections.get(name) or registry[name].parse({})


# --- Errors -----------------------------------------------------------------------------------


def parse(model: type[BaseModel], data: Any, where: str, validate: Callable[[Any], BaseModel] | None = None) -> Any:
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
    message = str(cause) if isinstance(cause, ConfigError | ValueError) else err["msg"]
    if isinstance(cause, ConfigError):
        return message
    if "input" in err and err["type"] != "value_error":
        return f"{key}: {message} (got {err['input']!r})"
    return f"{key}: {message}"


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


# --- The file, overrides, and the sections assembled -----------------------------------------


def assemble(sections: Mapping[str, type[Section]]) -> type[Section]:
    """One model of the whole params file: a field per section, each defaulting to its defaults."""
    fields: dict[str, Any] = {name: (model, Field(default_factory=model)) for name, model in sections.items()}
    return create_model("Params", __base__=Section, **fields)


def as_dict(params: Section) -> dict:
    """The params in params.yaml's own shape (registry sections back under their section)."""
    data = params.model_dump(mode="json")
    for name, field in type(params).model_fields.items():
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


def read(path: Path, names: list[str], overrides: Mapping[str, Any] | None = None) -> dict:
    """params.yaml as a dict of sections (a missing file means all defaults), dotted overrides
    applied; a top-level key that is none of `names` is an error."""
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
            raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(names)})")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, dotted, value)
    unknown = [key for key in data if key not in names]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key; valid keys: {', '.join(names)}")
    return data

"""The `pipeline` command line: thin Typer wrappers over the stage functions.

Each command loads its section of params.yaml (plus `-S` overrides, plus its own options, mapped to
params keys by one table, OPTION_KEYS) through pipeline.params, calls one stage function and prints
its result with rich. A PipelineError becomes one line on stderr and its exit code; no traceback.
"""

from __future__ import annotations

import errno
import io
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from pipeline.core import names, paths
from pipeline.core.console import console
from pipeline.core.errors import ConfigError, DataError, PipelineError

if TYPE_CHECKING:
    from pipeline.train.params import TrainParams

PROG = "pipeline"  # also under `python -m pipeline`: usage lines, errors and shell completion say this
COMPLETE_VAR = "_PIPELINE_COMPLETE"  # set by the completion script when the shell asks for completions
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _tidy(param: Any, ctx: Any) -> None:
    """Help that shows what to type: a flag takes no value (no `<bool>` beside it), and a repeatable
    option or argument shows its items' type (`<path>`, not `<list[Path]>`)."""
    if getattr(param, "is_flag", False):
        param.metavar = ""
        return
    display = getattr(param, "display_type_rich", None)  # (Typer's type column; absent in older Typers)
    if display is None or param.metavar is not None:
        return
    text = display(ctx) or ""
    if "list[" in text:
        tidy = re.sub(r"list\[(\w+)\]", lambda match: match[1].lower(), text)
        param.display_type_rich = lambda ctx: tidy


class _Tidy:
    def get_params(self, ctx: Any) -> list:
        params = super().get_params(ctx)  # (the command's own, then its help option)
        for param in params:
            _tidy(param, ctx)
        return params


class _Command(_Tidy, typer.core.TyperCommand):
    pass


class _Group(_Tidy, typer.core.TyperGroup):
    pass


class _Typer(typer.Typer):
    """Typer with this tool's conventions: `-h` as well as `--help`, every command's help tidied."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
        super().__init__(cls=_Group, no_args_is_help=True, pretty_exceptions_enable=False, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        return super().command(*args, cls=_Command, **kwargs)


# Startup matters (every DVC stage and every --help pays it): this module imports the command-line
# toolkit only; the config (pydantic) and each command's libraries are imported where they are used.
# Completion is this module's own --install-completion/--show-completion over Typer's machinery:
# each takes an optional shell name (Typer's own flags ignore one and use the shell they run in).
app = _Typer(
    help="Reproducible image-classification experiments: fetch, survey, prepare, train, evaluate, compare.",
    add_completion=False,
)


# Results go to stdout (wide when piped, so tables stay readable in logs, unless COLUMNS says
# otherwise); progress and errors to stderr.
def _results_console() -> Console:
    return Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=200)


out = _results_console()
ARCH_CHOICES = ", ".join(names.ARCHITECTURES)


class State:
    params_file: Path = paths.PARAMS_FILE
    explicit: bool = False  # --params given: then it must exist
    sets: dict[str, Any] = {}
    warned: bool = False


def _parse_set(item: str) -> tuple[str, Any]:
    from ruamel.yaml import YAML, YAMLError

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
    try:
        return key.strip(), YAML(typ="safe", pure=True).load(io.StringIO(value)) if value else ""
    except YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version(PROG)
        except PackageNotFoundError:  # a source tree that was never installed
            from pipeline import __version__ as number
        typer.echo(f"{PROG} {number}")
        raise typer.Exit()


def _current_shell() -> str:
    try:
        import shellingham  # (Typer's dependency)

        return shellingham.detect_shell()[0]
    except Exception:  # not installed, or no shell among the parent processes: $SHELL says
        return Path(os.environ.get("SHELL", "")).name


def _completion(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> None:
    """--show-completion / --install-completion [SHELL] (default: the shell this runs in)."""
    if value is None or ctx.resilient_parsing:
        return
    shell = value or _current_shell()
    if shell not in SHELLS:
        raise ConfigError(
            f"--{param.name.replace('_', '-')} {shell!r}: "
            + ("unsupported shell" if value else "cannot tell which shell this is")
            + f"; name one of {', '.join(SHELLS)}"
        )
    from typer.completion import get_completion_script, install

    if param.name == "install_completion":
        shell, path = install(shell=shell, prog_name=PROG, complete_var=COMPLETE_VAR)
        typer.echo(f"{shell} completion installed in {path}; it takes effect in a new shell")
    else:
        typer.echo(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell))
    raise typer.Exit()


def _complete(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """Shell completion of an option whose valid values are `choices`."""
    return lambda incomplete: [choice for choice in choices if choice.startswith(incomplete)]


COMPLETION_OPTIONS = ("--install-completion", "--show-completion")


def _with_shell(args: list[str]) -> list[str]:
    """`args` with "" (the current shell) after a --show-completion or --install-completion given
    without a shell name: the shell is optional, which the option parser cannot say."""
    done = []
    for i, arg in enumerate(args):
        done.append(arg)
        if arg in COMPLETION_OPTIONS and (i + 1 == len(args) or args[i + 1].startswith("-")):
            done.append("")
    return done


@app.callback()
def main_options(
    params: Annotated[Path | None, typer.Option("--params", help="Params file.", show_default="params.yaml")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-S",
            metavar="KEY=VALUE",
            help="Override a param, as `dvc exp run -S` does: -S train.epochs=2 (repeatable).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", help="Print the version and exit.", callback=_version, is_eager=True, expose_value=False
        ),
    ] = False,
    install_completion: Annotated[
        str | None,
        typer.Option(
            metavar="[SHELL]",
            help=f"Install shell completion of pipeline ({', '.join(SHELLS)}; default: the current shell) and exit.",
            callback=_completion,
            autocompletion=_complete(SHELLS),
            expose_value=False,
            is_eager=True,
        ),
    ] = None,
    show_completion: Annotated[
        str | None,
        typer.Option(
            metavar="[SHELL]",
            help="Print the completion script (same shells) to copy or customize, and exit.",
            callback=_completion,
            autocompletion=_complete(SHELLS),
            expose_value=False,
            is_eager=True,
        ),
    ] = None,
) -> None:
    State.params_file, State.explicit = params or paths.PARAMS_FILE, params is not None
    State.sets = dict(_parse_set(item) for item in sets or [])
    State.warned = False
    global out
    out = _results_console()  # (this invocation's stdout and COLUMNS)


def _params_file() -> Path:
    """The params file to read: a --params that does not exist is an error; a missing default
    params.yaml means the defaults, said once (a run in the wrong folder is a common slip)."""
    path = State.params_file
    if not path.exists():
        if State.explicit:
            raise ConfigError(f"--params {path}: file not found")
        if not State.warned:
            _warn([f"no {path} in {Path.cwd()}: using the default params"])
            State.warned = True
    return path


def _size(value: str) -> Any:
    if value == "auto":
        return value
    try:
        height, width = (int(part) for part in value.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {value!r}: expected HEIGHTxWIDTH (e.g. 94x125) or auto") from None
    return [height, width]


# Each command's options that set a param, and the key each sets: `{source}` is the fetch source,
# `{arch}` the architecture being trained. Options not listed here (paths of inputs and outputs,
# output formats) are the command's own.
OPTION_KEYS: dict[str, dict[str, str]] = {
    "fetch": {
        "source": "fetch.source",
        "concurrency": "fetch.download.concurrency",
        "layout": "fetch.layout",
        "shard_size": "fetch.shard_size",
        "engine": "fetch.engine",
        "scheduler": "fetch.scheduler",
        "verify": "fetch.rehash",
        "per_class": "fetch.{source}.per_class",
        "val_per_class": "fetch.{source}.val_per_class",
        "wnids": "fetch.{source}.wnids",
        "wnids_file": "fetch.{source}.wnids_file",
        "api_url": "fetch.{source}.api_url",
        "url_list": "fetch.{source}.url_list",
        "url": "fetch.{source}.url",
        "archive": "fetch.{source}.archive",
        "sha256": "fetch.{source}.sha256",
        "path": "fetch.{source}.path",
    },
    "survey-shapes": {"sample": "survey.sample"},
    "prepare": {
        "size": "prepare.size",
        "scale": "prepare.scale",
        "aspect": "prepare.aspect",
        "color": "prepare.color",
        "engine": "prepare.engine",
        "scheduler": "prepare.scheduler",
    },
    "train": {
        "epochs": "train.{arch}.epochs",
        "batch_size": "train.{arch}.batch_size",
        "lr": "train.{arch}.learning_rate",
        "early_stopping": "train.{arch}.early_stopping",
    },
    "evaluate": {"thresholds": "evaluate.thresholds"},
    "audit": {
        "near_distance": "audit.near_distance",
        "top": "audit.top",
        "engine": "audit.engine",
        "scheduler": "audit.scheduler",
    },
    "compare": {"sort": "compare.sort"},
    "leaderboard": {"sort": "compare.sort"},
}
# How an option's text becomes the param's value (paths become strings).
OPTION_VALUES: dict[str, Callable[[Any], Any]] = {"wnids": lambda text: text.split(","), "size": _size}


def _options(ctx: typer.Context, **names: str) -> dict[str, Any]:
    """The params keys the command's given options set (OPTION_KEYS), with their values."""
    keys = OPTION_KEYS[ctx.command.name]
    return {
        keys[option].format(**names): OPTION_VALUES.get(option, _plain)(value)
        for option, value in ctx.params.items()
        if option in keys and value is not None
    }


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _section(name: str, options: dict[str, Any] | None = None) -> Any:
    """One section of params.yaml, then --set overrides, then the command's own options (which
    win); a stage reads only its own (and so imports only what that needs)."""
    from pipeline.params import load_section

    return load_section(name, _params_file(), {**State.sets, **(options or {})})


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


def _raw_dir() -> Path:
    """The fetch stage's default output, data/raw/<fetch.source>: the other stages' default input."""
    return paths.RAW_DIR / _section("fetch").source


@app.command("check-params")
def check_params(
    show: Annotated[bool, typer.Option("--show", help="Also print every effective setting, as JSON.")] = False,
) -> None:
    """Validate params.yaml (and -S overrides): one line when valid, one error line when not."""
    from pipeline.params import as_dict, load_params

    params = load_params(_params_file(), State.sets)
    if show:
        out.print_json(data=as_dict(params))
        return
    overrides = f" with {len(State.sets)} override(s)" if State.sets else ""
    out.print(
        f"{State.params_file}{overrides}: valid "
        f"(archs: {', '.join(params.train.archs)}; source: {params.fetch.source})",
        highlight=False,
    )


@app.command()
def fetch(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Option(
            help=f"Data source: {', '.join(names.SOURCES)}.",
            show_default="fetch.source",
            autocompletion=_complete(names.SOURCES),
        ),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Dataset folder.", show_default="data/raw/<source>")
    ] = None,
    per_class: Annotated[int | None, typer.Option(help="Images per class (synthetic, imagenet: train images).")] = None,
    val_per_class: Annotated[int | None, typer.Option(help="imagenet: validation images per class.")] = None,
    wnids: Annotated[
        str | None, typer.Option(help="imagenet: comma-separated synset ids, e.g. n04194289,n02834778.")
    ] = None,
    wnids_file: Annotated[
        Path | None,
        typer.Option(help="imagenet: a file of synset ids, one per line, # comments (fetch.imagenet.wnids_file)."),
    ] = None,
    api_url: Annotated[
        str | None, typer.Option(help="imagenet: synset URL-list API base (GET <api-url>?wnid=<wnid>).")
    ] = None,
    url_list: Annotated[
        Path | None, typer.Option(help="imagenet: fall11_urls.txt-style file (<wnid>_<n> TAB <url>), .gz ok.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Archive URL (cats-dogs, mnist, cifar10: base URL).")] = None,
    archive: Annotated[Path | None, typer.Option(help="cats-dogs: a zip already on disk.")] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected SHA-256 of the archive.")] = None,
    path: Annotated[
        str | None,
        typer.Option(
            help="folder: a directory of class subfolders; webdataset: tars (a file, folder, glob, "
            "brace pattern or http(s) URLs)."
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Parallel downloads (fetch.download.concurrency; per process with shards).")
    ] = None,
    layout: Annotated[
        Literal["auto", "folder", "shards"] | None,
        typer.Option(
            help="imagenet: class folders, shards, or auto (shards for a long URL list).", show_default="fetch.layout"
        ),
    ] = None,
    shard_size: Annotated[int | None, typer.Option(help="URLs per shard (fetch.shard_size).")] = None,
    engine: Annotated[
        Literal["local", "dask"] | None,
        typer.Option(help="Where shards run: a process per core, or a Dask cluster.", show_default="fetch.engine"),
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler, tcp://HOST:8786 (fetch.scheduler).")] = None,
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify",
            help="Re-hash every stored image of the finished shards against the manifest; fetch again those "
            "that differ (fetch.rehash).",
            show_default=False,
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail when a class gets fewer images than requested.")
    ] = False,
) -> None:
    """Fetch a dataset into <out>/<class>/ with a manifest.csv row for every item."""
    from pipeline.fetch.stage import fetch as run

    name = _section("fetch", {"fetch.source": source} if source else {}).source
    cfg = _section("fetch", _options(ctx, source=name))
    result = run(cfg, out_dir or paths.RAW_DIR / name)
    out.print(f"{name} -> {result.out}")
    table = Table("status", "items")
    table.columns[1].justify = "right"
    for status, count in result.counts.items():
        table.add_row(status, f"{count:,}")
    out.print(table)
    if result.reasons:
        table = Table("reason (not success)", "items")
        table.columns[1].justify = "right"
        for reason, count in sorted(result.reasons.items(), key=lambda item: -item[1])[:15]:
            table.add_row(reason, f"{count:,}")
        out.print(table)
    _warn(result.warnings)
    if strict and result.warnings:
        raise DataError(f"--strict: {len(result.warnings)} shortfall(s); see {result.out / 'summary.json'}")


@app.command("survey-shapes")
def survey_shapes(
    ctx: typer.Context,
    root: Annotated[
        Path | None, typer.Argument(help="Folder of images.", show_default="data/raw/<fetch.source>")
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(help="Read a seeded random sample of N images (0 = all).", show_default="survey.sample"),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--out", help="Write the survey JSON here.", show_default="print only")
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write the shape histogram CSV here.", show_default="next to --out")
    ] = None,
    plot_out: Annotated[
        Path | None,
        typer.Option("--plot", help="Write the shape histogram plot data (DVC plot) here.", show_default="none"),
    ] = None,
) -> None:
    """Survey image shapes from file headers and print the most common one. Writes files only where
    --out, --csv or --plot say (the pipeline's survey stage passes them)."""
    from pipeline.prepare.survey import run

    cfg = _section("survey", _options(ctx))
    csv_out = csv_out or (json_out.with_suffix(".csv") if json_out else None)
    result = run(root or _raw_dir(), cfg.sample, cfg.seed, json_out, csv_out, plot_out)
    table = Table("height", "width", "images", title=f"{result.images:,} images, {result.unreadable:,} unreadable")
    table.columns[2].justify = "right"
    for shape in result.shapes[:10]:
        table.add_row(str(shape["height"]), str(shape["width"]), f"{shape['count']:,}")
    out.print(table)
    out.print(f"most common shape (height x width): {'x'.join(map(str, result.most_common_shape)) or 'none'}")
    written = [str(p) for p in (json_out, csv_out, plot_out) if p is not None]
    console.print(
        f"wrote {', '.join(written)}" if written else "nothing written (--out FILE saves the survey)",
        highlight=False,
        style="dim",
    )


@app.command()
def prepare(
    ctx: typer.Context,
    in_dir: Annotated[
        Path | None, typer.Option("--in", help="Dataset folder.", show_default="data/raw/<fetch.source>")
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Output folder for arrays and meta.json.")
    ] = paths.PREPARED_DIR,
    size: Annotated[
        str | None,
        typer.Option(help="HEIGHTxWIDTH, or auto (most common shape x scale).", show_default="prepare.size"),
    ] = None,
    scale: Annotated[float | None, typer.Option(help="Scale for --size auto.", show_default="prepare.scale")] = None,
    aspect: Annotated[
        Literal["stretch", "pad", "center-crop"] | None,
        typer.Option(
            help="Fit to --size by stretching, padding or cropping the center.", show_default="prepare.aspect"
        ),
    ] = None,
    color: Annotated[
        Literal["rgb", "grayscale"] | None, typer.Option(help="Color channels.", show_default="prepare.color")
    ] = None,
    survey: Annotated[Path | None, typer.Option(help="Survey JSON whose most common shape --size auto uses.")] = None,
    engine: Annotated[
        Literal["local", "dask"] | None,
        typer.Option(
            help="A shard dataset's engine: a process per core, or a Dask cluster.", show_default="prepare.engine"
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Dask scheduler address (tcp://host:8786); none = a local cluster.", show_default="prepare.scheduler"
        ),
    ] = None,
) -> None:
    """Resize every image to a fixed input and write train/val uint8 arrays (a shard dataset: one
    task per shard, arrays per shard)."""
    from pipeline.prepare.prepare import prepare as run

    cfg = _section("prepare", _options(ctx))
    result = run(in_dir or _raw_dir(), out_dir, cfg, survey)
    out.print(
        f"{result.out}: input {'x'.join(map(str, result.input_shape))}, classes {', '.join(result.classes)}",
        highlight=False,
    )
    table = Table("split", "images")
    table.columns[1].justify = "right"
    for split, count in result.sizes.items():
        table.add_row(split, f"{count:,}")
    table.add_row("skipped", f"{len(result.skipped):,}")
    out.print(table)
    _warn(result.warnings)


def _archs(arch: str | None, train: TrainParams) -> list[str]:
    """The architecture asked for (validated), else each of train.archs."""
    if arch:
        train.section(arch)
    return [arch] if arch else list(train.archs)


@app.command()
def train(
    ctx: typer.Context,
    arch: Annotated[
        str | None,
        typer.Option(
            help=f"Architecture: {ARCH_CHOICES}.",
            show_default="each of train.archs",
            autocompletion=_complete(names.ARCHITECTURES),
        ),
    ] = None,
    data: Annotated[Path, typer.Option(help="Prepared data folder.")] = paths.PREPARED_DIR,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Model folder.", show_default="models/<arch>")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override the batch size.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Override the learning rate.")] = None,
    early_stopping: Annotated[
        int | None, typer.Option(help="Stop after this many epochs without a lower val_loss (0 = off).")
    ] = None,
    run_file: Annotated[
        Path | None,
        typer.Option(
            help="Time and memory of the run, JSON (git-ignored).", show_default="runs/<model folder name>/run.json"
        ),
    ] = None,
    live: Annotated[
        Path | None, typer.Option(help="dvclive folder for per-epoch metrics.", show_default="dvclive/<arch>")
    ] = None,
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            help="TensorBoard event files (git-ignored).", show_default="runs/<model folder name>/tensorboard"
        ),
    ] = None,
) -> None:
    """Train an architecture; save models/<arch>/ (model.keras, best.keras, history.csv).

    An interrupted run resumes from its last finished epoch when rerun with the same params."""
    from pipeline.train.loop import train as run

    for name in _archs(arch, _section("train")):
        settings, arch_params = _section("train", _options(ctx, arch=name)).for_arch(name)
        model_dir = (
            out_dir or paths.MODELS_DIR / name
        )  # runs/<its name>/: two trainings into two folders never share a log
        result = run(
            name,
            data,
            model_dir,
            settings,
            arch_params,
            live or paths.LIVE_DIR / name,
            run_file=run_file or paths.run_file(model_dir.name),
            tensorboard_dir=tensorboard or paths.tensorboard_dir(model_dir.name),
        )
        if not result.chief:
            continue  # another worker of a multi-worker run: the chief reports
        last = " ".join(f"{key}={values[-1]:.4f}" for key, values in result.history.items())
        resumed = f" (resumed after epoch {result.resumed_from})" if result.resumed_from else ""
        epochs_run = len(next(iter(result.history.values()), []))
        out.print(
            f"{name}: {result.params:,} parameters, {epochs_run} epochs{resumed} in {result.train_seconds:.1f} s "
            f"on {result.replicas} replica(s) -> {result.model_path}; last epoch: {last}"
        )


@app.command()
def models(
    arch: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Only this architecture (repeatable): {ARCH_CHOICES}.",
            show_default="all",
            autocompletion=_complete(names.ARCHITECTURES),
        ),
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option(help="HEIGHT,WIDTH,CHANNELS for every architecture.", show_default="each one's seed input"),
    ] = None,
    classes: Annotated[int | None, typer.Option(help="Number of classes.", show_default="each one's seed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: a list of {arch, params, ...}.")] = False,
) -> None:
    """List every architecture and preset with its parameter count (built, not trained)."""
    import json

    from pipeline.train.models import describe_models

    if classes is not None and classes < 2:
        raise ConfigError(f"--classes {classes}: expected 2 or more")
    train = _section("train")
    for name in arch or []:
        train.for_arch(name)  # validates the name
    rows = describe_models(train.for_arch, _input_shape(input_shape), classes, arch)
    if as_json:
        out.print(json.dumps(rows, indent=2), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table("arch", "params", "input", "classes", "head", "reproduces", "dataset")
    for row in rows:
        count = f"{row['params']:,}" if row["params"] is not None else f"- ({row['note']})"
        table.add_row(
            row["arch"],
            count,
            "x".join(map(str, row["input_shape"])),
            str(row["classes"]),
            row["head"],
            row["reproduces"],
            row["dataset"],
        )
    out.print(table)


def _input_shape(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(part) for part in value.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(
            f"--input-shape {value!r}: expected HEIGHT,WIDTH,CHANNELS of positive integers, e.g. 227,227,3"
        )
    return shape


@app.command()
def evaluate(
    ctx: typer.Context,
    arch: Annotated[
        str | None,
        typer.Option(
            help=f"Architecture: {ARCH_CHOICES}.",
            show_default="each of train.archs",
            autocompletion=_complete(names.ARCHITECTURES),
        ),
    ] = None,
    data: Annotated[Path, typer.Option(help="Prepared data folder.")] = paths.PREPARED_DIR,
    model: Annotated[Path | None, typer.Option(help="Model file.", show_default="models/<arch>/model.keras")] = None,
    metrics_out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Metrics JSON (the data's identity goes beside it, <name>.dataset.json).",
            show_default="metrics/<arch>.json",
        ),
    ] = None,
    thresholds: Annotated[
        int | None,
        typer.Option(help="Thresholds swept for best_threshold_accuracy.", show_default="evaluate.thresholds"),
    ] = None,
    plots_dir: Annotated[
        Path | None, typer.Option("--plots", help="Plots folder.", show_default="plots/<arch>")
    ] = None,
) -> None:
    """Evaluate a trained model on the validation split; write metrics/<arch>.json and plots/<arch>/."""
    from pipeline.report.compare import flatten, format_value
    from pipeline.report.evaluate import run
    from pipeline.train.runtime import MODEL_FILE

    cfg = _section("evaluate", _options(ctx))
    for name in _archs(arch, _section("train")):
        result = run(
            model or paths.MODELS_DIR / name / MODEL_FILE,
            data,
            cfg.thresholds,
            metrics_out or paths.METRICS_DIR / f"{name}.json",
            plots_dir or paths.PLOTS_DIR / name,
        )
        out.print(
            f"{name}: " + ", ".join(f"{key}={format_value(value)}" for key, value in flatten(result.metrics).items()),
            highlight=False,
            soft_wrap=True,
        )


def _fitting_table(columns: list[str], rows: dict[str, list[str]], title: str, caption: str | None = None) -> Table:
    """Architectures as rows, metrics as columns; transposed (metrics as rows) when that would not
    fit the terminal, so no value is cut to `0.9…`."""
    wide = Table("arch", *columns, title=title, caption=caption)
    for column in wide.columns[1:]:
        column.justify = "right"
    for arch, cells in rows.items():
        wide.add_row(arch, *cells)
    if Measurement.get(out, out.options.update(max_width=1 << 20), wide).maximum <= out.width:  # its natural width
        return wide
    tall = Table("metric", *rows, title=title, caption=caption)
    for column in tall.columns[1:]:
        column.justify = "right"
        column.overflow = "fold"
    for i, name in enumerate(columns):
        tall.add_row(name, *(cells[i] for cells in rows.values()))
    return tall


@app.command()
def audit(
    ctx: typer.Context,
    in_dir: Annotated[
        Path | None, typer.Option("--in", help="Fetched dataset folder.", show_default="data/raw/<fetch.source>")
    ] = None,
    prepared: Annotated[
        Path | None,
        typer.Option(
            help="Prepared data (with --model): the splits, and label issues in validation.", show_default="none"
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="A model trained on --prepared (model.keras): its probabilities find label issues.",
            show_default="none",
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--out", help="Write the report JSON here.", show_default="none")
    ] = None,
    plots_dir: Annotated[
        Path | None,
        typer.Option("--plots", help="Write thumbnails of the top groups and candidates here.", show_default="none"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    near_distance: Annotated[
        int | None,
        typer.Option(
            help="Near duplicates: difference hashes within this many bits (of 64).", show_default="audit.near_distance"
        ),
    ] = None,
    top: Annotated[
        int | None, typer.Option(help="Groups and candidates drawn in --plots.", show_default="audit.top")
    ] = None,
    engine: Annotated[
        Literal["local", "dask"] | None,
        typer.Option(
            help="Where the hash pass runs: a process per core, or a Dask cluster.", show_default="audit.engine"
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Dask scheduler address (tcp://host:8786); none = a local cluster.", show_default="audit.scheduler"
        ),
    ] = None,
) -> None:
    """Find exact and near-duplicate images (within a class, across classes, across train/validation),
    label-issue candidates (with --prepared and --model) and the class balance."""
    import json

    from pipeline.audit.audit import run

    cfg = _section("audit", _options(ctx))
    report = run(in_dir or _raw_dir(), cfg, prepared, model, json_out, plots_dir).report
    if as_json:
        out.print(json.dumps(report, indent=2), markup=False, highlight=False, soft_wrap=True)
        return
    summary = report["summary"]
    table = Table(
        "found", "count", title=f"audit of {report['dataset']['root']} ({report['dataset']['items']:,} items)"
    )
    table.columns[1].justify = "right"
    for key, label in (
        ("duplicate_groups", "duplicate groups"),
        ("exact_groups", "  exact (same bytes)"),
        ("near_groups", "  near (same picture)"),
        ("cross_class_groups", "  across classes"),
        ("leakage_groups", "  across train/validation"),
        (
            "label_issues",
            "label-issue candidates" if report["label_issues_computed"] else "label issues (needs --model)",
        ),
        ("unreadable", "unreadable items"),
    ):
        table.add_row(label, f"{summary[key]:,}" if key != "label_issues" or report["label_issues_computed"] else "-")
    out.print(table)
    written = [str(p) for p in (json_out, plots_dir) if p is not None]
    console.print(
        f"wrote {', '.join(written)}" if written else "nothing written (--out FILE saves the report)",
        highlight=False,
        style="dim",
    )


@app.command()
def compare(
    ctx: typer.Context,
    metrics_dir: Annotated[Path, typer.Option("--metrics", help="Folder of metrics JSON files.")] = paths.METRICS_DIR,
    sort: Annotated[
        str | None,
        typer.Option(help="Metric to sort by; rows without it are ranked by accuracy.", show_default="compare.sort"),
    ] = None,
    md: Annotated[bool, typer.Option("--md", help="Print Markdown instead of a rich table.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: the rows best first, each with its data and metrics.")
    ] = False,
    md_out: Annotated[Path | None, typer.Option("--out", help="Also write the Markdown table to this file.")] = None,
    runs_dir: Annotated[
        Path,
        typer.Option(
            "--runs", help="Run logs whose time and memory the rich table and --json add (runs/<arch>/run.json)."
        ),
    ] = paths.RUNS_DIR,
) -> None:
    """Compare every architecture's metrics side by side, and say which data each was measured on."""
    import json

    from pipeline.report.compare import format_value, run, run_figures, to_markdown, with_run_figures

    if md and as_json:
        raise ConfigError("--md and --json: choose one output format")
    cfg = _section("compare", _options(ctx))
    comparison = run(metrics_dir, cfg.sort, md_out)
    if md:
        out.print(to_markdown(comparison), end="", markup=False, highlight=False, soft_wrap=True)
        return
    if as_json:  # (the notes below still go to stderr)
        document = comparison.to_json(run_figures(list(comparison.frame.index), runs_dir))
        out.print(json.dumps(document, indent=2), markup=False, highlight=False, soft_wrap=True)
    else:
        frame = with_run_figures(comparison.frame, runs_dir)
        columns = [*map(str, frame.columns), *(["data"] if comparison.mixed else [])]
        rows = {
            str(arch): [format_value(v) for v in row] + ([comparison.datasets[str(arch)]] if comparison.mixed else [])
            for arch, row in frame.iterrows()
        }
        data = None if comparison.mixed else f"data: {next(iter(comparison.datasets.values()))}"
        out.print(_fitting_table(columns, rows, f"sorted by {cfg.sort}", data))
    if comparison.mixed:
        console.print(
            f"[yellow]warning:[/] {escape(comparison.data_note().removeprefix('Warning: '))}",
            highlight=False,
            soft_wrap=True,
        )
    if comparison.fallback:
        console.print(
            f"note: without {escape(cfg.sort)}, ranked by accuracy: {escape(', '.join(comparison.fallback))}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def report(
    metrics_dir: Annotated[Path, typer.Option("--metrics", help="Folder of metrics JSON files.")] = paths.METRICS_DIR,
    survey: Annotated[Path, typer.Option(help="Survey JSON.")] = paths.REPORTS_DIR / "survey.json",
    plots_dir: Annotated[Path, typer.Option("--plots", help="Plots folder (plots/<arch>/).")] = paths.PLOTS_DIR,
    md_out: Annotated[Path, typer.Option("--out", help="Summary Markdown file.")] = paths.REPORTS_DIR / "summary.md",
    html_out: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Self-contained HTML page with every plot drawn (works offline).",
            show_default="summary.html next to --out",
        ),
    ] = None,
    compare_md: Annotated[
        Path | None,
        typer.Option(
            "--compare", help="Comparison table to embed (reports/compare.md).", show_default="computed from --metrics"
        ),
    ] = None,
    audit_json: Annotated[
        Path | None,
        typer.Option(
            "--audit",
            help="Audit report to show (reports/audit.json; thumbnails from --plots/audit/).",
            show_default="none",
        ),
    ] = None,
) -> None:
    """Write reports/summary.md (comparison, survey, links to every plot) and reports/summary.html
    (the same with every plot drawn, offline)."""
    from pipeline.report.report import write_report

    result = write_report(
        metrics_dir, survey, plots_dir, md_out, _section("compare").sort, compare_md, html_out, audit_json=audit_json
    )
    out.print(
        f"{result.summary}, {result.html}: {len(result.archs)} architectures ({', '.join(result.archs)}), "
        f"{len(result.plots)} plots drawn",
        highlight=False,
    )
    if result.missing:
        console.print(
            f"[yellow]warning:[/] not drawn (file not found): {escape(', '.join(result.missing))}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files to classify.", show_default=False)],
    arch: Annotated[
        str | None,
        typer.Option(
            help=f"Architecture: {ARCH_CHOICES}.",
            show_default="the best by compare.sort among those evaluated on --data",
            autocompletion=_complete(names.ARCHITECTURES),
        ),
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Model file.", show_default="models/<arch>/model.keras")] = None,
    data: Annotated[
        Path, typer.Option(help="Prepared data folder whose meta.json gives the preprocessing.")
    ] = paths.PREPARED_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records instead of a table.")] = False,
) -> None:
    """Classify image files, preprocessed exactly as `prepare` did for training. Exit code 1 if any file failed."""
    from dataclasses import asdict

    from pipeline.core.errors import ImageError
    from pipeline.report.predict import default_arch
    from pipeline.report.predict import predict as run
    from pipeline.train.runtime import MODEL_FILE

    train = _section("train")
    name = _archs(arch or default_arch(paths.METRICS_DIR, _section("compare").sort, list(train.archs), data), train)[0]
    caps = _section("prepare")
    results = run(images, model or paths.MODELS_DIR / name / MODEL_FILE, data, caps.max_file_bytes, caps.max_pixels)
    if as_json:
        out.print_json(data=[{"arch": name, **asdict(r)} for r in results])
    else:
        table = Table(
            "image", "class", "probability", "error", title=f"{name}: {model or paths.MODELS_DIR / name / MODEL_FILE}"
        )
        for r in results:
            table.add_row(
                escape(r.path),
                r.cls or "-",
                "-" if r.probability is None else f"{r.probability:.4f}",
                escape(r.error or ""),
            )
        out.print(table)
    failed = [r for r in results if r.error]
    if failed:
        raise ImageError(
            f"{len(failed)} of {len(results)} files could not be predicted: "
            + "; ".join(f"{r.path}: {r.error}" for r in failed[:3])
        )


@app.command()
def leaderboard(
    ctx: typer.Context,
    sort: Annotated[str | None, typer.Option(help="Metric to sort by.", show_default="compare.sort")] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(help="A metric to show (repeatable).", show_default="the common ones present"),
    ] = None,
    md: Annotated[bool, typer.Option("--md", help="Print Markdown.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """Every DVC experiment x architecture in one table, with the params that differ, best first."""
    from pipeline.report.compare import format_value
    from pipeline.report.leaderboard import experiment_rows
    from pipeline.report.leaderboard import leaderboard as run

    if md + as_json + as_csv > 1:
        raise ConfigError("--md, --json and --csv: choose one output format")
    cfg = _section("compare", _options(ctx))
    frame = run(experiment_rows(), cfg.sort, metric)
    if as_json:
        out.print_json(frame.to_json(orient="records"))
    elif as_csv:
        out.print(frame.to_csv(index=False, lineterminator="\n"), end="", markup=False, highlight=False, soft_wrap=True)
    else:
        cells = frame.astype(object).map(
            lambda v: format_value(v) if isinstance(v, float) else ("-" if v is None else str(v))
        )
        if md:
            out.print(cells.to_markdown(index=False) + "\n", end="", markup=False, highlight=False, soft_wrap=True)
            return
        table = Table(*cells.columns, title=f"experiments, sorted by {cfg.sort}")
        for row in cells.itertuples(index=False):
            table.add_row(*(escape(str(c)) for c in row))
        out.print(table)


metrics_app = _Typer(help="Metrics across git revisions and DVC experiments.")
app.add_typer(metrics_app, name="metrics")


@metrics_app.command("diff")
def metrics_diff(
    old: Annotated[str, typer.Argument(help="Old side: a git revision or DVC experiment name.")] = "HEAD",
    new: Annotated[str | None, typer.Argument(help="New side.", show_default="the workspace")] = None,
    md: Annotated[bool, typer.Option("--md", help="Print a Markdown table (for pull-request comments).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    all_metrics: Annotated[bool, typer.Option("--all", help="Also list unchanged metrics.")] = False,
) -> None:
    """Metrics of two revisions or experiments side by side: old, new, delta and percentage change."""
    from pipeline.report.metrics_diff import headers, rows, to_markdown
    from pipeline.report.metrics_diff import metrics_diff as run

    if md and as_json:
        raise ConfigError("--md and --json: choose one output format")
    result = run(old, new, all_metrics)
    for where, why in result.errors.items():
        _warn([f"cannot read metrics at {where}: {why}"])
    if as_json:
        out.print_json(data=result.to_json())
        return
    if md:
        out.print(to_markdown(result), end="", markup=False, highlight=False, soft_wrap=True)
        return
    if not result.changes:
        out.print(f"No metric changed between {escape(result.old_rev)} and {escape(result.new_rev)}.", highlight=False)
        return
    table = Table(*headers(result), title=f"metrics: {escape(result.old_rev)} -> {escape(result.new_rev)}")
    for column in table.columns[2:]:
        column.justify = "right"
    for change, cells in zip(result.changes, rows(result)):
        if change.verdict:  # in words too: a log or a colour-blind reader has no colour
            cells[4] += f" ({change.verdict})"
        style = {"better": "green", "worse": "red"}.get(change.verdict, "")
        table.add_row(
            *(escape(c) for c in cells[:4]), *(f"[{style}]{escape(c)}[/]" if style else escape(c) for c in cells[4:])
        )
    out.print(table)


# What an OSError means for the user, by errno; anything else says its own strerror.
_OS_ERRORS = {
    errno.ENOSPC: "no space left on device writing {path}; free some space and rerun",
    errno.EDQUOT: "disk quota exceeded writing {path}; free some space and rerun",
    errno.EROFS: "read-only file system: cannot write {path}; choose another output folder",
    errno.EACCES: "permission denied: {path}",
    errno.EPERM: "operation not permitted: {path}",
    errno.ELOOP: "too many levels of symbolic links: {path}",
}


def describe_os_error(exc: OSError) -> str:
    path = exc.filename if exc.filename is not None else "a file"
    template = _OS_ERRORS.get(exc.errno or 0)
    return template.format(path=path) if template else f"{exc.strerror or exc}: {path}"


def _error(message: str, code: int) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _interrupted(signum, frame) -> None:
    """Ctrl-C: one line and exit 130 at once. Every output is committed atomically (and training
    backs up each epoch), so stopping here leaves nothing half-written that a rerun would trust;
    not unwinding spares the seconds TensorFlow's threads take to wind down."""
    console.print(
        "[bold red]error:[/] interrupted (Ctrl-C); rerun the same command to start again or resume", highlight=False
    )
    sys.stderr.flush()
    os._exit(130)


try:
    from typer._click.exceptions import ClickException as _ParserError  # (newer Typers have Click inside)
except ImportError:
    from click.exceptions import ClickException as _ParserError


def _usage_error(exc: Any) -> str:
    """A command-line mistake the parser caught, as one line: a bad choice names the valid ones."""
    param, message = getattr(exc, "param", None), exc.format_message()
    descriptor = getattr(param, "type_descriptor", None)  # (Typer's; older Typers: Click's Choice type)
    choices = getattr(descriptor, "choices", None) or getattr(getattr(param, "type", None), "choices", None)
    bad = re.search(r"""(?:'([^']*)'|"([^"]*)") is not one of""", message)
    if choices and bad and getattr(param, "opts", None):
        listed = [repr(str(choice)) for choice in choices]
        value = bad[1] if bad[1] is not None else bad[2]
        return f"{max(param.opts, key=len)} {value!r}: expected {', '.join(listed[:-1])} or {listed[-1]}"
    message = " ".join(message.replace("Value error, ", "").split())
    where = f"; see '{exc.ctx.command_path} --help'" if getattr(exc, "ctx", None) is not None else ""
    return f"{message[:1].lower()}{message[1:].rstrip('.')}{where}"


def main(argv: list[str] | None = None) -> None:
    """The `pipeline` command (`argv`: its arguments, default sys.argv[1:]); always ends in sys.exit.

    The parser's own errors (an unknown option, a bad choice) are one `error:` line and exit code 2,
    like every other user error."""
    signal.signal(signal.SIGINT, _interrupted)
    if os.environ.get(COMPLETE_VAR):  # the shell asks for completions: Typer's, not Click's, formats
        from typer.completion import completion_init

        completion_init()
    try:
        code = app(
            args=_with_shell(sys.argv[1:] if argv is None else list(argv)), prog_name=PROG, standalone_mode=False
        )
    except PipelineError as exc:
        _error(str(exc), exc.exit_code)
    except OSError as exc:
        _error(describe_os_error(exc), 1)
    except _ParserError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `pipeline` alone: the help, already printed
            sys.exit(exc.exit_code)
        _error(_usage_error(exc), exc.exit_code)
    except typer.Abort:
        _error("aborted", 1)
    sys.exit(code if isinstance(code, int) else 0)

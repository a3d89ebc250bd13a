"""Typed errors. Plain functions raise these; only the CLI turns them into a message and an exit code."""


class PipelineError(Exception):
    """Something the user can fix: the message names the bad value and the valid choices."""

    exit_code = 1


class ConfigError(PipelineError):
    """A bad params key, type, value or command-line option."""

    exit_code = 2


class InputError(PipelineError):
    """A missing or unusable input file or folder."""

    exit_code = 2


class DataError(PipelineError):
    """The data fell short of what was asked (e.g. --strict and a class short of its count)."""


class ImageError(PipelineError):
    """One image that cannot be used; callers record it as a skipped item with this reason."""

"""The names of the sources and architectures, for the command line's help.

The registries themselves (`pipeline.fetch.sources.SOURCES`, `pipeline.train.models.ARCHITECTURES`)
import pydantic and every module of their family, which would double the time `pipeline --help`
takes; these plain tuples cost nothing. tests/test_cli.py keeps them equal to the registries.
"""

SOURCES = ("synthetic", "imagenet", "cats-dogs", "mnist", "cifar10", "folder", "webdataset")
ARCHITECTURES = (
    "mlp",
    "cnn",
    "cnn-24",
    "cnn-48x2",
    "cnn-128x2",
    "cnn-64-128-fc512",
    "alexnet",
    "lenet5",
    "convnet",
    "preact",
)

"""pipeline.params and pipeline.core.config: params.yaml -> typed, strictly validated config."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import ConfigError, InputError, PipelineError
from pipeline.fetch.sources import SyntheticParams
from pipeline.params import load_params, load_section, params_model
from pipeline.prepare.params import PrepareParams
from pipeline.train.models.cnn import CnnParams
from pipeline.train.models.mlp import MlpParams
from pipeline.train.settings import TrainSettings

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write_params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str, overrides: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_params(write_params(tmp_path, text), overrides)
    return str(info.value)


# --- loading -----------------------------------------------------------------------------------


def test_missing_file_gives_defaults(tmp_path):
    params = load_params(tmp_path / "absent.yaml")
    assert params == params_model()()
    assert params.prepare.size == "auto"
    assert params.prepare.train_size == 0.8 and params.prepare.val_size == 0.2
    assert params.train.archs == ["mlp", "cnn"]
    assert params.train.epochs == 8
    assert params.fetch.source == "synthetic"


def test_empty_file_gives_defaults(tmp_path):
    assert load_params(write_params(tmp_path, "")) == params_model()()


def test_repo_params_yaml_loads():
    params = load_params(REPO_PARAMS)
    assert params.fetch.source == "synthetic"
    synthetic = params.fetch.section("synthetic")
    assert isinstance(synthetic, SyntheticParams)
    assert synthetic.per_class == 1000
    assert params.prepare.aspect == "stretch"
    assert params.train.archs == ["mlp", "cnn"]
    mlp_settings, mlp = params.train.for_arch("mlp")
    assert isinstance(mlp, MlpParams) and mlp.hidden == [512]
    assert mlp_settings.learning_rate == pytest.approx(1e-5)
    _, cnn = params.train.for_arch("cnn")
    assert isinstance(cnn, CnnParams) and cnn.filters == [64, 128] and cnn.dense == [512]


def test_sections_parse_to_typed_values(tmp_path):
    params = load_params(
        write_params(
            tmp_path,
            "fetch:\n  synthetic:\n    per_class: 7\n    seed: 3\n"
            "prepare:\n  size: [40, 60]\n  aspect: pad\n  color: grayscale\n  train_size: 10\n  val_size: 4\n"
            "train:\n  archs: [cnn]\n  epochs: 2\n",
        )
    )
    assert params.fetch.section("synthetic") == SyntheticParams(per_class=7, seed=3)
    assert params.prepare.size == (40, 60)
    assert params.prepare.aspect == "pad" and params.prepare.color == "grayscale"
    assert params.prepare.train_size == 10 and isinstance(params.prepare.train_size, int)
    assert params.train.archs == ["cnn"] and params.train.epochs == 2


# --- unknown keys ------------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path):
    message = config_error(tmp_path, "prepare:\n  seed: 1\ntrian:\n  epochs: 3\n")
    assert message.startswith("trian: unknown key")
    for key in ("fetch", "survey", "prepare", "train", "evaluate", "compare"):
        assert key in message.split("valid keys:")[1]


def test_unknown_key_in_section(tmp_path):
    message = config_error(tmp_path, "prepare:\n  sizee: [10, 10]\n")
    assert message.startswith("prepare.sizee: unknown key")
    valid = message.split("valid keys:")[1]
    for key in ("size", "scale", "aspect", "color", "train_size", "val_size", "seed"):
        assert key in valid


def test_unknown_key_in_architecture_section(tmp_path):
    message = config_error(tmp_path, "train:\n  cnn:\n    filtrs: [32]\n")
    assert message.startswith("train.cnn.filtrs: unknown key")
    valid = [key.strip() for key in message.split("valid keys:")[1].split(",")]
    assert "filters" in valid and "dense" in valid and "learning_rate" in valid
    assert "hidden" not in valid  # that is the mlp's key, not the cnn's


def test_unknown_key_in_source_section(tmp_path):
    message = config_error(tmp_path, "fetch:\n  synthetic:\n    per_clas: 3\n")
    assert message.startswith("fetch.synthetic.per_clas: unknown key")
    assert "per_class" in message and "seed" in message


# --- wrong types and values --------------------------------------------------------------------


def test_wrong_type_names_key_and_value(tmp_path):
    message = config_error(tmp_path, 'train:\n  epochs: "ten"\n')
    assert message.startswith("train.epochs:")
    assert "'ten'" in message


def test_wrong_type_in_architecture_section(tmp_path):
    message = config_error(tmp_path, "train:\n  mlp:\n    hidden: lots\n")
    assert message.startswith("train.mlp.hidden")
    assert "lots" in message


def test_architecture_section_must_be_mapping(tmp_path):
    message = config_error(tmp_path, "train:\n  mlp: 3\n")
    assert "mlp" in message and "mapping" in message


def test_unknown_architecture(tmp_path):
    message = config_error(tmp_path, "train:\n  archs: [mlp, resnet]\n")
    assert message.startswith("train.archs:")
    assert "'resnet'" in message
    assert (
        "valid choices: alexnet, cnn, cnn-128x2, cnn-24, cnn-48x2, cnn-64-128-fc512, convnet, lenet5, mlp, preact"
        in message
    )


def test_unknown_source(tmp_path):
    message = config_error(tmp_path, "fetch:\n  source: kaggle\n")
    assert message.startswith("fetch.source:")
    assert "'kaggle'" in message
    assert "valid choices: " in message and "synthetic" in message.split("valid choices: ")[1]


def test_bad_literal_lists_choices(tmp_path):
    message = config_error(tmp_path, "prepare:\n  aspect: squash\n")
    assert message.startswith("prepare.aspect:")
    assert "squash" in message and "stretch" in message and "center-crop" in message


def test_not_a_mapping(tmp_path):
    message = config_error(tmp_path, "- 1\n- 2\n")
    assert "expected a mapping" in message


def test_invalid_yaml(tmp_path):
    message = config_error(tmp_path, "train: [unclosed\n")
    assert "not valid YAML" in message


# --- prepare.size / train_size / val_size --------------------------------------------------------


@pytest.mark.parametrize("size", ["[10]", "[10, 0]", "[1.5, 2]", "[10, 20, 3]", "big"])
def test_bad_prepare_size(tmp_path, size):
    message = config_error(tmp_path, f"prepare:\n  size: {size}\n")
    assert message.startswith("prepare.size:")
    assert "auto or [height, width]" in message


@pytest.mark.parametrize("size", ["auto", "[94, 125]"])
def test_good_prepare_size(tmp_path, size):
    params = load_params(write_params(tmp_path, f"prepare:\n  size: {size}\n"))
    assert params.prepare.size == ("auto" if size == "auto" else (94, 125))


@pytest.mark.parametrize(
    ("train", "val"),
    [(0.8, 0.2), (0.5, 0.5), (0.6, 0.1), (100, 20), (100, 0.2), (0.7, 30), (1.0, 5)],
)
def test_train_val_sizes_accepted(tmp_path, train, val):
    params = load_params(write_params(tmp_path, f"prepare:\n  train_size: {train}\n  val_size: {val}\n"))
    assert params.prepare.train_size == train and type(params.prepare.train_size) is type(train)
    assert params.prepare.val_size == val and type(params.prepare.val_size) is type(val)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train_size", "0"),
        ("train_size", "-3"),
        ("train_size", "1.5"),
        ("val_size", "0.0"),
        ("val_size", "true"),
        ("val_size", "half"),
    ],
)
def test_train_val_sizes_rejected(tmp_path, key, value):
    message = config_error(tmp_path, f"prepare:\n  {key}: {value}\n")
    assert message.startswith(f"prepare.{key}:")
    assert "count" in message and "fraction" in message


def test_fractions_summing_over_one_rejected(tmp_path):
    message = config_error(tmp_path, "prepare:\n  train_size: 0.8\n  val_size: 0.3\n")
    assert "prepare.train_size + prepare.val_size" in message
    assert "1.1" in message and "exceeds 1" in message


def test_prepare_config_constructed_directly():
    cfg = PrepareParams(size=[40, 60], train_size=10, val_size=4)
    assert cfg.size == (40, 60)
    with pytest.raises(ConfigError, match="exceeds 1"):
        PrepareParams(train_size=0.9, val_size=0.2)
    with pytest.raises(ConfigError, match="prepare.size"):
        PrepareParams(size=[0, 10])


# --- YAML 1.2 and overrides ----------------------------------------------------------------------


def test_yaml_1_2_float_without_dot(tmp_path):
    params = load_params(write_params(tmp_path, "train:\n  learning_rate: 1e-5\n  mlp:\n    learning_rate: 2e-4\n"))
    assert isinstance(params.train.learning_rate, float)
    assert params.train.learning_rate == pytest.approx(1e-5)
    assert params.train.for_arch("mlp")[0].learning_rate == pytest.approx(2e-4)


def test_overrides_beat_file_values(tmp_path):
    path = write_params(tmp_path, "train:\n  epochs: 3\n  batch_size: 16\nprepare:\n  seed: 1\n")
    params = load_params(
        path, {"train.epochs": 5, "prepare.seed": 7, "train.mlp.learning_rate": 0.5, "survey.sample": None}
    )
    assert params.train.epochs == 5
    assert params.train.batch_size == 16  # not overridden: file value stays
    assert params.prepare.seed == 7
    assert params.train.for_arch("mlp")[0].learning_rate == 0.5
    assert params.survey.sample == 0  # None means "not given"


def test_overrides_are_validated(tmp_path):
    message = config_error(tmp_path, "train:\n  epochs: 3\n", {"train.epochz": 5})
    assert message.startswith("train.epochz: unknown key")
    valid = [key.strip() for key in message.split("valid keys:")[1].split(",")]
    assert {"epochs", "learning_rate", "archs", "mlp", "cnn"} <= set(valid)  # architecture sections too
    assert "sections" not in valid


def test_override_into_a_non_section(tmp_path):
    with pytest.raises(ConfigError, match="not a section"):
        load_params(write_params(tmp_path, "train:\n  epochs: 3\n"), {"train.epochs.x": 1})


# --- per-architecture settings -------------------------------------------------------------------


def test_for_arch_merges_overrides(tmp_path):
    params = load_params(
        write_params(
            tmp_path,
            "train:\n  learning_rate: 0.001\n  epochs: 4\n  optimizer: sgd\n"
            "  mlp:\n    learning_rate: 0.00001\n    hidden: [64, 32]\n"
            "  cnn:\n    epochs: 9\n",
        )
    )
    mlp_settings, mlp = params.train.for_arch("mlp")
    assert isinstance(mlp_settings, TrainSettings)
    assert mlp_settings.learning_rate == pytest.approx(1e-5)
    assert mlp_settings.epochs == 4 and mlp_settings.optimizer == "sgd"
    assert mlp.hidden == [64, 32]
    cnn_settings, cnn = params.train.for_arch("cnn")
    assert cnn_settings.learning_rate == pytest.approx(1e-3)
    assert cnn_settings.epochs == 9
    assert cnn.filters == [64, 128]  # default architecture params


def test_for_arch_without_section_uses_shared_settings(tmp_path):
    params = load_params(write_params(tmp_path, "train:\n  learning_rate: 0.002\n"))
    settings, arch = params.train.for_arch("cnn")
    assert settings.learning_rate == pytest.approx(0.002)
    assert arch == CnnParams()


def test_for_arch_rejects_unknown(tmp_path):
    params = load_params(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError) as info:
        params.train.for_arch("resnet")
    assert "'resnet'" in str(info.value) and "cnn, cnn-128x2" in str(info.value) and "mlp, preact" in str(info.value)


def test_source_section_rejects_unknown_source(tmp_path):
    params = load_params(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="'kaggle'"):
        params.fetch.section("kaggle")


def test_load_section_validates_its_own_section_and_any_overridden_one(tmp_path):
    path = write_params(tmp_path, "fetch:\n  source: synthetic\ntrain:\n  epochs: -1\n")
    assert load_section("fetch", path).source == "synthetic"  # the broken train section is check-params' business
    with pytest.raises(ConfigError, match="train.epochs"):
        load_section("train", path)
    with pytest.raises(ConfigError, match="train.epocs: unknown key"):
        load_section(
            "compare", write_params(tmp_path, ""), {"train.epocs": 3}
        )  # a typo in -S fails whatever the command
    with pytest.raises(ConfigError, match="trian: unknown key; valid keys: fetch, survey"):
        load_section("fetch", write_params(tmp_path, "trian:\n  epochs: 3\n"))


def test_a_preset_section_changes_only_what_it_names(tmp_path):
    params = load_params(write_params(tmp_path, "train:\n  cnn-24:\n    filters: [8]\n"))
    _, arch = params.train.for_arch("cnn-24")
    assert (arch.filters, arch.dense, arch.padding) == ([8], [256, 256], "valid")
    _, default = params.train.for_arch("cnn-48x2")
    assert (default.filters, default.dense, default.padding) == ([48, 48], [256, 256], "valid")


# --- errors ------------------------------------------------------------------------------------


def test_error_exit_codes():
    assert ConfigError.exit_code == 2
    assert InputError.exit_code == 2
    assert issubclass(ConfigError, PipelineError)
    assert ConfigError("x").exit_code == 2

"""The layered configuration: defaults -> project config.toml -> command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from qupath_rkd.errors import ConfigError
from qupath_rkd.sync.config import (
    SCHEMA,
    SOURCE_CLI,
    SOURCE_DEFAULT,
    config_path,
    defaults,
    load_config,
    parse_cli_value,
    parse_overrides,
    write_config,
)


def _write(project: Path, text: str) -> Path:
    path = config_path(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_layers_win_in_order_and_sources_are_named(tmp_path: Path) -> None:
    path = _write(
        tmp_path, '[training]\nsteps = 50\nlr = 0.01\n[classes]\ntumor = ["Tumor", "Metastasis"]\n'
    )
    config = load_config(tmp_path, {"training.steps": "7"})
    assert config.get("training.steps") == 7
    assert config.sources["training"]["steps"] == SOURCE_CLI
    assert config.get("training.lr") == 0.01
    assert config.sources["training"]["lr"] == str(path)
    assert config.get("classes.tumor") == ["Tumor", "Metastasis"]
    assert config.get("training.batch_size") == SCHEMA["training"]["batch_size"].default
    assert config.sources["training"]["batch_size"] == SOURCE_DEFAULT


def test_no_project_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.values == defaults().values
    assert {src for _, _, src in config.rows()} == {SOURCE_DEFAULT}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[training\nsteps = 1\n", "not valid TOML"),
        ("[trainig]\nsteps = 1\n", "unknown section"),
        ("[training]\nstep = 1\n", "unknown configuration key"),
        ('[training]\nsteps = "many"\n', "expected an integer"),
        ("[training]\nsteps = 0\n", "below the minimum"),
        ('[training]\nteacher = "vgg"\n', "not one of"),
        ("[labels]\ntumor_min_overlap = 1.5\n", "above the maximum"),
        ("[sync]\nbackend = 3\n", "expected a string"),
    ],
)
def test_bad_config_files_are_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert needle in info.value.one_line()
    assert "\n" not in info.value.one_line()


def test_cli_values_parse_as_toml_or_words() -> None:
    assert parse_cli_value("50") == 50
    assert parse_cli_value("0.5") == 0.5
    assert parse_cli_value("true") is True
    assert parse_cli_value("cpu") == "cpu"
    assert parse_cli_value("Tumor,Metastasis") == ["Tumor", "Metastasis"]
    assert parse_cli_value('["A", "B"]') == ["A", "B"]
    assert parse_overrides(["training.steps = 3"]) == {"training.steps": "3"}
    with pytest.raises(ConfigError):
        parse_overrides(["training.steps"])


def test_auto_keys_accept_auto_or_a_number(tmp_path: Path) -> None:
    assert load_config(tmp_path, {"inference.threshold": "0.7"}).get("inference.threshold") == 0.7
    assert (
        load_config(tmp_path, {"inference.threshold": "auto"}).get("inference.threshold") == "auto"
    )
    with pytest.raises(ConfigError):
        load_config(tmp_path, {"inference.threshold": "high"})


def test_written_config_reads_back_identically(tmp_path: Path) -> None:
    config = load_config(tmp_path, {"training.steps": "11", "classes.normal": "Normal,Stroma"})
    write_config(tmp_path, config, only_non_default=False)
    again = load_config(tmp_path)
    assert again.values == config.values
    # Only the changed keys when asked; they still read back.
    write_config(tmp_path, config, only_non_default=True)
    text = config_path(tmp_path).read_text(encoding="utf-8")
    assert "steps = 11" in text and "batch_size" not in text
    assert load_config(tmp_path).values == config.values


def test_digest_changes_with_a_value_and_only_its_sections(tmp_path: Path) -> None:
    base = load_config(tmp_path)
    changed = load_config(tmp_path, {"inference.batch_size": "8"})
    assert base.digest(["training"]) == changed.digest(["training"])
    assert base.digest(["inference"]) != changed.digest(["inference"])


def test_a_tta_view_count_other_than_1_2_4_8_is_a_config_error(tmp_path) -> None:
    """Regression: 3 passed the config's bounds and failed later with a ValueError."""
    from qupath_rkd.errors import ConfigError
    from qupath_rkd.sync.config import load_config
    from qupath_rkd.sync.runner import inference_config

    (tmp_path / "qupath-rkd").mkdir()
    config = load_config(tmp_path, {"inference.tta_views": 3})
    with pytest.raises(ConfigError, match="1, 2, 4 or 8"):
        inference_config(config, None)
    assert inference_config(load_config(tmp_path, {}), None).tta_views == 1

"""`qupath-rkd config PROJECT`: what is in effect, where each value came from."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from qupath_rkd.cli import cli
from qupath_rkd.sync.config import config_path, load_config


def _project(tmp_path: Path) -> Path:
    (tmp_path / "project.qpproj").write_text('{"version": "0.5.1", "images": []}')
    return tmp_path


def test_config_prints_values_and_sources(tmp_path: Path) -> None:
    project = _project(tmp_path)
    path = config_path(project)
    path.parent.mkdir()
    path.write_text("[training]\nsteps = 42\n")
    result = CliRunner().invoke(cli, ["config", str(project), "--set", "inference.batch_size=8"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert "42" in lines["training.steps"] and str(path) in lines["training.steps"]
    assert "8" in lines["inference.batch_size"] and "command line" in lines["inference.batch_size"]
    assert "# default" in lines["training.lr"]
    as_json = CliRunner().invoke(cli, ["config", str(project), "--json"])
    rows = {r["key"]: r for r in json.loads(as_json.output)}
    assert rows["training.steps"] == {"key": "training.steps", "value": 42, "source": str(path)}


def test_config_init_writes_a_file_that_reads_back(tmp_path: Path) -> None:
    project = _project(tmp_path)
    result = CliRunner().invoke(
        cli, ["config", str(project), "--init", "--set", "training.steps=7"]
    )
    assert result.exit_code == 0, result.output
    assert load_config(project).get("training.steps") == 7
    again = CliRunner().invoke(cli, ["config", str(project), "--init"])
    assert again.exit_code == 1 and "exists already" in again.output


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", str(tmp_path)])
    assert result.exit_code == 1 and "not a QuPath project" in result.output
    project = _project(tmp_path)
    result = CliRunner().invoke(cli, ["config", str(project), "--set", "training.stepz=1"])
    assert result.exit_code == 1
    assert "did you mean training.steps?" in result.output
    assert "Traceback" not in result.output

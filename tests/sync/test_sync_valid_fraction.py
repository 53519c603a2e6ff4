"""Issue 12, Deliver 7: ``training.valid_fraction = 0`` (RD scorer) trains with no validation
set — the trainer keeps the last epoch and calibrates on training tiles, with its warning —
instead of failing with "no labelled tiles" on an empty validation subset."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sync_helpers import FAST

from qupath_rkd.cli import cli


def test_rd_with_valid_fraction_zero_trains_without_validation(project: Path) -> None:
    values = {**FAST, "training.scorer": "rd", "training.valid_fraction": 0}
    args = [arg for k, v in values.items() for arg in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(cli, ["sync", str(project), *args])
    assert result.exit_code == 0, result.output
    assert "no labelled tiles" not in result.output
    assert "trained a model" in result.output
    needle = "no validation set: kept the last epoch and calibrated on training patches"
    assert needle in result.output
    report = json.loads((project / "qupath-rkd" / "report.json").read_text())
    assert any(needle in w for w in report["warnings"])

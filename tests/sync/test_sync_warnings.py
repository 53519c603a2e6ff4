"""Issue 9, point 5 of Deliver: training without tumour tiles warns in the CLI and in
report.json in words a pathologist understands; the trainer's own warnings reach the user
(CLI, report.json) and stay with the model on later syncs that reuse it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sync_helpers import FAST, snapshot

from qupath_rkd.cli import cli

EMPTY = json.dumps({"type": "FeatureCollection", "features": []})


def _sync(project: Path) -> tuple[int, str]:
    fast = [arg for k, v in FAST.items() for arg in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(cli, ["sync", str(project), *fast])
    return result.exit_code, result.output


def _report(project: Path) -> dict[str, object]:
    return json.loads((project / "qupath-rkd" / "report.json").read_text())


def test_no_tumour_tiles_warns_in_cli_and_report(synced_copy: Path) -> None:
    """The outlined tumour slide's annotations removed (it is marked fully annotated, so all
    its tissue is normal) and the other training slide tumour-free: zero tumour tiles. The
    sync trains, and says so in the output and report.json, naming what to annotate; a
    second sync (nothing changed) says it again and writes nothing."""
    (synced_copy / "qupath-rkd" / "annotations" / "1.geojson").write_text(EMPTY)
    code, out = _sync(synced_copy)
    assert code == 0, out
    assert "trained a model" in out
    warning = next(line for line in out.splitlines() if line.startswith("warning: "))
    assert "no tumour tiles" in warning and "'Tumor'" in warning and "outline" in warning
    report = _report(synced_copy)
    assert any("no tumour tiles" in w for w in report["warnings"])  # type: ignore[union-attr]
    # what it trains: the one-class texture model, not the paper's one-class RD
    assert any("one-class texture model (knn)" in w for w in report["warnings"])  # type: ignore[union-attr]
    # its bank holds the tumour-free slide's tiles: the operating point says it is in-sample
    op = report["operating_point"]
    assert isinstance(op, dict) and op.get("held_out") in ("in-sample", "partly-in-sample"), op
    assert "knn scorer: no held-out refit" in op["note"], op

    before = snapshot(synced_copy.parent)
    code, out = _sync(synced_copy)
    assert code == 0 and "model up to date" in out, out
    assert "warning: no tumour tiles" in out
    assert snapshot(synced_copy.parent) == before


def test_trainer_warnings_reach_the_user(
    synced_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qupath_rkd.training import trainer

    original = trainer.train

    def train_with_a_warning(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)  # type: ignore[arg-type]
        result.warnings.append("3 steps had a non-finite loss and were skipped")
        return result

    monkeypatch.setattr(trainer, "train", train_with_a_warning)
    fast = [arg for k, v in {**FAST, "training.seed": 5}.items() for arg in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(cli, ["sync", str(synced_copy), *fast])
    assert result.exit_code == 0, result.output
    needle = "warning: training: 3 steps had a non-finite loss"
    assert needle in result.output
    assert (
        "training: 3 steps had a non-finite loss and were skipped"
        in _report(synced_copy)["warnings"]
    )  # type: ignore[operator]

    monkeypatch.setattr(trainer, "train", original)
    result = CliRunner().invoke(cli, ["sync", str(synced_copy), *fast])
    assert result.exit_code == 0 and "model up to date" in result.output, result.output
    assert needle in result.output  # still the model in use

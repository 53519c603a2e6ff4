"""`qupath-rkd demo` prints what `qupath-rkd sync` prints about the sync it ran."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import qupath_rkd.demo
import qupath_rkd.demo.pictures
import qupath_rkd.demo.project
from qupath_rkd.cli import cli
from qupath_rkd.demo.project import DemoResult
from qupath_rkd.sync.report import STATUS_PREDICTED, SlideResult, SyncOutcome, format_outcome

SUGGESTIONS = {
    "regions": [
        {
            "rank": 1,
            "image": "LN-04.tif",
            "x_um": 1491.0,
            "y_um": 1185.0,
            "width_um": 980.0,
            "height_um": 980.0,
            "reason": "uncertain, unlike anything labelled",
        }
    ],
    "notes": [],
}


def _outcome(project_dir: Path) -> SyncOutcome:
    slide = SlideResult(
        entry_id="1", image_name="LN-04.tif", status=STATUS_PREDICTED, tumor_score=0.9, lesions=2
    )
    return SyncOutcome(
        project_dir=project_dir,
        trained=True,
        train_reason="no model yet",
        slides=[slide],
        warnings=["the model saw few tumour tiles"],
        suggestions=SUGGESTIONS,
    )


def test_format_outcome_has_the_model_line_table_warnings_and_suggestions(tmp_path: Path) -> None:
    text = format_outcome(_outcome(tmp_path))
    lines = text.splitlines()
    assert lines[0] == "trained a model (no model yet)"
    assert any(line.startswith("LN-04.tif") for line in lines)
    assert "warning: the model saw few tumour tiles" in lines
    assert lines[-2] == "annotate next:"
    assert lines[-1].startswith("   1. LN-04.tif: x 1491 µm, y 1185 µm (980 x 980 µm)")
    dry = format_outcome(_outcome(tmp_path), dry_run=True).splitlines()[0]
    assert dry == "would train a model: no model yet"


def test_demo_prints_the_suggestions_as_sync_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the demo printed the per-slide table but not the "annotate next" list
    (nor the warnings) that `qupath-rkd sync` prints for the same sync."""
    project = SimpleNamespace(project_dir=tmp_path / "project")
    result = DemoResult(
        project=project,  # type: ignore[arg-type]
        outcome=_outcome(project.project_dir),
        froc_score=1.0,
        froc_at={0.25: 1.0},
        n_lesions=1,
        slide_truth={"LN-04.tif": True},
        built=True,
    )
    monkeypatch.setattr(qupath_rkd.demo, "run_demo", lambda *a, **k: result)
    monkeypatch.setattr(qupath_rkd.demo.project, "demo_froc", lambda *a, **k: (None,))
    monkeypatch.setattr(qupath_rkd.demo.pictures, "write_demo_pictures", lambda *a, **k: None)
    got = CliRunner().invoke(cli, ["demo", str(tmp_path / "demo")])
    assert got.exit_code == 0, got.output
    assert format_outcome(result.outcome) in got.output
    assert "annotate next:" in got.output

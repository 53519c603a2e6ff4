"""Issue 9, point 7 of Deliver: the model ID depends only on what defines the model; a failed
slide's previous predictions are marked stale, never shown as current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sync_helpers import FAST, snapshot

from qupath_rkd.cli import cli


def _sync(project: Path, **extra: object) -> tuple[int, str]:
    values = {**FAST, **extra}
    args = [arg for k, v in values.items() for arg in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(cli, ["sync", str(project), *args])
    return result.exit_code, result.output


def test_identical_retrain_changes_no_file(synced_copy: Path) -> None:
    """The model file deleted: the sync retrains on the same labels and settings, which gives
    the same weights, so the same model ID: no prediction is rewritten and every other file
    of the project is byte-identical to before (state.json, report.json included)."""
    root = synced_copy.parent
    before = snapshot(root)
    (synced_copy / "qupath-rkd" / "model" / "model.pt").unlink()
    code, out = _sync(synced_copy)
    assert code == 0, out
    assert "trained a model" in out and "0 slide(s) predicted" in out
    model = "project/qupath-rkd/model/model.pt"
    assert snapshot(root, skip=(model,)) == {k: v for k, v in before.items() if k != model}


def test_identical_retrain_after_losing_the_state_rewrites_nothing(synced_copy: Path) -> None:
    """state.json deleted: the sync retrains (no record) and predicts every slide again, all
    identical to what is there: the model file is kept, no prediction file is rewritten
    (same bytes, same mtime) and state.json comes back with the same content."""
    tool = synced_copy / "qupath-rkd"
    root = synced_copy.parent
    before = snapshot(root)
    predictions = sorted((tool / "predictions").glob("*.geojson"))
    mtimes = [p.stat().st_mtime_ns for p in predictions]
    state = json.loads((tool / "state.json").read_text())
    (tool / "state.json").unlink()
    code, out = _sync(synced_copy)
    assert code == 0, out
    assert "trained a model" in out and "identical to the one in use" in out
    assert json.loads((tool / "state.json").read_text()) == state
    assert [p.stat().st_mtime_ns for p in predictions] == mtimes
    assert snapshot(root) == before


def _evaluate(project: Path) -> dict[str, object]:
    """``qupath-rkd evaluate`` on the project against its truth; its evaluation.json."""
    truth = project.parent / "truth"
    res = CliRunner().invoke(cli, ["evaluate", "--truth", str(truth), "--pred", str(project)])
    assert res.exit_code == 0, res.output
    summary = json.loads((project / "qupath-rkd" / "evaluation" / "evaluation.json").read_text())
    assert ("STALE predictions" in res.output) == bool(summary["stale_slides"]), res.output
    return summary


def _rows(project: Path) -> dict[str, dict[str, object]]:
    report = json.loads((project / "qupath-rkd" / "report.json").read_text())
    return {str(row["image_name"]): row for row in report["slides"]}


def test_a_failed_slides_old_prediction_is_marked_stale(
    synced_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retrain whose new model cannot predict slide D: D's previous predictions are kept
    (an empty file would read as "no tumour") but marked stale — ``stale: true`` with the
    old values in report.json, the table says so, and in QuPath every object is named
    ``qupath-rkd STALE ...`` with the measurement ``qupath-rkd stale``; a second failing sync
    changes nothing; once D can be predicted the mark is gone."""
    import qupath_rkd.inference as inference
    from qupath_rkd.errors import SlideReadError

    old_rows = _rows(synced_copy)
    entry = str(old_rows["D.tif"]["entry_id"])
    output = synced_copy / "qupath-rkd" / "predictions" / f"{entry}.geojson"
    candidates = synced_copy / "qupath-rkd" / "predictions" / "camelyon16" / f"{entry}.csv"
    old_candidates = candidates.read_bytes()
    original = inference.predict_slide

    def fails_on_d(path: Path, *args: object, **kwargs: object) -> object:
        if Path(path).name == "D.tif":
            raise SlideReadError(f"{path}: cannot read tile (0, 0)")
        return original(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inference, "predict_slide", fails_on_d)
    code, out = _sync(synced_copy, **{"training.seed": 7})
    assert code == 1, out
    assert "previous predictions kept, marked STALE" in out
    row = _rows(synced_copy)["D.tif"]
    assert row["status"] == "failed" and row["stale"] is True
    assert row["tumor_score"] == old_rows["D.tif"]["tumor_score"]
    assert all(r["stale"] is False for name, r in _rows(synced_copy).items() if name != "D.tif")
    features = json.loads(output.read_text())["features"]
    assert features and all(
        f["properties"]["name"].startswith("qupath-rkd STALE") for f in features
    )
    assert all(f["properties"]["measurements"]["qupath-rkd stale"] == 1 for f in features)

    before = snapshot(synced_copy.parent)
    code, out = _sync(synced_copy, **{"training.seed": 7})
    assert code == 1 and "model up to date" in out, out
    assert snapshot(synced_copy.parent) == before

    # evaluate scores D's kept candidate list (the previous model's) and says it is stale
    # (regression: it scored it as the current model's without a word)
    assert candidates.read_bytes() == old_candidates
    summary = _evaluate(synced_copy)
    assert summary["stale_slides"] == ["D"], summary
    assert [r["stale"] for r in summary["slides"] if r["slide"] == "D"] == [True]

    monkeypatch.setattr(inference, "predict_slide", original)
    code, out = _sync(synced_copy, **{"training.seed": 7})
    assert code == 0 and "1 slide(s) predicted" in out, out
    assert _rows(synced_copy)["D.tif"]["stale"] is False
    assert "STALE" not in output.read_text()
    assert _evaluate(synced_copy)["stale_slides"] == []

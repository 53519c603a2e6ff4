"""Issue 11, point 4: ``evaluate`` scores the project ``sync`` wrote and ``predict``'s output
folder alike, against the demo's own truth (named by slide, or by entry ID)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sync_helpers import FAST, one_error_line

from qupath_rkd.cli import cli
from qupath_rkd.demo import DemoProject
from qupath_rkd.evaluation.run import evaluate
from qupath_rkd.outputs import slide_id_for


def _demo_of(small_demo: DemoProject, project: Path) -> DemoProject:
    import dataclasses

    return dataclasses.replace(small_demo, root=project.parent, project_dir=project)


def test_evaluate_scores_syncs_predictions_as_the_demo_does(
    small_demo: DemoProject, synced: Path
) -> None:
    from qupath_rkd.demo.project import demo_froc

    truth = synced.parent / "truth"
    # the demo names its truth by slide, as predict names its outputs
    assert sorted(f.name for f in truth.iterdir()) == sorted(
        f"{slide_id_for(s.spec.name)}.geojson" for s in small_demo.slides
    )
    report = evaluate(truth, synced)
    assert report.layout == "sync"
    assert report.froc.n_slides == len(small_demo.slides) == 4
    assert report.froc.n_lesions == 2  # A and C: one 550 µm lesion each
    # the same FROC as the demo's own (which reads the same detections)
    expected, n = demo_froc(
        _demo_of(small_demo, synced), roles=("annotated", "tumor-free", "unlabelled")
    )
    assert n == 4 and expected is not None
    assert report.froc.score == pytest.approx(expected.score)
    assert report.froc.sensitivity_at == pytest.approx(expected.sensitivity_at)
    # slide scores are report.json's tumor_score, not the max lesion probability
    rows = json.loads((synced / "qupath-rkd" / "report.json").read_text())["slides"]
    by_slide = {slide_id_for(r["image_name"]): r["tumor_score"] for r in rows}
    assert {r["slide"]: r["slide_score"] for r in report.slides} == pytest.approx(by_slide)
    assert report.slide_score_source == "report.json tumor_score"
    # the detections counted are sync's lesion objects (one per lesion)
    for row in report.slides:
        entry = next(r for r in rows if slide_id_for(r["image_name"]) == row["slide"])
        assert row["detections"] == entry["lesions"]
    # the project, its qupath-rkd folder and its predictions folder all work
    for pred in (synced / "qupath-rkd", synced / "qupath-rkd" / "predictions"):
        again = evaluate(truth, pred)
        assert again.froc.score == report.froc.score and again.slides == report.slides


def test_truth_named_by_entry_id_or_both_ways(small_demo: DemoProject, synced: Path, tmp_path):
    truth = synced.parent / "truth"
    by_name = evaluate(truth, synced)
    by_entry = tmp_path / "by-entry"
    by_entry.mkdir()
    for s in small_demo.slides:
        shutil.copy(
            truth / f"{slide_id_for(s.spec.name)}.geojson", by_entry / f"{s.entry_id}.geojson"
        )
    assert evaluate(by_entry, synced).slides == by_name.slides
    # both names for every slide: the same geometry twice, read and accepted
    shutil.copytree(truth, tmp_path / "both")
    for f in by_entry.iterdir():
        shutil.copy(f, tmp_path / "both" / f.name)
    assert evaluate(tmp_path / "both", synced).slides == by_name.slides


def test_cli_evaluate_on_a_sync_project(synced_copy: Path) -> None:
    truth = synced_copy.parent / "truth"
    res = CliRunner().invoke(cli, ["evaluate", "--truth", str(truth), "--pred", str(synced_copy)])
    assert res.exit_code == 0, res.output
    assert "FROC score:" in res.output and "lesions to detect: 2" in res.output
    assert (synced_copy / "qupath-rkd" / "evaluation" / "evaluation.json").is_file()
    # a truth folder that names a slide the project does not hold: one line naming it
    extra = synced_copy.parent / "truth" / "Z_not_in_project.geojson"
    shutil.copy(next(truth.iterdir()), extra)
    res = CliRunner().invoke(cli, ["evaluate", "--truth", str(truth), "--pred", str(synced_copy)])
    assert res.exit_code == 1
    assert "Z_not_in_project" in one_error_line(res.output)


def test_evaluate_scores_predicts_output_against_the_same_truth(
    small_demo: DemoProject, synced: Path, tmp_path: Path
) -> None:
    """``predict`` with sync's model on the demo's slides, scored against the same truth."""
    out = tmp_path / "pred"
    model = synced / "qupath-rkd" / "model" / "model.pt"
    res = CliRunner().invoke(
        cli,
        [
            "predict",
            str(model),
            str(synced.parent / "slides"),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--batch-size",
            str(FAST["inference.batch_size"]),
        ],
    )
    assert res.exit_code == 0, res.output
    report = evaluate(synced.parent / "truth", out)
    assert report.layout == "predict" and report.slide_score_source == "slide_scores.csv"
    assert report.froc.n_slides == 4 and report.froc.n_lesions == 2
    assert sorted(r["slide"] for r in report.slides) == sorted(
        slide_id_for(s.spec.name) for s in small_demo.slides
    )

"""Issue 11, point 4: ``evaluate`` scores the project ``sync`` wrote and ``predict``'s output
folder alike, against the demo's own truth (named by slide, or by entry ID)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sync_helpers import FAST, one_error_line

from qupath_rkd.cli import cli
from qupath_rkd.constants import DEFAULT_CANDIDATE_FLOOR
from qupath_rkd.demo import DemoProject
from qupath_rkd.evaluation.predictions import read_lesion_detections
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
    # the detections counted are sync's candidate list, predict's CSV: every lesion's peak at
    # its maximum probability and the heatmap's other maxima, most below the operating point
    predictions = synced / "qupath-rkd" / "predictions"
    threshold = json.loads((synced / "qupath-rkd" / "report.json").read_text())["operating_point"][
        "threshold"
    ]
    n_below = 0
    for row in report.slides:
        entry = next(r for r in rows if slide_id_for(r["image_name"]) == row["slide"])
        csv_rows = [
            [float(v) for v in line.split(",")]
            for line in (predictions / "camelyon16" / f"{entry['entry_id']}.csv")
            .read_text()
            .splitlines()
        ]
        assert row["detections"] == len(csv_rows) >= entry["lesions"]
        lesions = read_lesion_detections(predictions / f"{entry['entry_id']}.geojson")
        peaks = {
            (round(x), round(y)): p
            for p, x, y in zip(lesions.probs, lesions.x_px, lesions.y_px, strict=True)
        }
        assert len(peaks) == entry["lesions"]
        at_peaks = {(int(x), int(y)): p for p, x, y in csv_rows if (int(x), int(y)) in peaks}
        assert at_peaks == pytest.approx(peaks, abs=1e-6)
        # the others: the heatmap's other maxima, each at its own probability, highest first
        others = [p for p, x, y in csv_rows if (int(x), int(y)) not in peaks]
        assert all(DEFAULT_CANDIDATE_FLOOR <= p <= 1.0 for p in others)
        assert [r[0] for r in csv_rows] == sorted((r[0] for r in csv_rows), reverse=True)
        n_below += sum(p < threshold for p in others)
    assert n_below > 0, "no candidate below the operating point: the test checks too little"
    # the project, its qupath-rkd folder and its predictions folder all work
    for pred in (synced / "qupath-rkd", predictions):
        again = evaluate(truth, pred)
        assert again.froc.score == report.froc.score and again.slides == report.slides


def test_evaluate_reads_the_lesions_of_a_sync_that_wrote_no_candidate_list(
    synced_copy: Path,
) -> None:
    """Projects synced before sync wrote candidate lists: one detection per lesion object."""
    shutil.rmtree(synced_copy / "qupath-rkd" / "predictions" / "camelyon16")
    report = evaluate(synced_copy.parent / "truth", synced_copy)
    rows = json.loads((synced_copy / "qupath-rkd" / "report.json").read_text())["slides"]
    for row in report.slides:
        entry = next(r for r in rows if slide_id_for(r["image_name"]) == row["slide"])
        assert row["detections"] == entry["lesions"]


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
    summary = json.loads(
        (synced_copy / "qupath-rkd" / "evaluation" / "evaluation.json").read_text()
    )
    # the tumour-free slides' lesion counts come from report.json
    report = json.loads((synced_copy / "qupath-rkd" / "report.json").read_text())
    counts = [row["reported_lesions"] for row in summary["slides"] if not row["tumor"]]
    assert counts and all(isinstance(c, int) for c in counts)
    assert sum(r["lesions"] for r in report["slides"] if r.get("lesions") is not None) >= sum(
        counts
    )
    assert summary["false_lesions_per_tumor_free_slide"] == pytest.approx(np.mean(counts))
    assert "False lesions per tumour-free slide" in res.output
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

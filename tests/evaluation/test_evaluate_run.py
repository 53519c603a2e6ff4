"""`evaluate` end to end on real Camelyon16 polygons: files in, numbers and a FROC PNG out."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from qupath_rkd.cli import cli
from qupath_rkd.errors import EvaluationError
from qupath_rkd.evaluation.camelyon16 import evaluation_mask
from qupath_rkd.evaluation.run import evaluate, read_submission_csv
from qupath_rkd.evaluation.truth import load_truth
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.qupath.geojson import make_feature, write_geojson


def lesion_point(mask, want_itc: bool) -> tuple[float, float]:
    """Level-0 centre of a mask pixel inside an instance (ITC or not)."""
    k = next(k for k in range(1, mask.n_instances + 1) if (k in mask.itc_labels) == want_itc)
    r, c = np.argwhere(mask.labels == k)[0]
    return mask.origin_xy_px[0] + (c + 0.5) * 32, mask.origin_xy_px[1] + (r + 0.5) * 32


@pytest.fixture()
def case(tmp_path, real_data):
    """Truth: Tumor_008 (1 lesion + 3 ITC), Tumor_017 (2 ITC) as Camelyon16 JSON, Tumor_019 as
    QuPath GeoJSON (+ a Stroma annotation that must be ignored), and one normal slide without a
    truth file. Predictions: a hit, an ITC hit, FPs."""
    src = real_data / "camelyon16-annotations" / "train"
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    (pred / "camelyon16").mkdir(parents=True)
    truth.mkdir()
    shutil.copy(src / "Tumor_008.json", truth)
    shutil.copy(src / "Tumor_017.json", truth)
    t19 = load_truth(src / "Tumor_019.json")
    feats = [make_feature(p, object_type="annotation", class_name="Tumor") for p in t19.tumor]
    feats.append(
        make_feature(t19.tumor[0].buffer(3000), object_type="annotation", class_name="Stroma")
    )
    write_geojson(truth / "gj_019.geojson", feats)
    # gj_019's µm/px comes from the heatmap metadata that predict writes.
    (pred / "gj_019").mkdir()
    Heatmap(np.zeros((1, 1), np.float32), (0.0, 0.0), 256.0, 256.0, 0.243).save(
        pred / "gj_019" / "heatmap"
    )

    m8 = evaluation_mask(*_tx(load_truth(src / "Tumor_008.json")), mpp=0.243)
    m19 = evaluation_mask(*_tx(t19), mpp=0.243)
    x8, y8 = lesion_point(m8, want_itc=False)
    xi, yi = lesion_point(m8, want_itc=True)
    x19, y19 = lesion_point(m19, want_itc=False)
    sub = pred / "camelyon16"
    (sub / "Tumor_008.csv").write_text(
        f"0.9,{int(x8)},{int(y8)}\n0.95,{int(xi)},{int(yi)}\n0.2,10,10\n"
    )
    (sub / "Tumor_017.csv").write_text("prob,X,Y\n0.3,5,5\n")  # header tolerated
    (sub / "gj_019.csv").write_text(f"0.6,{int(x19)},{int(y19)}\n")
    (sub / "Normal_001.csv").write_text("0.5,100,100\n0.1,200,200\n")
    (pred / "slide_scores.csv").write_text(
        "slide,score,probability_max,n_tiles,n_lesions,note\n"
        "Tumor_008,0.9,,,2,\nTumor_017,0.4,,,0,\ngj_019,0.6,,,1,\nNormal_001,0.5,,,3,\n"
    )
    return truth, pred


def _tx(t):
    return t.tumor, t.exclude


def test_evaluate_scores_real_polygons(case) -> None:
    truth, pred = case
    report = evaluate(truth, pred, normal_if_no_truth=True)
    f = report.froc
    assert f.n_slides == 4 and f.n_lesions == 2  # Tumor_008: 1, Tumor_017: 0, gj_019: 1
    # FPs: 0.2 (T008), 0.3 (T017), 0.5 + 0.1 (normal). TPs: 0.9 and 0.6; the ITC hit is ignored.
    # thresholds 0.1 .. 0.9 (0 dropped): FP/slide 4/4, 3/4, 2/4, 1/4, 0, 0 ; sens 1,1,1,1,1,0.5
    np.testing.assert_allclose(f.fps_per_slide, [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(f.sensitivity, [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0])
    assert f.score == pytest.approx(1.0)
    by_slide = {s["slide"]: s for s in report.slides}
    assert by_slide["Tumor_008"]["itc_hits"] == 1 and by_slide["Tumor_008"]["lesions_hit"] == 1
    assert by_slide["Normal_001"]["tumor"] is False
    # slide AUC from slide_scores.csv: tumour 0.9, 0.4, 0.6 vs normal 0.5 -> 2/3
    assert report.slide_auc == pytest.approx(2 / 3)
    # the lesions predict reported at its operating point: on the normal slide all are false
    assert by_slide["Normal_001"]["reported_lesions"] == 3
    assert report.false_lesions_per_tumor_free_slide == 3.0
    # bare submissions say nothing about lesions at an operating point
    (pred / "slide_scores.csv").write_text("slide,score\nNormal_001,0.5\n")
    assert evaluate(truth, pred, normal_if_no_truth=True).false_lesions_per_tumor_free_slide is None


def test_missing_truth_is_an_error_unless_normal_is_asked_for(case) -> None:
    truth, pred = case
    with pytest.raises(EvaluationError, match="Normal_001"):
        evaluate(truth, pred)
    (pred / "camelyon16" / "gj_019.csv").unlink()
    with pytest.raises(EvaluationError, match="gj_019"):
        evaluate(truth, pred, normal_if_no_truth=True)


def test_malformed_submission_names_file_and_line(tmp_path) -> None:
    bad = tmp_path / "s.csv"
    bad.write_text("0.5,1,2\n0.7,x,3\n")
    with pytest.raises(EvaluationError, match=r"s\.csv:2"):
        read_submission_csv(bad)


def test_cli_evaluate_writes_report_and_froc_png(case, tmp_path) -> None:
    truth, pred = case
    out = tmp_path / "report"
    res = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--truth",
            str(truth),
            "--pred",
            str(pred),
            "--normal-if-no-truth",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "FROC score: 1.0000" in res.output
    assert "Slide AUC: 0.6667" in res.output
    assert "False lesions per tumour-free slide at the operating point: 3.00" in res.output
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["n_lesions"] == 2 and summary["slide_auc"] == pytest.approx(2 / 3)
    assert summary["false_lesions_per_tumor_free_slide"] == 3.0
    with Image.open(out / "froc.png") as img:
        assert img.format == "PNG" and img.size == (720, 520)
        px = np.asarray(img.convert("RGB"))
    assert (np.abs(px.astype(int) - [31, 119, 180]).sum(axis=2) == 0).sum() > 50  # the curve
    # One-line error, no traceback, without --normal-if-no-truth.
    res = CliRunner().invoke(cli, ["evaluate", "--truth", str(truth), "--pred", str(pred)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output and "Normal_001" in res.output


def test_the_operating_point_benchmark_counts_hits_at_run_jsons_threshold(
    case, monkeypatch, capsys
) -> None:
    """benchmarks/sensitivity_at_operating_point.py: lesions hit by a detection at or above the
    threshold run.json records, false lesions on the tumour slides and the tumour-free ones."""
    import sys

    from bench_scripts import benchmark_module

    truth, pred = case
    results = {}
    with benchmark_module("sensitivity_at_operating_point.py") as module:
        for threshold in (0.55, 0.7, 0.25):
            run_json = {"operating_point": {"threshold": threshold}}
            (pred / "run.json").write_text(json.dumps(run_json))
            monkeypatch.setattr(sys, "argv", ["x", "--pred", str(pred), "--truth", str(truth)])
            module.main()
            results[threshold] = json.loads(capsys.readouterr().out)
    # the lesions' best detections: 0.9 (Tumor_008) and 0.6 (gj_019); the tumour slides' false
    # positives 0.2 (Tumor_008) and 0.3 (Tumor_017); Normal_001 reports 3 lesions
    assert results[0.55]["lesions"] == 2
    assert results[0.55]["sensitivity_at_operating_point"] == 1.0
    assert results[0.7]["sensitivity_at_operating_point"] == 0.5
    assert results[0.55]["false_lesions_per_tumor_slide"] == 0.0
    assert results[0.25]["false_lesions_per_tumor_slide"] == pytest.approx(1 / 3)
    assert results[0.55]["false_lesions_per_tumor_free_slide"] == 3.0

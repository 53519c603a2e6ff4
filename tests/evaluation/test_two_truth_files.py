"""Issue 11, point 4: a truth folder with a QuPath GeoJSON and a Camelyon16 JSON for one slide
(as an exported project often holds) is read when the two agree, and refused in one line
naming the slide and both files when they do not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from shapely.geometry import Polygon

from qupath_rkd.cli import cli
from qupath_rkd.errors import EvaluationError
from qupath_rkd.evaluation.run import evaluate
from qupath_rkd.evaluation.truth import load_truth_dir
from qupath_rkd.qupath.geojson import make_feature, write_geojson

#: A 4 x 4 mm lesion at 0.243 µm/px (far above the ITC limit).
SQUARE = [(20000.0, 20000.0), (36000.0, 20000.0), (36000.0, 36000.0), (20000.0, 36000.0)]


def _camelyon(path: Path, vertices: list[tuple[float, float]]) -> None:
    region = {"name": "Annotation 0", "vertices": [list(v) for v in vertices]}
    path.write_text(json.dumps({"positive": [region], "negative": []}))


def _qupath(path: Path, vertices: list[tuple[float, float]]) -> None:
    write_geojson(
        path, [make_feature(Polygon(vertices), object_type="annotation", class_name="Tumor")]
    )


def _case(tmp_path: Path, qupath_vertices: list[tuple[float, float]]) -> tuple[Path, Path]:
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    (pred / "camelyon16").mkdir(parents=True)
    _camelyon(truth / "Tumor_X.json", SQUARE)
    _qupath(truth / "Tumor_X.geojson", qupath_vertices)
    (pred / "camelyon16" / "Tumor_X.csv").write_text("0.9,28000,28000\n0.2,5,5\n")
    return truth, pred


def test_agreeing_files_are_both_read(tmp_path: Path) -> None:
    # the QuPath outline redrawn a little (one corner 100 px out: 0.04 % of the area)
    moved = [(20000.0, 20000.0), (36100.0, 20000.0), (36000.0, 36000.0), (20000.0, 36000.0)]
    truth, pred = _case(tmp_path, moved)
    truths = load_truth_dir(truth)
    assert list(truths) == ["Tumor_X"]
    assert truths["Tumor_X"].mpp == pytest.approx(0.243)  # implied by the Camelyon16 file
    report = evaluate(truth, pred)
    assert report.froc.n_lesions == 1 and report.froc.score == pytest.approx(1.0)


def test_disagreeing_files_are_one_line_naming_slide_and_both_files(tmp_path: Path) -> None:
    shifted = [(x + 2000.0, y) for x, y in SQUARE]  # 12.5 % of the width: another outline
    truth, pred = _case(tmp_path, shifted)
    with pytest.raises(EvaluationError, match="disagree"):
        load_truth_dir(truth)
    res = CliRunner().invoke(cli, ["evaluate", "--truth", str(truth), "--pred", str(pred)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    assert "'Tumor_X'" in errors[0]
    assert "Tumor_X.json" in errors[0] and "Tumor_X.geojson" in errors[0]


def test_normal_and_tumour_files_for_one_slide_disagree(tmp_path: Path) -> None:
    truth, _pred = _case(tmp_path, SQUARE)
    write_geojson(truth / "Tumor_X.geojson", [])  # "normal" against a lesion
    with pytest.raises(EvaluationError, match=r"Tumor_X.*disagree"):
        load_truth_dir(truth)


def test_two_normal_files_agree(tmp_path: Path) -> None:
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "Normal_1.json").write_text(json.dumps({"positive": [], "negative": []}))
    write_geojson(truth / "Normal_1.geojson", [])
    assert not load_truth_dir(truth)["Normal_1"].is_tumor

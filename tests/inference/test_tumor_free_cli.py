"""`predict --tumor-free` end to end on a half-tile grid: the operating point is set from the
tumour-free slide, written into run.json, and used for every slide's lesions."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from qupath_rkd.cli import cli
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.outputs import SlideOutputs

from .conftest import INPUT_PX


@pytest.fixture(scope="module")
def tumor_free_run(tmp_path_factory, model_path, semireal):
    out = tmp_path_factory.mktemp("tumor_free") / "out"
    args = [
        "predict",
        str(model_path),
        str(semireal.path),
        "--out",
        str(out),
        "--tumor-free",
        str(semireal.path),  # the untrained model finds "lesions" on it: all are false here
        "--stride-px",
        str(INPUT_PX // 2),  # half a tile
        "--workers",
        "0",
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return {"out": out, "result": result, "args": args}


def test_operating_point_comes_from_the_tumour_free_slide(tumor_free_run, semireal, model) -> None:
    from qupath_rkd.inference import InferenceConfig, predict_slide
    from qupath_rkd.inference.predict import apply_threshold

    res = tumor_free_run["result"]
    assert res.exit_code == 0, res.output
    assert "Threshold" in res.output and "tumor-free" in res.output
    run_json = json.loads((tumor_free_run["out"] / "run.json").read_text())
    op = run_json["operating_point"]
    assert op["method"] == "tumor-free" and op["n_slides"] == 1
    assert op["threshold"] >= model.threshold
    assert op["false_lesions_per_slide"] <= 0.25
    assert run_json["config"]["threshold"] == op["threshold"]
    # the slide's own lesions at that threshold: none (1 slide, at most 0.25 per slide)
    rows = {
        r["slide"]: r for r in csv.DictReader((tumor_free_run["out"] / "slide_scores.csv").open())
    }
    row = rows["semireal_a"]
    assert row["n_lesions"] == "0" and row["positive"] == "false"
    assert row["burden_category"] == "none" and float(row["tumor_area_mm2"]) == 0.0
    # half-tile grid, end to end
    hm = Heatmap.load(SlideOutputs(tumor_free_run["out"], "semireal_a").heatmap_json)
    assert hm.stride_level0_px == pytest.approx(hm.tile_level0_px / 2, rel=1e-3)
    # the lowest such threshold: just below it the slide has a lesion (when above the floor)
    pred = predict_slide(
        semireal.path, model, config=InferenceConfig(stride_px=INPUT_PX // 2, num_workers=0)
    )
    assert len(pred.lesions) >= 1  # the untrained model does find false lesions at the floor
    assert op["threshold"] > model.threshold
    below = apply_threshold(pred, op["threshold"] - 1e-4)
    assert len(below.lesions) >= 1
    assert len(apply_threshold(pred, op["threshold"]).lesions) == 0


def test_threshold_and_tumor_free_together_are_refused(tumor_free_run, tmp_path) -> None:
    args = [*tumor_free_run["args"], "--threshold", "0.6"]
    args[args.index("--out") + 1] = str(tmp_path / "o")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0
    assert "--tumor-free" in res.output and "Traceback" not in res.output

"""`predict` without --threshold or --tumor-free: the operating point comes from the mosaics of
held-out normal patches a `train-patches` model carries, and is written into run.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from qupath_rkd.cli import cli
from qupath_rkd.inference import InferenceConfig
from qupath_rkd.inference.batch import model_operating_point
from qupath_rkd.model.normal_mosaics import NormalMosaics
from qupath_rkd.model.scorer import load_model

from .conftest import INPUT_PX, MODEL_MPP, make_checkpoint

#: 16 x 16 patches of 32 px on a 16 px step: 31 x 31 tiles of 31 µm (at 1.944 µm/px)
ROWS = 31
HOT = 0.97


def _mosaics(base: float = 0.1, peak: float = HOT) -> NormalMosaics:
    clean = np.full((ROWS, ROWS), base, dtype=np.float32)
    hot = clean.copy()
    hot[8:20, 8:20] = peak  # 12 cells of 31 µm: a false lesion of about 370 µm
    return NormalMosaics([clean, hot], [16, 16], input_px=INPUT_PX, stride_px=INPUT_PX // 2)


@pytest.fixture(scope="module")
def mosaic_model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("mosaic_model") / "m.pt"
    return make_checkpoint(path, normal_mosaics=_mosaics().to_payload())


def _predict(model_path, slide, out, *extra: str):
    args = ["predict", str(model_path), str(slide), "--out", str(out), "--workers", "0", *extra]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res, json.loads((out / "run.json").read_text())


def test_predict_sets_its_threshold_on_the_models_normal_mosaics(
    mosaic_model_path, semireal, tmp_path
) -> None:
    res, run = _predict(mosaic_model_path, semireal.path, tmp_path / "a")
    op = run["operating_point"]
    # one false lesion on two half-size mosaics (0.5 slide equivalents): the threshold climbs
    # over the smoothed false lesion's peak
    assert op["method"] == "normal-patches" and op["held_out"] == "out-of-fold"
    assert 0.5 < op["threshold"] < HOT + 0.01 and op["false_lesions_per_slide"] == 0.0
    assert op["slide_equivalents"] == pytest.approx(0.5)
    assert run["config"]["threshold"] == op["threshold"]
    assert "normal-patches" in res.output and "per normal mosaic" in res.output
    # the extent stays capped at the calibrated threshold, not the raised one
    assert run["config"]["extent_cap"] == 0.5
    # a threshold given wins
    _res, given = _predict(mosaic_model_path, semireal.path, tmp_path / "b", "--threshold", "0.6")
    assert given["operating_point"]["method"] == "given"
    assert given["config"]["threshold"] == 0.6


def test_the_mosaics_serve_the_tile_step_and_not_another(mosaic_model_path) -> None:
    model = load_model(mosaic_model_path, device="cpu")
    half = model_operating_point(model, InferenceConfig().resolved(model), 0.25)
    tile = model_operating_point(model, InferenceConfig(stride_px=INPUT_PX).resolved(model), 0.25)
    assert half.method == tile.method == "normal-patches"
    assert half.threshold > 0.5 and tile.threshold > 0.5
    other = model_operating_point(model, InferenceConfig(stride_px=8).resolved(model), 0.25)
    assert other.method == "fallback" and other.threshold == 0.5
    assert "do not fit this grid" in other.note
    mpp = model_operating_point(
        model, InferenceConfig(tile_mpp=MODEL_MPP * 2).resolved(model), 0.25
    )
    assert mpp.method == "fallback" and "µm/px" in mpp.note
    # a generous target allows the one false lesion ((1 + 1/2) / 0.5 <= 4): the threshold
    # goes below the calibrated 0.5, to just above the clean mosaic's tiles (at 0.1 and
    # below, each mosaic is one lesion wall to wall)
    loose = model_operating_point(model, InferenceConfig().resolved(model), 4.0)
    assert loose.method == "normal-patches" and 0.1 < loose.threshold < 0.11


def test_a_model_calibrated_at_a_low_prior_gets_a_threshold_below_its_calibrated_one(
    tmp_path,
) -> None:
    """Regression: a head calibrated by cross-validation on 100 tumour among 10,000 normal
    patches gives probabilities at that prior; floored at 0.5, predict found no lesion at all."""
    path = make_checkpoint(tmp_path / "m.pt", normal_mosaics=_mosaics(0.01, 0.3).to_payload())
    model = load_model(path, device="cpu")
    op = model_operating_point(model, InferenceConfig().resolved(model), 0.25)
    assert op.method == "normal-patches" and 0.29 < op.threshold <= 0.3  # the smoothed peak
    assert op.false_lesions_per_slide == 0.0


def test_a_model_without_mosaics_keeps_the_calibrated_threshold(model) -> None:
    assert model.normal_mosaics is None
    op = model_operating_point(model, InferenceConfig().resolved(model), 0.25)
    assert op.method == "fallback" and op.threshold == model.threshold


def test_the_mosaics_vs_slides_benchmark_counts_both_sides(
    mosaic_model_path, semireal, tmp_path, monkeypatch, capsys
) -> None:
    """benchmarks/mosaics_vs_slides.py on the stored mosaics and a predicted slide."""
    import sys

    from bench_scripts import benchmark_module

    _predict(mosaic_model_path, semireal.path, tmp_path / "p")
    argv = ["x", "--model", str(mosaic_model_path), "--pred", str(tmp_path / "p")]
    monkeypatch.setattr(sys, "argv", [*argv, "--prefix", "semireal_"])
    with benchmark_module("mosaics_vs_slides.py") as module:
        module.main()
    out = json.loads(capsys.readouterr().out)
    mosaics, slides = out["mosaics"], out["tumor_free_slides"]
    assert mosaics["units"] == 2 and mosaics["tiles"] == 2 * ROWS * ROWS
    # 144 of 961 cells of one mosaic hold the 0.97 false lesion, none of the other's
    assert mosaics["raw_ge_0.72_per_unit"] == pytest.approx([0.0, 144 / ROWS**2])
    assert mosaics["false_lesions_per_unit"]["0.70"] == 0.5  # 1 lesion on 2 mosaics
    assert mosaics["false_lesions_per_unit"]["0.81"] == 0.5  # the lesion peaks at 0.97
    assert slides["units"] == 1 and slides["tiles"] > 0

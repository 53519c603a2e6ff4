"""predict_slide: streamed scores land on the right heatmap cells; options and refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from shapely.geometry import box

from qupath_rkd.errors import ResolutionError
from qupath_rkd.inference import InferenceConfig, predict_slide
from qupath_rkd.inference.predict import NonFiniteScoresError, apply_threshold, slide_score_of
from qupath_rkd.lesions import extract_lesions
from qupath_rkd.lesions.postprocess import smooth_heatmap
from qupath_rkd.slides import open_slide

from .conftest import INPUT_PX, MODEL_MPP, make_checkpoint, median_threshold


@pytest.fixture(scope="module")
def prediction(semireal, model):
    return predict_slide(semireal.path, model, num_workers=0, batch_size=16)


def test_heatmap_cells_hold_the_scores_of_their_own_tiles(prediction, semireal, model) -> None:
    pred = prediction
    hm = pred.heatmap
    assert len(pred.tiles) > 50
    assert hm.mpp == pytest.approx(semireal.mpp, rel=1e-3)
    assert hm.tile_level0_px == pytest.approx(INPUT_PX * MODEL_MPP / semireal.mpp, rel=1e-3)
    # the default grid steps half a tile
    assert hm.stride_level0_px == pytest.approx(hm.tile_level0_px / 2)
    # Every scored tile's probability is at its (row, col); every other cell is NaN.
    t = pred.tiles
    np.testing.assert_array_equal(hm.probability[t.rc[:, 0], t.rc[:, 1]], t.probability)
    assert np.isfinite(hm.probability).sum() == len(t)
    # Re-read a few tiles directly and score them: the streamed scores are the same.
    rng = np.random.default_rng(0)
    pick = rng.choice(len(t), size=6, replace=False)
    with open_slide(semireal.path) as slide:
        tiles = np.stack(
            [slide.read_tile(float(x), float(y), INPUT_PX, MODEL_MPP) for x, y in t.xy_px[pick]]
        )
    scores, probs = model.score_images(tiles)
    np.testing.assert_allclose(t.score[pick], scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t.probability[pick], probs, rtol=1e-5, atol=1e-6)
    # The cell value sits at its tile's centre (level-0 px; the grid floors tile corners).
    x, y = hm.to_level0_xy(t.rc[pick, 0], t.rc[pick, 1])
    np.testing.assert_allclose(x, t.xy_px[pick, 0] + hm.tile_level0_px / 2, atol=1.0)
    np.testing.assert_allclose(y, t.xy_px[pick, 1] + hm.tile_level0_px / 2, atol=1.0)


def test_slide_score_and_lesions_follow_the_config(prediction, semireal, model) -> None:
    t = prediction.tiles
    # the default rule: the highest value of the heatmap smoothed with the default sigma (µm)
    smoothed = smooth_heatmap(prediction.heatmap, prediction.config.smooth_sigma_um)
    assert prediction.smoothed is not None
    np.testing.assert_array_equal(prediction.smoothed.probability, smoothed.probability)
    assert prediction.slide_score == pytest.approx(float(np.nanmax(smoothed.probability)))
    # its lesions are those of the smoothed heatmap with hysteresis (extent = ratio × seed, at
    # most the model's calibrated threshold)
    thr0 = prediction.config.threshold
    assert prediction.config.extent_cap == pytest.approx(model.threshold)
    want0 = extract_lesions(
        smoothed,
        thr0,
        min_major_axis_um=prediction.config.min_major_axis_um,
        extent_threshold=min(prediction.config.extent_ratio * thr0, model.threshold),
    )
    assert [les.peak_xy_px for les in prediction.lesions] == [les.peak_xy_px for les in want0]
    assert prediction.positive == bool(want0)
    assert prediction.burden is not None and prediction.burden.n_lesions == len(want0)
    thr = median_threshold(t.probability)
    cfg = InferenceConfig(
        threshold=thr,
        slide_score="max",
        min_major_axis_um=0.0,
        num_workers=0,
        smooth_sigma_um=0.0,
        extent_ratio=1.0,
        batch_size=16,  # the fixture's: a float32 score's last bit depends on the batch
    )
    pred = predict_slide(semireal.path, model, config=cfg)
    np.testing.assert_array_equal(pred.tiles.score, t.score)  # same tiles, same scores
    assert pred.slide_score == pytest.approx(float(t.probability.max()))
    assert len(pred.lesions) >= 1
    # a seed above the calibrated threshold picks lesions; their extent stops at the latter
    want = extract_lesions(
        pred.heatmap, thr, min_major_axis_um=0.0, extent_threshold=min(thr, model.threshold)
    )
    # with smoothing asked for (µm), the score and lesions come from the smoothed heatmap
    smooth_cfg = dataclasses.replace(pred.config, smooth_sigma_um=150.0, slide_score="max_smoothed")
    smoothed_pred = apply_threshold(dataclasses.replace(pred, config=smooth_cfg), thr)
    want_smoothed = smooth_heatmap(pred.heatmap, 150.0).probability
    assert smoothed_pred.slide_score == pytest.approx(float(np.nanmax(want_smoothed)))
    assert smoothed_pred.slide_score < float(np.nanmax(pred.heatmap.probability))
    assert [les.peak_xy_px for les in pred.lesions] == [les.peak_xy_px for les in want]
    # each lesion's peak is the centre of a tile whose probability is the lesion's maximum
    centres = t.xy_px + pred.heatmap.tile_level0_px / 2
    for les in pred.lesions:
        k = int(np.argmin(np.hypot(*(centres - les.peak_xy_px).T)))
        assert t.probability[k] == pytest.approx(les.max_probability)


def test_slide_score_rules() -> None:
    p = np.array([0.1, 0.6, 0.8, np.nan], np.float32)
    assert slide_score_of(p, "max", 0.5) == pytest.approx(0.8)
    assert slide_score_of(p, "mean_above", 0.5) == pytest.approx(0.7)
    assert slide_score_of(p, "mean_above", 0.9) == 0.0
    # nothing scored: no score (0 would read as "benign")
    assert slide_score_of(np.zeros(0, np.float32), "max", 0.5) is None
    assert slide_score_of(np.full(3, np.nan, np.float32), "mean_above", 0.5) is None


def test_workers_open_their_own_handles_and_give_identical_results(
    prediction, semireal, model
) -> None:
    top = box(0, 0, 1200, 400)  # about a third of the slide, to keep the test short
    pred = predict_slide(semireal.path, model, num_workers=2, batch_size=8, region=top)
    want = prediction.tiles
    centre_y = want.xy_px[:, 1] + prediction.heatmap.tile_level0_px / 2
    keep = centre_y < 400
    assert len(pred.tiles) == int(keep.sum()) > 10
    np.testing.assert_array_equal(pred.tiles.xy_px, want.xy_px[keep])
    np.testing.assert_allclose(pred.tiles.score, want.score[keep], rtol=1e-6)


def test_dense_stride_and_region(semireal, model) -> None:
    region = box(400, 300, 800, 600)
    events: list = []
    pred = predict_slide(
        semireal.path,
        model,
        stride_px=16,
        region=region,
        num_workers=0,
        batch_size=32,
        progress=events.append,
    )
    # progress: the tiles scored, a batch at a time, up to the slide's tile count; one end
    n, b = len(pred.tiles), pred.config.batch_size
    assert n > 2 * b
    assert {e.task for e in events} == {f"tiles {semireal.path.name}"}
    assert {e.total for e in events} == {n} and events[0].unit == "tile"
    assert [e.done for e in events] == [0, *range(b, n, b), n, n]
    assert [e.finished for e in events] == [False] * (len(events) - 1) + [True]
    hm = pred.heatmap
    assert hm.stride_level0_px == pytest.approx(hm.tile_level0_px / 2)
    centres = pred.tiles.xy_px + hm.tile_level0_px / 2
    assert len(pred.tiles) > 10
    assert np.all(
        (centres[:, 0] > 400)
        & (centres[:, 0] < 800)
        & (centres[:, 1] > 300)
        & (centres[:, 1] < 600)
    )
    # cell (r, c) of a dense grid starts at (c, r) * stride
    np.testing.assert_allclose(
        pred.tiles.xy_px[:, 0], np.floor(pred.tiles.rc[:, 1] * hm.stride_level0_px + 1e-9)
    )
    x, _ = hm.to_level0_xy(pred.tiles.rc[:, 0], pred.tiles.rc[:, 1])
    np.testing.assert_allclose(x, centres[:, 0], atol=1.0)


def test_no_tissue_gives_an_empty_result_with_a_note(blank_slide, model) -> None:
    pred = predict_slide(blank_slide, model, num_workers=0)
    assert len(pred.tiles) == 0 and pred.lesions == []
    assert pred.slide_score is None  # regression: it was 0, which reads as "benign"
    assert pred.note and "no tissue found" in pred.note
    assert np.isnan(pred.heatmap.probability).all()


def test_nan_scores_are_refused_naming_the_model(semireal, tmp_path) -> None:
    from qupath_rkd.model.scorer import load_model

    bad = load_model(make_checkpoint(tmp_path / "nan.pt", nan=True), device="cpu")
    with pytest.raises(NonFiniteScoresError, match=bad.model_id[:12]) as info:
        predict_slide(semireal.path, bad, num_workers=0)
    assert "non-finite" in str(info.value)


def test_resolution_refusals(semireal, tmp_path) -> None:
    from qupath_rkd.model.scorer import load_model

    unknown = load_model(make_checkpoint(tmp_path / "nompp.pt", mpp=None), device="cpu")
    with pytest.raises(ResolutionError, match="records no µm/px"):
        predict_slide(semireal.path, unknown, num_workers=0)
    # the slide is 0.972 µm/px: a model at 0.243 µm/px would need 4× upsampling
    with pytest.raises(ResolutionError, match=r"upsampled 4\.00×") as info:
        predict_slide(semireal.path, unknown, tile_mpp=0.243, num_workers=0)
    assert unknown.model_id[:12] in str(info.value)


def test_slides_are_read_with_the_training_field_of_view(semireal, tmp_path) -> None:
    """Regression (issue 12, Deliver 2): a model trained on 64 px tiles resized to its 32 px
    input reads 64 px tiles at its µm/px (the checkpoint's tile_px), not 32 px ones: the
    field of view of training (64 × 1.944 µm), whatever the network's input size."""
    from qupath_rkd.model.scorer import load_model

    model = load_model(make_checkpoint(tmp_path / "wide.pt", tile_px=2 * INPUT_PX), device="cpu")
    assert (model.tile_px, model.input_px) == (2 * INPUT_PX, INPUT_PX)
    cfg = InferenceConfig(num_workers=0, batch_size=16).resolved(model)
    assert (cfg.tile_px, cfg.tile_mpp) == (2 * INPUT_PX, pytest.approx(MODEL_MPP))
    pred = predict_slide(semireal.path, model, config=cfg)
    tile_um = 2 * INPUT_PX * MODEL_MPP
    assert pred.heatmap.tile_level0_px == pytest.approx(tile_um / semireal.mpp, rel=1e-3)


def test_progress_counts_the_slides(blank_slide, model, tmp_path) -> None:
    """``predict_slides`` sends ``slides``, one per slide finished (an empty one included; a
    slide with no tissue has no tiles to count)."""
    from qupath_rkd.inference import predict_slides

    events: list = []
    predict_slides([blank_slide], model, tmp_path / "out", progress=events.append)
    assert [(e.task, e.done, e.total, e.finished) for e in events] == [
        ("slides", 0, 1, False),
        ("slides", 1, 1, False),
        ("slides", 1, 1, True),
    ]

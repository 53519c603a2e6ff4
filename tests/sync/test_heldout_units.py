"""The pieces of sync's held-out operating point that need no slide: the training rows of a
mask with their patch index, the view-averaged features that make a linear head's TTA logit,
the held-out heatmap's placement, the band folds of an image holding most of a class's tiles,
and the summary's ``held_out`` value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.features.extract import Features
from qupath_rkd.features.views import view_list
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.inference.predict import InferenceConfig, SlidePrediction, TileScores
from qupath_rkd.model.head import HeadFit, HeadNetwork, fit_head
from qupath_rkd.sync.heldout import (
    HELD_OUT_BANDS_META,
    HELD_OUT_FOLDS,
    HELD_OUT_IN_SAMPLE,
    HELD_OUT_LOO,
    HELD_OUT_NOT_TRAINED,
    HELD_OUT_PARTLY,
    BandFolds,
    band_folds,
    dominant_share,
    held_out_heatmap,
    held_out_logits,
    held_out_summary,
    without_features,
)
from qupath_rkd.training.head_trainer import TrainingFeatures


def _training_features(seed: int = 0) -> TrainingFeatures:
    rng = np.random.default_rng(seed)
    y = np.array([LABEL_NORMAL, LABEL_TUMOR, LABEL_NORMAL, LABEL_TUMOR, LABEL_NORMAL])
    tumor_idx = np.flatnonzero(y == LABEL_TUMOR)
    rare = [1, 2, 3]
    base = Features(rng.normal(size=(5, 1, 6)).astype(np.float16), np.ones(5, bool), [0], 5, 0, 0.0)
    extra = Features(
        rng.normal(size=(2, 3, 6)).astype(np.float16), np.ones(2, bool), rare, 6, 0, 0.0
    )
    ok = np.array([True, True, False, True, True])  # patch 2 unreadable
    return TrainingFeatures(y, base, extra, tumor_idx, rare, ok)


def test_training_rows_carry_the_patch_of_every_row() -> None:
    feats = _training_features()
    mask = np.array([True, True, True, False, True])  # patch 3 (a tumour patch) held out
    x, y, index = feats.rows(mask)
    # view 0 of readable patches 0, 1, 4; then patch 1's three tumour views
    assert index.tolist() == [0, 1, 4, 1, 1, 1]
    assert y.tolist() == [LABEL_NORMAL, LABEL_TUMOR, LABEL_NORMAL, *[LABEL_TUMOR] * 3]
    assert np.array_equal(x[:3], feats.base.values[[0, 1, 4], 0].astype(np.float32))
    assert np.array_equal(x[3:], feats.extra.values[0].astype(np.float32))  # type: ignore[union-attr]
    # every row of the full set, each from its own patch
    x_all, _y_all, index_all = feats.rows(np.ones(5, bool))
    assert 2 not in index_all and sorted(set(index_all.tolist())) == [0, 1, 3, 4]
    assert len(x_all) == 4 + 2 * 3


def test_view_averaged_features_give_the_heads_tta_logit() -> None:
    """The head is linear: any linear head of the view-averaged features is that head's logit
    averaged over the views, which is what the fold heads rely on."""
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = HeadNetwork(trunk, 8)
    rng = np.random.default_rng(1)
    fit = HeadFit(rng.normal(size=8), rng.uniform(0.5, 2, 8), rng.normal(size=8), 0.3, 1.0)
    net.head.set_params(fit)
    x = torch.randn(5, 3, 16, 16)
    views = view_list(8)
    with torch.inference_mode():
        logits, first, mean = net.logits_with_features(x, views)
        assert torch.equal(logits, net(x, views))  # the model's own scores are unchanged
        assert torch.equal(first, net.logits_and_features(x, views)[1])
    assert np.allclose(fit.logits(mean.numpy()), logits.numpy(), atol=1e-5)
    # and another head's TTA logit, per view, equals its logit of the averaged features
    other = HeadFit(rng.normal(size=8), rng.uniform(0.5, 2, 8), rng.normal(size=8), -1.0, 1.0)
    from qupath_rkd.features.views import view_images

    with torch.inference_mode():
        per_view = np.mean(
            [other.logits(trunk(view_images(x, v)).half().float().numpy()) for v in views], axis=0
        )
    assert np.allclose(held_out_logits(other, mean.numpy()), per_view, atol=1e-4)


def _prediction(features: np.ndarray | None) -> SlidePrediction:
    rc = np.array([[0, 0], [0, 2], [1, 1]], dtype=np.int64)
    prob = np.full((2, 3), np.nan, dtype=np.float32)
    prob[rc[:, 0], rc[:, 1]] = [0.1, 0.2, 0.3]
    heatmap = Heatmap(prob, (0.0, 0.0), 96.0, 96.0, 0.972, meta={"slide": "s.tif"})
    tiles = TileScores(rc * 96, rc, 96.0, np.zeros(3, np.float32), prob[rc[:, 0], rc[:, 1]])
    config = InferenceConfig(tile_mpp=0.972, tile_px=96, threshold=0.5, return_features=True)
    return SlidePrediction(
        Path("s.tif"), heatmap, 0.3, [], tiles, None, config, "m", 0.972, (288, 192),
        tile_features=features,
    )  # fmt: skip


class _Calibrated:
    """A model stand-in whose calibration is the logistic function."""

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-np.asarray(scores, np.float64)))).astype(np.float32)


def test_held_out_heatmap_puts_each_tiles_fold_probability_on_its_cell() -> None:
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(3, 4)).astype(np.float32)
    fit = fit_head(rng.normal(size=(40, 4)), np.repeat([LABEL_NORMAL, LABEL_TUMOR], 20), l2=1.0)
    pred = _prediction(feats)
    heat = held_out_heatmap(pred, fit, _Calibrated())  # type: ignore[arg-type]
    expect = 1.0 / (1.0 + np.exp(-fit.logits(feats).astype(np.float32)))
    got = heat.probability[pred.tiles.rc[:, 0], pred.tiles.rc[:, 1]]
    assert np.allclose(got, expect, atol=1e-6)
    assert np.isnan(heat.probability[0, 1]) and np.isnan(heat.probability[1, 0])  # off tissue
    assert heat.meta["held_out"] == HELD_OUT_LOO and pred.heatmap.meta.get("held_out") is None
    # the prediction kept for the slide itself carries no features, as one made without them
    kept = without_features(pred)
    assert kept.tile_features is None and not kept.config.return_features
    assert kept.config.key("m") == pred.config.key("m")  # features are not in the key


def test_summary_says_how_the_heatmaps_were_found() -> None:
    assert held_out_summary(["B"], {}, [])[0] == HELD_OUT_LOO
    assert held_out_summary(["B"], {}, ["C"])[0] == HELD_OUT_LOO
    assert held_out_summary([], {}, ["C"])[0] == HELD_OUT_NOT_TRAINED
    assert held_out_summary([], {"A": "RD scorer: no held-out refit"}, [])[0] == HELD_OUT_IN_SAMPLE
    how, note = held_out_summary(["B"], {"A": "without its tiles no tumour tile remains"}, [])
    assert how == HELD_OUT_PARTLY
    assert "B scored by heads fitted without their labelled tiles" in note
    assert "in-sample" in note and "A (without its tiles no tumour tile remains)" in note


def test_an_image_is_dominant_by_its_largest_share_of_a_class() -> None:
    labels = np.array([LABEL_NORMAL] * 3 + [LABEL_TUMOR] + [LABEL_NORMAL, LABEL_TUMOR])
    own = np.array([True, True, True, True, False, False])
    assert dominant_share(labels, own) == 0.75  # 3 of 4 normal tiles (1 of 2 tumour)
    assert dominant_share(labels, ~own) == 0.5
    assert dominant_share(labels, np.zeros(6, bool)) == 0.0


def test_band_folds_leave_out_each_band_of_the_images_own_tiles() -> None:
    own = np.array([True] * 8 + [False] * 4)
    x_px = np.array([700, 0, 100, 600, 200, 300, 500, 400, 0, 50, 900, 300], dtype=np.float64)
    masks: list[np.ndarray] = []

    def fit_rows(mask: np.ndarray) -> str | HeadFit:
        masks.append(mask.copy())
        return fit_head(np.eye(2), np.array([LABEL_NORMAL, LABEL_TUMOR]), l2=1.0)

    folds = band_folds(own, x_px, fit_rows, n_bands=4)
    assert folds is not None and len(folds.fits) == 4
    # equal tile counts: the edges are the quartiles of the image's x (0..700 in steps of 100)
    assert folds.edges_x_px.tolist() == [175.0, 350.0, 525.0]
    assert folds.band_of(x_px[own]).tolist() == [3, 0, 0, 3, 1, 1, 2, 2]
    # fold b trains on every tile but band b of this image: the other images' tiles (x 0 and
    # 300 included) always stay in
    left_out = [np.flatnonzero(~m).tolist() for m in masks]
    assert left_out == [[1, 2], [4, 5], [6, 7], [0, 3]]
    # too few tiles for the bands, or a fold without a class: no band folds
    assert band_folds(own, x_px, fit_rows, n_bands=5) is None
    assert band_folds(own, x_px, lambda mask: "tumour", n_bands=4) is None


def test_held_out_heatmap_scores_each_tile_by_its_bands_head() -> None:
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(3, 4)).astype(np.float32)
    y = np.repeat([LABEL_NORMAL, LABEL_TUMOR], 20)
    fits = [fit_head(rng.normal(size=(40, 4)), y, l2=1.0) for _ in range(2)]
    pred = _prediction(feats)
    assert pred.tiles.xy_px[:, 0].tolist() == [0, 0, 96]  # bands 0, 0, 1 at the edge 50
    folds = BandFolds(np.array([50.0]), fits)
    heat = held_out_heatmap(pred, folds, _Calibrated())  # type: ignore[arg-type]
    got = heat.probability[pred.tiles.rc[:, 0], pred.tiles.rc[:, 1]]
    logits = np.array([fits[b].logits(feats)[i] for i, b in enumerate([0, 0, 1])])
    assert np.allclose(got, 1.0 / (1.0 + np.exp(-logits.astype(np.float32))), atol=1e-6)
    assert not np.allclose(got[2], 1.0 / (1.0 + np.exp(-fits[0].logits(feats)[2])))
    assert heat.meta["held_out"] == HELD_OUT_BANDS_META


def test_summary_names_the_images_held_out_band_by_band() -> None:
    how, note = held_out_summary(["C"], {}, [], ["B"])
    assert how == HELD_OUT_FOLDS
    assert "C scored by heads fitted without their labelled tiles" in note
    assert "B scored band by band" in note
    assert held_out_summary([], {"A": "RD scorer"}, [], ["B"])[0] == HELD_OUT_PARTLY

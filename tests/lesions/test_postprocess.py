"""Post-processing: smoothing in µm, hysteresis thresholds, slide scores, burden categories."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions import extract_lesions
from qupath_rkd.lesions.burden import burden_category, tumour_burden
from qupath_rkd.lesions.pipeline import count_lesions, find_lesions
from qupath_rkd.lesions.postprocess import (
    PostProcessing,
    hysteresis_mask,
    smooth_heatmap,
    smooth_probability,
)
from qupath_rkd.lesions.slide_score import slide_call, slide_score


def heatmap(prob: np.ndarray, *, stride_px: float = 100.0, mpp: float = 0.5) -> Heatmap:
    """Cells of ``stride_px × mpp`` µm (default 50 µm)."""
    return Heatmap(
        probability=np.asarray(prob, dtype=np.float32),
        origin_xy_px=(0.0, 0.0),
        stride_level0_px=stride_px,
        tile_level0_px=stride_px,
        mpp=mpp,
    )


# --- smoothing -----------------------------------------------------------------------------
@pytest.mark.parametrize(("stride_px", "mpp"), [(100.0, 0.5), (50.0, 0.5), (100.0, 0.25)])
def test_smoothing_sigma_is_in_um_whatever_the_cell_size(stride_px: float, mpp: float) -> None:
    # A single hot cell in the middle: its smoothed profile along a row is a sampled Gaussian
    # whose sigma in µm is the one asked for, whatever the µm per cell.
    n = 81
    p = np.zeros((n, n), np.float32)
    p[n // 2, n // 2] = 1.0
    hm = heatmap(p, stride_px=stride_px, mpp=mpp)
    sigma_um = 100.0
    out = smooth_heatmap(hm, sigma_um).probability
    row = out[n // 2].astype(np.float64)
    x_um = (np.arange(n) - n // 2) * hm.cell_um
    measured = np.sqrt(np.sum(row * x_um**2) / np.sum(row))
    assert measured == pytest.approx(sigma_um, rel=0.05)
    assert smooth_heatmap(hm, sigma_um).meta["smooth_sigma_um"] == sigma_um


def test_smoothing_ignores_cells_off_tissue() -> None:
    # Constant 0.8 on tissue, NaN elsewhere: the smoothed map stays 0.8 up to the tissue edge
    # (not pulled towards 0 by the missing cells) and NaN stays NaN.
    p = np.full((20, 20), np.nan, np.float32)
    p[5:15, 3:12] = 0.8
    out = smooth_probability(p, 2.0)
    assert np.isnan(out[~np.isfinite(p)]).all()
    np.testing.assert_allclose(out[np.isfinite(p)], 0.8, rtol=1e-5)
    # sigma 0: unchanged
    np.testing.assert_array_equal(smooth_probability(p, 0.0), p)


def test_smoothing_removes_salt_and_pepper_but_keeps_a_lesion() -> None:
    rng = np.random.default_rng(0)
    p = (rng.random((60, 60)) < 0.02).astype(np.float32) * 0.9  # isolated hot cells
    yy, xx = np.mgrid[:60, :60]
    p[(yy - 30) ** 2 + (xx - 30) ** 2 <= 36] = 0.95  # a disc of radius 6 cells (300 µm)
    hm = heatmap(p)
    raw = extract_lesions(hm, 0.5, min_major_axis_um=0.0)
    found = find_lesions(hm, 0.5, PostProcessing(smooth_sigma_um=50.0, min_major_axis_um=0.0))
    assert len(raw) > 10
    assert len(found.lesions) == 1
    assert found.lesions[0].polygon.contains(
        __import__("shapely").geometry.Point(30 * 100 + 50, 30 * 100 + 50)
    )


# --- hysteresis ----------------------------------------------------------------------------
def test_hysteresis_keeps_low_regions_only_when_they_touch_a_seed() -> None:
    p = np.zeros((5, 12), np.float32)
    p[1:4, 1:4] = 0.3
    p[2, 2] = 0.9  # seeded region
    p[1:4, 7:10] = 0.3  # same values, no seed: dropped
    p[0, 4] = 0.3  # diagonal neighbour of the seeded region: 8-connected, kept
    p[4, 11] = np.nan
    mask = hysteresis_mask(p, 0.5, 0.25)
    want = np.zeros_like(mask)
    want[1:4, 1:4] = True
    want[0, 4] = True
    np.testing.assert_array_equal(mask, want)
    # extent >= seed: a plain threshold
    np.testing.assert_array_equal(hysteresis_mask(p, 0.5, 0.5), p >= 0.5)
    assert not hysteresis_mask(p, 0.95, 0.1).any()


def test_extract_with_extent_threshold_grows_the_lesion_not_the_peak() -> None:
    p = np.zeros((6, 6), np.float32)
    p[1:5, 1:5] = 0.4
    p[2, 3] = 0.8
    hm = heatmap(p)
    one = extract_lesions(hm, 0.5, min_major_axis_um=0.0, simplify_um=0.0)
    hyst = extract_lesions(hm, 0.5, min_major_axis_um=0.0, simplify_um=0.0, extent_threshold=0.3)
    assert len(one) == len(hyst) == 1
    assert one[0].n_cells == 1 and hyst[0].n_cells == 16
    assert hyst[0].max_probability == pytest.approx(0.8)
    assert hyst[0].peak_xy_px == one[0].peak_xy_px
    assert hyst[0].area_um2 == pytest.approx(16 * 50.0**2)


def test_count_lesions_matches_extract_lesions() -> None:
    rng = np.random.default_rng(3)
    p = rng.random((40, 40)).astype(np.float32)
    p[rng.random((40, 40)) < 0.1] = np.nan
    hm = heatmap(p)
    for seed, extent, min_um in [(0.9, 0.45, 0.0), (0.8, 0.8, 100.0), (0.95, 0.6, 150.0)]:
        want = extract_lesions(hm, seed, min_major_axis_um=min_um, extent_threshold=extent)
        got = count_lesions(p, seed, extent, cell_um=hm.cell_um, min_major_axis_um=min_um)
        assert got == len(want)


def test_post_processing_validates() -> None:
    with pytest.raises(ValueError):
        PostProcessing(extent_ratio=0.0)
    with pytest.raises(ValueError):
        PostProcessing(smooth_sigma_um=-1.0)
    assert PostProcessing(extent_ratio=0.5).extent_for(0.7) == pytest.approx(0.35)
    with pytest.raises(ValueError):
        PostProcessing(extent_cap=0.0)


def test_a_raised_operating_point_picks_lesions_but_the_cap_keeps_their_extent() -> None:
    # Regression (held-out operating point, 0.5 -> 0.67 on the demo): with one threshold a
    # raised seed shrank true lesions to their hottest cells (area -53 % / -74 %). Capped at the
    # calibrated 0.5, a lesion keeps every connected cell >= 0.5; a region without a cell >=
    # the seed is still no lesion.
    p = np.zeros((8, 8), np.float32)
    p[1:4, 1:4] = 0.6
    p[2, 2] = 0.8  # a lesion with one hot cell
    p[5:7, 5:7] = 0.6  # warm, but no cell reaches the seed
    hm = heatmap(p)
    one = PostProcessing(min_major_axis_um=0.0, smooth_sigma_um=0.0)
    plain = find_lesions(hm, 0.7, one)
    capped = find_lesions(hm, 0.7, dataclasses.replace(one, extent_cap=0.5))
    assert [les.n_cells for les in plain.lesions] == [1]
    assert [les.n_cells for les in capped.lesions] == [9]
    assert PostProcessing(extent_cap=0.5).extent_for(0.7) == pytest.approx(0.5)
    assert PostProcessing(extent_cap=0.5).extent_for(0.4) == pytest.approx(0.4)
    assert PostProcessing(extent_ratio=0.5, extent_cap=0.5).extent_for(0.8) == pytest.approx(0.4)


# --- slide scores --------------------------------------------------------------------------
def test_slide_score_rules() -> None:
    p = np.zeros((10, 10), np.float32)
    p[2:5, 2:5] = 0.6
    p[3, 3] = 0.9
    p[8, 8] = 0.7
    p[0, 0] = np.nan
    hm = heatmap(p)
    post = PostProcessing(smooth_sigma_um=0.0, extent_ratio=1.0, min_major_axis_um=0.0)
    found = find_lesions(hm, 0.5, post)
    kw = {"raw": p, "smoothed": found.smoothed.probability, "lesions": found.lesions}
    assert slide_score("max", threshold=0.5, **kw) == pytest.approx(0.9)
    assert slide_score("max_smoothed", threshold=0.5, **kw) == pytest.approx(0.9)
    assert slide_score("mean_above", threshold=0.5, **kw) == pytest.approx(
        (8 * 0.6 + 0.9 + 0.7) / 10
    )
    assert slide_score("largest_area", threshold=0.5, **kw) == pytest.approx(9 * 50.0**2 / 1e6)
    assert slide_score("largest_mass", threshold=0.5, **kw) == pytest.approx(
        (8 * 0.6 + 0.9) / 9 * 9 * 50.0**2 / 1e6, rel=1e-6
    )
    smoothed = smooth_probability(p, 1.0)
    assert slide_score("max_smoothed", raw=p, smoothed=smoothed, lesions=[], threshold=0.5) < 0.9
    assert slide_score("largest_area", raw=p, smoothed=None, lesions=[], threshold=0.5) == 0.0
    assert slide_call(found.lesions) and not slide_call([])
    with pytest.raises(ValueError):
        slide_score("median", raw=p, smoothed=None, lesions=[], threshold=0.5)


# --- burden --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("axis_um", "category"),
    [
        (None, "none"),
        (0.0, "none"),
        (150.0, "ITC"),
        (199.9, "ITC"),
        (200.0, "micrometastasis"),
        (2000.0, "micrometastasis"),
        (2000.1, "macrometastasis"),
    ],
)
def test_burden_categories(axis_um: float | None, category: str) -> None:
    assert burden_category(axis_um) == category


def test_tumour_burden_of_lesions() -> None:
    p = np.zeros((60, 60), np.float32)
    p[5:10, 5:10] = 0.9  # 5 × 5 cells of 50 µm: 250 µm square
    p[20:59, 20:59] = 0.9  # 39 × 39 cells: 1.95 mm square, diagonal-ish major axis > 2 mm
    lesions = extract_lesions(heatmap(p), 0.5, min_major_axis_um=0.0, simplify_um=0.0)
    b = tumour_burden(lesions)
    assert b.n_lesions == 2
    assert b.tumor_area_mm2 == pytest.approx((25 + 39 * 39) * 0.05**2)
    assert b.largest_major_axis_um == pytest.approx(max(les.major_axis_um for les in lesions))
    assert b.category == burden_category(b.largest_major_axis_um)
    assert tumour_burden([]).category == "none"
    assert b.as_dict()["burden_category"] == b.category

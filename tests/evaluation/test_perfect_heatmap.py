"""Integration: the truth-derived perfect heatmap of a small built semi-real slide with real
Camelyon16 lesion shapes gives all its lesions as lesions without smoothing and as candidates
with the default smoothing, on both grids, and none on a tumour-free slide."""

from __future__ import annotations

import numpy as np
import pytest

from qupath_rkd.demo import demo_patch_dirs
from qupath_rkd.demo.camelyon_lesions import (
    build_real_lesion_slide,
    load_camelyon16_lesions,
    place_lesion_cluster,
)
from qupath_rkd.evaluation.camelyon16 import evaluation_mask, score_detections
from qupath_rkd.evaluation.perfect_heatmap import perfect_heatmap
from qupath_rkd.lesions.burden import tumour_burden
from qupath_rkd.lesions.candidates import candidate_detections
from qupath_rkd.lesions.operating_point import NegativeHeatmap, choose_operating_point
from qupath_rkd.lesions.pipeline import find_lesions
from qupath_rkd.lesions.postprocess import PostProcessing

SIZE_PX = 1200
MPP = 0.972
TILE_PX = 96  # PCam tiles at 0.972 µm/px: level-0 px of these slides


def _heatmap(slide, stride_px: int):
    return perfect_heatmap(
        slide.lesions,
        slide_size_px=(slide.width_px, slide.height_px),
        mpp=slide.mpp,
        tile_level0_px=TILE_PX,
        stride_level0_px=stride_px,
        tissue=slide.tissue,
    )


@pytest.fixture(scope="module")
def slides(tmp_path_factory, real_data):
    # Tumor_006 placed with this seed: 3 polygons, 2 Camelyon16 lesions (no ITC) in the window
    lesions = load_camelyon16_lesions(real_data / "camelyon16-annotations/train/Tumor_006.json")
    cluster = place_lesion_cluster(
        lesions, width_px=SIZE_PX, height_px=SIZE_PX, mpp=MPP, rng=np.random.default_rng(0)
    )
    normal, tumour = demo_patch_dirs()
    folder = tmp_path_factory.mktemp("perfect")
    common = {
        "normal_dir": normal,
        "tumor_dir": tumour,
        "width_px": SIZE_PX,
        "height_px": SIZE_PX,
        "mpp": MPP,
        "max_patches": 60,
    }
    tumour_slide = build_real_lesion_slide(folder / "t.tif", cluster=cluster, seed=1, **common)
    free = build_real_lesion_slide(folder / "n.tif", seed=2, **common)
    return tumour_slide.slide, free.slide


def test_perfect_heatmap_is_the_tumour_share_of_each_tile(slides) -> None:
    slide, _ = slides
    hm = _heatmap(slide, TILE_PX)
    p = hm.probability
    assert np.nanmax(p) == pytest.approx(1.0)
    assert np.nanmin(p) == 0.0 and np.isnan(p).any()  # off-tissue tiles are not scored
    truth_mm2 = sum(poly.area for poly in slide.lesions) * MPP**2 / 1e6
    est_mm2 = float(np.nansum(p)) * (TILE_PX * MPP) ** 2 / 1e6
    assert est_mm2 == pytest.approx(truth_mm2, rel=0.05)


def _hits(found_probs, xs, ys, mask) -> list[int]:
    det = score_detections("t", np.asarray(found_probs), np.asarray(xs), np.asarray(ys), mask)
    assert det.fp_probs.size == 0
    return sorted(k + 1 for k, p in enumerate(det.tp_probs) if p > 0)


def test_post_processing_finds_every_lesion_of_the_perfect_heatmap(slides) -> None:
    slide, free = slides
    mask = evaluation_mask(slide.lesions, mpp=MPP, slide_size_px=(SIZE_PX, SIZE_PX))
    assert mask.n_lesions == 2
    every = sorted(set(range(1, mask.n_instances + 1)) - mask.itc_labels)
    truth_mm2 = sum(poly.area for poly in slide.lesions) * MPP**2 / 1e6
    default = PostProcessing()  # what predict and sync use: 40 µm smoothing
    unsmoothed = PostProcessing(smooth_sigma_um=0.0)
    for stride in (TILE_PX, TILE_PX // 2):
        hm = _heatmap(slide, stride)
        # without smoothing every lesion is found at the calibrated 0.5
        found = find_lesions(hm, 0.5, unsmoothed).lesions
        xs, ys = [les.peak_xy_px[0] for les in found], [les.peak_xy_px[1] for les in found]
        assert _hits([les.max_probability for les in found], xs, ys, mask) == every
        burden = tumour_burden(found)
        assert burden.tumor_area_mm2 == pytest.approx(truth_mm2, rel=0.6)
        # The default smoothing trades the smallest lesions' peaks on a clean heatmap for far
        # fewer false lesions on a model's noisy one (docs/benchmarks.md): the larger lesion
        # is still a lesion at 0.5, and every lesion is still in the Camelyon16 candidate list
        # (what the FROC scores), ranked with no false candidate.
        result = find_lesions(hm, 0.5, default)
        assert len(result.lesions) >= 1
        cand = candidate_detections(result.smoothed, result.lesions, seed_threshold=0.5)
        assert _hits(cand.probs, cand.x_px, cand.y_px, mask) == every
    # the tumour-free slide: no lesion, and its heatmap keeps the calibrated threshold
    free_hm = _heatmap(free, TILE_PX // 2)
    assert find_lesions(free_hm, 0.5, default).lesions == []
    op = choose_operating_point([NegativeHeatmap(free_hm)], default)
    assert op.threshold == 0.5 and op.false_lesions_per_slide == 0.0

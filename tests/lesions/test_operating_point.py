"""The operating point from tumour-free heatmaps with known false peaks."""

from __future__ import annotations

import numpy as np
import pytest

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions.operating_point import (
    METHOD_FALLBACK,
    METHOD_TUMOR_FREE,
    NegativeHeatmap,
    choose_operating_point,
    slide_equivalents,
)
from qupath_rkd.lesions.postprocess import PostProcessing

POST = PostProcessing(smooth_sigma_um=0.0, extent_ratio=0.5, min_major_axis_um=0.0)


def f32(value: float) -> float:
    """The float32 value a heatmap stores for ``value``."""
    return float(np.float32(value))


def negative_slide(peaks: list[float], *, size: int = 40, background: float = 0.1) -> Heatmap:
    """A tumour-free heatmap with isolated 2 × 2 false peaks of the given probabilities."""
    p = np.full((size, size), background, np.float32)
    for k, value in enumerate(peaks):
        r, c = 4 + 8 * (k // 4), 4 + 8 * (k % 4)
        p[r : r + 2, c : c + 2] = value
    return Heatmap(p, (0.0, 0.0), 100.0, 100.0, 0.5)


def test_lowest_threshold_with_at_most_the_target_false_lesions() -> None:
    # 4 slides; false peaks 0.95 (slide 1) and 0.8, 0.7, 0.6 elsewhere. At most 0.25 per slide =
    # at most 1 false lesion over 4 slides: just above 0.8 (only the 0.95 peak is left).
    slides = [
        negative_slide([0.95]),
        negative_slide([0.8]),
        negative_slide([0.7, 0.6]),
        negative_slide([]),
    ]
    op = choose_operating_point([NegativeHeatmap(h) for h in slides], POST)
    assert op.method == METHOD_TUMOR_FREE
    assert op.n_slides == 4 and op.n_regions == 0
    assert f32(0.8) < op.threshold <= f32(0.8) + 1e-6
    assert op.false_lesions_per_slide == pytest.approx(0.25)
    # target 0: above the highest false peak
    op0 = choose_operating_point([NegativeHeatmap(h) for h in slides], POST, target_fp_per_slide=0)
    assert f32(0.95) < op0.threshold <= f32(0.95) + 1e-6 and op0.false_lesions_per_slide == 0.0
    # a generous target: the floor itself (never below the calibrated 0.5)
    op2 = choose_operating_point([NegativeHeatmap(h) for h in slides], POST, target_fp_per_slide=2)
    assert op2.threshold == pytest.approx(0.5)
    assert op2.false_lesions_per_slide == pytest.approx(1.0)


def test_fallback_without_tumour_free_data() -> None:
    op = choose_operating_point([], POST)
    assert op.method == METHOD_FALLBACK and op.threshold == 0.5
    assert op.false_lesions_per_slide is None
    # an all-False normal mask gives nothing either
    h = negative_slide([0.9])
    op = choose_operating_point([NegativeHeatmap(h, np.zeros(h.shape, bool))], POST)
    assert op.method == METHOD_FALLBACK
    assert op.as_dict()["threshold"] == 0.5


def test_normal_regions_count_by_their_share_of_the_slide() -> None:
    # A normal region covering the left half of a slide with one false peak at 0.9 inside it and
    # one at 0.99 outside it (tumour there, not counted): 1 false lesion over 0.5 slide.
    h = negative_slide([0.9, 0.99, 0.99, 0.99])  # peaks at columns 4, 12, 20, 28
    mask = np.zeros(h.shape, bool)
    mask[:, :8] = True  # holds only the first peak
    op = choose_operating_point(
        [NegativeHeatmap(h, mask, "tumour slide")], POST, target_fp_per_slide=0.25
    )
    assert op.n_regions == 1 and op.n_slides == 0
    assert op.slide_equivalents == pytest.approx(0.2)
    assert (
        f32(0.9) < op.threshold <= f32(0.9) + 1e-6
    )  # the 0.99 peaks outside the region do not count
    with pytest.raises(ValueError):
        choose_operating_point([NegativeHeatmap(h, np.ones((3, 3), bool))], POST)


def test_unreachable_target_takes_the_fewest_false_lesions() -> None:
    h = negative_slide([1.0])  # a false lesion of probability 1 survives every threshold
    op = choose_operating_point([NegativeHeatmap(h)], POST, target_fp_per_slide=0.0)
    assert op.false_lesions_per_slide == pytest.approx(1.0)
    assert "no threshold" in op.note


def test_false_lesions_are_counted_with_the_same_smoothing_and_minimum_size() -> None:
    # One isolated false cell at 0.9: with a 200 µm minimum size (4 cells of 50 µm) it is no
    # lesion, so the floor already meets the target.
    p = np.full((30, 30), 0.1, np.float32)
    p[10, 10] = 0.9
    h = Heatmap(p, (0.0, 0.0), 100.0, 100.0, 0.5)
    small = PostProcessing(smooth_sigma_um=0.0, extent_ratio=1.0, min_major_axis_um=200.0)
    assert choose_operating_point([NegativeHeatmap(h)], small, target_fp_per_slide=0).threshold == (
        pytest.approx(0.5)
    )
    none = PostProcessing(smooth_sigma_um=0.0, extent_ratio=1.0, min_major_axis_um=0.0)
    assert choose_operating_point(
        [NegativeHeatmap(h)], none, target_fp_per_slide=0
    ).threshold > f32(0.9)


def test_a_low_threshold_where_one_slide_merges_into_one_lesion_is_not_taken() -> None:
    """Regression: scanned from the bottom, a threshold at which one tumour-free slide's whole
    tissue is a single "false lesion" (and the others are clear) met a target of 0.25 per slide
    on 4 slides; above it that slide's three separate false peaks break the target again. The
    answer is the lowest threshold above which the target holds throughout."""
    post = PostProcessing(smooth_sigma_um=0.0, extent_ratio=1.0, min_major_axis_um=0.0)
    merged = negative_slide([0.5, 0.5, 0.5], background=0.3)  # 0.3 wall to wall, 3 peaks
    clear = [negative_slide([0.2]) for _ in range(3)]  # one 0.2 peak each
    negatives = [NegativeHeatmap(h) for h in (merged, *clear)]
    op = choose_operating_point(negatives, post, target_fp_per_slide=0.25, floor=0.05)
    # in (0.2, 0.3]: 1 lesion on 4 slides (the merged one), the target; in (0.3, 0.5]: 3
    assert op.threshold > f32(0.5) and op.false_lesions_per_slide == 0.0


def test_the_answer_does_not_depend_on_how_coarsely_the_thresholds_are_sampled() -> None:
    """The coarse scan tests at most ``max_candidates`` thresholds; where it stops, every
    candidate between its last two is tested, so a lower floor (more candidates, sampled
    differently) or a smaller budget gives the same threshold."""
    rng = np.random.default_rng(0)
    slides = [negative_slide(list(rng.uniform(0.55, 0.95, 6))) for _ in range(4)]
    for h in slides:  # many distinct background values: thousands of candidates
        h.probability[:] += rng.uniform(0.0, 0.02, h.shape).astype(np.float32)
    negatives = [NegativeHeatmap(h) for h in slides]
    exact = choose_operating_point(negatives, POST, max_candidates=100_000)
    for budget in (3, 17, 400):
        for floor in (0.05, 0.5):
            op = choose_operating_point(negatives, POST, max_candidates=budget, floor=floor)
            assert op.threshold == exact.threshold, (budget, floor)
            assert op.false_lesions_per_slide == exact.false_lesions_per_slide


def test_slide_equivalents_count_slides_and_the_share_of_normal_regions() -> None:
    h = negative_slide([])
    half = np.zeros(h.shape, bool)
    half[:, : h.shape[1] // 2] = True
    empty = np.zeros(h.shape, bool)
    negatives = [NegativeHeatmap(h), NegativeHeatmap(h, half), NegativeHeatmap(h, empty)]
    assert slide_equivalents(negatives) == pytest.approx(1.5)
    assert slide_equivalents([NegativeHeatmap(h, weight=0.25)]) == pytest.approx(0.25)
    assert slide_equivalents([]) == 0.0

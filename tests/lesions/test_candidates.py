"""Camelyon16 candidate detections on hand-made grids whose maxima are known."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions import extract_lesions
from qupath_rkd.lesions.candidates import BELOW_SEED, candidate_detections, local_maxima

ORIGIN = (1000.0, 2000.0)
STRIDE = 100.0  # level-0 px between tile centres
TILE = 200.0  # tiles overlap: the centre is half a tile, not half a stride, from the corner
MPP = 0.5  # so one stride is 50 µm


def make_heatmap(prob: np.ndarray) -> Heatmap:
    return Heatmap(np.asarray(prob, np.float32), ORIGIN, STRIDE, TILE, MPP)


def centre(r: int, c: int) -> tuple[float, float]:
    """Level-0 centre of tile (r, c), written out (not through the code under test)."""
    return ORIGIN[0] + TILE / 2 + c * STRIDE, ORIGIN[1] + TILE / 2 + r * STRIDE


def points(cands) -> list[tuple[float, float, float]]:
    return [
        (round(float(p), 5), float(x), float(y))
        for p, x, y in zip(cands.probs, cands.x_px, cands.y_px, strict=True)
    ]


def test_local_maxima_ignore_nan_cells_and_the_floor() -> None:
    p = np.full((5, 6), 0.01, np.float32)
    p[1, 1] = 0.3
    p[3, 4] = 0.2
    p[3, 5] = np.nan  # off tissue: neither a candidate nor a neighbour
    p[0, 5] = np.nan
    p[4, 0] = 0.04  # a maximum below the floor
    rows, cols = local_maxima(p, 0.05)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(1, 1), (3, 4)]
    # a NaN grid has no maxima, and a NaN cell is never one even with floor 0
    assert local_maxima(np.full((3, 3), np.nan), 0.0)[0].size == 0
    rows, cols = local_maxima(p, 0.0)
    assert not np.isnan(p[rows, cols]).any()


def test_sub_seed_maxima_follow_the_lesion_peaks_in_level0_px() -> None:
    p = np.full((8, 10), 0.02, np.float32)
    p[1:3, 1:3] = [[0.7, 0.9], [0.6, 0.8]]  # a lesion at seed 0.5, peak (1, 2)
    p[6, 8] = 0.3  # sub-seed maxima
    p[5, 2] = 0.1
    hm = make_heatmap(p)
    lesions = extract_lesions(hm, 0.5, min_major_axis_um=0.0)
    assert len(lesions) == 1
    cands = candidate_detections(hm, lesions, floor=0.05, nms_radius_um=0.0)
    # the lesion's peak once (no second candidate from its cells), then the maxima outside
    assert points(cands) == [
        (0.9, *centre(1, 2)),
        (0.3, *centre(6, 8)),
        (0.1, *centre(5, 2)),
    ]
    assert cands.is_lesion_peak.tolist() == [True, False, False]
    assert (cands.x_px[0], cands.y_px[0]) == lesions[0].peak_xy_px
    assert cands.probs[0] == lesions[0].max_probability


def test_the_floor_drops_weak_maxima_but_never_a_lesion_peak() -> None:
    p = np.full((6, 6), 0.0, np.float32)
    p[1, 1] = 0.6
    p[4, 4] = 0.08
    hm = make_heatmap(p)
    lesions = extract_lesions(hm, 0.5, min_major_axis_um=0.0)
    assert len(candidate_detections(hm, lesions, floor=0.05, nms_radius_um=0.0)) == 2
    assert len(candidate_detections(hm, lesions, floor=0.1, nms_radius_um=0.0)) == 1
    only = candidate_detections(hm, lesions, floor=1.0, nms_radius_um=0.0)
    assert points(only) == [(0.6, *centre(1, 1))]


def test_nms_drops_a_maximum_within_the_radius_of_a_higher_one() -> None:
    p = np.zeros((3, 12), np.float32)
    p[1, 1] = 0.4
    p[1, 4] = 0.3  # 3 strides = 150 µm from (1, 1)
    p[1, 9] = 0.2  # 250 µm from (1, 4), 400 µm from (1, 1)
    hm = make_heatmap(p)
    probs = {
        r: candidate_detections(hm, [], floor=0.05, nms_radius_um=r).probs.round(5).tolist()
        for r in (0.0, 100.0, 150.0, 260.0, 500.0)
    }
    assert probs[0.0] == [0.4, 0.3, 0.2]
    assert probs[100.0] == [0.4, 0.3, 0.2]
    assert probs[150.0] == [0.4, 0.2]  # within means <= the radius
    # (1, 9) is within 260 µm of (1, 4) only, which was suppressed: it stays
    assert probs[260.0] == [0.4, 0.2]
    assert probs[500.0] == [0.4]


def test_a_plateau_gives_one_candidate_with_nms_and_lesion_peaks_are_never_suppressed() -> None:
    p = np.zeros((4, 10), np.float32)
    p[1, 2:6] = 0.2  # a plateau: four maxima of the same value
    p[2, 8] = 0.9  # a one-cell lesion
    p[2, 9] = 0.95  # ... of two cells: peak (2, 9)
    hm = make_heatmap(p)
    lesions = extract_lesions(hm, 0.5, min_major_axis_um=0.0)
    assert len(local_maxima(p, 0.05)[0]) == 5  # the plateau's 4 cells and the lesion's peak
    cands = candidate_detections(hm, lesions, floor=0.05, nms_radius_um=200.0)
    # the plateau's first cell in row-major order is kept, the others within 150 µm dropped
    assert points(cands) == [(0.95, *centre(2, 9)), (0.2, *centre(1, 2))]
    # a lesion peak within the radius of a higher candidate (a maximum of a component the
    # minimum size dropped) is still submitted
    q = np.zeros((4, 10), np.float32)
    q[1, 1] = 0.99  # dropped by the minimum size below: a candidate, not a lesion
    q[1, 3:8] = 0.7  # a lesion 250 µm long, peak (1, 3), 100 µm from (1, 1)
    hm_q = make_heatmap(q)
    lesions_q = extract_lesions(hm_q, 0.5, min_major_axis_um=200.0)
    assert len(lesions_q) == 1
    cands_q = candidate_detections(hm_q, lesions_q, floor=0.05, nms_radius_um=500.0)
    assert points(cands_q) == [(0.99, *centre(1, 1)), (0.7, *centre(1, 3))]
    assert cands_q.is_lesion_peak.tolist() == [False, True]


@pytest.mark.parametrize("inside_lesions", [False, True])
def test_every_lesion_keeps_its_peak_once_at_any_radius(inside_lesions: bool) -> None:
    rng = np.random.default_rng(0)
    p = rng.random((20, 25)).astype(np.float32)
    p[rng.random(p.shape) < 0.1] = np.nan
    hm = make_heatmap(p)
    lesions = extract_lesions(hm, 0.8, min_major_axis_um=0.0)
    assert len(lesions) > 5
    rows, cols = local_maxima(p, 0.05)
    maxima = set(zip(*hm.to_level0_xy(rows, cols), strict=True))
    peak_cells = {les.peak_xy_px for les in lesions}
    for radius in (0.0, 60.0, 500.0):
        cands = candidate_detections(
            hm, lesions, floor=0.05, nms_radius_um=radius, inside_lesions=inside_lesions
        )
        at_peak = cands.is_lesion_peak
        peaks = sorted(zip(cands.x_px[at_peak], cands.y_px[at_peak], strict=True))
        assert peaks == sorted(peak_cells)
        assert np.all(np.diff(cands.probs) <= 0)  # highest first
        others = list(zip(cands.x_px[~at_peak], cands.y_px[~at_peak], strict=True))
        assert others or radius > 0
        assert not peak_cells & set(others)  # a lesion's peak cell is submitted once
        in_lesion = [any(les.polygon.intersects(Point(*xy)) for les in lesions) for xy in others]
        if inside_lesions and radius == 0:
            # every local maximum but the lesion peaks, inside the lesions too
            assert set(others) == maxima - peak_cells and any(in_lesion)
        if not inside_lesions:  # no candidate but a lesion peak lies in a lesion
            assert not any(in_lesion)
    # suppression removes maxima
    counts = [
        len(candidate_detections(hm, lesions, nms_radius_um=r, inside_lesions=inside_lesions))
        for r in (0.0, 500.0)
    ]
    assert counts[0] > counts[1] >= len(lesions)


def test_a_lesion_covering_two_maxima_submits_both_below_the_seed() -> None:
    # two bumps joined by a saddle above a low seed: one lesion, one peak
    p = np.full((3, 14), 0.02, np.float32)
    p[1, 1:13] = [0.4, 0.6, 0.9, 0.6, 0.4, 0.35, 0.3, 0.35, 0.45, 0.7, 0.5, 0.4]
    hm = make_heatmap(p)
    lesions = extract_lesions(hm, 0.25, min_major_axis_um=0.0)
    assert len(lesions) == 1 and lesions[0].peak_xy_px == centre(1, 3)
    inside = candidate_detections(hm, lesions, nms_radius_um=150.0, seed_threshold=0.25)
    # the second bump (1, 10), 350 µm from the peak, is submitted at its own probability
    assert points(inside) == [(0.9, *centre(1, 3)), (0.7, *centre(1, 10))]
    assert inside.is_lesion_peak.tolist() == [True, False]
    scaled = candidate_detections(
        hm, lesions, nms_radius_um=150.0, seed_threshold=0.25, below_seed="scale"
    )
    assert scaled.probs[1] == pytest.approx(0.7 * (0.25 - BELOW_SEED), abs=1e-7)  # float32 p
    outside = candidate_detections(
        hm, lesions, nms_radius_um=150.0, seed_threshold=0.25, inside_lesions=False
    )
    assert points(outside) == [(0.9, *centre(1, 3))]
    # at a seed between the saddle and the bumps the two are separate lesions: the same list
    split = extract_lesions(hm, 0.5, min_major_axis_um=0.0)
    assert len(split) == 2
    points_split = candidate_detections(hm, split, nms_radius_um=150.0, seed_threshold=0.5)
    assert points(points_split) == points(inside)
    # a maximum within the NMS radius of the lesion's own peak is suppressed, as outside
    near = candidate_detections(hm, lesions, nms_radius_um=400.0, seed_threshold=0.25)
    assert points(near) == [(0.9, *centre(1, 3))]


def test_the_count_is_capped_highest_first() -> None:
    p = np.zeros((21, 21), np.float32)
    p[::2, ::2] = np.linspace(0.1, 0.4, 121).reshape(11, 11)  # 121 isolated maxima
    hm = make_heatmap(p)
    every = candidate_detections(hm, [], nms_radius_um=0.0)
    assert len(every) == 121
    capped = candidate_detections(hm, [], nms_radius_um=0.0, max_candidates=10)
    np.testing.assert_array_equal(capped.probs, every.probs[:10])
    assert capped.probs.min() == pytest.approx(np.sort(p[::2, ::2].ravel())[-10])


def test_bad_arguments_raise() -> None:
    hm = make_heatmap(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="floor"):
        candidate_detections(hm, [], floor=1.5)
    with pytest.raises(ValueError, match="radius"):
        candidate_detections(hm, [], nms_radius_um=-1.0)
    with pytest.raises(ValueError, match="max_candidates"):
        candidate_detections(hm, [], max_candidates=0)


def test_with_the_seed_every_lesion_ranks_above_the_other_candidates() -> None:
    p = np.zeros((4, 12), np.float32)
    p[1, 1] = 0.99  # a component the minimum size drops: a candidate, not a lesion
    p[1, 3:8] = 0.7  # a lesion, peak (1, 3)
    p[2, 10] = 0.3
    hm = make_heatmap(p)
    lesions = extract_lesions(hm, 0.6, min_major_axis_um=200.0)
    assert len(lesions) == 1
    # outside the lesions only: the lesion's plateau cells are not candidates
    own = candidate_detections(hm, lesions, nms_radius_um=0.0, inside_lesions=False)
    assert points(own) == [(0.99, *centre(1, 1)), (0.7, *centre(1, 3)), (0.3, *centre(2, 10))]
    ranked = candidate_detections(
        hm, lesions, nms_radius_um=0.0, seed_threshold=0.6, inside_lesions=False, below_seed="clamp"
    )
    # the lesion first; the dropped component just below the seed, above the weaker maximum
    assert points(ranked) == [(0.7, *centre(1, 3)), (0.6, *centre(1, 1)), (0.3, *centre(2, 10))]
    assert ranked.probs[1] == pytest.approx(0.6 - BELOW_SEED, abs=1e-12)
    assert ranked.probs[1] < 0.6 and ranked.is_lesion_peak.tolist() == [True, False, False]
    # the ranking decides suppression: the lesion peak now suppresses its neighbour
    near = candidate_detections(
        hm,
        lesions,
        nms_radius_um=120.0,
        seed_threshold=0.6,
        inside_lesions=False,
        below_seed="clamp",
    )
    assert points(near) == [(0.7, *centre(1, 3)), (0.3, *centre(2, 10))]


def test_own_clamped_and_scaled_candidates() -> None:
    p = np.zeros((4, 14), np.float32)
    p[1, 1] = 0.99  # a component the minimum size drops
    p[1, 3:8] = 0.7  # a lesion, peak (1, 3)
    p[2, 10] = 0.8  # another dropped component
    p[2, 12] = 0.3  # a sub-seed maximum
    hm = make_heatmap(p)
    lesions = extract_lesions(hm, 0.6, min_major_axis_um=200.0)
    assert len(lesions) == 1
    kw = {"nms_radius_um": 0.0, "seed_threshold": 0.6, "inside_lesions": False}
    clamped = candidate_detections(hm, lesions, below_seed="clamp", **kw)
    # clamping ties the two dropped components just below the seed
    assert clamped.probs[1] == clamped.probs[2] == pytest.approx(0.6 - BELOW_SEED)
    scaled = candidate_detections(hm, lesions, below_seed="scale", **kw)
    below = 0.6 - BELOW_SEED
    assert points(scaled) == [
        (0.7, *centre(1, 3)),
        (round(0.99 * below, 5), *centre(1, 1)),
        (round(0.8 * below, 5), *centre(2, 10)),
        (round(0.3 * below, 5), *centre(2, 12)),
    ]
    assert len(set(scaled.probs.tolist())) == 4 and scaled.probs[1] < 0.6
    # the default: every candidate at its own probability, the seed plays no part
    own = candidate_detections(hm, lesions, **kw)
    assert points(own) == [
        (0.99, *centre(1, 1)),
        (0.8, *centre(2, 10)),
        (0.7, *centre(1, 3)),
        (0.3, *centre(2, 12)),
    ]
    assert points(own) == points(
        candidate_detections(hm, lesions, **{**kw, "seed_threshold": None})
    )
    with pytest.raises(ValueError, match="below_seed"):
        candidate_detections(hm, lesions, below_seed="nonsense", **kw)

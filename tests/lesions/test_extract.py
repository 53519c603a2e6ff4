"""Lesion extraction on hand-made heatmaps whose correct polygons are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions import extract_lesions, major_axis_cells

ORIGIN = (1000.0, 2000.0)


def make_heatmap(prob: np.ndarray, *, stride: float = 100.0, tile: float = 100.0, mpp: float = 1.0):
    return Heatmap(
        probability=np.asarray(prob, dtype=np.float32),
        origin_xy_px=ORIGIN,
        stride_level0_px=stride,
        tile_level0_px=tile,
        mpp=mpp,
    )


def cell_box(r0: int, c0: int, r1: int, c1: int) -> Polygon:
    """Footprint of grid cells rows r0..r1, cols c0..c1 (inclusive) for stride = tile = 100."""
    return box(
        ORIGIN[0] + 100 * c0,
        ORIGIN[1] + 100 * r0,
        ORIGIN[0] + 100 * (c1 + 1),
        ORIGIN[1] + 100 * (r1 + 1),
    )


def exact(heatmap: Heatmap, threshold: float = 0.5, **kw):
    kw.setdefault("min_major_axis_um", 0.0)
    return extract_lesions(heatmap, threshold, simplify_um=0.0, **kw)


def test_rectangle_polygon_peak_and_scores() -> None:
    p = np.zeros((5, 7), np.float32)
    p[1:3, 2:5] = [[0.6, 0.7, 0.8], [0.9, 0.55, 0.6]]
    (les,) = exact(make_heatmap(p))
    assert les.polygon.equals(cell_box(1, 2, 2, 4))
    assert les.max_probability == pytest.approx(0.9)
    assert les.mean_probability == pytest.approx(np.mean([0.6, 0.7, 0.8, 0.9, 0.55, 0.6]))
    assert les.area_um2 == pytest.approx(6 * 100 * 100)
    # Peak cell (2, 2): its tile centre.
    assert les.peak_xy_px == (ORIGIN[0] + 250.0, ORIGIN[1] + 250.0)
    assert les.n_cells == 6


def test_hole_is_filled_and_inner_values_do_not_count() -> None:
    p = np.zeros((5, 5), np.float32)
    p[1:4, 1:4] = 0.8
    p[2, 2] = np.nan  # no tissue in the middle of a lesion
    (les,) = exact(make_heatmap(p))
    assert isinstance(les.polygon, Polygon)
    assert len(les.polygon.interiors) == 0
    assert les.polygon.equals(cell_box(1, 1, 3, 3))
    assert les.n_cells == 9
    assert les.mean_probability == pytest.approx(0.8)


def test_island_inside_a_ring_merges_into_one_lesion() -> None:
    p = np.zeros((7, 7), np.float32)
    p[1:6, 1:6] = 0.7
    p[2:5, 2:5] = 0.1
    p[3, 3] = 0.95  # island in the hole
    lesions = exact(make_heatmap(p))
    assert len(lesions) == 1
    assert lesions[0].polygon.equals(cell_box(1, 1, 5, 5))
    assert lesions[0].max_probability == pytest.approx(0.95)


def test_diagonal_touch_is_one_lesion_of_two_squares() -> None:
    p = np.zeros((4, 4), np.float32)
    p[1, 1] = 0.9
    p[2, 2] = 0.8
    (les,) = exact(make_heatmap(p))
    assert isinstance(les.polygon, MultiPolygon)
    assert les.polygon.is_valid
    assert les.polygon.equals(shapely.union(cell_box(1, 1, 1, 1), cell_box(2, 2, 2, 2)))
    assert les.n_cells == 2


def test_one_cell_gap_gives_two_lesions() -> None:
    p = np.zeros((3, 5), np.float32)
    p[1, 0] = 0.9
    p[1, 2] = 0.7
    lesions = exact(make_heatmap(p))
    assert [round(les.max_probability, 2) for les in lesions] == [0.9, 0.7]
    assert lesions[0].polygon.equals(cell_box(1, 0, 1, 0))


def test_image_border_and_open_bay_is_not_a_hole() -> None:
    # A "U" touching the top border: the bay is open to the border, so it stays out.
    p = np.array([[1, 0, 1], [1, 0, 1], [1, 1, 1]], np.float32)
    (les,) = exact(make_heatmap(p))
    expected = shapely.union_all([cell_box(0, 0, 2, 0), cell_box(0, 2, 2, 2), cell_box(2, 0, 2, 2)])
    assert les.polygon.equals(expected)
    assert les.n_cells == 7
    minx, miny, maxx, maxy = les.polygon.bounds
    assert (minx, miny, maxx, maxy) == (ORIGIN[0], ORIGIN[1], ORIGIN[0] + 300, ORIGIN[1] + 300)


def test_whole_grid_above_threshold() -> None:
    p = np.full((3, 4), 0.6, np.float32)
    (les,) = exact(make_heatmap(p))
    assert les.polygon.equals(cell_box(0, 0, 2, 3))


def test_overlapping_tiles_use_the_stride_square_around_the_tile_centre() -> None:
    p = np.zeros((3, 3), np.float32)
    p[1, 1] = 0.9
    (les,) = exact(make_heatmap(p, stride=50.0, tile=100.0))
    # Tile (1, 1) spans [50, 150) from the origin; its centre is 100; footprint [75, 125).
    assert les.polygon.equals(box(ORIGIN[0] + 75, ORIGIN[1] + 75, ORIGIN[0] + 125, ORIGIN[1] + 125))
    assert les.peak_xy_px == (ORIGIN[0] + 100.0, ORIGIN[1] + 100.0)


def test_threshold_is_inclusive_and_nan_never_counts() -> None:
    p = np.array([[0.5, np.nan, 0.49]], np.float32)
    (les,) = exact(make_heatmap(p))
    assert les.polygon.equals(cell_box(0, 0, 0, 0))
    assert exact(make_heatmap(np.full((2, 2), np.nan, np.float32))) == []
    with pytest.raises(ValueError, match="threshold"):
        extract_lesions(make_heatmap(p), 1.5)


def test_isolated_tumour_cells_are_dropped_by_major_axis() -> None:
    # cell = 100 µm. One cell: major axis 4/sqrt(12) = 115 µm < 200 -> dropped.
    # 2 x 2 block: 4*sqrt(1/3) = 231 µm -> kept.
    p = np.zeros((6, 6), np.float32)
    p[0, 0] = 0.9
    p[3:5, 3:5] = 0.8
    lesions = extract_lesions(make_heatmap(p), 0.5, simplify_um=0.0)
    assert len(lesions) == 1
    assert lesions[0].polygon.equals(cell_box(3, 3, 4, 4))
    assert lesions[0].major_axis_um == pytest.approx(400 / math.sqrt(3))
    # With finer cells (µm/px halves) the same 2x2 block is only 115 µm: dropped.
    assert extract_lesions(make_heatmap(p, mpp=0.5), 0.5) == []


def test_major_axis_of_a_filled_disc_is_its_diameter() -> None:
    rr, cc = np.mgrid[-60:61, -60:61]
    inside = rr**2 + cc**2 <= 50**2
    assert major_axis_cells(rr[inside], cc[inside]) == pytest.approx(100.0, rel=0.01)
    line_r = np.zeros(10, int)
    line_c = np.arange(10)
    # A 1 x 10 bar: variance along it (100 - 1)/12 + 1/12 -> 4 * sqrt(100/12).
    assert major_axis_cells(line_r, line_c) == pytest.approx(4 * math.sqrt(100 / 12))


def on_tile_grid(geom: Polygon | MultiPolygon, hm: Heatmap) -> bool:
    """Whether every vertex of ``geom`` lies on the grid of cell footprint corners and every
    edge is axis-aligned (level-0 px; corners at ``to_level0_xy(r - 1/2, c - 1/2)``)."""
    x0, y0 = hm.to_level0_xy(-0.5, -0.5)
    step = hm.stride_level0_px
    parts = list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]
    for part in parts:
        for ring in [part.exterior, *part.interiors]:
            xy = np.asarray(ring.coords)
            k = (xy - [float(x0), float(y0)]) / step
            if not np.allclose(k, np.round(k), atol=1e-9):
                return False
            d = np.diff(xy, axis=0)
            if not np.all((np.abs(d[:, 0]) < 1e-9) | (np.abs(d[:, 1]) < 1e-9)):
                return False
    return True


def test_default_outline_is_the_exact_tile_outline_without_diagonals() -> None:
    rr, cc = np.mgrid[0:40, 0:40]
    p = ((rr - 20) ** 2 + (cc - 20) ** 2 <= 15**2).astype(np.float32)
    hm = make_heatmap(p)
    (raw,) = exact(hm)
    for simplify_um in (None, 50.0, 500.0):
        (les,) = extract_lesions(hm, 0.5, simplify_um=simplify_um)
        assert les.polygon.is_valid and les.polygon.equals(raw.polygon)
        assert on_tile_grid(les.polygon, hm)
        assert les.area_um2 == pytest.approx(les.n_cells * hm.cell_um**2)
    # Collinear vertices are dropped: a 2 x 3 block is a rectangle of 4 corners.
    q = np.zeros((4, 5), np.float32)
    q[1:3, 1:4] = 0.9
    (block,) = exact(make_heatmap(q))
    assert len(block.polygon.exterior.coords) == 5
    with pytest.raises(ValueError, match="simplify_um"):
        extract_lesions(hm, 0.5, simplify_um=-1.0)


def ragged_lesion() -> np.ndarray:
    """One 8-connected lesion of ten blocks touching only at corners (the LN-03 case: one
    lesion traced as ten polygons), plus a ring whose hole is filled and a separate blob."""
    p = np.zeros((40, 40), np.float32)
    for k in range(10):  # 2 x 2 blocks along a diagonal, each touching the next at a corner
        p[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = 0.6 + 0.03 * k
    p[30:37, 2:9] = 0.7  # a ring ...
    p[32:35, 4:7] = 0.1  # ... around a low hole ...
    p[33, 5] = 0.99  # ... holding the slide's peak
    p[2:5, 30:36] = 0.8  # a plain block
    return p


@pytest.mark.parametrize("simplify_um", [None, 0.0, 150.0])
def test_lesion_in_several_parts_is_one_multipolygon_with_its_peak_inside(
    simplify_um: float | None,
) -> None:
    hm = make_heatmap(ragged_lesion(), stride=50.0, tile=100.0, mpp=0.5)
    lesions = extract_lesions(hm, 0.5, simplify_um=simplify_um, min_major_axis_um=0.0)
    assert len(lesions) == 3
    ring, chain, _block = lesions  # by maximum probability: 0.99, 0.87, 0.8
    assert chain.max_probability == pytest.approx(0.87)
    assert isinstance(chain.polygon, MultiPolygon) and len(chain.polygon.geoms) == 10
    assert isinstance(ring.polygon, Polygon) and not ring.polygon.interiors  # hole filled
    assert ring.n_cells == 49 and ring.max_probability == pytest.approx(0.99)
    cell_area_um2 = hm.cell_um**2
    for les in lesions:
        assert les.polygon.is_valid
        assert on_tile_grid(les.polygon, hm)
        assert les.polygon.contains(shapely.Point(les.peak_xy_px))
        # The area is that of the whole object: all its parts, once.
        assert les.area_um2 == pytest.approx(les.polygon.area * hm.mpp**2)
        assert les.area_um2 == pytest.approx(les.n_cells * cell_area_um2)
    assert chain.n_cells == 40
    # The peak is the centre of the highest tile, which is inside the outline.
    assert ring.peak_xy_px == tuple(float(v) for v in hm.to_level0_xy(33, 5))


def test_inputs_are_not_modified() -> None:
    p = np.zeros((4, 4), np.float32)
    p[1:3, 1:3] = 0.9
    p[0, 0] = np.nan
    before = p.copy()
    exact(make_heatmap(p))
    np.testing.assert_array_equal(p, before)

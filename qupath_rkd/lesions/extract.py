"""Heatmap → lesion polygons.

threshold → 8-connected components → holes filled → components whose major axis is under the
minimum (default 200 µm, the isolated-tumour-cell limit) dropped → one outline per lesion in
level-0 ``(x, y)`` pixels: the exact union of its cells' footprints, so every edge lies on a tile
edge (axis-aligned, never a diagonal across a tile); vertices in the middle of a straight edge are
dropped, nothing else. A lesion whose cells touch only at corners is one ``MultiPolygon`` (one
QuPath object), never several objects. Each lesion carries its maximum and mean probability, its
area in µm² (the area of that outline) and the level-0 location of its peak, which lies inside
the outline.

Frames: the heatmap is indexed ``(row, col)``; polygons and peaks are level-0 ``(x, y)`` pixels in
QuPath's frame. The only conversion is :func:`qupath_rkd.heatmap.cell_to_level0_xy`
(a cell's value sits at its tile centre; its footprint is the grid-spacing square around it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, Point, Polygon

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions.postprocess import hysteresis_mask

logger = logging.getLogger(__name__)

#: Isolated tumour cells: clusters no larger than 0.2 mm (AJCC/UICC TNM).
ITC_MAX_UM = 200.0

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Lesion:
    """One predicted lesion.

    Attributes:
        polygon: ``Polygon`` (or ``MultiPolygon`` when parts touch only at a corner, which a valid
            single polygon cannot express) in level-0 ``(x, y)`` pixels, QuPath frame; holes
            filled; every vertex on the tile grid (``origin + (k - 1/2) * stride`` ± half a tile,
            see :func:`component_polygon`). The whole lesion: one object, however many parts.
        max_probability: highest calibrated probability of its cells above the threshold.
        mean_probability: mean calibrated probability of its cells above the threshold.
        area_um2: area of ``polygon`` in µm² (= ``n_cells`` × cell side², all parts together).
        peak_xy_px: level-0 ``(x, y)`` of the centre of its highest cell (the Camelyon16 point);
            inside ``polygon`` (a cell's centre is inside its own footprint square).
        major_axis_um: major axis of the ellipse with the same second moments as its footprint.
        n_cells: heatmap cells in the component after hole filling.
    """

    polygon: Polygon | MultiPolygon
    max_probability: float
    mean_probability: float
    area_um2: float
    peak_xy_px: tuple[float, float]
    major_axis_um: float
    n_cells: int


def major_axis_cells(rows: np.ndarray, cols: np.ndarray) -> float:
    """Major axis (in cells) of the ellipse with the second moments of a set of unit squares.

    Each cell counts as a filled unit square (its own variance 1/12 per axis is added to the
    spread of the centres), so the length does not collapse to 0 for a single cell and is exact
    for a filled disc or ellipse: a disc of diameter ``d`` cells gives ``d``.

    Args:
        rows, cols: ``(N,)`` integer cell coordinates of the component.
    """
    if rows.size == 0:
        return 0.0
    r = rows.astype(np.float64)
    c = cols.astype(np.float64)
    var_r = r.var() + 1.0 / 12.0
    var_c = c.var() + 1.0 / 12.0
    cov = float(np.mean((r - r.mean()) * (c - c.mean())))
    half_trace = 0.5 * (var_r + var_c)
    lam_max = half_trace + math.sqrt(max(0.25 * (var_r - var_c) ** 2 + cov * cov, 0.0))
    return 4.0 * math.sqrt(lam_max)


def component_polygon(
    component: np.ndarray, heatmap: Heatmap, offset_rc: tuple[int, int] = (0, 0)
) -> Polygon | MultiPolygon:
    """Exact union of the footprints of the ``True`` cells of ``component``, in level-0 px.

    Every edge lies on a tile edge (the footprint of cell ``(r, c)`` is the stride square
    centred on its tile centre); vertices in the middle of a straight edge are removed.

    Args:
        component: ``(h, w)`` bool, a crop of the grid whose cell ``(0, 0)`` is grid
            ``offset_rc``.
        heatmap: gives the grid geometry.
        offset_rc: grid ``(row, col)`` of ``component[0, 0]``.
    """
    boxes: list[Polygon] = []
    r0, c0 = offset_rc
    for i in range(component.shape[0]):
        row = component[i]
        if not row.any():
            continue
        padded = np.concatenate(([False], row, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        starts, stops = edges[0::2], edges[1::2] - 1  # inclusive column runs
        x_lo, y_lo = heatmap.to_level0_xy(r0 + i - 0.5, c0 + starts - 0.5)
        x_hi, y_hi = heatmap.to_level0_xy(r0 + i + 0.5, c0 + stops + 0.5)
        boxes.extend(
            shapely.box(x_lo[k], float(y_lo), x_hi[k], float(y_hi)) for k in range(starts.size)
        )
    merged = shapely.union_all(boxes)
    # Tolerance 0 drops only vertices exactly on the straight line through their neighbours:
    # the outline keeps every corner of the staircase, so it never cuts across a tile.
    merged = shapely.normalize(shapely.simplify(merged, 0.0, preserve_topology=True))
    if isinstance(merged, (Polygon, MultiPolygon)):
        return merged
    raise AssertionError(f"union of cell squares gave {merged.geom_type}")  # pragma: no cover


def extract_lesions(
    heatmap: Heatmap,
    threshold: float,
    *,
    min_major_axis_um: float = ITC_MAX_UM,
    simplify_um: float | None = None,
    extent_threshold: float | None = None,
) -> list[Lesion]:
    """Lesions of a heatmap, highest ``max_probability`` first.

    Args:
        heatmap: calibrated probabilities ``(rows, cols)``, NaN off tissue.
        threshold: a cell belongs to a lesion when its probability is ``>= threshold``.
        min_major_axis_um: components whose major axis (:func:`major_axis_cells` × cell side) is
            under this are dropped (default 200 µm: isolated tumour cells). 0 keeps all.
        simplify_um: outline tolerance in µm, ``>= 0`` or ``None``. Outlines always follow tile
            edges: the only simplification that keeps them there is dropping vertices on a
            straight edge, which moves nothing, so every tolerance gives the exact tile outline
            (a Douglas–Peucker tolerance, as before, cut diagonally across tiles and made the
            area and the peak disagree with the outline). Kept so that ``--simplify-um`` still
            parses.
        extent_threshold: hysteresis (:func:`~qupath_rkd.lesions.postprocess.hysteresis_mask`):
            cells ``>= extent_threshold`` 8-connected to a cell ``>= threshold`` (the seed).
            ``None``: one threshold.

    Returns:
        Lesions; an empty list when nothing reaches the threshold.
    """
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"lesion threshold must be a probability in [0, 1], got {threshold}")
    prob = heatmap.probability
    extent = threshold if extent_threshold is None else float(extent_threshold)
    above = hysteresis_mask(prob, threshold, extent)
    if not above.any():
        return []
    # Background is 4-connected (the default cross), the complement of 8-connected foreground.
    filled = ndimage.binary_fill_holes(above)
    labels, n = ndimage.label(filled, structure=_EIGHT_CONNECTED)
    if simplify_um is not None and not (math.isfinite(simplify_um) and simplify_um >= 0):
        raise ValueError(f"simplify_um must be a length >= 0 in µm, got {simplify_um}")
    cell_um = heatmap.cell_um
    lesions: list[Lesion] = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:  # pragma: no cover - labels are consecutive
            continue
        comp = labels[sl] == k
        rr, cc = np.nonzero(comp)
        major_um = major_axis_cells(rr, cc) * cell_um
        if major_um < min_major_axis_um:
            continue
        hot = comp & above[sl]
        values = prob[sl][hot].astype(np.float64)
        hot_r, hot_c = np.nonzero(hot)
        i_peak = int(np.argmax(values))  # first maximum in row-major order
        peak_x, peak_y = heatmap.to_level0_xy(
            sl[0].start + hot_r[i_peak], sl[1].start + hot_c[i_peak]
        )
        poly = component_polygon(comp, heatmap, (sl[0].start, sl[1].start))
        if not poly.contains(Point(float(peak_x), float(peak_y))):  # pragma: no cover
            raise AssertionError(f"lesion peak ({peak_x}, {peak_y}) outside its outline")
        lesions.append(
            Lesion(
                polygon=poly,
                max_probability=float(values.max()),
                mean_probability=float(values.mean()),
                area_um2=float(poly.area * heatmap.mpp**2),
                peak_xy_px=(float(peak_x), float(peak_y)),
                major_axis_um=float(major_um),
                n_cells=int(rr.size),
            )
        )
    lesions.sort(key=lambda les: (-les.max_probability, les.peak_xy_px[1], les.peak_xy_px[0]))
    logger.debug("%d components, %d lesions kept (threshold %.3f)", n, len(lesions), threshold)
    return lesions

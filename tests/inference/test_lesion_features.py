"""Lesions as QuPath detections: one object per lesion, whose measurements add up in QuPath.

Regression for issue 11: on the demo's LN-03, 9 lesions became 29 detection objects, 10 of them
named "qupath-rkd lesion 1" each with the whole lesion's Area, so summing Area in QuPath gave
3.709 mm² against 0.618 mm² predicted; the peak point lay outside most pieces and outlines cut
diagonally across tiles. Here a heatmap with one lesion in ten corner-touching parts, a lesion
with a (filled) hole and seven simple ones — nine lesions, as on LN-03 — goes through
``lesion_features`` and the GeoJSON writer and is read back as QuPath would read it.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import numpy as np
import pytest
import shapely
from scipy import ndimage

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.inference.write import lesion_features
from qupath_rkd.lesions import extract_lesions
from qupath_rkd.qupath.geojson import features_to_json, parse_features, qupath_import_problems

if TYPE_CHECKING:
    from qupath_rkd.inference.predict import SlidePrediction

THRESHOLD = 0.5


def nine_lesions() -> Heatmap:
    """``(60, 60)`` probabilities on a grid of 64 level-0 px tiles at 0.25 µm/px (16 µm cells),
    origin (320, 640) px: lesion A is ten 3 x 3 blocks touching only at corners, B a 9 x 9 ring
    around a low centre, C..I 3 x 4 blocks."""
    p = np.full((60, 60), 0.1, np.float32)
    for k in range(10):
        p[3 * k : 3 * k + 3, 3 * k : 3 * k + 3] = 0.55 + 0.04 * k
    p[40:49, 2:11] = 0.75
    p[42:47, 4:9] = 0.2
    p[5:8, 50:54] = 0.6
    for j in range(6):
        p[50:53, 14 + 7 * j : 18 + 7 * j] = 0.52 + 0.01 * j
    p[0, 0] = np.nan  # off tissue
    return Heatmap(
        probability=p,
        origin_xy_px=(320.0, 640.0),
        stride_level0_px=64.0,
        tile_level0_px=64.0,
        mpp=0.25,
    )


def written(hm: Heatmap, **kw: float | None) -> tuple[list, list[dict]]:
    lesions = extract_lesions(hm, THRESHOLD, min_major_axis_um=0.0, **kw)
    pred = cast("SlidePrediction", SimpleNamespace(lesions=lesions))
    data = json.loads(features_to_json(lesion_features(pred, "key", "LN-03")))
    return lesions, data


@pytest.mark.parametrize("simplify_um", [None, 8.0, 0.0])
def test_one_detection_per_lesion_whose_areas_add_up(simplify_um: float | None) -> None:
    hm = nine_lesions()
    lesions, data = written(hm, simplify_um=simplify_um)
    assert qupath_import_problems(data) == []
    objects = parse_features(data, source="lesions.geojson")
    assert len(lesions) == 9 and len(objects) == 9
    names = [o.name for o in objects]
    assert len(set(names)) == 9 and names[0] == "qupath-rkd lesion 1"
    assert all(o.object_type == "detection" and o.class_name == "Tumor" for o in objects)
    # The ten-part lesion is one MultiPolygon object.
    parts = sorted(len(getattr(o.geometry, "geoms", [o.geometry])) for o in objects)
    assert parts == [1] * 8 + [10]
    # Summing Area over the objects gives the predicted area: the thresholded cells with
    # holes filled, counted once (independent of the polygons).
    filled = ndimage.binary_fill_holes(np.nan_to_num(hm.probability, nan=0.0) >= THRESHOLD)
    predicted_um2 = float(filled.sum()) * hm.cell_um**2
    total_um2 = sum(o.measurements["Area µm^2"] for o in objects)
    assert total_um2 == pytest.approx(predicted_um2)
    assert total_um2 == pytest.approx(sum(les.area_um2 for les in lesions))
    x0, y0 = (float(v) for v in hm.to_level0_xy(-0.5, -0.5))
    for obj in objects:
        geom = obj.geometry
        # measurements are those of this object
        assert obj.measurements["Area µm^2"] == pytest.approx(geom.area * hm.mpp**2, rel=1e-6)
        peak = shapely.Point(obj.measurements["Peak x px"], obj.measurements["Peak y px"])
        assert geom.contains(peak)
        # every vertex on the tile grid, every edge along a tile edge
        for poly in getattr(geom, "geoms", [geom]):
            assert not poly.interiors  # the ring's hole is filled
            xy = np.asarray(poly.exterior.coords)
            k = (xy - [x0, y0]) / hm.stride_level0_px
            np.testing.assert_allclose(k, np.round(k), atol=1e-6)
            step = np.abs(np.diff(xy, axis=0))
            assert np.all(np.minimum(step[:, 0], step[:, 1]) < 1e-6), "diagonal edge"

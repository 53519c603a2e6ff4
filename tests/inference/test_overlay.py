"""The heatmap PNG overlay puts each cell's colour on the thumbnail pixels of its footprint."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.inference.write import colormap, overlay_png


def test_cells_land_on_their_footprint_and_nan_leaves_the_slide_visible() -> None:
    p = np.full((4, 5), np.nan, np.float32)
    p[1, 2] = 1.0
    p[2, 3] = 0.0
    hm = Heatmap(p, (0.0, 0.0), 100.0, 100.0, 1.0)
    thumb = np.full((50, 60, 3), 200, np.uint8)  # 10 level-0 px per thumbnail px
    png = overlay_png(thumb, 10.0, hm, threshold=0.5, title="t", alpha=0.5)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    body = img[28 : 28 + 50, :60]  # below the 28-px title band
    # cell (1, 2) spans x 200-300, y 100-200 level-0 -> thumbnail cols 20-29, rows 10-19
    want_hi = np.round(0.5 * 200 + 0.5 * colormap(np.array(1.0)).astype(float))
    want_lo = np.round(0.5 * 200 + 0.5 * colormap(np.array(0.0)).astype(float))
    assert np.abs(body[10:20, 20:30] - want_hi).max() <= 1
    assert np.abs(body[20:30, 30:40] - want_lo).max() <= 1
    untouched = np.ones((50, 60), bool)
    untouched[10:20, 20:30] = untouched[20:30, 30:40] = False
    assert (body[untouched] == 200).all()
    assert img.shape[1] == 60 + 110  # the colour bar on the right

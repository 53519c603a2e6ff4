"""Slides -> tiles: open whole-slide images at a known µm/px, find tissue, lay tile grids.

Coordinates are level-0 (x, y) pixels in QuPath's frame throughout. The semi-real slide builder
(test and demo slides) is in :mod:`qupath_rkd.demo`.
"""

from __future__ import annotations

from qupath_rkd.slides.grid import TileGrid, tile_grid
from qupath_rkd.slides.reader import Slide, open_slide
from qupath_rkd.slides.tissue import TissueMask, tissue_mask

__all__ = [
    "Slide",
    "TileGrid",
    "TissueMask",
    "open_slide",
    "tile_grid",
    "tissue_mask",
]

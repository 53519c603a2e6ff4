"""A grid of tiles over the tissue of a slide, at a target µm/px.

Grid cell ``(row, col)`` starts at level-0 ``(col * stride_level0_px, row * stride_level0_px)``
(rounded to whole pixels) in QuPath's frame and covers ``tile_level0_px`` level-0 pixels on a
side. Only whole tiles inside the slide are laid; their order is row-major, so it is the same on
every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qupath_rkd.constants import DEFAULT_MIN_TISSUE_FRACTION
from qupath_rkd.slides.reader import Slide
from qupath_rkd.slides.tissue import TissueMask, tissue_mask

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True)
class TileGrid:
    """Tiles over tissue.

    Attributes:
        xy_px: (N, 2) int64, level-0 top-left (x, y) of each tile, QuPath's frame, row-major.
        rc: (N, 2) int64, grid (row, col) of each tile.
        grid_shape: (rows, cols) of the full grid (tissue or not).
        tile_px: tile side in pixels at ``tile_mpp``.
        stride_px: stride in pixels at ``tile_mpp``.
        tile_mpp: target µm/px of the tiles.
        tile_level0_px: tile side in level-0 pixels.
        stride_level0_px: stride in level-0 pixels.
        tissue_fraction: (N,) float32, fraction of each tile covered by the tissue mask.
    """

    xy_px: np.ndarray
    rc: np.ndarray
    grid_shape: tuple[int, int]
    tile_px: int
    stride_px: int
    tile_mpp: float
    tile_level0_px: float
    stride_level0_px: float
    tissue_fraction: np.ndarray

    def __len__(self) -> int:
        return int(self.xy_px.shape[0])

    def centres_px(self) -> np.ndarray:
        """(N, 2) float64 level-0 (x, y) centre of each tile."""
        return self.xy_px.astype(np.float64) + self.tile_level0_px / 2.0


def _integral(mask: np.ndarray) -> np.ndarray:
    """Summed-area table with a zero first row and column: (rows + 1, cols + 1) int64."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return table


def _box_fraction(
    table: np.ndarray, r0: np.ndarray, c0: np.ndarray, r1: np.ndarray, c1: np.ndarray
) -> np.ndarray:
    """Mean of the mask over half-open boxes [r0, r1) × [c0, c1) using a summed-area table."""
    total = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
    area = np.maximum((r1 - r0) * (c1 - c0), 1)
    return total / area


def tile_grid(
    slide: Slide,
    tile_px: int,
    tile_mpp: float,
    *,
    stride_px: int | None = None,
    min_tissue_fraction: float = DEFAULT_MIN_TISSUE_FRACTION,
    mask: TissueMask | None = None,
    region: BaseGeometry | None = None,
) -> TileGrid:
    """Lay a grid of tiles at ``tile_mpp`` µm/px over the slide's tissue.

    Args:
        slide: an open slide with a known µm/px.
        tile_px: tile side in pixels at ``tile_mpp``.
        tile_mpp: target µm/px (not finer than the slide's level 0).
        stride_px: step between tiles in pixels at ``tile_mpp`` (default ``tile_px``:
            non-overlapping).
        min_tissue_fraction: keep tiles whose tissue cover is at least this (0 keeps every
            tile inside the slide).
        mask: a tissue mask (computed with :func:`tissue_mask` defaults when not given).
        region: optional shapely geometry in level-0 pixels; only tiles whose centre lies
            inside it are kept.
    """
    if tile_px <= 0 or (stride_px is not None and stride_px <= 0):
        raise ValueError("tile_px and stride_px must be positive")
    stride_px = tile_px if stride_px is None else stride_px
    downsample = slide.downsample_for(tile_mpp)
    tile0 = tile_px * downsample
    stride0 = stride_px * downsample
    cols = max(0, math.floor((slide.width_px - tile0) / stride0 + 1e-9) + 1)
    rows = max(0, math.floor((slide.height_px - tile0) / stride0 + 1e-9) + 1)
    if slide.width_px < tile0 or slide.height_px < tile0:
        rows = cols = 0
    rr, cc = np.meshgrid(
        np.arange(rows, dtype=np.int64), np.arange(cols, dtype=np.int64), indexing="ij"
    )
    rc = np.stack([rr.ravel(), cc.ravel()], axis=1)
    xy = np.stack(
        [np.floor(rc[:, 1] * stride0 + 1e-9), np.floor(rc[:, 0] * stride0 + 1e-9)], axis=1
    ).astype(np.int64)
    if min_tissue_fraction > 0 and len(rc):
        mask = tissue_mask(slide) if mask is None else mask
        table = _integral(mask.mask)
        ds = mask.downsample
        mrows, mcols = mask.mask.shape
        c0 = np.clip(np.floor(xy[:, 0] / ds).astype(np.int64), 0, mcols)
        r0 = np.clip(np.floor(xy[:, 1] / ds).astype(np.int64), 0, mrows)
        c1 = np.clip(np.ceil((xy[:, 0] + tile0) / ds).astype(np.int64), 0, mcols)
        r1 = np.clip(np.ceil((xy[:, 1] + tile0) / ds).astype(np.int64), 0, mrows)
        fraction = _box_fraction(table, r0, c0, r1, c1).astype(np.float32)
    else:
        fraction = np.ones(len(rc), dtype=np.float32)
    keep = fraction >= min_tissue_fraction if min_tissue_fraction > 0 else np.ones(len(rc), bool)
    if region is not None and len(rc):
        import shapely

        centres = xy.astype(np.float64) + tile0 / 2.0
        keep &= shapely.contains_xy(region, centres[:, 0], centres[:, 1])
    return TileGrid(
        xy_px=xy[keep],
        rc=rc[keep],
        grid_shape=(rows, cols),
        tile_px=tile_px,
        stride_px=stride_px,
        tile_mpp=tile_mpp,
        tile_level0_px=tile0,
        stride_level0_px=stride0,
        tissue_fraction=fraction[keep],
    )

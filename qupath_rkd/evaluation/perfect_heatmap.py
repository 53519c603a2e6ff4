"""The truth-derived "perfect" heatmap: what a flawless patch model would give on a slide.

Each cell's value is the share of its tile (the ``tile_level0_px`` square the model would read,
top-left at ``col × stride, row × stride``) covered by the truth tumour polygons; cells whose
tile is less than ``min_tissue_fraction`` tissue are NaN, as in a real prediction. Running the
same post-processing on it and on a model's heatmap separates what the post-processing loses
from what the patch model gets wrong.

Frames: polygons are level-0 ``(x, y)`` px; the heatmap is ``(row, col)`` with the geometry of
:class:`qupath_rkd.heatmap.Heatmap` (origin ``(0, 0)``, value at the tile centre).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from qupath_rkd.constants import DEFAULT_MIN_TISSUE_FRACTION
from qupath_rkd.evaluation.camelyon16 import rasterize
from qupath_rkd.heatmap import Heatmap


def _clipped_ranges(starts: np.ndarray, size: int, axis_len: int) -> np.ndarray:
    """``(len(starts), 2)`` half-open ``[start, start + size)`` ranges clipped to the axis."""
    lo = np.clip(starts, 0, axis_len)
    hi = np.clip(starts + size, 0, axis_len)
    return np.stack([lo, hi], axis=1)


def tile_fractions(
    mask: np.ndarray, raster_ds: float, tile_level0_px: float, stride_level0_px: float, grid: tuple
) -> np.ndarray:
    """``(rows, cols)`` share of each tile's raster pixels that are ``True`` in ``mask``.

    Args:
        mask: ``(H, W)`` bool raster of the slide at ``raster_ds`` level-0 px per pixel.
        grid: ``(rows, cols)`` of the tile grid.
    """
    rows, cols = grid
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    size = max(1, round(tile_level0_px / raster_ds))
    r_idx = _clipped_ranges(
        np.round(np.arange(rows) * stride_level0_px / raster_ds).astype(int),
        size,
        mask.shape[0],
    )
    c_idx = _clipped_ranges(
        np.round(np.arange(cols) * stride_level0_px / raster_ds).astype(int),
        size,
        mask.shape[1],
    )
    r0, r1 = r_idx[:, 0][:, None], r_idx[:, 1][:, None]
    c0, c1 = c_idx[:, 0][None, :], c_idx[:, 1][None, :]
    total = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    area = np.maximum((r1 - r0) * (c1 - c0), 1)
    return total / area


def perfect_heatmap(
    tumor: Sequence[Any],
    *,
    slide_size_px: tuple[int, int],
    mpp: float,
    tile_level0_px: float,
    stride_level0_px: float,
    tissue: Any | None = None,
    exclude: Sequence[Any] = (),
    min_tissue_fraction: float = DEFAULT_MIN_TISSUE_FRACTION,
    raster_ds: float = 4.0,
) -> Heatmap:
    """The heatmap a flawless model would give: tumour share of each tile.

    Args:
        tumor: truth tumour polygons (level-0 px; holes are not tumour).
        slide_size_px: level-0 ``(width, height)``.
        mpp: level-0 µm/px.
        tile_level0_px, stride_level0_px: the tile grid (level-0 px).
        tissue: the tissue region (level-0 px); ``None``: everything is tissue.
        exclude: non-tumour islands cut out of the tumour (Camelyon16 ``negative``).
        min_tissue_fraction: tiles with less tissue are NaN (not scored).
        raster_ds: level-0 px per raster pixel used to measure the shares.

    Returns:
        A :class:`Heatmap` of float32 shares in [0, 1], NaN off tissue.
    """
    width, height = slide_size_px
    cols = max(0, math.floor((width - tile_level0_px) / stride_level0_px) + 1)
    rows = max(0, math.floor((height - tile_level0_px) / stride_level0_px) + 1)
    shape = (math.ceil(height / raster_ds), math.ceil(width / raster_ds))
    polys = [p for p in tumor if not p.is_empty]
    if polys:
        t_mask = rasterize(
            polys, exclude, origin_xy_px=(0.0, 0.0), downsample=raster_ds, shape=shape
        )
    else:
        t_mask = np.zeros(shape, bool)
    prob = tile_fractions(t_mask, raster_ds, tile_level0_px, stride_level0_px, (rows, cols))
    if tissue is not None:
        parts = list(getattr(tissue, "geoms", [tissue]))
        s_mask = rasterize(parts, [], origin_xy_px=(0.0, 0.0), downsample=raster_ds, shape=shape)
        s_frac = tile_fractions(
            s_mask | t_mask, raster_ds, tile_level0_px, stride_level0_px, (rows, cols)
        )
        prob = np.where(s_frac >= min_tissue_fraction, prob, np.nan)
    return Heatmap(
        probability=prob.astype(np.float32),
        origin_xy_px=(0.0, 0.0),
        stride_level0_px=float(stride_level0_px),
        tile_level0_px=float(tile_level0_px),
        mpp=float(mpp),
        meta={"what": "perfect heatmap: truth tumour share of each tile"},
    )

"""Heatmap post-processing: smoothing in µm, hysteresis thresholds, minimum lesion size.

The steps between a heatmap and its lesions, in order:

1. **smoothing** (optional): a Gaussian of ``sigma_um`` µm, converted to cells with the heatmap's
   µm per cell (:attr:`qupath_rkd.heatmap.Heatmap.cell_um`). Cells off tissue (NaN) neither
   contribute nor receive a value: the smoothing is normalised by the smoothed tissue mask, so
   probabilities next to the tissue edge are not pulled towards 0.
2. **hysteresis**: a lesion is a region of cells ``>= extent`` (8-connected) that holds at least
   one cell ``>= seed``. The seed is the operating point; the extent is ``extent_ratio × seed``
   (default 1: a plain threshold; 0.5 grows lesions over weaker cells), never above
   ``extent_cap`` when one is given: ``predict`` and ``sync`` cap it at the model's calibrated
   threshold, so an operating point raised above it (to keep tumour-free slides free of false
   lesions) decides which lesions are reported, while a lesion still extends over the cells the
   calibrated probability calls tumour (a raised single threshold shrank true lesions by half).
3. **minimum size**: regions whose major axis is under ``min_major_axis_um`` are dropped
   (:func:`qupath_rkd.lesions.extract.extract_lesions` does it, with holes filled first).

Frames: heatmaps are indexed ``(row, col)`` on the tile grid; sizes are in µm throughout.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from qupath_rkd.constants import (
    DEFAULT_EXTENT_RATIO,
    DEFAULT_MIN_LESION_UM,
    DEFAULT_SMOOTH_SIGMA_UM,
)
from qupath_rkd.heatmap import Heatmap

__all__ = [
    "DEFAULT_EXTENT_RATIO",
    "DEFAULT_SMOOTH_SIGMA_UM",
    "PostProcessing",
    "hysteresis_mask",
    "smooth_heatmap",
    "smooth_probability",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class PostProcessing:
    """How a heatmap becomes lesions (everything but the seed threshold).

    Attributes:
        smooth_sigma_um: Gaussian sigma in µm; 0 = no smoothing.
        extent_ratio: extent threshold / seed threshold, in (0, 1]; 1 = one threshold.
        min_major_axis_um: lesions whose major axis is shorter (µm) are dropped.
        extent_cap: the extent threshold is never above this calibrated probability (``None``:
            no cap); see the module docstring.
    """

    smooth_sigma_um: float = DEFAULT_SMOOTH_SIGMA_UM
    extent_ratio: float = DEFAULT_EXTENT_RATIO
    min_major_axis_um: float = DEFAULT_MIN_LESION_UM
    extent_cap: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.smooth_sigma_um) and self.smooth_sigma_um >= 0):
            raise ValueError(f"smoothing sigma must be >= 0 µm, got {self.smooth_sigma_um}")
        if not (0.0 < self.extent_ratio <= 1.0):
            raise ValueError(f"extent_ratio must be in (0, 1], got {self.extent_ratio}")
        if not (math.isfinite(self.min_major_axis_um) and self.min_major_axis_um >= 0):
            raise ValueError(f"min_major_axis_um must be >= 0, got {self.min_major_axis_um}")
        if self.extent_cap is not None and not (0.0 < self.extent_cap <= 1.0):
            raise ValueError(f"extent_cap must be in (0, 1], got {self.extent_cap}")

    def extent_for(self, seed: float) -> float:
        """The extent threshold that goes with seed threshold ``seed``: ``extent_ratio × seed``,
        at most ``extent_cap``."""
        extent = float(self.extent_ratio * seed)
        return extent if self.extent_cap is None else min(extent, float(self.extent_cap))


def smooth_probability(probability: np.ndarray, sigma_cells: float) -> np.ndarray:
    """Gaussian smoothing of a ``(rows, cols)`` probability grid that ignores NaN cells.

    ``out = G * (p · m) / G * m`` with ``m`` the finite-cell mask; NaN cells stay NaN.

    Args:
        probability: ``(rows, cols)`` float, NaN off tissue.
        sigma_cells: Gaussian sigma in cells; ``<= 0`` returns a float32 copy.

    Returns:
        ``(rows, cols)`` float32, values in the range of the input's finite values.
    """
    p = np.asarray(probability, dtype=np.float64)
    if sigma_cells <= 0 or p.size == 0:
        return p.astype(np.float32)
    finite = np.isfinite(p)
    num = ndimage.gaussian_filter(np.where(finite, p, 0.0), sigma_cells, mode="constant")
    den = ndimage.gaussian_filter(finite.astype(np.float64), sigma_cells, mode="constant")
    out = np.full(p.shape, np.nan)
    ok = finite & (den > 1e-12)
    out[ok] = num[ok] / den[ok]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def smooth_heatmap(heatmap: Heatmap, sigma_um: float) -> Heatmap:
    """The heatmap smoothed by a Gaussian of ``sigma_um`` µm (``sigma_um / cell_um`` cells).

    Same grid and frame as ``heatmap``; ``meta["smooth_sigma_um"]`` records the sigma.
    """
    if sigma_um <= 0:
        return heatmap
    smoothed = smooth_probability(heatmap.probability, sigma_um / heatmap.cell_um)
    return dataclasses.replace(
        heatmap, probability=smoothed, meta={**heatmap.meta, "smooth_sigma_um": float(sigma_um)}
    )


def hysteresis_mask(probability: np.ndarray, seed: float, extent: float) -> np.ndarray:
    """Cells ``>= extent`` 8-connected to a cell ``>= seed``.

    Args:
        probability: ``(rows, cols)`` float, NaN off tissue (never in the mask).
        seed: the high threshold that starts a lesion.
        extent: the low threshold for its extent; taken as ``min(extent, seed)``.

    Returns:
        ``(rows, cols)`` bool.
    """
    p = np.nan_to_num(np.asarray(probability, dtype=np.float64), nan=-np.inf)
    low = p >= min(extent, seed)
    high = p >= seed
    if not high.any():
        return np.zeros(p.shape, dtype=bool)
    if extent >= seed:
        return high
    labels, _ = ndimage.label(low, structure=_EIGHT_CONNECTED)
    seeded = np.unique(labels[high])
    seeded = seeded[seeded > 0]
    return np.isin(labels, seeded)

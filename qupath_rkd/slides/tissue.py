"""Tissue detection on a downsampled slide, for H&E.

Method: on an image of the slide at ``mask_mpp`` µm/px, tissue is where the HSV saturation
exceeds an Otsu threshold (clipped to [0.05, 0.10] so that an all-tissue or all-glass image is
still split sensibly) and the pixel is not near-black (pen, folds, scanner edge). Small holes
are filled and objects below ``min_object_um2`` are removed. Glass is white or grey and
unsaturated, so saturation separates it from eosin and haematoxylin better than brightness.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from qupath_rkd.slides.reader import Slide

logger = logging.getLogger(__name__)

#: Saturation thresholds are clipped to this range (fractions of full saturation).
SATURATION_THRESHOLD_RANGE = (0.05, 0.10)
#: Pixels darker than this (HSV value, 0..1) are not tissue.
MIN_VALUE = 0.10


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask over the whole slide (QuPath's frame).

    Attributes:
        mask: (rows, cols) bool; ``mask[r, c]`` covers level-0 pixels
            ``[c * downsample, (c + 1) * downsample) × [r * downsample, (r + 1) * downsample)``.
        downsample: level-0 pixels per mask pixel.
        mpp: µm per mask pixel, or None when the slide's µm/px is unknown.
        saturation_threshold: the threshold that was applied.
    """

    mask: np.ndarray
    downsample: float
    mpp: float | None
    saturation_threshold: float

    @property
    def fraction(self) -> float:
        """Fraction of the slide's area that is tissue (0..1)."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (256 bins)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0.0
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = total - weight0
    mean0 = np.cumsum(hist * centres) / np.maximum(weight0, 1)
    mean1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between))])


def tissue_mask_from_rgb(
    rgb: np.ndarray, *, min_object_px: float, saturation_threshold: float | None = None
) -> tuple[np.ndarray, float]:
    """Tissue mask of an RGB image (h, w, 3) uint8 -> ((h, w) bool, threshold used)."""
    from scipy import ndimage
    from skimage import morphology

    rgb_f = rgb.astype(np.float32) / 255.0
    value = rgb_f.max(axis=2)
    saturation = np.where(value > 0, (value - rgb_f.min(axis=2)) / np.maximum(value, 1e-6), 0.0)
    if saturation_threshold is None:
        low, high = SATURATION_THRESHOLD_RANGE
        saturation_threshold = float(np.clip(_otsu(saturation), low, high))
    mask = (saturation > saturation_threshold) & (value > MIN_VALUE)
    # closing only adds pixels (scipy's erosion would otherwise eat tissue at the image border)
    mask |= ndimage.binary_closing(mask, structure=np.ones((3, 3), bool), iterations=1)
    min_px = max(round(min_object_px), 1)
    mask = morphology.remove_small_holes(mask, max_size=min_px)
    mask = morphology.remove_small_objects(mask, max_size=min_px)
    return mask.astype(bool), saturation_threshold


def tissue_mask(
    slide: Slide,
    *,
    mask_mpp: float = 8.0,
    min_object_um2: float = 20_000.0,
    max_mask_px: int = 4096,
    saturation_threshold: float | None = None,
) -> TissueMask:
    """Find tissue on a downsampled image of the slide.

    Args:
        slide: an open slide.
        mask_mpp: µm per mask pixel (default 8: fine enough for tiles of ~100 µm and up).
        min_object_um2: tissue objects and holes smaller than this are removed / filled
            (default 0.02 mm², about 140 × 140 µm).
        max_mask_px: the mask's longer side is at most this many pixels.
        saturation_threshold: fixed threshold instead of Otsu's.

    Without a known µm/px the mask is made at ``max_mask_px`` and objects smaller than
    0.05 % of the slide's area are removed.
    """
    slide_mpp = slide.mpp_or_none
    longest = max(slide.width_px, slide.height_px)
    if slide_mpp is not None:
        downsample = max(mask_mpp / slide_mpp, longest / max_mask_px, 1.0)
    else:
        downsample = max(longest / max_mask_px, 1.0)
    rgb = slide.render(downsample)
    if slide_mpp is not None:
        pixel_area_um2 = (downsample * slide_mpp) ** 2
        min_object_px = min_object_um2 / pixel_area_um2
        mpp: float | None = downsample * slide_mpp
    else:
        min_object_px = 0.0005 * rgb.shape[0] * rgb.shape[1]
        mpp = None
    mask, threshold = tissue_mask_from_rgb(
        rgb, min_object_px=min_object_px, saturation_threshold=saturation_threshold
    )
    logger.debug("%s: tissue %.1f%% (threshold %.3f)", slide.path, 100 * mask.mean(), threshold)
    return TissueMask(mask=mask, downsample=downsample, mpp=mpp, saturation_threshold=threshold)

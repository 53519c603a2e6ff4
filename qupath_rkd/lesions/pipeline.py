"""Heatmap → lesions with the post-processing of :mod:`qupath_rkd.lesions.postprocess`.

:func:`find_lesions` is what ``predict`` and ``sync`` call (through
:func:`qupath_rkd.inference.predict.predict_slide`); :func:`count_lesions` gives the same count
without building polygons, for scanning thresholds (:mod:`qupath_rkd.lesions.operating_point`).

Frames: heatmaps are ``(row, col)`` on the tile grid; lesion polygons are level-0 ``(x, y)``
pixels (see :mod:`qupath_rkd.lesions.extract`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions.extract import Lesion, extract_lesions, major_axis_cells
from qupath_rkd.lesions.postprocess import PostProcessing, hysteresis_mask, smooth_heatmap

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionResult:
    """Lesions of one heatmap and the heatmap they were found on.

    Attributes:
        smoothed: the heatmap after smoothing (the input itself when ``smooth_sigma_um`` is 0).
        lesions: lesions, highest ``max_probability`` first (probabilities of ``smoothed``).
        seed_threshold, extent_threshold: the hysteresis thresholds used.
    """

    smoothed: Heatmap
    lesions: list[Lesion]
    seed_threshold: float
    extent_threshold: float


def find_lesions(
    heatmap: Heatmap,
    seed_threshold: float,
    post: PostProcessing,
    *,
    simplify_um: float | None = None,
) -> LesionResult:
    """Smooth, threshold with hysteresis, drop small lesions, make polygons.

    Args:
        heatmap: calibrated probabilities ``(rows, cols)``, NaN off tissue.
        seed_threshold: the operating point: a lesion holds at least one cell ``>=`` it.
        post: smoothing sigma (µm), extent ratio, minimum lesion size (µm).
        simplify_um: polygon tolerance (see :func:`~qupath_rkd.lesions.extract.extract_lesions`).
    """
    smoothed = smooth_heatmap(heatmap, post.smooth_sigma_um)
    extent = post.extent_for(seed_threshold)
    lesions = extract_lesions(
        smoothed,
        seed_threshold,
        min_major_axis_um=post.min_major_axis_um,
        simplify_um=simplify_um,
        extent_threshold=extent,
    )
    return LesionResult(smoothed, lesions, float(seed_threshold), extent)


def count_lesions(
    probability: np.ndarray,
    seed: float,
    extent: float,
    *,
    cell_um: float,
    min_major_axis_um: float,
) -> int:
    """How many lesions :func:`~qupath_rkd.lesions.extract.extract_lesions` would return.

    The same steps without polygons (hysteresis, holes filled, 8-connected components whose
    major axis is ``>= min_major_axis_um`` µm).

    Args:
        probability: ``(rows, cols)`` float (already smoothed), NaN off tissue or outside the
            region of interest.
        seed, extent: hysteresis thresholds.
        cell_um: side of one heatmap cell in µm.
    """
    mask = hysteresis_mask(probability, seed, extent)
    if not mask.any():
        return 0
    labels, _ = ndimage.label(ndimage.binary_fill_holes(mask), structure=_EIGHT_CONNECTED)
    n = 0
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:  # pragma: no cover - labels are consecutive
            continue
        rr, cc = np.nonzero(labels[sl] == k)
        if major_axis_cells(rr, cc) * cell_um >= min_major_axis_um:
            n += 1
    return n

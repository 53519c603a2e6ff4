"""Heatmap → lesion polygons (``from qupath_rkd.lesions import extract_lesions, Lesion``).

Post-processing (smoothing in µm, hysteresis, minimum size) is in
:mod:`qupath_rkd.lesions.postprocess` and :mod:`qupath_rkd.lesions.pipeline`; the operating point
in :mod:`qupath_rkd.lesions.operating_point`; slide scores in :mod:`qupath_rkd.lesions.slide_score`;
tumour burden in :mod:`qupath_rkd.lesions.burden`.
"""

from __future__ import annotations

from qupath_rkd.lesions.extract import ITC_MAX_UM, Lesion, extract_lesions, major_axis_cells

__all__ = ["ITC_MAX_UM", "Lesion", "extract_lesions", "major_axis_cells"]

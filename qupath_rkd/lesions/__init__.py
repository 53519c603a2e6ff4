"""Heatmap → lesion polygons (``from qupath_rkd.lesions import extract_lesions, Lesion``)."""

from __future__ import annotations

from qupath_rkd.lesions.extract import ITC_MAX_UM, Lesion, extract_lesions, major_axis_cells

__all__ = ["ITC_MAX_UM", "Lesion", "extract_lesions", "major_axis_cells"]

"""Tumour burden of a slide: predicted tumour area and the pathologist's size category.

The category follows the TNM size classes of nodal metastases, from the largest lesion's major
axis: isolated tumour cells (ITC) < 0.2 mm, micrometastasis 0.2–2 mm, macrometastasis > 2 mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qupath_rkd.lesions.extract import ITC_MAX_UM, Lesion

#: Micrometastases are at most 2 mm.
MICRO_MAX_UM = 2000.0

CATEGORY_NONE = "none"
CATEGORY_ITC = "ITC"
CATEGORY_MICRO = "micrometastasis"
CATEGORY_MACRO = "macrometastasis"


def burden_category(major_axis_um: float | None) -> str:
    """``none`` (no lesion), ``ITC`` (< 200 µm), ``micrometastasis`` (200 µm – 2 mm) or
    ``macrometastasis`` (> 2 mm) from the largest lesion's major axis in µm."""
    if major_axis_um is None or major_axis_um <= 0:
        return CATEGORY_NONE
    if major_axis_um < ITC_MAX_UM:
        return CATEGORY_ITC
    if major_axis_um <= MICRO_MAX_UM:
        return CATEGORY_MICRO
    return CATEGORY_MACRO


@dataclass(frozen=True)
class TumourBurden:
    """Slide-level tumour burden.

    Attributes:
        tumor_area_mm2: total area of the predicted lesions in mm².
        largest_major_axis_um: major axis of the largest lesion (by major axis) in µm; 0 when
            there is none.
        category: :func:`burden_category` of ``largest_major_axis_um``.
        n_lesions: number of lesions.
    """

    tumor_area_mm2: float
    largest_major_axis_um: float
    category: str
    n_lesions: int

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain JSON values (area rounded to 1e-6 mm², axis to 0.1 µm)."""
        return {
            "tumor_area_mm2": round(self.tumor_area_mm2, 6),
            "largest_lesion_major_axis_um": round(self.largest_major_axis_um, 1),
            "burden_category": self.category,
        }


def tumour_burden(lesions: Sequence[Lesion]) -> TumourBurden:
    """The burden of a slide's predicted ``lesions`` (areas in µm², axes in µm)."""
    area_mm2 = sum(float(les.area_um2) for les in lesions) / 1e6
    axis_um = max((float(les.major_axis_um) for les in lesions), default=0.0)
    return TumourBurden(area_mm2, axis_um, burden_category(axis_um or None), len(lesions))

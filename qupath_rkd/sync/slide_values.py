"""The slide-level values ``sync`` writes for QuPath: one JSON per image beside its predictions.

Per image: the slide score, the positive call, the tumour area (mm²), the largest lesion's
major axis (µm), the burden category and the out-of-domain check (far-tile fraction, flag),
as numbers for the image's root object (QuPath lists them as image measurements and exports
them with Measure › Export measurements) and as strings for the project entry's metadata (the
project pane sorts and filters by them). The values are those of the image's row in
report.json (:class:`~qupath_rkd.sync.report.SlideResult`), so the two always agree. Names and
the file layout are defined in :mod:`qupath_rkd.outputs`; ``groovy/import_predictions.groovy``
and ``groovy/run_sync.groovy`` read them from the file.

The file is written by sync's commit (:meth:`~qupath_rkd.sync.commit.Transaction.set_json`:
after the commit point, only when its content changed), so a sync that changes nothing
rewrites nothing and a killed sync leaves the files of before or after it.
"""

from __future__ import annotations

from typing import Any

from qupath_rkd.outputs import (
    BURDEN_CATEGORY_CODES,
    SLIDE_FIELD_MEASUREMENT_NAMES,
    SLIDE_FIELD_MEASUREMENTS,
    SLIDE_FIELD_METADATA,
    SLIDE_FIELD_METADATA_KEYS,
    SLIDE_MEASURE_BURDEN_CODE,
    SLIDE_MEASURE_LARGEST_AXIS_UM,
    SLIDE_MEASURE_OOD_FAR_FRACTION,
    SLIDE_MEASURE_OOD_FLAG,
    SLIDE_MEASURE_POSITIVE,
    SLIDE_MEASURE_SCORE,
    SLIDE_MEASURE_STALE,
    SLIDE_MEASURE_TUMOR_AREA_MM2,
    SLIDE_MEASUREMENTS,
    SLIDE_META_BURDEN,
    SLIDE_META_LARGEST_AXIS_UM,
    SLIDE_META_OUT_OF_DOMAIN,
    SLIDE_META_POSITIVE,
    SLIDE_META_SCORE,
    SLIDE_META_TUMOR_AREA_MM2,
    SLIDE_METADATA_KEYS,
    SLIDE_VALUES_FORMAT,
)
from qupath_rkd.sync.report import STATUS_PREDICTED, STATUS_UP_TO_DATE, SlideResult

SLIDE_VALUES_VERSION = 1


def slide_values(result: SlideResult) -> dict[str, Any] | None:
    """The slide-values JSON of one report row; ``None`` when the image has no predictions
    (failed without earlier ones, or not predicted yet). A stale row (earlier predictions kept
    for a failed slide) gives its old values with ``qupath-rkd stale`` = 1."""
    if result.status not in (STATUS_PREDICTED, STATUS_UP_TO_DATE) and not result.stale:
        return None
    measurements: dict[str, float] = {}
    metadata: dict[str, str] = {}
    if result.tumor_score is not None:
        measurements[SLIDE_MEASURE_SCORE] = round(float(result.tumor_score), 6)
        metadata[SLIDE_META_SCORE] = f"{float(result.tumor_score):.3f}"
    if result.positive is not None:
        measurements[SLIDE_MEASURE_POSITIVE] = 1.0 if result.positive else 0.0
        metadata[SLIDE_META_POSITIVE] = "yes" if result.positive else "no"
    if result.lesion_area_mm2 is not None:
        measurements[SLIDE_MEASURE_TUMOR_AREA_MM2] = round(float(result.lesion_area_mm2), 6)
        metadata[SLIDE_META_TUMOR_AREA_MM2] = f"{float(result.lesion_area_mm2):.3f}"
    if result.largest_lesion_major_axis_um is not None:
        axis_um = round(float(result.largest_lesion_major_axis_um), 1)
        measurements[SLIDE_MEASURE_LARGEST_AXIS_UM] = axis_um
        metadata[SLIDE_META_LARGEST_AXIS_UM] = f"{axis_um:.0f}"
    if result.burden_category in BURDEN_CATEGORY_CODES:
        measurements[SLIDE_MEASURE_BURDEN_CODE] = float(
            BURDEN_CATEGORY_CODES[str(result.burden_category)]
        )
        metadata[SLIDE_META_BURDEN] = str(result.burden_category)
    if result.ood_far_fraction is not None:
        measurements[SLIDE_MEASURE_OOD_FAR_FRACTION] = round(float(result.ood_far_fraction), 4)
    if result.out_of_domain is not None:
        measurements[SLIDE_MEASURE_OOD_FLAG] = 1.0 if result.out_of_domain else 0.0
        far = (
            ""
            if result.ood_far_fraction is None
            else f" ({float(result.ood_far_fraction):.0%} of tiles far)"
        )
        metadata[SLIDE_META_OUT_OF_DOMAIN] = ("yes" if result.out_of_domain else "no") + far
    if result.stale:
        measurements[SLIDE_MEASURE_STALE] = 1.0
    return {
        "format": SLIDE_VALUES_FORMAT,
        "formatVersion": SLIDE_VALUES_VERSION,
        "entryID": result.entry_id,
        "imageName": result.image_name,
        SLIDE_FIELD_MEASUREMENTS: measurements,
        SLIDE_FIELD_METADATA: metadata,
        SLIDE_FIELD_MEASUREMENT_NAMES: list(SLIDE_MEASUREMENTS),
        SLIDE_FIELD_METADATA_KEYS: list(SLIDE_METADATA_KEYS),
    }


__all__ = ["SLIDE_VALUES_VERSION", "slide_values"]

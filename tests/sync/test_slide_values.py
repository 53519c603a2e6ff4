"""Issue 10.4 (and 11.8): the slide-level values reach QuPath. Sync writes, beside each image's
predictions, the values of its report.json row (slide score, positive call, tumour area,
largest lesion, burden category, out-of-domain check) for groovy/import_predictions.groovy to
put on the image's root object and the project entry's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    SLIDE_META_TUMOR_AREA_MM2,
    SLIDE_METADATA_KEYS,
    SLIDE_VALUES_FORMAT,
    SLIDE_VALUES_SUFFIX,
)
from qupath_rkd.sync.report import STATUS_FAILED, STATUS_PREDICTED, SlideResult
from qupath_rkd.sync.slide_values import slide_values


def test_the_values_written_for_the_synced_demo_match_report_json(synced: Path) -> None:
    tool = synced / "qupath-rkd"
    report = json.loads((tool / "report.json").read_text(encoding="utf-8"))
    assert report["slides"]
    for row in report["slides"]:
        assert row["status"] == "ok"
        path = tool / "predictions" / f"{row['entry_id']}{SLIDE_VALUES_SUFFIX}"
        values = json.loads(path.read_text(encoding="utf-8"))
        assert values["format"] == SLIDE_VALUES_FORMAT and values["entryID"] == row["entry_id"]
        m = values[SLIDE_FIELD_MEASUREMENTS]
        assert m[SLIDE_MEASURE_SCORE] == pytest.approx(row["tumor_score"], abs=1e-6)
        assert m[SLIDE_MEASURE_POSITIVE] == (1.0 if row["positive"] else 0.0)
        assert m[SLIDE_MEASURE_TUMOR_AREA_MM2] == pytest.approx(row["lesion_area_mm2"], abs=1e-6)
        assert m[SLIDE_MEASURE_LARGEST_AXIS_UM] == pytest.approx(
            row["largest_lesion_major_axis_um"], abs=0.05
        )
        assert m[SLIDE_MEASURE_BURDEN_CODE] == BURDEN_CATEGORY_CODES[row["burden_category"]]
        # the sync's head model carries the out-of-domain reference: the demo is in domain
        assert row["out_of_domain"] is False and m[SLIDE_MEASURE_OOD_FLAG] == 0.0
        assert m[SLIDE_MEASURE_OOD_FAR_FRACTION] == pytest.approx(row["ood_far_fraction"])
        assert SLIDE_MEASURE_STALE not in m
        assert all(isinstance(v, float) for v in m.values())  # QuPath measurements are numbers
        meta = values[SLIDE_FIELD_METADATA]
        assert meta[SLIDE_META_BURDEN] == row["burden_category"]
        assert float(meta[SLIDE_META_TUMOR_AREA_MM2]) == pytest.approx(
            row["lesion_area_mm2"], abs=5e-4
        )
        assert all(isinstance(v, str) for v in meta.values())
        assert values[SLIDE_FIELD_MEASUREMENT_NAMES] == list(SLIDE_MEASUREMENTS)
        assert values[SLIDE_FIELD_METADATA_KEYS] == list(SLIDE_METADATA_KEYS)
        assert set(m) <= set(SLIDE_MEASUREMENTS) and set(meta) <= set(SLIDE_METADATA_KEYS)


def test_burden_codes_cover_every_category() -> None:
    from qupath_rkd.lesions import burden

    categories = {
        burden.CATEGORY_NONE,
        burden.CATEGORY_ITC,
        burden.CATEGORY_MICRO,
        burden.CATEGORY_MACRO,
    }
    assert set(BURDEN_CATEGORY_CODES) == categories


def test_failed_rows_have_no_values_and_stale_ones_say_so() -> None:
    failed = SlideResult(entry_id="1", image_name="a", status=STATUS_FAILED, reason="x")
    assert slide_values(failed) is None
    stale = SlideResult(
        entry_id="2",
        image_name="b",
        status=STATUS_FAILED,
        tumor_score=0.4,
        lesions=0,
        lesion_area_mm2=0.0,
        positive=False,
        stale=True,
    )
    values = slide_values(stale)
    assert values is not None and values[SLIDE_FIELD_MEASUREMENTS][SLIDE_MEASURE_STALE] == 1.0
    # no out-of-domain values when the check was not available: none written (and the import
    # removes earlier ones, since every name is listed)
    fresh = SlideResult(
        entry_id="3", image_name="c", status=STATUS_PREDICTED, tumor_score=0.1, ood_note="n/a"
    )
    out = slide_values(fresh)
    assert out is not None and SLIDE_MEASURE_OOD_FLAG not in out[SLIDE_FIELD_MEASUREMENTS]
    assert SLIDE_MEASURE_OOD_FLAG in out[SLIDE_FIELD_MEASUREMENT_NAMES]

"""The sync report and table: a slide with no tissue has no score and says why."""

from __future__ import annotations

from qupath_rkd.sync.report import STATUS_PREDICTED, SlideResult, format_table
from qupath_rkd.sync.runner import _fill_from_record
from qupath_rkd.sync.state import PredictionRecord


def test_no_tissue_has_no_score_and_a_note_in_the_report_and_table() -> None:
    """Regression: a slide with no tissue got tumour score 0, which reads as "benign"."""
    record = PredictionRecord(
        model_id="m",
        config_hash="c",
        slide_fingerprint="f",
        region_hash="r",
        output_sha256="",
        result={
            "tumor_score": None,
            "lesions": 0,
            "lesion_area_mm2": 0.0,
            "note": "no tissue found: nothing scored",
        },
    )
    blank = SlideResult(entry_id="1", image_name="blank.tif", status=STATUS_PREDICTED)
    _fill_from_record(blank, record)
    tissue = SlideResult(
        entry_id="2", image_name="LN-01", status=STATUS_PREDICTED, tumor_score=0.25, lesions=1
    )
    row = blank.report_row()
    assert row["tumor_score"] is None and row["note"] == "no tissue found: nothing scored"
    assert "note" not in tissue.report_row()  # rows without a note stay as they were
    line = next(r for r in format_table([blank, tissue]).splitlines() if r.startswith("blank"))
    assert "no tissue found" in line
    assert line.split()[1] == "-"

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


def test_the_out_of_domain_check_is_a_column_and_a_line_of_the_table() -> None:
    """Issue 11.8: a flagged slide gets its far fraction in the table and a line below it;
    a model without the check says once that it is not available."""
    skin = SlideResult(
        entry_id="1",
        image_name="skin.svs",
        status=STATUS_PREDICTED,
        tumor_score=0.7,
        lesions=2,
        ood_far_fraction=0.85,
        out_of_domain=True,
    )
    lymph = SlideResult(
        entry_id="2",
        image_name="LN-01.tif",
        status=STATUS_PREDICTED,
        tumor_score=0.9,
        lesions=1,
        ood_far_fraction=0.03,
        out_of_domain=False,
    )
    table = format_table([skin, lymph]).splitlines()
    assert "far tiles" in table[0]
    assert "85% OOD" in next(r for r in table if r.startswith("skin.svs"))
    assert "OOD" not in next(r for r in table if r.startswith("LN-01"))
    flagged = [r for r in table if r.startswith("OUT OF DOMAIN")]
    assert len(flagged) == 1 and "skin.svs" in flagged[0] and "85%" in flagged[0]
    assert skin.report_row()["out_of_domain"] is True
    assert skin.report_row()["ood_far_fraction"] == 0.85 and "ood_note" not in skin.report_row()
    note = "out-of-domain check: not available (not available for --scorer rd models)"
    old = SlideResult(entry_id="3", image_name="a.tif", status=STATUS_PREDICTED, ood_note=note)
    lines = format_table([old, old]).splitlines()
    assert lines.count(note) == 1 and old.report_row()["out_of_domain"] is None

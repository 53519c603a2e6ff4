"""Suggestions through ``sync`` (issue 13): where they may be, that they are reproducible, and
that the label reader never takes them as labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sync_helpers import FAST, snapshot

from qupath_rkd.qupath.backends import get_backend
from qupath_rkd.qupath.geojson import qupath_import_problems, read_geojson
from qupath_rkd.qupath.project import open_project
from qupath_rkd.suggest.write import MEASURE_RANK, SUGGESTION_CLASS, is_suggestion_feature
from qupath_rkd.sync.config import load_config
from qupath_rkd.sync.report import format_suggestions
from qupath_rkd.sync.runner import build_labelled_set, run_sync

TOOL = "qupath-rkd"


def _suggested(project: Path) -> dict[str, list]:  # type: ignore[type-arg]
    out = {}
    for path in sorted((project / TOOL / "predictions").glob("*.geojson")):
        objs = [o for o in read_geojson(path) if o.class_name == SUGGESTION_CLASS]
        out[path.stem] = objs
    return out


def test_suggestions_in_report_and_predictions_never_on_annotations(synced: Path) -> None:
    report = json.loads((synced / TOOL / "report.json").read_text())
    regions = report["suggestions"]["regions"]
    assert regions, report["suggestions"]
    assert [r["rank"] for r in regions] == list(range(1, len(regions) + 1))
    objects = _suggested(synced)
    # A is fully annotated, B tumour-free: never suggested on
    assert objects["1"] == [] and objects["2"] == []
    ranks = sorted(o.measurements[MEASURE_RANK] for objs in objects.values() for o in objs)
    assert ranks == [float(r["rank"]) for r in regions]
    project = open_project(synced)
    backend, _ = get_backend(project, "geojson")
    for entry in backend.images():
        drawn = [o.geometry for o in backend.read_annotations(entry).objects if o.is_annotation]
        for obj in objects[entry.entry_id]:
            assert obj.object_type == "detection" and obj.name.startswith(TOOL)
            assert all(obj.geometry.intersection(g).area == 0 for g in drawn)
        raw = json.loads((synced / TOOL / "predictions" / f"{entry.entry_id}.geojson").read_text())
        assert qupath_import_problems(raw) == []
    line = format_suggestions(report["suggestions"]).splitlines()[1]
    assert regions[0]["image"] in line and "µm" in line and regions[0]["reason"] in line


def test_recomputed_suggestions_are_the_same_bytes(synced_copy: Path) -> None:
    """A re-predicted slide makes sync rank everything again: same files, byte for byte."""
    before = snapshot(synced_copy, skip=(f"{TOOL}/predictions/3.geojson.bak",))
    (synced_copy / TOOL / "predictions" / "3.geojson").unlink()
    outcome = run_sync(synced_copy, load_config(synced_copy, dict(FAST)))
    assert not outcome.trained and [s.status for s in outcome.slides][2] == "predicted"
    after = snapshot(synced_copy, skip=(f"{TOOL}/predictions/3.geojson.bak",))
    assert after == before


def test_label_reader_ignores_suggestions_exported_as_annotations(synced_copy: Path) -> None:
    """Suggestions that come back through QuPath's export as annotations of their class (e.g.
    converted in QuPath) are no labels, even with a class pattern that matches everything."""
    config = load_config(synced_copy, {**FAST, "classes.normal": ["Normal", "*"]})
    project = open_project(synced_copy)
    backend, _ = get_backend(project, "geojson")
    entries = backend.images()

    def labelled_hash() -> str:
        sets = {e.entry_id: backend.read_annotations(e) for e in entries}
        return str(build_labelled_set(entries, sets, config).sha256)

    before = labelled_hash()
    export = synced_copy / TOOL / "annotations" / "3.geojson"
    data = json.loads(export.read_text())
    preds = json.loads((synced_copy / TOOL / "predictions" / "3.geojson").read_text())
    back = [f for f in preds["features"] if is_suggestion_feature(f)]
    assert back
    for feature in back:  # as QuPath exports an annotation of that class
        feature["properties"]["objectType"] = "annotation"
    data["features"].extend(back)
    export.write_text(json.dumps(data))
    assert any(
        o.class_name == SUGGESTION_CLASS and o.is_annotation
        for o in backend.read_annotations(entries[2]).objects
    )
    assert labelled_hash() == before


def test_no_unannotated_tissue_no_suggestions_and_a_note(synced_copy: Path) -> None:
    """Every slide left to suggest on covered by an annotation (of a class that is no label,
    so nothing retrains): no suggestions, a note, no error, and the old objects removed."""
    whole = {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[0, 0], [1536, 0], [1536, 1280], [0, 1280], [0, 0]]],
        },
        "properties": {
            "objectType": "annotation",
            "classification": {"name": "Other", "color": [0, 0, 255]},
        },
    }
    for entry_id in ("3", "4"):
        export = synced_copy / TOOL / "annotations" / f"{entry_id}.geojson"
        data = json.loads(export.read_text())
        data["features"].append({**whole, "id": f"00000000-0000-4000-8000-00000000000{entry_id}"})
        export.write_text(json.dumps(data))
    outcome = run_sync(synced_copy, load_config(synced_copy, dict(FAST)))
    assert outcome.exit_code == 0 and not outcome.trained
    assert outcome.suggestions is not None and outcome.suggestions["regions"] == []
    assert "no unannotated tissue" in " ".join(outcome.suggestions["notes"])
    assert all(objs == [] for objs in _suggested(synced_copy).values())
    report = json.loads((synced_copy / TOOL / "report.json").read_text())
    assert report["suggestions"]["regions"] == []


def test_tta_disagreement_suggests_in_sync(synced_copy: Path) -> None:
    """Regression: sync gave the ranking no per-view probabilities, so ``tta_disagreement``
    suggested nothing; now the head scores the candidate tiles in test-time views."""
    config = load_config(synced_copy, {**FAST, "suggest.signal": "tta_disagreement"})
    outcome = run_sync(synced_copy, config)
    assert outcome.exit_code == 0 and not outcome.trained
    assert outcome.suggestions is not None
    regions = outcome.suggestions["regions"]
    assert regions, outcome.suggestions["notes"]
    assert {r["reason"] for r in regions} == {"views disagree"}
    assert not any("per-view" in n for n in outcome.suggestions["notes"])
    assert sum(len(v) for v in _suggested(synced_copy).values()) == len(regions)


def test_tumour_first_is_top_probability_until_enough_tumour_regions(synced_copy: Path) -> None:
    """``tumour_first`` ranks by the tumour probability while the labelled tumour forms fewer
    regions than the head's folds (the demo project: one outlined lesion), and says so; the
    report keeps the signal asked for beside the one used."""
    from qupath_rkd.suggest.config import TUMOUR_FIRST_MIN_REGIONS
    from qupath_rkd.sync.suggestions import tumour_regions

    config = load_config(synced_copy, {**FAST, "suggest.signal": "tumour_first"})
    backend, _ = get_backend(open_project(synced_copy), "geojson")
    entries = backend.images()
    sets = {e.entry_id: backend.read_annotations(e) for e in entries}
    n_regions = tumour_regions(build_labelled_set(entries, sets, config))
    assert 1 <= n_regions < TUMOUR_FIRST_MIN_REGIONS
    outcome = run_sync(synced_copy, config)
    assert outcome.exit_code == 0 and not outcome.trained
    s = outcome.suggestions
    assert s is not None and s["configured_signal"] == "tumour_first"
    assert s["signal"] == "top_probability"
    assert s["regions"] and {r["reason"] for r in s["regions"]} == {"probable tumour"}
    assert any(f"{n_regions} labelled tumour region(s)" in n for n in s["notes"]), s["notes"]


def test_uncertainty_is_measured_from_the_calibrated_threshold_not_the_operating_point(
    synced_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: since the operating point may go down to 0.05, "uncertain" around it picked
    low-probability (mostly normal) tissue; on the active-learning benchmark that lowered the
    suggestions' held-out tile AUROC. The centre is the model's calibrated threshold."""
    import qupath_rkd.suggest as suggest_pkg
    from qupath_rkd.model.scorer import load_model
    from qupath_rkd.sync.runner import MODEL_RELPATH

    seen: list[float] = []
    real = suggest_pkg.suggest_regions

    def spy(*args: object, threshold: float, **kwargs: object) -> object:
        seen.append(threshold)
        return real(*args, threshold=threshold, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(suggest_pkg, "suggest_regions", spy)
    outcome = run_sync(synced_copy, load_config(synced_copy, {**FAST, "inference.threshold": 0.05}))
    assert outcome.exit_code == 0 and outcome.operating_point is not None
    assert outcome.operating_point["threshold"] == 0.05
    calibrated = load_model(synced_copy / MODEL_RELPATH, device="cpu").threshold
    assert seen and set(seen) == {calibrated} and calibrated == 0.5
    assert outcome.suggestions is not None and outcome.suggestions["regions"]

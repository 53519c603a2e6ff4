"""benchmarks/demo_resync.py (issue 8.6) on the small synced demo: the new annotation is the
slide's largest true lesion appended to its export (the existing annotations byte-identical),
the re-sync retrains for it and records its timings, and the scoring reads the result."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import benchmark_module
from sync_helpers import FAST

from qupath_rkd.qupath.geojson import read_geojson

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "demo_resync.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with benchmark_module(SCRIPT.name) as module:
        yield module


def test_one_new_annotation_then_resync(bench: ModuleType, synced_copy: Path) -> None:
    root = synced_copy.parent
    export = synced_copy / "qupath-rkd" / "annotations" / "3.geojson"  # C.tif, nothing drawn
    other = synced_copy / "qupath-rkd" / "annotations" / "1.geojson"
    before_other = other.read_bytes()
    truth = read_geojson(root / "truth" / "C.geojson")
    assert len(truth) == 1 and not read_geojson(export)

    added = bench.add_largest_true_lesion(root, "C.tif")

    assert added["entry_id"] == "3" and added["annotations_after"] == 1
    objects = read_geojson(export)
    assert [(o.object_type, o.class_name) for o in objects] == [("annotation", "Tumor")]
    assert objects[0].geometry.symmetric_difference(truth[0].geometry).area < 1.0  # px²
    assert other.read_bytes() == before_other  # another image's file: not touched
    manifest = json.loads((export.parent / "manifest.json").read_text(encoding="utf-8"))
    counts = {r["entryID"]: r["nAnnotations"] for r in manifest["images"]}
    assert counts["3"] == 1

    # on a file with annotations (the outlined slide), those stay exactly as they were
    old_features = json.loads(before_other)["features"]
    assert old_features
    more = bench.add_largest_true_lesion(root, "A tumour annotated.tif")
    assert more["annotations_before"] == len(old_features)
    new_text = other.read_text(encoding="utf-8")
    assert json.loads(new_text)["features"][:-1] == old_features
    assert new_text.startswith(before_other.decode("utf-8").rstrip("\n").removesuffix("]}"))

    outcome, timing = bench.resync(synced_copy, None, FAST)
    assert outcome.trained and outcome.train_reason == "the labels changed"
    assert outcome.label_summary["C.tif"]["tumor"] > 0
    assert len(timing["trained_s"]) == 1 and 0 < timing["trained_s"][0] <= timing["wall_s"]
    assert timing["features"]["computed"] + timing["features"]["cached"] > 0
    assert timing["training_line_s"] is not None
    assert timing["tail_s"] is not None and 0 <= timing["tail_s"] < timing["wall_s"]

    scores = bench.score_demo(root, outcome, annotated="C.tif")
    rows = {r["image"]: r for r in scores["slides"]}
    assert rows["C.tif"]["role"] == "unlabelled" and rows["C.tif"]["true_lesions"] == 1
    assert rows["B tumour-free.tif"]["false_lesions"] == rows["B tumour-free.tif"]["lesions"]
    for row in rows.values():
        assert len(row["max_probabilities"]) == row["lesions"]
        assert row["true_lesions_touched"] <= row["true_lesions"]
    assert scores["operating_point"]["threshold"] > 0
    never = scores["froc_never_annotated"]
    assert never is None or "C.tif" not in never["slides"]

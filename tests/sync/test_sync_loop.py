"""The whole loop on a small real-mosaic project: train, predict, write back, and again.

One full sync (training included) is run once per session; the tests copy its result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sync_helpers import FAST, copy_demo, snapshot

from qupath_rkd.cli import cli
from qupath_rkd.inference.write import MEASURE_PROBABILITY
from qupath_rkd.qupath.geojson import qupath_import_problems, read_geojson
from qupath_rkd.suggest.write import SUGGESTION_CLASS
from qupath_rkd.sync.commit import FAULT_ENV
from qupath_rkd.sync.config import load_config
from qupath_rkd.sync.report import STATUS_PREDICTED, STATUS_UP_TO_DATE
from qupath_rkd.sync.runner import run_sync

ANNOTATIONS = "project/qupath-rkd/annotations/"


def _config(project: Path, **extra: object):  # type: ignore[no-untyped-def]
    return load_config(project, {**FAST, **extra})


def _sync_cli(project: Path, *extra: str) -> tuple[int, str]:
    args = [arg for k, v in FAST.items() for arg in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(cli, ["sync", str(project), *args, *extra])
    return result.exit_code, result.output


def test_first_sync_writes_what_qupath_imports(synced: Path, small_demo) -> None:  # type: ignore[no-untyped-def]
    tool = synced / "qupath-rkd"
    report = json.loads((tool / "report.json").read_text())
    assert [row["status"] for row in report["slides"]] == ["ok"] * 4
    assert (tool / "model" / "model.pt").is_file()
    assert not (tool / ".pending").exists() and not (tool / "sync.lock").exists()
    for slide in small_demo.slides:
        path = tool / "predictions" / f"{slide.entry_id}.geojson"
        raw = json.loads(path.read_text())
        assert raw["type"] == "FeatureCollection"
        for feature in raw["features"]:
            props = feature["properties"]
            assert props["objectType"] in {"detection", "tile"}
            assert props["name"].startswith("qupath-rkd")
            assert all(isinstance(v, float) for v in props["measurements"].values())
            if "classification" in props:
                assert len(props["classification"]["color"]) == 3
        objects = read_geojson(path)
        tiles = [o for o in objects if o.object_type == "tile"]
        assert tiles, "the heatmap is written as scored tiles"
        assert all(0.0 <= o.measurements[MEASURE_PROBABILITY] <= 1.0 for o in tiles)
        assert all(o.geometry.is_valid for o in objects)
        row = next(r for r in report["slides"] if r["entry_id"] == str(slide.entry_id))
        # one detection per lesion (a lesion in parts is one MultiPolygon), names unique,
        # so summing Area in QuPath gives the predicted lesion area
        lesions = [
            o for o in objects if o.object_type == "detection" and o.class_name != SUGGESTION_CLASS
        ]
        assert row["lesions"] == len(lesions) == len({o.name for o in lesions})
        assert qupath_import_problems(raw) == []
        area_mm2 = sum(o.measurements["Area µm^2"] for o in lesions) / 1e6
        assert row["lesion_area_mm2"] == pytest.approx(area_mm2, abs=1e-5)
        assert 0.0 <= row["tumor_score"] <= 1.0


def test_second_sync_changes_nothing(synced_copy: Path) -> None:
    root = synced_copy.parent
    before = snapshot(root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    code, out = _sync_cli(synced_copy)
    assert code == 0, out
    assert "model up to date: nothing to train" in out
    assert "0 slide(s) predicted" in out
    assert sum(line.endswith(STATUS_UP_TO_DATE) for line in out.splitlines()) == 4
    assert snapshot(root) == before
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes


def test_prediction_settings_repredict_without_training(synced_copy: Path) -> None:
    root = synced_copy.parent
    before = snapshot(root)
    outcome = run_sync(synced_copy, _config(synced_copy, **{"inference.heatmap_tiles": False}))
    assert not outcome.trained
    assert [s.status for s in outcome.slides] == [STATUS_PREDICTED] * 4
    assert {s.reason for s in outcome.slides} == {"the prediction configuration changed"}
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k.startswith(ANNOTATIONS)} == {
        k: v for k, v in before.items() if k.startswith(ANNOTATIONS)
    }
    pred = synced_copy / "qupath-rkd" / "predictions"
    for name in ("1.geojson", "3.geojson"):
        assert all(o.object_type != "tile" for o in read_geojson(pred / name))
        # the previous predictions are kept as a backup
        backup = pred / f"{name}.bak"
        assert backup.read_bytes() != (pred / name).read_bytes()
        assert any(o.object_type == "tile" for o in read_geojson(backup))


def test_changed_labels_retrain_and_repredict(synced_copy: Path) -> None:
    annotations = synced_copy / "qupath-rkd" / "annotations" / "1.geojson"
    data = json.loads(annotations.read_text())
    data["features"].append(
        {
            "type": "Feature",
            "id": "5a8f5d7e-7d7b-4b43-9d1c-3f8f7f1c2a10",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[10, 10], [300, 10], [300, 300], [10, 300], [10, 10]]],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Ignore*", "color": [180, 180, 180]},
            },
        }
    )
    annotations.write_text(json.dumps(data))
    drawn = annotations.read_bytes()
    outcome = run_sync(synced_copy, _config(synced_copy))
    assert outcome.trained and outcome.train_reason == "the labels changed"
    assert [s.status for s in outcome.slides] == [STATUS_PREDICTED] * 4
    assert {s.reason for s in outcome.slides} == {"the model changed"}
    assert annotations.read_bytes() == drawn  # never rewritten


def test_failing_slide_is_reported_and_the_others_go_on(synced_copy: Path, real_data: Path) -> None:
    # D.tif (entry 4, nothing drawn on it) replaced by a TIFF that OpenSlide refuses
    slide = synced_copy.parent / "slides" / "D.tif"
    shutil.copyfile(real_data / "slides" / "kidney-48-5.tif", slide)
    code, out = _sync_cli(synced_copy)
    assert code == 1
    assert "Traceback" not in out
    report = json.loads((synced_copy / "qupath-rkd" / "report.json").read_text())
    rows = {r["entry_id"]: r for r in report["slides"]}
    assert rows["4"]["status"] == "failed" and rows["4"]["error"]
    assert all(rows[k]["status"] == "ok" for k in ("1", "2", "3"))
    # its earlier predictions stay as they were
    assert (synced_copy / "qupath-rkd" / "predictions" / "4.geojson").is_file()


#: One point before the commit point (all predictions made, nothing written yet), one in the
#: middle of writing the prediction files, one after them (state and report not yet written).
_KILL_POINTS = ["before-commit", "entry-1", "before-json"]
_NO_TILES = ("--set", "inference.heatmap_tiles=false")
_CLI = [sys.executable, "-c", "from qupath_rkd.cli import main; main()", "sync"]
_TOOL = "project/qupath-rkd/"


def _fast_args() -> list[str]:
    return [arg for k, v in FAST.items() for arg in ("--set", f"{k}={v}")] + list(_NO_TILES)


def _results(project: Path) -> list[dict[str, object]]:
    """The per-slide rows of report.json, after checking that state.json records the
    prediction files as they are and that none of them holds heatmap tiles (what the kill
    tests' sync writes)."""
    tool = project / "qupath-rkd"
    state = json.loads((tool / "state.json").read_text())
    for entry_id, record in state["predictions"].items():
        path = tool / "predictions" / f"{entry_id}.geojson"
        assert record["output_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert all(o.object_type != "tile" for o in read_geojson(path))
    report = json.loads((tool / "report.json").read_text())
    assert report["model_id"] == state["model"]["model_id"]
    return list(report["slides"])


@pytest.fixture(scope="module")
def uninterrupted(
    synced: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, object]]:
    """The results of the kill tests' sync when nothing interrupts it."""
    root = tmp_path_factory.mktemp("uninterrupted") / "demo"
    project = copy_demo(synced.parent, root)
    done = subprocess.run([*_CLI, str(project), *_fast_args()], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return _results(project)


@pytest.mark.parametrize("point", _KILL_POINTS)
def test_kill_mid_sync_leaves_before_or_after(
    synced_copy: Path, uninterrupted: dict[str, str], point: str
) -> None:
    """SIGKILL at a point of a sync (in a subprocess): annotations untouched; before the commit
    point the project is exactly as before; after it the next sync finishes the write-back
    without predicting again; either way the end result is the uninterrupted one."""
    root = synced_copy.parent
    before = snapshot(root)
    killed_run = subprocess.run(
        [*_CLI, str(synced_copy), *_fast_args()],
        env={**os.environ, FAULT_ENV: point},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed_run.returncode == -9, killed_run.stderr[-2000:]
    killed = snapshot(root, skip=(_TOOL + ".pending", _TOOL + "sync.lock"))
    assert {k: v for k, v in killed.items() if k.startswith(ANNOTATIONS)} == {
        k: v for k, v in before.items() if k.startswith(ANNOTATIONS)
    }
    committed = point != "before-commit"
    if not committed:
        assert killed == before, "a kill before the commit point changes nothing"
    done = subprocess.run(
        [*_CLI, str(synced_copy), *_fast_args()], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if committed:
        assert "finished the write-back of an interrupted sync" in done.stderr
        assert "0 slide(s) predicted" in done.stdout
    else:
        assert "4 slide(s) predicted" in done.stdout
    # the same results as an uninterrupted sync (floats to 1e-5: separate processes)
    rows = _results(synced_copy)
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert [r["lesions"] for r in rows] == [r["lesions"] for r in uninterrupted]
    for got, want in zip(rows, uninterrupted, strict=True):
        assert got["tumor_score"] == pytest.approx(want["tumor_score"], abs=1e-5)
        assert got["lesion_area_mm2"] == pytest.approx(want["lesion_area_mm2"], abs=1e-5)
    assert not (root / _TOOL / ".pending").exists()
    assert not (root / _TOOL / "sync.lock").exists()

"""Backends: the GeoJSON exchange folder end to end (paquo only where QuPath is installed)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from shapely.geometry import box

from qupath_rkd.errors import (
    AnnotationError,
    BackendUnavailableError,
    ConfigError,
    ProjectReadOnlyError,
)
from qupath_rkd.qupath.backends import (
    ExchangeLayout,
    GeojsonBackend,
    ProjectBackend,
    get_backend,
    read_manifest,
)
from qupath_rkd.qupath.backends.paquo_backend import paquo_available
from qupath_rkd.qupath.geojson import make_feature, qupath_import_problems, read_geojson
from qupath_rkd.qupath.project import open_project


@pytest.fixture()
def project_dir(real_data: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "project"
    shutil.copytree(real_data / "qupath-projects" / "qupath-0.5.1", dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def _export(project_dir: Path, entry_id: str, features: list[dict], metadata: dict) -> Path:
    """Write what groovy/export_annotations.groovy writes for one image."""
    folder = project_dir / "qupath-rkd" / "annotations"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entry_id}.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=2))
    manifest_path = folder / "manifest.json"
    manifest = (
        json.loads(manifest_path.read_text())
        if manifest_path.exists()
        else {"format": "qupath-rkd-annotations", "formatVersion": 1, "images": []}
    )
    manifest["images"].append(
        {
            "entryID": entry_id,
            "imageName": "x",
            "uri": "file:/x",
            "pixelWidthMicrons": 0.25,
            "metadata": metadata,
            "annotations": f"{entry_id}.geojson",
        }
    )
    manifest_path.write_text(json.dumps(manifest))
    return path


def test_get_backend_choices(project_dir: Path) -> None:
    project = open_project(project_dir)
    backend, note = get_backend(project, "geojson")
    assert isinstance(backend, GeojsonBackend) and isinstance(backend, ProjectBackend)
    assert "\n" not in note and str(project_dir / "qupath-rkd") in note
    with pytest.raises(ConfigError, match="unknown backend"):
        get_backend(project, "qupath")
    ok, why = paquo_available()
    auto, auto_note = get_backend(project, "auto")
    if ok:
        assert auto.kind == "paquo"
    else:
        assert auto.kind == "geojson" and why in auto_note and "\n" not in auto_note
        with pytest.raises(BackendUnavailableError, match="QuPath"):
            get_backend(project, "paquo")


def test_reads_exported_annotations_without_touching_them(project_dir: Path) -> None:
    tumour = make_feature(box(100, 100, 500, 400), object_type="annotation", class_name="Tumor")
    old_prediction = make_feature(box(0, 0, 5, 5), name="qupath-rkd lesion 1")
    path = _export(project_dir, "1", [tumour, old_prediction], {"qupath-rkd.tumor-free": "false"})
    before = path.read_bytes()
    backend = GeojsonBackend(open_project(project_dir))
    got = backend.read_annotations(backend.images()[0])
    assert got.exported and got.source == path
    assert [o.class_name for o in got.objects] == ["Tumor"]  # our own detection left out
    assert got.metadata == {"qupath-rkd.tumor-free": "false"}
    assert len(got.sha256 or "") == 64 and got.repairs == []
    assert path.read_bytes() == before
    # never exported: no file and no manifest record
    second = backend.read_annotations(backend.images()[1])
    assert not second.exported and second.objects == [] and second.sha256 is None


def test_bad_annotation_file_is_a_one_line_error(project_dir: Path) -> None:
    path = _export(project_dir, "1", [], {})
    path.write_bytes(b'{"type": "FeatureCollection", "features": [')
    backend = GeojsonBackend(open_project(project_dir))
    with pytest.raises(AnnotationError) as info:
        backend.read_annotations(backend.images()[0])
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == b'{"type": "FeatureCollection", "features": ['
    (project_dir / "qupath-rkd" / "annotations" / "manifest.json").write_text("[1, 2")
    with pytest.raises(AnnotationError, match=r"manifest\.json: not JSON"):
        GeojsonBackend(open_project(project_dir)).read_annotations(backend.images()[1])


def test_manifest_accepts_the_list_form_keyed_by_entry_id(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"images": [{"entryID": 3, "uri": "file:/a"}, {"x": 1}]}))
    assert read_manifest(path) == {"3": {"entryID": 3, "uri": "file:/a"}}
    assert read_manifest(tmp_path / "absent.json") == {}


def test_old_demo_snake_case_manifest_still_reads(project_dir: Path) -> None:
    """Demos built before the demo used the export's format wrote ``entry_id`` and
    ``image_name``: their metadata (the tumour-free / fully-annotated flags) still reads."""
    entry = open_project(project_dir).entries[0]
    folder = project_dir / "qupath-rkd" / "annotations"
    folder.mkdir(parents=True)
    (folder / f"{entry.entry_id}.geojson").write_text(
        '{"type": "FeatureCollection", "features": []}'
    )
    old = {
        "format": "qupath-rkd-annotations",
        "qupath_version": "0.5.1",
        "images": [
            {
                "entry_id": entry.entry_id,
                "image_name": "x",
                "mpp": 0.972,
                "metadata": {"qupath-rkd.tumor-free": "true"},
                "annotations": f"{entry.entry_id}.geojson",
                "n_annotations": 0,
            }
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(old))
    backend = GeojsonBackend(open_project(project_dir))
    got = backend.read_annotations(backend.images()[0])
    assert got.entry_id == entry.entry_id
    assert got.exported and got.metadata["qupath-rkd.tumor-free"] == "true"


def test_write_predictions_atomic_with_backup_and_idempotent(project_dir: Path) -> None:
    project = open_project(project_dir)
    backend = GeojsonBackend(project)
    entry = project.entries[0]
    layout = ExchangeLayout.for_project(project)
    first = [
        make_feature(
            box(0, 0, 10, 10),
            class_name="Tumor",
            name="qupath-rkd lesion 1",
            feature_id="00000000-0000-4000-8000-000000000001",
        )
    ]
    result = backend.write_predictions(entry, first)
    assert result.written and result.backup is None and result.path == layout.predictions_file("1")
    content1 = result.path.read_bytes()
    assert qupath_import_problems(json.loads(content1)) == []
    mtime = result.path.stat().st_mtime_ns
    again = backend.write_predictions(entry, first)
    assert not again.written and result.path.stat().st_mtime_ns == mtime  # byte-identical: kept
    second = [make_feature(box(5, 5, 20, 20), class_name="Tumor", name="qupath-rkd lesion 1")]
    replaced = backend.write_predictions(entry, second)
    assert replaced.written and replaced.backup == layout.predictions_backup("1")
    assert replaced.backup.read_bytes() == content1
    assert read_geojson(result.path)[0].geometry.equals(box(5, 5, 20, 20))
    leftovers = [p.name for p in layout.predictions_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_bounds_offset_is_applied_both_ways(project_dir: Path) -> None:
    project = open_project(project_dir)
    entry = dataclasses.replace(project.entries[0], bounds_offset_px=(-300, -200))
    _export(
        project_dir,
        "1",
        [make_feature(box(1000, 1000, 1100, 1100), object_type="annotation", class_name="Tumor")],
        {},
    )
    backend = GeojsonBackend(project)
    (obj,) = backend.read_annotations(entry).objects
    assert obj.geometry.equals(box(700, 800, 800, 900))  # slide layer's frame
    written = backend.write_predictions(entry, [make_feature(obj.geometry, name="qupath-rkd l")])
    assert read_geojson(written.path)[0].geometry.equals(box(1000, 1000, 1100, 1100))


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions"
)
def test_read_only_project_is_a_clear_error(project_dir: Path) -> None:
    project = open_project(project_dir)
    project_dir.chmod(0o555)
    try:
        with pytest.raises(ProjectReadOnlyError, match="writable"):
            GeojsonBackend(project).write_predictions(
                project.entries[0], [make_feature(box(0, 0, 1, 1), name="qupath-rkd x")]
            )
    finally:
        project_dir.chmod(0o755)


@pytest.mark.qupath
def test_paquo_backend_reads_and_writes_a_real_project(real_data: Path, tmp_path: Path) -> None:
    """Only where QuPath is installed: a project made by QuPath (through paquo) round trip."""
    from paquo.classes import QuPathPathClass
    from paquo.projects import QuPathProject

    slide = tmp_path / "slide.svs"
    shutil.copy(real_data / "slides" / "cmu-1-small-region.svs", slide)
    with QuPathProject(tmp_path / "p", mode="x") as qp:
        image = qp.add_image(slide)
        image.hierarchy.add_annotation(box(100, 100, 400, 400), QuPathPathClass("Tumor"))
    project = open_project(tmp_path / "p")
    backend, _ = get_backend(project, "paquo")
    entry = project.entries[0]
    (obj,) = backend.read_annotations(entry).objects
    assert obj.class_name == "Tumor" and obj.geometry.equals(box(100, 100, 400, 400))
    feats = [
        make_feature(
            box(10, 10, 50, 50),
            class_name="Tumor",
            name="qupath-rkd lesion 1",
            measurements={"p": 0.9},
        )
    ]
    backend.write_predictions(entry, feats)
    backend.write_predictions(entry, feats)  # replaces, does not duplicate
    with QuPathProject(tmp_path / "p", mode="r") as qp:
        hierarchy = qp.images[0].hierarchy
        assert len(hierarchy.annotations) == 1
        assert [d.name for d in hierarchy.detections] == ["qupath-rkd lesion 1"]


def test_permission_error_while_replacing_keeps_the_old_file(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root ignores permissions, so the refusal is injected at the write itself: the old
    predictions must survive and the error must say what to do."""
    import qupath_rkd.qupath.backends.base as base

    project = open_project(project_dir)
    backend = GeojsonBackend(project)
    entry = project.entries[0]
    first = backend.write_predictions(entry, [make_feature(box(0, 0, 1, 1), name="qupath-rkd a")])
    old = first.path.read_bytes()

    def refuse(path: object, data: bytes) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(base, "atomic_write_bytes", refuse)
    with pytest.raises(ProjectReadOnlyError, match="writable") as info:
        backend.write_predictions(entry, [make_feature(box(0, 0, 2, 2), name="qupath-rkd b")])
    assert "\n" not in str(info.value)
    assert first.path.read_bytes() == old


def test_project_file_metadata_wins_over_the_manifest(project_dir: Path) -> None:
    data = json.loads((project_dir / "project.qpproj").read_text())
    data["images"][0]["metadata"] = {"qupath-rkd.tumor-free": "true"}
    (project_dir / "project.qpproj").write_text(json.dumps(data))
    _export(project_dir, "1", [], {"qupath-rkd.tumor-free": "false", "stain": "H&E"})
    project = open_project(project_dir)
    got = GeojsonBackend(project).read_annotations(project.entries[0])
    assert got.metadata == {"qupath-rkd.tumor-free": "true", "stain": "H&E"}

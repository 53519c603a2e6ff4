"""The demo project looks like what QuPath 0.5.1 writes, and its FROC is wired to the truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qupath_rkd.demo import (
    DemoSlideSpec,
    build_demo_project,
    demo_froc,
    qupath_file_uri,
)
from qupath_rkd.errors import ProjectError
from qupath_rkd.qupath.backends import get_backend
from qupath_rkd.qupath.geojson import write_geojson
from qupath_rkd.qupath.project import open_project

SPECS = (
    DemoSlideSpec("T annotated.tif", (500.0,), "annotated", 1),
    DemoSlideSpec("N free.tif", (), "tumor-free", 2),
    DemoSlideSpec("U.tif", (500.0,), "unlabelled", 3),
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("demo") / "demo folder"  # a space, as real paths have
    return build_demo_project(root, width_px=1280, height_px=1280, specs=SPECS)


def _keys(obj: object) -> object:
    """The nested key structure of JSON (lists: the structure of their first item)."""
    if isinstance(obj, dict):
        return {k: _keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_keys(obj[0])] if obj else []
    return type(obj).__name__


def test_project_has_the_layout_of_a_real_qupath_051_project(demo, real_data: Path) -> None:  # type: ignore[no-untyped-def]
    real_dir = real_data / "qupath-projects" / "qupath-0.5.1"
    real = json.loads((real_dir / "project.qpproj").read_text())
    ours = json.loads((demo.project_dir / "project.qpproj").read_text())
    assert ours["version"] == real["version"] == "0.5.1"
    assert _keys({k: v for k, v in ours.items() if k != "images"}) == _keys(
        {k: v for k, v in real.items() if k != "images"}
    )
    # every entry of ours has the structure of the real entry that carries metadata
    real_entry = _keys(real["images"][0])
    for entry in ours["images"]:
        shape = _keys(entry)
        assert shape["serverBuilder"] == real_entry["serverBuilder"]  # type: ignore[index]
        assert set(shape) == set(real_entry)  # type: ignore[arg-type]
        assert entry["serverBuilder"]["uri"].startswith("file:/")
        assert "%20" in entry["serverBuilder"]["uri"]  # percent-encoded, as QuPath writes
    real_server = json.loads((real_dir / "data" / "1" / "server.json").read_text())
    for slide in demo.slides:
        server = json.loads(
            (demo.project_dir / "data" / str(slide.entry_id) / "server.json").read_text()
        )
        assert _keys(server) == _keys(real_server)
        assert (demo.project_dir / "data" / str(slide.entry_id) / "thumbnail.jpg").is_file()
    assert (demo.project_dir / "classifiers" / "classes.json").is_file()


def test_project_reads_back_with_its_labels(demo) -> None:  # type: ignore[no-untyped-def]
    project = open_project(demo.project_dir)
    assert [e.name for e in project.entries] == [s.name for s in SPECS]
    assert all(e.path is not None and e.path_source == "stored" for e in project.entries)
    assert all(e.mpp == pytest.approx(0.972) for e in project.entries)
    backend, _ = get_backend(project, "geojson")
    sets = {e.entry_id: backend.read_annotations(e) for e in project.entries}
    tumour = sets["1"].objects
    assert tumour and all(o.class_name == "Tumor" and o.object_type == "annotation" for o in tumour)
    truth = demo.slides[0].lesions[0]
    # the pathologist's outline lies inside the true lesion and covers most of it
    outline = tumour[0].geometry
    assert outline.difference(truth).area < 1e-6 * truth.area + 1.0
    assert outline.area > 0.8 * truth.area
    assert sets["1"].metadata.get("qupath-rkd.fully-annotated") == "true"
    assert sets["2"].metadata.get("qupath-rkd.tumor-free") == "true"
    assert sets["3"].objects == [] and not sets["3"].metadata


def test_demo_manifest_is_in_the_export_scripts_format(demo) -> None:  # type: ignore[no-untyped-def]
    """The demo's manifest.json has the keys groovy/export_annotations.groovy writes (taken
    from the script), not a form of its own."""
    import re

    script = Path(__file__).resolve().parents[2] / "groovy" / "export_annotations.groovy"
    text = script.read_text(encoding="utf-8")
    manifest_path = demo.project_dir / "qupath-rkd" / "annotations" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert set(manifest) == set(re.findall(r'manifest\.put\("(\w+)"', text))
    assert [r["entryID"] for r in manifest["images"]] == ["1", "2", "3"]
    for record in manifest["images"]:
        assert set(record) == set(re.findall(r'record\.put\("(\w+)"', text))
        assert record["pixelWidthMicrons"] == pytest.approx(0.972)


def test_demo_folder_must_be_new(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    with pytest.raises(ProjectError, match="not empty"):
        build_demo_project(tmp_path, specs=SPECS[:1])


def _predictions(demo, entry_id: int, points: list[tuple[float, float, float]]) -> None:  # type: ignore[no-untyped-def]
    """Predictions as ``sync``/``predict`` write them: the lesions go through
    :func:`qupath_rkd.inference.write.lesion_features` (its measurement names, not copies)."""
    from types import SimpleNamespace

    from shapely.geometry import Point

    from qupath_rkd.inference.write import lesion_features
    from qupath_rkd.lesions.extract import Lesion

    lesions = [Lesion(Point(x, y).buffer(50), p, p, 7850.0, (x, y), 100.0, 1) for x, y, p in points]
    pred = SimpleNamespace(lesions=lesions)
    features = lesion_features(pred, "test", str(entry_id))  # type: ignore[arg-type]
    folder = demo.project_dir / "qupath-rkd" / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    write_geojson(folder / f"{entry_id}.geojson", features)


def test_froc_scores_predictions_against_the_truth(demo) -> None:  # type: ignore[no-untyped-def]
    held_out = demo.slides[2]
    centre = held_out.lesions[0].representative_point()
    # a hit at the lesion, with a false positive far away of lower probability
    _predictions(demo, held_out.entry_id, [(centre.x, centre.y, 0.9), (5.0, 5.0, 0.3)])
    result, n_slides = demo_froc(demo)
    assert n_slides == 1 and result is not None
    assert result.n_lesions == 1 and result.score == pytest.approx(1.0)
    # only the false positive: sensitivity 0 everywhere
    _predictions(demo, held_out.entry_id, [(5.0, 5.0, 0.9)])
    result, _ = demo_froc(demo)
    assert result is not None and result.score == pytest.approx(0.0)


def test_file_uri_is_percent_encoded_as_in_qupath_projects(tmp_path: Path) -> None:
    path = tmp_path / "a b" / "é.tif"
    uri = qupath_file_uri(path)
    assert uri.startswith("file:/") and not uri.startswith("file://")
    assert "a%20b/%C3%A9.tif" in uri


def _no_build(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the demo was built before the device was checked")


@pytest.mark.parametrize("exists", [False, True])
def test_demo_checks_the_device_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool
) -> None:
    """Regression: ``demo --device cuda`` without CUDA built every slide, then failed."""
    import torch
    from click.testing import CliRunner

    from qupath_rkd.cli import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("qupath_rkd.demo.project.build_demo_project", _no_build)
    root = tmp_path / "demo"
    if exists:
        root.mkdir()
    result = CliRunner().invoke(cli, ["demo", str(root), "--device", "cuda"])
    assert result.exit_code == 1, result.output
    assert "CUDA is not available" in result.output and "--device cpu" in result.output
    assert "Traceback" not in result.output
    assert root.is_dir() == exists and (not exists or not any(root.iterdir()))


@pytest.mark.parametrize("exists", [False, True])
def test_a_failed_demo_build_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool
) -> None:
    from qupath_rkd.demo import run_demo, semireal

    calls = []

    def build_then_fail(path: Path, **kwargs: object) -> object:
        if calls:
            raise KeyboardInterrupt  # Ctrl-C on the second slide
        calls.append(path)
        kwargs.update(width_px=256, height_px=256, lesion_diameters_um=(100.0,), n_lesions=1)
        return real_build(path, **kwargs)

    real_build = semireal.build_semireal_slide
    monkeypatch.setattr(semireal, "build_semireal_slide", build_then_fail)
    parent = tmp_path / "new parent"
    root = parent / "demo"
    if exists:
        root.mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        run_demo(root, overrides={"sync.device": "cpu"})
    assert calls and calls[0].is_relative_to(root)
    if exists:
        assert root.is_dir() and not any(root.iterdir())
    else:
        assert not parent.exists()

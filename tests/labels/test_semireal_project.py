"""Project → exchange folder → labelled set, on a semi-real slide (a mosaic of real PCam patches
with a lesion of known shape) opened through the slide layer's real tile grid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely

from qupath_rkd.constants import LABEL_IGNORE, LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import ProjectError
from qupath_rkd.labels import (
    FULLY_ANNOTATED_KEY,
    TUMOR_FREE_KEY,
    ClassMapping,
    LabelConfig,
    SlideInput,
    build_labelled_set,
)
from qupath_rkd.qupath.backends import get_backend
from qupath_rkd.qupath.geojson import make_feature
from qupath_rkd.qupath.project import file_uri, open_project

WIDTH, HEIGHT = 2048, 1536


@pytest.fixture(scope="module")
def semireal(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from qupath_rkd.demo import build_semireal_slide, demo_patch_dirs

    normal_dir, tumor_dir = demo_patch_dirs()
    folder = tmp_path_factory.mktemp("slides")
    tumour = build_semireal_slide(
        folder / "LN-01.tif",
        normal_dir=normal_dir,
        tumor_dir=tumor_dir,
        width_px=WIDTH,
        height_px=HEIGHT,
        n_lesions=1,
        lesion_diameters_um=(700.0,),
        seed=3,
    )
    clean = build_semireal_slide(
        folder / "LN-02.tif",
        normal_dir=normal_dir,
        tumor_dir=tumor_dir,
        width_px=WIDTH,
        height_px=HEIGHT,
        seed=4,
    )
    return tumour, clean


def _project(real_data: Path, root: Path, slides: list[Path], metadata: list[dict]) -> Path:
    """A copy of the real QuPath 0.5.1 project whose entries point at ``slides``."""
    project = root / "project"
    shutil.copytree(real_data / "qupath-projects" / "qupath-0.5.1", project)
    for p in [project, *project.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    data = json.loads((project / "project.qpproj").read_text())
    template = data["images"][0]
    images = []
    for i, (slide, meta) in enumerate(zip(slides, metadata, strict=True), start=1):
        entry = json.loads(json.dumps(template))
        entry["entryID"] = i
        entry["imageName"] = slide.name
        entry["metadata"] = meta
        builder = entry["serverBuilder"]
        builder["uri"] = file_uri(slide)
        builder["metadata"].update(name=slide.name, width=WIDTH, height=HEIGHT)
        for key in ("pixelWidth", "pixelHeight"):
            builder["metadata"]["pixelCalibration"][key]["value"] = 0.972
        images.append(entry)
    data["images"] = images
    (project / "project.qpproj").write_text(json.dumps(data, indent=2))
    return project


def _export(project: Path, entry_id: int, features: list[dict]) -> None:
    folder = project / "qupath-rkd" / "annotations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{entry_id}.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )


def test_labels_from_a_project_on_real_tiles(semireal, real_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tumour, clean = semireal
    project_dir = _project(
        real_data,
        tmp_path,
        [tumour.path, clean.path],
        [{FULLY_ANNOTATED_KEY: "true"}, {TUMOR_FREE_KEY: "true"}],
    )
    lesion = tumour.lesions[0]
    _export(project_dir, 1, [make_feature(lesion, object_type="annotation", class_name="Tumor")])
    _export(project_dir, 2, [])
    project = open_project(project_dir)
    project.check_slides()
    backend, _ = get_backend(project, "geojson")
    inputs = [SlideInput.from_entry(e, backend.read_annotations(e)) for e in backend.images()]
    config = LabelConfig()
    labelled = build_labelled_set(inputs, ClassMapping(), config)

    first = labelled.slides[0]
    side = first.tile_level0_px
    assert side == pytest.approx(96.0)  # 96 px at 0.972 µm/px on a 0.972 µm/px slide
    tiles = shapely.box(
        first.xy_px[:, 0], first.xy_px[:, 1], first.xy_px[:, 0] + side, first.xy_px[:, 1] + side
    )
    truth = shapely.area(shapely.intersection(tiles, lesion)) / side**2
    assert first.count(LABEL_TUMOR) > 10 and first.count(LABEL_NORMAL) > 10
    assert (truth[first.labels == LABEL_TUMOR] >= 0.5).all()
    assert (truth[first.labels == LABEL_NORMAL] == 0).all()
    assert ((truth > 0) & (truth < 0.5) <= (first.labels == LABEL_IGNORE)).all()
    second = labelled.slides[1]
    assert second.count(LABEL_NORMAL) == len(second.labels) > 50  # tumour-free: all tissue
    # every used tile is inside its slide
    for item in labelled.items:
        assert 0 <= item.x_px <= WIDTH - side and 0 <= item.y_px <= HEIGHT - side
    assert {it.slide_path for it in labelled.items} == {str(tumour.path), str(clean.path)}
    again = build_labelled_set(inputs, ClassMapping(), config)
    assert again.sha256 == labelled.sha256 and again.items == labelled.items
    assert np.array_equal(again.labels, labelled.labels)


def test_a_different_file_than_qupaths_is_refused(
    semireal, real_data: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    tumour, _ = semireal
    project_dir = _project(real_data, tmp_path, [tumour.path], [{TUMOR_FREE_KEY: "true"}])
    data = json.loads((project_dir / "project.qpproj").read_text())
    data["images"][0]["serverBuilder"]["metadata"]["width"] = WIDTH + 64
    (project_dir / "project.qpproj").write_text(json.dumps(data))
    entry = open_project(project_dir).entries[0]
    inp = SlideInput(
        entry.entry_id,
        entry.name,
        entry.path,
        [],
        entry.metadata,
        entry.width_px,
        entry.height_px,
        entry.mpp,
    )
    with pytest.raises(ProjectError, match="not the one QuPath used"):
        build_labelled_set([inp], ClassMapping(), LabelConfig())

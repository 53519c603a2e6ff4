"""Read a QuPath project, its exported annotations, and the tiles they label.

    python examples/read_qupath_project.py [PROJECT] [SLIDE_ROOT]

With a PROJECT (folder or project.qpproj, QuPath 0.2–0.6) it lists the images, where each slide
was found (stored path, relative to the project's old place, or SLIDE_ROOT), the annotations in
``<project>/qupath-rkd/annotations/`` (written by ``groovy/export_annotations.groovy``) and, when
the slides are here, the labelled set's summary. Without arguments it first builds a small
project in a temporary folder: one semi-real slide (a mosaic of real PCam patches with one
lesion) outlined as ``Tumor`` and marked fully annotated, exported as the Groovy script would.
Nothing in the project is written.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from qupath_rkd.constants import PROJECT_SUBDIR
from qupath_rkd.errors import QupathRkdError
from qupath_rkd.labels import (
    FULLY_ANNOTATED_KEY,
    ClassMapping,
    LabelConfig,
    SlideInput,
    build_labelled_set,
)
from qupath_rkd.qupath.backends import get_backend
from qupath_rkd.qupath.geojson import make_feature, write_geojson
from qupath_rkd.qupath.project import file_uri, open_project


def make_small_project(root: Path) -> Path:
    """A one-image project shaped like QuPath 0.5's, with one exported Tumor annotation."""
    from qupath_rkd.demo import build_semireal_slide, demo_patch_dirs

    normal_dir, tumor_dir = demo_patch_dirs()
    slide = build_semireal_slide(
        root / "slides" / "LN-01.tif",
        normal_dir=normal_dir,
        tumor_dir=tumor_dir,
        width_px=2048,
        height_px=1536,
        n_lesions=1,
        lesion_diameters_um=(700.0,),
        seed=3,
    )
    project = root / "project"
    (project / "data" / "1").mkdir(parents=True)
    calibration = {"value": slide.mpp, "unit": "µm"}
    builder = {
        "builderType": "uri",
        "providerClassName": "qupath.lib.images.servers.openslide.OpenslideServerBuilder",
        "uri": file_uri(slide.path),
        "args": [],
        "metadata": {
            "name": slide.path.name,
            "width": 2048,
            "height": 1536,
            "pixelCalibration": {"pixelWidth": calibration, "pixelHeight": calibration},
        },
    }
    qpproj = {
        "version": "0.5.1",
        "uri": file_uri(project / "project.qpproj"),
        "lastID": 1,
        "images": [
            {
                "serverBuilder": builder,
                "entryID": 1,
                "imageName": slide.path.name,
                "metadata": {FULLY_ANNOTATED_KEY: "true"},
            }
        ],
    }
    (project / "project.qpproj").write_text(json.dumps(qpproj, indent=2), encoding="utf-8")
    exchange = project / PROJECT_SUBDIR / "annotations"
    exchange.mkdir(parents=True)
    outline = slide.lesions[0].buffer(-10).simplify(6)  # a pathologist's quick outline
    write_geojson(
        exchange / "1.geojson",
        [make_feature(outline, object_type="annotation", class_name="Tumor")],
    )
    return project


def main(argv: list[str]) -> int:
    if argv:
        return show(Path(argv[0]), argv)
    with tempfile.TemporaryDirectory(prefix="qupath-rkd-example-") as tmp:
        project_path = make_small_project(Path(tmp))
        print(f"built a small project in {project_path} (a temporary folder, removed at the end)")
        return show(project_path, argv)


def show(project_path: Path, argv: list[str]) -> int:
    slide_root = argv[1] if len(argv) > 1 else None
    try:
        project = open_project(project_path, slide_root=slide_root)
    except QupathRkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{project.qpproj_path}: QuPath {project.version}, {len(project.entries)} image(s)"
        + (" (moved since QuPath saved it)" if project.moved else "")
    )
    backend, note = get_backend(project, "geojson")
    print(note)
    inputs = []
    for entry in project.entries:
        mpp = f"{entry.mpp:.4f} µm/px" if entry.mpp else "no µm/px"
        size = f"{entry.width_px}x{entry.height_px} px" if entry.width_px else "size unknown"
        where = f"found ({entry.path_source}): {entry.path}" if entry.path else "NOT FOUND"
        print(f"  [{entry.entry_id}] {entry.name}: {size}, {mpp}; {where}")
        try:
            annotations = backend.read_annotations(entry)
        except QupathRkdError as exc:
            print(f"      annotations: error: {exc}")
            continue
        if not annotations.exported:
            print("      annotations: not exported yet (run groovy/export_annotations.groovy)")
            continue
        classes: dict[str, int] = {}
        for obj in annotations.objects:
            classes[obj.class_name or "Unclassified"] = (
                classes.get(obj.class_name or "Unclassified", 0) + 1
            )
        print(f"      annotations: {classes or 'none'}; metadata {annotations.metadata or '{}'}")
        for repair in annotations.repairs:
            print(f"      repaired: {repair}")
        if entry.path is not None:
            inputs.append(SlideInput.from_entry(entry, annotations))
    missing = project.missing_slides()
    if missing:
        print(f"{len(missing)} slide(s) not found; pass SLIDE_ROOT to look for them elsewhere")
    if inputs:
        try:
            labelled = build_labelled_set(
                inputs, ClassMapping(), LabelConfig(), require_trainable=False
            )
        except QupathRkdError as exc:
            print(f"labels: error: {exc}", file=sys.stderr)
            return 1
        print(labelled.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Shared settings and helpers of the sync tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from qupath_rkd.demo import DemoSlideSpec

#: Small slides (1536 x 1280 px at 0.972 µm/px, about 1.5 x 1.2 mm): a tumour slide outlined
#: and marked fully annotated, a tumour-free slide, and two slides to predict.
SMALL_SLIDES = (
    DemoSlideSpec("A tumour annotated.tif", (550.0,), "annotated", 21),
    DemoSlideSpec("B tumour-free.tif", (), "tumor-free", 22),
    DemoSlideSpec("C.tif", (550.0,), "unlabelled", 23),
    DemoSlideSpec("D.tif", (), "unlabelled", 24),
)

#: Settings that keep a full sync to seconds on 2 CPU cores.
FAST = {
    "training.teacher": "efficientnet_lite0",
    "training.input_px": 64,
    "training.steps": 4,
    "training.batch_size": 8,
    "labels.max_tiles_per_class": 32,
    "inference.batch_size": 64,
    "sync.backend": "geojson",
    "sync.device": "cpu",
}


def snapshot(folder: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(rel.startswith(s) for s in skip):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def copy_demo(source_root: Path, target_root: Path) -> Path:
    """Copy a demo folder and point the copy's project at the copy's slides (as relinking
    the images in QuPath would), so that nothing in the copy refers to the original.
    Returns the copy's project folder."""
    import shutil

    from qupath_rkd.demo import qupath_file_uri

    shutil.copytree(source_root, target_root)
    old = qupath_file_uri(source_root / "slides")
    new = qupath_file_uri(target_root / "slides")
    project = target_root / "project"
    files = [project / "project.qpproj", project / "qupath-rkd" / "annotations" / "manifest.json"]
    files += sorted((project / "data").glob("*/server.json"))
    for path in files:
        path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    return project


def one_error_line(output: str) -> str:
    """The single ``Error:`` line of a command's output (and no traceback anywhere)."""
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    return errors[0]

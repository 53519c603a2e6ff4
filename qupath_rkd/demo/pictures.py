"""The demo's pictures: per slide a heatmap overlay, and the held-out slides' FROC curve.

Drawn from what ``sync`` wrote (``qupath-rkd/predictions/<entryID>.geojson``: the scored tiles
and the lesions) and the demo's truth, with the same drawing code as ``predict``
(:func:`qupath_rkd.inference.write.overlay_png`) and ``evaluate``
(:func:`qupath_rkd.evaluation.plot.froc_png`); nothing is predicted again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qupath_rkd.constants import PROJECT_SUBDIR
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.io_utils import atomic_write_bytes
from qupath_rkd.outputs import MEASURE_MAX_PROBABILITY, MEASURE_PROBABILITY

if TYPE_CHECKING:
    from qupath_rkd.demo.project import DemoProject, DemoSlide
    from qupath_rkd.evaluation.camelyon16 import FROCResult

logger = logging.getLogger(__name__)

#: The demo's pictures folder, under the demo folder.
PICTURES_DIR = "pictures"
FROC_PNG = "froc.png"


@dataclass
class DemoPictures:
    """What :func:`write_demo_pictures` made: the folder, the overlays, the FROC curve."""

    folder: Path
    overlays: list[Path] = field(default_factory=list)
    froc: Path | None = None


def _write_if_changed(path: Path, data: bytes) -> Path:
    """Write atomically, unless the file already holds these bytes (a rerun that changes
    nothing leaves the files as they were)."""
    if path.is_file() and path.read_bytes() == data:
        return path
    return atomic_write_bytes(path, data)


def heatmap_from_tiles(tiles: list[Any], mpp: float) -> Heatmap | None:
    """The heatmap grid rebuilt from sync's tile objects (each the square of its cell, with
    its probability); ``None`` without tiles."""
    boxes = [(o.geometry.bounds, o.measurements[MEASURE_PROBABILITY]) for o in tiles]
    if not boxes:
        return None
    side = float(np.median([b[2] - b[0] for b, _ in boxes]))
    x0 = min(b[0] for b, _ in boxes)
    y0 = min(b[1] for b, _ in boxes)
    cols = np.asarray([round((b[0] - x0) / side) for b, _ in boxes], np.int64)
    rows = np.asarray([round((b[1] - y0) / side) for b, _ in boxes], np.int64)
    grid = np.full((int(rows.max()) + 1, int(cols.max()) + 1), np.nan, np.float32)
    grid[rows, cols] = np.asarray([p for _, p in boxes], np.float32)
    # tile side = stride: each cell's footprint is exactly its tile object's square
    return Heatmap(grid, (float(x0), float(y0)), side, side, float(mpp))


def _slide_overlay(
    demo: DemoProject, slide: DemoSlide, threshold: float, max_px: int
) -> bytes | None:
    from qupath_rkd.inference.write import overlay_png
    from qupath_rkd.qupath.geojson import read_geojson
    from qupath_rkd.slides import open_slide

    pred_file = demo.project_dir / PROJECT_SUBDIR / "predictions" / f"{slide.entry_id}.geojson"
    if not pred_file.is_file():
        return None
    objects = read_geojson(pred_file)
    tiles = [
        o for o in objects if o.object_type == "tile" and MEASURE_PROBABILITY in o.measurements
    ]
    lesions = [
        o.geometry
        for o in objects
        if o.object_type == "detection" and o.measurements.get(MEASURE_MAX_PROBABILITY) is not None
    ]  # lesions, not suggestions
    heatmap = heatmap_from_tiles(tiles, slide.mpp)
    if heatmap is None:  # no tile objects (inference.heatmap_tiles off): an empty grid
        heatmap = Heatmap(np.full((1, 1), np.nan, np.float32), (0.0, 0.0), 1.0, 1.0, slide.mpp)
    with open_slide(slide.path, mpp=slide.mpp) as handle:
        thumb, ds = handle.thumbnail(max_px=max_px)
    truth = "tumour" if slide.lesions else "no tumour"
    title = (
        f"{slide.spec.name} ({slide.spec.role}; truth: {truth}, {len(slide.lesions)} lesion(s)):"
        f" {len(lesions)} predicted lesion(s)"
    )
    return overlay_png(
        thumb, ds, heatmap, threshold=threshold, title=title, truth=slide.lesions, lesions=lesions
    )


def write_demo_pictures(
    demo: DemoProject,
    froc: FROCResult | None,
    *,
    threshold: float,
    max_px: int = 1024,
) -> DemoPictures:
    """Write ``<demo>/pictures/<entryID> <slide>.png`` per slide with predictions (heatmap,
    truth outlines, predicted lesions, colour bar) and ``pictures/froc.png`` (when ``froc``
    is not ``None``)."""
    from qupath_rkd.evaluation.plot import froc_png

    folder = demo.root / PICTURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    made = DemoPictures(folder)
    for slide in demo.slides:
        png = _slide_overlay(demo, slide, threshold, max_px)
        if png is None:
            logger.info("no predictions for %s: no overlay", slide.spec.name)
            continue
        stem = Path(slide.spec.name).stem
        made.overlays.append(_write_if_changed(folder / f"{slide.entry_id} {stem}.png", png))
    if froc is not None:
        title = "Lesion FROC, held-out slides"
        made.froc = _write_if_changed(folder / FROC_PNG, froc_png(froc, title))
    return made

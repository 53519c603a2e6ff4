"""Candidate regions: connected groups of heatmap cells in unannotated tissue.

Frames: the heatmap's grid is indexed ``(row, col)``; geometry is level-0 ``(x, y)`` px in the
frame of the heatmap (the same frame as the slide's annotations given in ``excluded``). A cell
stands for its footprint, the ``stride_level0_px`` square centred on its tile
(:meth:`qupath_rkd.heatmap.Heatmap.to_level0_xy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.suggest.config import SuggestConfig


@dataclass(frozen=True)
class SuggestSlide:
    """One slide as the suggestions see it.

    Attributes:
        entry_id: the QuPath entry ID (kept in every suggestion).
        image_name: the image's name (for messages).
        heatmap: the calibrated tumour probability (NaN off tissue).
        excluded: the union of every annotation of the slide (shapely, level-0 px, the
            heatmap's frame), or ``None``; no suggestion overlaps it (touching is allowed).
        tumor_free: the slide is marked tumour-free: never suggested on.
        fully_annotated: the slide is marked fully annotated (all its tissue is labelled):
            never suggested on.
        view_probability: ``(V, rows, cols)`` per-view probabilities of test-time
            augmentation, or ``None`` (then ``tta_disagreement`` cannot rank this slide).
    """

    entry_id: str
    image_name: str
    heatmap: Heatmap
    excluded: Any = None
    tumor_free: bool = False
    fully_annotated: bool = False
    view_probability: np.ndarray | None = None

    @property
    def labelled_throughout(self) -> bool:
        """Every tissue cell of the slide is labelled already (by a flag)."""
        return self.tumor_free or self.fully_annotated


@dataclass(frozen=True)
class Candidate:
    """A region that could be suggested.

    Attributes:
        slide_index: index of its slide in the list given to the ranking.
        window_rc: ``(row, col)`` of the top-left cell of the window it was cut from.
        cells: ``(n, 2)`` int64 ``(row, col)`` of its cells, row-major, 4-connected.
    """

    slide_index: int
    window_rc: tuple[int, int]
    cells: np.ndarray


def window_cells(heatmap: Heatmap, region_um: float) -> int:
    """Cells on a side of a region window: ``floor(region_um / cell_um)``, at least 1."""
    return max(1, math.floor(region_um / heatmap.cell_um + 1e-9))


def footprint_boxes(heatmap: Heatmap, cells: np.ndarray) -> np.ndarray:
    """``(n,)`` shapely boxes: the footprints of ``cells`` (``(n, 2)`` ``(row, col)``)."""
    import shapely

    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    x0, y0 = heatmap.to_level0_xy(cells[:, 0] - 0.5, cells[:, 1] - 0.5)
    side = heatmap.stride_level0_px
    return np.asarray(shapely.box(x0, y0, x0 + side, y0 + side))


def eligible_cells(slide: SuggestSlide) -> np.ndarray:
    """``(rows, cols)`` bool: scored cells whose footprint does not overlap ``excluded``
    (an intersection of positive area); all False on a slide labelled throughout."""
    import shapely

    prob = slide.heatmap.probability
    ok = np.isfinite(prob)
    if slide.labelled_throughout:
        return np.zeros_like(ok)
    geom = slide.excluded
    if geom is None or geom.is_empty or not ok.any():
        return ok
    cells = np.argwhere(ok)
    boxes = footprint_boxes(slide.heatmap, cells)
    shapely.prepare(geom)
    hits = np.asarray(shapely.intersects(boxes, geom))
    if hits.any():
        area = np.asarray(shapely.area(shapely.intersection(boxes[hits], geom)))
        overlap = np.zeros(len(cells), dtype=bool)
        overlap[np.flatnonzero(hits)[area > 0.0]] = True
        ok[cells[overlap, 0], cells[overlap, 1]] = False
    return ok


def _starts(n: int, w: int, step: int) -> list[int]:
    if n <= w:
        return [0]
    starts = list(range(0, n - w + 1, step))
    if starts[-1] != n - w:
        starts.append(n - w)
    return starts


def candidate_regions(
    slide: SuggestSlide, slide_index: int, config: SuggestConfig
) -> list[Candidate]:
    """Every candidate region of one slide, in window order (row-major).

    Square windows of :func:`window_cells` cells a side, snapped to the grid, step half a
    window; in each, the largest 4-connected group of :func:`eligible_cells` (the first in
    raster order on a tie) is a candidate when it fills at least ``config.min_fill`` of the
    window. The same group found from two windows is one candidate.
    """
    from scipy import ndimage

    ok = eligible_cells(slide)
    if not ok.any():
        return []
    rows, cols = ok.shape
    w = window_cells(slide.heatmap, config.region_um)
    step = max(1, w // 2)
    need = max(1, math.ceil(config.min_fill * w * w - 1e-9))
    need = min(need, int(ok.sum()))  # a slide with less tissue than a window: all of it
    out: list[Candidate] = []
    seen: set[bytes] = set()
    for r0 in _starts(rows, w, step):
        for c0 in _starts(cols, w, step):
            sub = ok[r0 : r0 + w, c0 : c0 + w]
            if int(sub.sum()) < need:
                continue
            labels, n = ndimage.label(sub)
            if n == 0:
                continue
            sizes = np.bincount(labels.ravel())[1:]
            best = int(np.argmax(sizes)) + 1  # argmax: the first label on a tie
            if int(sizes[best - 1]) < need:
                continue
            cells = np.argwhere(labels == best).astype(np.int64) + np.array([r0, c0])
            key = cells.tobytes()
            if key in seen:
                continue
            seen.add(key)
            out.append(Candidate(slide_index, (r0, c0), cells))
    return out


def region_geometry(heatmap: Heatmap, cells: np.ndarray) -> Any:
    """The outline of ``cells``' footprints (a shapely Polygon; level-0 px)."""
    import shapely

    geom = shapely.union_all(footprint_boxes(heatmap, cells))
    return shapely.normalize(geom)

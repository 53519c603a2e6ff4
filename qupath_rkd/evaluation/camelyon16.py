"""The Camelyon16 lesion-detection FROC, as the organisers defined it.

Reference: the challenge's evaluation script (``Evaluation_FROC.py``, B. Ehteshami Bejnordi,
2016) and Ehteshami Bejnordi et al., JAMA 2017. Their steps, reproduced here:

1. Evaluation mask at level 5 (32× downsample of 0.243 µm/px, i.e. 7.776 µm per mask pixel):
   the tumour mask, every region grown by 75/2 µm (``distance_transform_edt(non-tumour) <
   75 / (mpp * 32 * 2)`` mask pixels), holes filled, labelled with 8-connectivity.
2. Isolated tumour cells: instances whose ``regionprops`` major axis is under
   ``275 / (mpp * 32)`` mask pixels; a detection in one is neither a TP nor an FP.
3. A detection ``(p, X, Y)`` hits the instance at ``mask[int(Y / 32), int(X / 32)]``; label 0 is an
   FP; for a lesion only the highest probability counts; on a normal slide every detection is an FP.
4. FROC: thresholds are the distinct probabilities (all FP probabilities and every lesion's best
   probability, 0 for a missed lesion, ITC entries included as 0) except the lowest; at each, FPs
   per slide = FPs ≥ t / number of slides (ALL slides) and sensitivity = lesions with best ≥ t /
   number of non-ITC lesions; then the point (0, 0) is appended; the score is the mean of the
   sensitivities interpolated at 0.25, 0.5, 1, 2, 4 and 8 FPs per slide.

Only generalisation: slides whose level-0 µm/px is not 0.243 get the mask pixel of the same
physical size (7.776 µm); for Camelyon16 slides this is exactly level 5.

Frames: geometry and detections are level-0 ``(x, y)`` pixels; the mask is ``(row, col)``; the one
conversion is :meth:`EvaluationMask.label_at` (and its inverse in :func:`evaluation_mask`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from skimage import measure

from qupath_rkd.errors import EvaluationError

logger = logging.getLogger(__name__)

#: Camelyon16 level-0 resolution (µm/px) and the level of the evaluation mask.
CAMELYON16_MPP = 0.243
EVALUATION_LEVEL = 5
#: µm per evaluation-mask pixel (0.243 µm/px × 2**5).
EVALUATION_MASK_MPP = CAMELYON16_MPP * 2**EVALUATION_LEVEL
#: Each annotated region is grown by half of 75 µm (about five tumour cells).
GROW_UM = 75.0 / 2.0
#: Instances with a major axis under this are isolated tumour cells (neither TP nor FP).
ITC_MAJOR_AXIS_UM = 275.0
#: FPs per slide at which sensitivity is averaged.
FROC_FPS_PER_SLIDE: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class EvaluationMask:
    """Labelled lesion instances of one tumour slide on the evaluation grid.

    Attributes:
        labels: ``(rows, cols)`` int32; 0 = no lesion, 1..n = 8-connected instances.
        origin_xy_px: level-0 ``(x, y)`` of the top-left corner of mask pixel ``(0, 0)``; a
            multiple of ``downsample`` so the grid is the slide's own level-5 grid.
        downsample: level-0 pixels per mask pixel (32 for Camelyon16).
        itc_labels: labels that are isolated tumour cells.
    """

    labels: np.ndarray
    origin_xy_px: tuple[float, float]
    downsample: float
    itc_labels: frozenset[int] = field(default_factory=frozenset)

    @property
    def n_instances(self) -> int:
        """Instances in the mask, ITCs included."""
        return int(self.labels.max()) if self.labels.size else 0

    @property
    def n_lesions(self) -> int:
        """Instances a detector must find (ITCs excluded)."""
        return self.n_instances - len(self.itc_labels)

    def label_at(self, x_px: np.ndarray, y_px: np.ndarray) -> np.ndarray:
        """Instance label under level-0 points ``(x, y)``; 0 outside the mask.

        Mirrors the organisers' ``mask[int(Y / 32), int(X / 32)]`` (floor of the scaled
        coordinate, then the pixel at that ``(row, col)``).
        """
        x = np.asarray(x_px, dtype=np.float64)
        y = np.asarray(y_px, dtype=np.float64)
        col = np.floor((x - self.origin_xy_px[0]) / self.downsample).astype(np.int64)
        row = np.floor((y - self.origin_xy_px[1]) / self.downsample).astype(np.int64)
        rows, cols = self.labels.shape
        inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
        out = np.zeros(x.shape, dtype=np.int64)
        out[inside] = self.labels[row[inside], col[inside]]
        return out


def mask_downsample_for(mpp: float) -> float:
    """Level-0 px per evaluation-mask pixel for a slide of level-0 µm/px ``mpp`` (32 at 0.243)."""
    if not (math.isfinite(mpp) and mpp > 0):
        raise EvaluationError(f"slide µm/px must be positive, got {mpp}")
    if abs(mpp - CAMELYON16_MPP) <= 1e-6:
        return float(2**EVALUATION_LEVEL)
    return EVALUATION_MASK_MPP / mpp


def _polygons(geom: BaseGeometry | Iterable[BaseGeometry]) -> list[Polygon]:
    if isinstance(geom, BaseGeometry):
        items: Iterable[BaseGeometry] = [geom]
    else:
        items = geom
    out: list[Polygon] = []
    for g in items:
        if isinstance(g, Polygon):
            if not g.is_empty:
                out.append(g)
        elif isinstance(g, MultiPolygon) or hasattr(g, "geoms"):
            out.extend(_polygons(list(g.geoms)))
    return out


def fill_ring_even_odd(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels ``(shape)`` bool whose centre is inside a closed ring, by the even-odd rule.

    Args:
        rows, cols: ``(V,)`` vertex positions in pixel-index units (pixel ``(i, j)`` has its
            centre at ``(i, j)``); the ring may be closed or not and may self-intersect.

    A scanline fill: every edge crossing the centre line of row ``i`` (half-open in ``row``, so a
    vertex is counted once) toggles the parity of all centres at or right of the crossing.
    O(rows x crossings), unlike a point-in-polygon test per pixel.
    """
    height, width = shape
    ra, ca = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
    rb, cb = np.roll(ra, -1), np.roll(ca, -1)
    lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
    first = np.maximum(np.ceil(lo), 0).astype(np.int64)  # first row centre with lo <= i
    last = np.minimum(np.ceil(hi) - 1, height - 1).astype(np.int64)  # last with i < hi
    n = np.maximum(last - first + 1, 0)
    inside = np.zeros(shape, dtype=bool)
    if n.sum() == 0:
        return inside
    edge = np.repeat(np.arange(ra.size), n)
    row = first[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(n) - n, n))
    t = (row - ra[edge]) / (rb[edge] - ra[edge])
    x = ca[edge] + t * (cb[edge] - ca[edge])
    col = np.clip(np.ceil(x), 0, width).astype(np.int64)  # first centre at or right of x
    toggles = np.zeros((height, width + 1), dtype=np.int32)
    np.add.at(toggles, (row, col), 1)
    return (np.cumsum(toggles[:, :width], axis=1) % 2).astype(bool)


def rasterize(
    tumor: Sequence[BaseGeometry],
    exclude: Sequence[BaseGeometry],
    *,
    origin_xy_px: tuple[float, float],
    downsample: float,
    shape: tuple[int, int],
) -> np.ndarray:
    """Tumour mask ``(rows, cols)`` bool: a pixel is tumour when its centre lies in a tumour polygon
    (outside its holes) and in no exclusion polygon (Camelyon16's ``_2`` group / ``negative``).

    Each ring is filled even-odd, so self-intersecting annotations behave as in ASAP.
    """
    mask = np.zeros(shape, dtype=bool)

    def fill(poly: Polygon) -> tuple[np.ndarray, tuple[slice, slice]] | None:
        def rc(ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # level-0 (x, y) -> fractional (row, col) whose integers are pixel centres.
            cols = (ring[:, 0] - origin_xy_px[0]) / downsample - 0.5
            rows = (ring[:, 1] - origin_xy_px[1]) / downsample - 0.5
            return rows, cols

        r_ext, c_ext = rc(np.asarray(poly.exterior.coords))
        r0 = max(math.floor(r_ext.min()), 0)
        c0 = max(math.floor(c_ext.min()), 0)
        r1 = min(math.ceil(r_ext.max()) + 1, shape[0])
        c1 = min(math.ceil(c_ext.max()) + 1, shape[1])
        if r1 <= r0 or c1 <= c0:
            return None
        local_shape = (r1 - r0, c1 - c0)
        local = fill_ring_even_odd(r_ext - r0, c_ext - c0, local_shape)
        for hole in poly.interiors:
            r_h, c_h = rc(np.asarray(hole.coords))
            local &= ~fill_ring_even_odd(r_h - r0, c_h - c0, local_shape)
        return local, (slice(r0, r1), slice(c0, c1))

    for poly in _polygons(tumor):
        filled = fill(poly)
        if filled is not None:
            mask[filled[1]] |= filled[0]
    for poly in _polygons(exclude):
        filled = fill(poly)
        if filled is not None:
            mask[filled[1]] &= ~filled[0]
    return mask


def evaluation_mask(
    tumor: Sequence[BaseGeometry],
    exclude: Sequence[BaseGeometry] = (),
    *,
    mpp: float,
    slide_size_px: tuple[int, int] | None = None,
    downsample: float | None = None,
) -> EvaluationMask:
    """The organisers' evaluation mask and ITC labels for one tumour slide.

    Args:
        tumor: tumour polygons in level-0 ``(x, y)`` px.
        exclude: non-tumour islands cut out of them (Camelyon16 ``negative``).
        mpp: level-0 µm/px of the slide.
        slide_size_px: level-0 ``(width, height)``; the mask then covers the whole slide (as in
            the organisers' script). Without it, the mask covers the annotations plus a margin on
            the slide's own level-5 grid (same labels unless a lesion touches the right or bottom
            slide edge).
        downsample: level-0 px per mask pixel; default :func:`mask_downsample_for` (32 at 0.243).
    """
    ds = float(downsample) if downsample is not None else mask_downsample_for(mpp)
    polys = _polygons(tumor)
    if not polys:
        raise EvaluationError("a tumour slide needs at least one tumour polygon")
    grow_px = GROW_UM / (mpp * ds)  # mask pixels
    margin = math.ceil(grow_px) + 2
    if slide_size_px is not None:
        origin = (0.0, 0.0)
        shape = (math.ceil(slide_size_px[1] / ds), math.ceil(slide_size_px[0] / ds))
    else:
        minx = min(p.bounds[0] for p in polys)
        miny = min(p.bounds[1] for p in polys)
        maxx = max(p.bounds[2] for p in polys)
        maxy = max(p.bounds[3] for p in polys)
        c0 = max(math.floor(minx / ds) - margin, 0)
        r0 = max(math.floor(miny / ds) - margin, 0)
        c1 = math.ceil(maxx / ds) + margin
        r1 = math.ceil(maxy / ds) + margin
        origin = (c0 * ds, r0 * ds)
        shape = (r1 - r0, c1 - c0)
    tumour_px = rasterize(polys, exclude, origin_xy_px=origin, downsample=ds, shape=shape)
    if not tumour_px.any():
        logger.warning("tumour annotations cover no evaluation-mask pixel centre")
        return EvaluationMask(np.zeros(shape, np.int32), origin, ds, frozenset())
    distance = ndimage.distance_transform_edt(~tumour_px)
    grown = distance < grow_px
    filled = ndimage.binary_fill_holes(grown)
    labels = measure.label(filled, connectivity=2).astype(np.int32)
    return EvaluationMask(labels, origin, ds, itc_labels(labels, mpp=mpp, downsample=ds))


def itc_labels(labels: np.ndarray, *, mpp: float, downsample: float) -> frozenset[int]:
    """Labels whose ``regionprops`` major axis is under 275 µm (``275 / (mpp * ds)`` pixels)."""
    threshold = ITC_MAJOR_AXIS_UM / (mpp * downsample)
    return frozenset(
        int(p.label) for p in measure.regionprops(labels) if p.axis_major_length < threshold
    )


@dataclass(frozen=True)
class SlideDetections:
    """One slide's contribution to the FROC.

    Attributes:
        slide_id: the slide's name.
        fp_probs: ``(F,)`` probabilities of the false positives.
        tp_probs: ``(n_instances,)`` best probability per instance (0 = missed; ITCs stay 0).
        n_lesions: non-ITC instances (0 on a normal slide).
        is_tumor: whether the slide has tumour.
        n_itc_hits: detections that fell in an ITC (ignored).
    """

    slide_id: str
    fp_probs: np.ndarray
    tp_probs: np.ndarray
    n_lesions: int
    is_tumor: bool
    n_itc_hits: int = 0


def score_detections(
    slide_id: str,
    probs: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    mask: EvaluationMask | None,
) -> SlideDetections:
    """TPs and FPs of one slide's detections (``mask=None``: a normal slide).

    Args:
        probs, x_px, y_px: ``(D,)`` detection probabilities and level-0 ``(x, y)``.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if mask is None:
        return SlideDetections(slide_id, probs.copy(), np.zeros(0), 0, False)
    hit = mask.label_at(np.asarray(x_px), np.asarray(y_px)).reshape(-1)
    tp = np.zeros(mask.n_instances, dtype=np.float64)
    fps: list[float] = []
    n_itc = 0
    for p, label in zip(probs.tolist(), hit.tolist(), strict=True):
        if label == 0:
            fps.append(p)
        elif label in mask.itc_labels:
            n_itc += 1
        elif p > tp[label - 1]:
            tp[label - 1] = p
    return SlideDetections(slide_id, np.asarray(fps), tp, mask.n_lesions, True, n_itc)


@dataclass(frozen=True)
class FROCResult:
    """The FROC curve and its score.

    Attributes:
        fps_per_slide: ``(K,)`` average FPs per slide, from the highest to the lowest threshold
            order of the organisers (descending FPs), ending with 0.
        sensitivity: ``(K,)`` matching sensitivity.
        sensitivity_at: sensitivity interpolated at each of :data:`FROC_FPS_PER_SLIDE`.
        score: mean of ``sensitivity_at``.
        n_slides, n_lesions: denominators.
    """

    fps_per_slide: np.ndarray
    sensitivity: np.ndarray
    sensitivity_at: dict[float, float]
    score: float
    n_slides: int
    n_lesions: int


def froc(slides: Sequence[SlideDetections]) -> FROCResult:
    """The organisers' FROC over all ``slides`` (normal slides included)."""
    if not slides:
        raise EvaluationError("no slides to evaluate")
    n_lesions = sum(s.n_lesions for s in slides)
    if n_lesions == 0:
        raise EvaluationError(
            "the FROC needs at least one tumour slide with a lesion larger than an ITC",
            hint="check that the ground truth holds tumour polygons for the tumour slides",
        )
    fp_all = np.concatenate([s.fp_probs for s in slides] + [np.zeros(0)])
    tp_all = np.concatenate([s.tp_probs for s in slides] + [np.zeros(0)])
    thresholds = np.unique(np.concatenate([fp_all, tp_all]))[1:]  # ascending, lowest dropped
    fp_sorted = np.sort(fp_all)
    tp_sorted = np.sort(tp_all)
    n_fp = fp_sorted.size - np.searchsorted(fp_sorted, thresholds, side="left")  # count >= t
    n_tp = tp_sorted.size - np.searchsorted(tp_sorted, thresholds, side="left")
    total_fps = np.append(n_fp, 0) / float(len(slides))
    sensitivity = np.append(n_tp, 0) / float(n_lesions)
    at = np.interp(FROC_FPS_PER_SLIDE, total_fps[::-1], sensitivity[::-1])
    return FROCResult(
        fps_per_slide=total_fps,
        sensitivity=sensitivity,
        sensitivity_at={float(k): float(v) for k, v in zip(FROC_FPS_PER_SLIDE, at, strict=True)},
        score=float(np.mean(at)),
        n_slides=len(slides),
        n_lesions=int(n_lesions),
    )

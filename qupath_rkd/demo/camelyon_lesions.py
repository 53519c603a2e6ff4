"""Real Camelyon16 lesion geometry and irregular tissue for semi-real slides.

The Camelyon16 annotations (``{"positive": [...], "negative": [...]}``, level-0 px at
0.243 µm/px; read by :func:`qupath_rkd.evaluation.truth.load_truth`) give real lesion outlines:
macrometastases with their non-tumour islands (holes), and the micrometastases and isolated
tumour cells scattered around them. :func:`place_lesion_cluster` cuts a window of a chosen
physical size out of one annotated slide around one of its lesions and rescales it to the
semi-real slide's µm/px (physical size kept), keeping every lesion that lies wholly inside the
window. :func:`irregular_tissue` draws a lymph-node-like tissue region with tears and fat
(white vacuoles with thin septa) that keeps clear of the lesions. The pixels are still a
mosaic of real PCam patches (:func:`.semireal.build_semireal_slide`); only the geometry is real.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qupath_rkd.constants import PCAM_MPP
from qupath_rkd.demo.semireal import SemiRealSlide, build_semireal_slide, irregular_polygon
from qupath_rkd.errors import DataError

#: Camelyon16 level-0 µm/px (the annotations' frame).
SOURCE_MPP = 0.243


def _polygon_parts(geom: Any) -> list[Any]:
    from shapely.geometry import Polygon

    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    return [p for g in getattr(geom, "geoms", []) for p in _polygon_parts(g)]


def _valid(polygon: Any) -> Any:
    """A valid polygonal geometry for a ring as drawn (self-intersections repaired)."""
    import shapely

    if polygon.is_valid:
        return polygon
    return shapely.union_all(_polygon_parts(shapely.make_valid(polygon)))


def load_camelyon16_lesions(path: str | os.PathLike[str]) -> list[Any]:
    """The tumour of one Camelyon16 annotation file as valid shapely polygons (with holes).

    The file is read by :func:`~qupath_rkd.evaluation.truth.load_truth`; the tumour is the union
    of the ``positive`` regions minus the ``negative`` ones (as the Camelyon16 evaluation mask
    takes it), split into disjoint polygons, largest first, in the file's level-0 px
    (0.243 µm/px).

    Raises:
        DataError: not a Camelyon16 JSON file, or no tumour in it.
    """
    import shapely

    from qupath_rkd.errors import EvaluationError
    from qupath_rkd.evaluation.truth import load_truth

    try:
        truth = load_truth(Path(path))
    except EvaluationError as exc:
        raise DataError(exc.one_line()) from None
    if truth.format != "camelyon16-json":
        raise DataError(f"{path}: not a Camelyon16 annotation file (positive/negative JSON)")
    tumour = shapely.union_all([_valid(p) for p in truth.tumor])
    if truth.exclude:
        tumour = tumour.difference(shapely.union_all([_valid(p) for p in truth.exclude]))
    parts = _polygon_parts(tumour)
    if not parts:
        raise DataError(f"{path}: no tumour region in the annotation")
    return sorted(parts, key=lambda p: -p.area)


@dataclass(frozen=True)
class PlacedCluster:
    """Lesions cut out of a Camelyon16 slide and placed into a semi-real slide's window.

    Attributes:
        lesions: polygons in the semi-real slide's level-0 px (holes kept).
        source: the annotation file.
        origin_src_px: the window's top-left corner in the source's level-0 px.
        scale: target px per source px (``source_mpp / mpp``).
        flip: ``(horizontal, vertical)`` mirroring applied after rescaling.
        main_index: index (in :func:`load_camelyon16_lesions` order) of the lesion the window
            was placed around.
        n_dropped: source lesions touching the window that were left out because they cross
            its border (inner margin).
    """

    lesions: list[Any]
    source: Path | None
    origin_src_px: tuple[float, float]
    scale: float
    flip: tuple[bool, bool]
    main_index: int
    n_dropped: int


def place_lesion_cluster(
    lesions: Sequence[Any],
    *,
    width_px: int,
    height_px: int,
    mpp: float = PCAM_MPP,
    rng: np.random.Generator,
    source_mpp: float = SOURCE_MPP,
    margin_um: float = 150.0,
    main: int | None = None,
    source: Path | None = None,
    simplify_px: float = 0.25,
) -> PlacedCluster:
    """Place a cluster of real lesions into a ``width_px`` × ``height_px`` slide at ``mpp``.

    One lesion that fits is chosen (``main``, else at random with weight √area, so large
    lesions are favoured but micrometastases also lead); a window of the slide's physical size
    is laid around it at a random offset; every lesion lying wholly inside the window less
    ``margin_um`` (the main one, its satellites, isolated tumour cells, other nearby lesions)
    is kept, those crossing the border are dropped. Coordinates are rescaled by
    ``source_mpp / mpp`` (physical size kept), randomly mirrored, and simplified by
    ``simplify_px`` (topology kept).

    Raises:
        DataError: no lesion fits in the window.
    """
    from shapely import affinity
    from shapely.geometry import box

    scale = source_mpp / mpp
    win_w, win_h = width_px / scale, height_px / scale  # source px
    margin = margin_um / source_mpp
    fits = [
        k
        for k, p in enumerate(lesions)
        if (p.bounds[2] - p.bounds[0]) <= win_w - 2 * margin
        and (p.bounds[3] - p.bounds[1]) <= win_h - 2 * margin
    ]
    if main is None:
        if not fits:
            raise DataError(
                f"no lesion of {source or 'the annotation'} fits a window of "
                f"{width_px * mpp / 1000:.2f} × {height_px * mpp / 1000:.2f} mm",
                hint="make the slide larger or pick another annotation file",
            )
        weights = np.sqrt([lesions[k].area for k in fits])
        main = int(fits[int(rng.choice(len(fits), p=weights / weights.sum()))])
    elif main not in fits:
        raise DataError(f"lesion {main} of {source or 'the annotation'} does not fit the window")
    minx, miny, maxx, maxy = lesions[main].bounds
    ox = rng.uniform(maxx + margin - win_w, minx - margin)
    oy = rng.uniform(maxy + margin - win_h, miny - margin)
    inner = box(ox + margin, oy + margin, ox + win_w - margin, oy + win_h - margin)
    window = box(ox, oy, ox + win_w, oy + win_h)
    flip = (bool(rng.integers(2)), bool(rng.integers(2)))
    kept: list[Any] = []
    dropped = 0
    for polygon in lesions:
        if not polygon.intersects(window):
            continue
        if not inner.contains(polygon):
            dropped += 1
            continue
        placed = affinity.affine_transform(
            polygon, [scale, 0.0, 0.0, scale, -ox * scale, -oy * scale]
        )
        if flip[0]:
            placed = affinity.affine_transform(placed, [-1.0, 0.0, 0.0, 1.0, width_px, 0.0])
        if flip[1]:
            placed = affinity.affine_transform(placed, [1.0, 0.0, 0.0, -1.0, 0.0, height_px])
        if simplify_px > 0:
            simpler = placed.simplify(simplify_px, preserve_topology=True)
            placed = simpler if simpler.is_valid and not simpler.is_empty else placed
        kept.append(placed)
    return PlacedCluster(kept, source, (ox, oy), scale, flip, main, dropped)


def irregular_tissue(
    width_px: int,
    height_px: int,
    rng: np.random.Generator,
    *,
    mpp: float = PCAM_MPP,
    keep: Sequence[Any] = (),
    fraction: float = 0.55,
    n_fat_lobules: int = 3,
    n_tears: int = 2,
    keep_clear_um: float = 60.0,
    edge_um: float = 50.0,
) -> Any:
    """A lymph-node-like tissue region: an irregular, lobulated outline with tears and fat.

    The outline is the union of a few overlapping irregular blobs covering about ``fraction``
    of the slide (it always covers ``keep``, e.g. the lesions, plus ``keep_clear_um``); fat
    lobules are clusters of round adipocytes (40–110 µm, thin septa of tissue between them)
    cut out as holes; tears are larger irregular holes. No hole comes within
    ``keep_clear_um`` of ``keep``. Everything is in level-0 px; the slide's border is kept
    ``edge_um`` clear.
    """
    import shapely
    from shapely.geometry import Point, box

    um = 1.0 / mpp  # px per µm
    area = fraction * width_px * height_px
    protect = shapely.union_all(list(keep)).buffer(keep_clear_um * um) if keep else None
    if protect is not None and not protect.is_empty:
        cx, cy = protect.centroid.x, protect.centroid.y
    else:
        cx, cy = width_px / 2, height_px / 2
    cx = (cx + width_px / 2) / 2
    cy = (cy + height_px / 2) / 2
    blobs = []
    for k in range(3):
        share = (0.8, 0.4, 0.35)[k]
        radius = math.sqrt(share * area / math.pi)
        jx = rng.uniform(-0.25, 0.25) * width_px * (k > 0)
        jy = rng.uniform(-0.25, 0.25) * height_px * (k > 0)
        blobs.append(irregular_polygon((cx + jx, cy + jy), radius, rng, roughness=0.3))
    outline = shapely.union_all(blobs)
    if protect is not None and not protect.is_empty:
        outline = shapely.union_all([outline, protect.convex_hull.buffer(80 * um)])
    edge = edge_um * um
    frame = box(edge, edge, width_px - edge, height_px - edge)
    outline = outline.intersection(frame)
    if protect is not None and not protect.is_empty and not frame.contains(protect):
        raise DataError("the lesions come within the slide's edge margin", hint="margin_um")

    holes: list[Any] = []
    inner = outline.buffer(-150 * um)
    for _ in range(n_tears):
        spot = _random_point_in(inner, rng)
        if spot is None:
            break
        holes.append(
            irregular_polygon(spot, rng.uniform(60, 250) * um, rng, roughness=0.45, vertices=48)
        )
    for _ in range(n_fat_lobules):
        spot = _random_point_in(inner, rng)
        if spot is None:
            break
        lobule_r = rng.uniform(200, 600) * um
        lobule = irregular_polygon(spot, lobule_r, rng, roughness=0.3)
        # adipocytes on a jittered hexagonal lattice; septa are what is left between them
        cell = rng.uniform(60, 95) * um
        step_y = cell * math.sqrt(3) / 2
        for row in range(-int(lobule_r / step_y) - 1, int(lobule_r / step_y) + 2):
            for col in range(-int(lobule_r / cell) - 1, int(lobule_r / cell) + 2):
                x = spot[0] + (col + 0.5 * (row % 2)) * cell + rng.normal(0, cell * 0.08)
                y = spot[1] + row * step_y + rng.normal(0, cell * 0.08)
                r = cell * rng.uniform(0.40, 0.47)
                if lobule.contains(Point(x, y)):
                    holes.append(irregular_polygon((x, y), r, rng, roughness=0.1, vertices=20))
    if holes:
        cut = shapely.union_all(holes)
        if protect is not None and not protect.is_empty:
            cut = cut.difference(protect)
        outline = outline.difference(cut)
    parts = _polygon_parts(outline)
    if protect is not None and not protect.is_empty:
        # the blobs may leave islands; keep the lesions' part(s) and the large ones
        parts = [p for p in parts if p.intersects(protect) or p.area > 0.02 * area]
    else:
        parts = [p for p in parts if p.area > 0.02 * area]
    return shapely.union_all(parts)


def _random_point_in(region: Any, rng: np.random.Generator) -> tuple[float, float] | None:
    from shapely.geometry import Point

    if region.is_empty:
        return None
    minx, miny, maxx, maxy = region.bounds
    for _ in range(200):
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if region.contains(Point(x, y)):
            return (x, y)
    return None


@dataclass
class RealLesionSlide:
    """A semi-real slide with real Camelyon16 lesion geometry (or tumour-free) and its truth."""

    slide: SemiRealSlide
    cluster: PlacedCluster | None

    @property
    def is_tumor(self) -> bool:
        """Whether the slide has any lesion."""
        return bool(self.slide.lesions)


def build_real_lesion_slide(
    path: str | os.PathLike[str],
    *,
    normal_dir: str | os.PathLike[str],
    tumor_dir: str | os.PathLike[str],
    width_px: int,
    height_px: int,
    annotation: str | os.PathLike[str] | None = None,
    lesions: Sequence[Any] | None = None,
    main: int | None = None,
    cluster: PlacedCluster | None = None,
    mpp: float = PCAM_MPP,
    seed: int = 0,
    tissue_fraction: float = 0.55,
    n_fat_lobules: int = 3,
    n_tears: int = 2,
    **builder_options: Any,
) -> RealLesionSlide:
    """Write a semi-real slide whose lesions are a real Camelyon16 lesion cluster.

    Args:
        path: output ``.tif``.
        normal_dir, tumor_dir: folders of real normal / tumour patches.
        width_px, height_px: level-0 size at ``mpp``.
        annotation: a Camelyon16 annotation file; ``None`` (and no ``lesions``) gives a
            tumour-free slide with the same kind of tissue.
        lesions: the file's polygons already loaded by :func:`load_camelyon16_lesions`.
        main: the lesion to centre on (default: chosen at random, see
            :func:`place_lesion_cluster`).
        cluster: or a placement already made by :func:`place_lesion_cluster` for this slide's
            size and µm/px (e.g. chosen among several for its lesion count).
        mpp: level-0 µm/px of the slide.
        seed: everything random comes from this seed.
        tissue_fraction, n_fat_lobules, n_tears: see :func:`irregular_tissue`.
        builder_options: passed to :func:`.semireal.build_semireal_slide` (``compression``,
            ``max_patches``, ...).
    """
    rng = np.random.default_rng([seed, 16])
    if cluster is None and lesions is None and annotation is not None:
        lesions = load_camelyon16_lesions(annotation)
    if cluster is None and lesions is not None:
        cluster = place_lesion_cluster(
            lesions,
            width_px=width_px,
            height_px=height_px,
            mpp=mpp,
            rng=rng,
            main=main,
            source=Path(annotation) if annotation is not None else None,
        )
    placed = cluster.lesions if cluster is not None else []
    tissue = irregular_tissue(
        width_px,
        height_px,
        rng,
        mpp=mpp,
        keep=placed,
        fraction=tissue_fraction,
        n_fat_lobules=n_fat_lobules,
        n_tears=n_tears,
    )
    slide = build_semireal_slide(
        path,
        width_px=width_px,
        height_px=height_px,
        normal_dir=normal_dir,
        tumor_dir=tumor_dir,
        lesion_polygons=placed,
        tissue=tissue,
        mpp=mpp,
        seed=seed,
        **builder_options,
    )
    return RealLesionSlide(slide, cluster)

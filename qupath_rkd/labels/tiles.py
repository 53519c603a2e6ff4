"""Tile × annotation overlap → tumour / normal / ignore labels (pure geometry, no slide I/O).

Coordinates: tiles and annotations in level-0 ``(x, y)`` pixels (QuPath's frame, or the slide
layer's after an entry's bounds offset; both must be the same frame). A tile is the square
``[x, x + tile_level0_px) × [y, y + tile_level0_px)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from qupath_rkd.constants import LABEL_IGNORE, LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import AnnotationError
from qupath_rkd.labels.config import ClassMapping, LabelConfig, SlideFlags
from qupath_rkd.qupath.geojson import QupathObject

logger = logging.getLogger(__name__)

__all__ = [
    "LABEL_UNLABELLED",
    "RoleGeometry",
    "TileLabels",
    "label_tiles",
    "overlap_fractions",
    "prediction_region",
    "role_geometry",
]

#: Internal code of a tile nothing says anything about (never used for training).
LABEL_UNLABELLED = -2


@dataclass(frozen=True)
class RoleGeometry:
    """The union of a slide's annotations per role (level-0 px); empty geometries if none.

    ``tumor`` already excludes normal islands drawn inside tumour. ``region`` is ``None`` when
    the slide has no region annotation (predict everywhere).
    """

    tumor: BaseGeometry
    normal: BaseGeometry
    ignore: BaseGeometry
    region: BaseGeometry | None
    n_used: int
    n_unused: int
    notes: tuple[str, ...] = ()


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Only the area-bearing part (points and lines label nothing)."""
    if geom.geom_type in {"Polygon", "MultiPolygon"}:
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in geom.geoms if g.geom_type in {"Polygon", "MultiPolygon"}]
        return shapely.union_all(parts) if parts else shapely.Polygon()
    return shapely.Polygon()


def role_geometry(
    objects: Sequence[QupathObject],
    classes: ClassMapping,
    *,
    width_px: float | None = None,
    height_px: float | None = None,
    source: str = "annotations",
) -> RoleGeometry:
    """Union the annotations of each role; check they lie on the image.

    Only annotations (``object_type == "annotation"``) with a polygonal geometry count.
    With the image size given, a labelling annotation partly outside the image is clipped
    (noted) and one entirely outside raises.

    Raises:
        AnnotationError: an annotation lies entirely outside the image (names the source,
            the feature and the image size).
    """
    by_role: dict[str, list[BaseGeometry]] = {"tumor": [], "normal": [], "ignore": [], "region": []}
    notes: list[str] = []
    image = (
        shapely.box(0, 0, width_px, height_px)
        if width_px is not None and height_px is not None
        else None
    )
    unused = 0
    for obj in objects:
        if not obj.is_annotation:
            continue
        role = classes.role(obj.class_name)
        geom = _polygonal(obj.geometry)
        if role is None or geom.is_empty:
            unused += 1
            continue
        if image is not None and not image.contains(geom):
            if not image.intersects(geom) or image.intersection(geom).area == 0:
                minx, miny, maxx, maxy = geom.bounds
                raise AnnotationError(
                    f"{source} feature {obj.index} ({obj.class_name}) lies outside the image "
                    f"({width_px:.0f}x{height_px:.0f} px; it spans x {minx:.0f}..{maxx:.0f}, "
                    f"y {miny:.0f}..{maxy:.0f})",
                    hint="delete or move it in QuPath and export again; if every annotation is "
                    "shifted, the image file may not be the one QuPath used",
                )
            geom = _polygonal(image.intersection(geom))
            notes.append(f"{source} feature {obj.index} ({obj.class_name}) clipped to the image")
        by_role[role].append(geom)
    unions = {r: shapely.union_all(g) if g else shapely.Polygon() for r, g in by_role.items()}
    tumor = unions["tumor"]
    if not tumor.is_empty and not unions["normal"].is_empty:
        tumor = tumor.difference(unions["normal"])
    n_used = sum(len(v) for v in by_role.values())
    for note in notes:
        logger.warning("%s", note)
    return RoleGeometry(
        tumor=_polygonal(tumor),
        normal=unions["normal"],
        ignore=unions["ignore"],
        region=unions["region"] if by_role["region"] else None,
        n_used=n_used,
        n_unused=unused,
        notes=tuple(notes),
    )


def overlap_fractions(xy_px: np.ndarray, tile_level0_px: float, geom: BaseGeometry) -> np.ndarray:
    """(N,) float64 fraction of each tile's area inside ``geom`` (0 where disjoint).

    Args:
        xy_px: (N, 2) level-0 top-left ``(x, y)`` of each tile.
        tile_level0_px: tile side in level-0 px.
        geom: polygonal shapely geometry in the same frame (holes count as outside).
    """
    xy = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)
    out = np.zeros(len(xy), dtype=np.float64)
    if geom is None or geom.is_empty or len(xy) == 0:
        return out
    side = float(tile_level0_px)
    boxes = shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + side, xy[:, 1] + side)
    tree = shapely.STRtree(boxes)
    idx = tree.query(geom, predicate="intersects")
    if len(idx) == 0:
        return out
    shapely.prepare(geom)
    inside = shapely.contains_properly(geom, boxes[idx])
    out[idx[inside]] = 1.0
    partial = idx[~inside]
    if len(partial):
        areas = shapely.area(shapely.intersection(boxes[partial], geom))
        out[partial] = np.clip(areas / (side * side), 0.0, 1.0)
    return out


@dataclass(frozen=True)
class TileLabels:
    """Labels of a set of tiles.

    Attributes:
        labels: (N,) int8: ``LABEL_TUMOR``, ``LABEL_NORMAL``, ``LABEL_IGNORE`` (ignore class or
            ambiguous) or :data:`LABEL_UNLABELLED`.
        tumor_overlap, normal_overlap, ignore_overlap: (N,) float32 fractions.
    """

    labels: np.ndarray
    tumor_overlap: np.ndarray
    normal_overlap: np.ndarray
    ignore_overlap: np.ndarray

    def count(self, label: int) -> int:
        """Number of tiles with ``label``."""
        return int(np.count_nonzero(self.labels == label))


def label_tiles(
    xy_px: np.ndarray,
    tile_level0_px: float,
    roles: RoleGeometry,
    config: LabelConfig,
    flags: SlideFlags | None = None,
) -> TileLabels:
    """Label tiles by their overlap with each role (rules in :class:`LabelConfig`).

    With region annotations on the slide, tiles labelled normal by a flag (rule 5) must have
    their centre inside a region.
    """
    flags = flags if flags is not None else SlideFlags()
    xy = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)
    n = len(xy)
    tumor = overlap_fractions(xy, tile_level0_px, roles.tumor)
    normal = overlap_fractions(xy, tile_level0_px, roles.normal)
    ignore = overlap_fractions(xy, tile_level0_px, roles.ignore)
    labels = np.full(n, LABEL_UNLABELLED, dtype=np.int8)
    if flags.tumor_free or flags.fully_annotated:
        flagged = np.ones(n, dtype=bool)
        if roles.region is not None and n:
            centres = shapely.points(xy + tile_level0_px / 2.0)
            shapely.prepare(roles.region)
            flagged = shapely.contains(roles.region, centres)
        labels[flagged] = LABEL_NORMAL
    labels[normal >= config.normal_min_overlap] = LABEL_NORMAL
    labels[tumor > config.normal_max_tumor_overlap] = LABEL_IGNORE
    labels[tumor >= config.tumor_min_overlap] = LABEL_TUMOR
    labels[ignore > config.ignore_max_overlap] = LABEL_IGNORE
    return TileLabels(
        labels=labels,
        tumor_overlap=tumor.astype(np.float32),
        normal_overlap=normal.astype(np.float32),
        ignore_overlap=ignore.astype(np.float32),
    )


def prediction_region(
    objects: Sequence[QupathObject], classes: ClassMapping
) -> BaseGeometry | None:
    """The union of the region-class annotations (level-0 px), or ``None`` (predict everywhere).

    Pass it as ``region=`` to :func:`qupath_rkd.slides.tile_grid` / ``predict_slide``.
    """
    parts = [
        _polygonal(o.geometry)
        for o in objects
        if o.is_annotation and classes.role(o.class_name) == "region"
    ]
    parts = [p for p in parts if not p.is_empty]
    return shapely.union_all(parts) if parts else None

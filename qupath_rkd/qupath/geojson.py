"""QuPath GeoJSON: read what QuPath 0.2–0.6 exports, write what QuPath 0.4+ imports.

Coordinate frame: every geometry is in level-0 ``(x, y)`` pixels of the image *as QuPath shows
it* (origin top-left; for an OpenSlide image with ``openslide.bounds-x/y`` that is OpenSlide's
coordinates minus the bounds offset). ``shift_px`` arguments translate geometries between that
frame and another one (see :attr:`qupath_rkd.qupath.project.ImageEntry.frame_offset_px`).

Forms read (all seen in real exports, see ``../shared/DESIGN.md``):

- a ``FeatureCollection``, a bare ``Feature``, a JSON array of features, or a bare geometry;
- the object type in ``properties.objectType`` (0.4+), ``properties.object_type`` (0.3),
  ``properties.type`` (alias) or the feature's ``id`` (0.2: ``"PathAnnotationObject"``);
  a missing type means annotation, as in QuPath's own import;
- a classification as a plain string, ``{"name", "color"}``, ``{"names": [...], "color"}``
  (derived class such as ``Tumor: Positive``) or the legacy ``{"name", "colorRGB"}``;
- measurements as a map (0.4+) or a list of ``{"name", "value"}`` (0.2/0.3).

A classification object without any colour is rejected (QuPath's import rejects it too), with
an :class:`~qupath_rkd.errors.AnnotationError` naming the file and the feature.

Written form (QuPath 0.4+ import): a ``FeatureCollection`` in which every feature has a UUID
``id``, ``properties.objectType``, a classification ``{"name", "color": [r, g, b]}`` when
classified and a ``measurements`` map of floats. One feature is one QuPath object: a
MultiPolygon stays one feature (QuPath imports it as one object, so a lesion in several parts
keeps one name and one set of measurements); holes are kept; invalid polygons are repaired with
``shapely.make_valid`` and the repair is reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from qupath_rkd.constants import TOOL_TAG
from qupath_rkd.errors import AnnotationError
from qupath_rkd.io_utils import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CLASS_COLORS",
    "OBJECT_TYPES",
    "TOOL_NAME_PREFIX",
    "QupathObject",
    "color_for_class",
    "is_tool_object",
    "make_feature",
    "parse_features",
    "qupath_import_problems",
    "read_geojson",
    "repair_geometry",
    "square_geometries_json",
    "stable_feature_id",
    "stable_feature_ids",
    "write_geojson",
]

#: Object types QuPath knows (``properties.objectType``).
OBJECT_TYPES: frozenset[str] = frozenset(
    {"annotation", "detection", "tile", "cell", "tmaCore", "root"}
)

_LEGACY_TYPES = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathTileObject": "tile",
    "PathCellObject": "cell",
    "TMACoreObject": "tmaCore",
    "PathRootObject": "root",
    "tma_core": "tmaCore",
}

#: Every object qupath-rkd writes has a name starting with this; the Groovy import removes
#: only detections whose name starts with it (see ``groovy/README.md``).
TOOL_NAME_PREFIX: str = TOOL_TAG

#: QuPath's default class colours (from a real ``classifiers/classes.json``), as RGB.
DEFAULT_CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "Tumor": (200, 0, 0),
    "Stroma": (150, 200, 150),
    "Immune cells": (160, 90, 160),
    "Necrosis": (50, 50, 50),
    "Other": (255, 200, 0),
    "Region*": (0, 0, 180),
    "Ignore*": (180, 180, 180),
    "Positive": (250, 62, 62),
    "Negative": (112, 112, 225),
    "Normal": (0, 150, 60),
}

_UUID_NAMESPACE = uuid.UUID("6d1f0a52-2f4e-4c7b-9a53-6b1f3b8f2a11")


@dataclass(frozen=True)
class QupathObject:
    """One object read from QuPath GeoJSON.

    Attributes:
        geometry: shapely geometry in level-0 ``(x, y)`` pixels, QuPath's frame (plus any
            ``shift_px`` given to the reader). Polygonal geometries are valid (repaired).
        object_type: ``annotation``, ``detection``, ``tile``, ``cell``, ``tmaCore`` or ``root``.
        class_name: the classification as QuPath displays it (``"Tumor"``,
            ``"Tumor: Positive"`` for a derived class) or ``None`` when unclassified.
        class_names: the parts of a derived class (``("Tumor", "Positive")``), ``()`` if none.
        color: the classification colour as RGB, if any.
        measurements: measurement name → value (floats; NaN where QuPath wrote null).
        name: the object's name, if any.
        object_id: the feature's UUID (0.4+), or ``None``.
        is_locked: QuPath's lock flag.
        index: position of the feature in its file (for messages).
        repair: what was repaired in the geometry, or ``None`` when it was valid.
        properties: the raw ``properties`` mapping, for anything not decoded above.
    """

    geometry: BaseGeometry
    object_type: str
    class_name: str | None = None
    class_names: tuple[str, ...] = ()
    color: tuple[int, int, int] | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    name: str | None = None
    object_id: str | None = None
    is_locked: bool = False
    index: int = 0
    repair: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def is_annotation(self) -> bool:
        """True for annotations (what pathologists draw)."""
        return self.object_type == "annotation"

    @property
    def is_tool_object(self) -> bool:
        """True when qupath-rkd created this object (see :func:`is_tool_object`)."""
        return is_tool_object(self.object_type, self.name)


def is_tool_object(object_type: str, name: str | None) -> bool:
    """Whether an object was created by qupath-rkd: a detection/tile named ``qupath-rkd…``.

    Annotations are never tool objects, whatever their name: nothing a pathologist drew is
    ever replaced.
    """
    return (
        object_type in {"detection", "tile", "cell"}
        and name is not None
        and name.startswith(TOOL_NAME_PREFIX)
    )


def color_for_class(class_name: str) -> tuple[int, int, int]:
    """A colour for a class: QuPath's default if it has one, else a stable derived one."""
    if class_name in DEFAULT_CLASS_COLORS:
        return DEFAULT_CLASS_COLORS[class_name]
    digest = uuid.uuid5(_UUID_NAMESPACE, class_name).bytes
    return (64 + digest[0] % 160, 64 + digest[1] % 160, 64 + digest[2] % 160)


def stable_feature_id(*parts: object) -> str:
    """A UUID derived from ``parts`` (e.g. entry ID, model ID, object index).

    Use it for an ``id`` that must be identical when the same prediction is written twice;
    the parts must differ for different objects, or QuPath duplicates them on import.
    """
    return str(uuid.uuid5(_UUID_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def stable_feature_ids(*parts: object, count: int) -> list[str]:
    """``[stable_feature_id(*parts, i) for i in range(count)]``, several times faster.

    The same UUIDs (version 5: SHA-1 of the namespace and the ``\x1f``-joined parts): the hash
    of the common prefix is computed once and copied for each index. For the many objects of
    one slide (its tiles), whose ids differ only in the last part.
    """
    prefix = "\x1f".join([*(str(p) for p in parts), ""])
    head = hashlib.sha1(_UUID_NAMESPACE.bytes + prefix.encode("utf-8"), usedforsecurity=False)
    ids = []
    for i in range(count):
        h = head.copy()
        h.update(str(i).encode("ascii"))
        d = bytearray(h.digest()[:16])
        d[6] = (d[6] & 0x0F) | 0x50  # version 5
        d[8] = (d[8] & 0x3F) | 0x80  # RFC 4122 variant
        x = d.hex()
        ids.append(f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}")
    return ids


# --- geometry repair ----------------------------------------------------------------------
def _polygonal_part(geom: BaseGeometry) -> BaseGeometry:
    """Keep only the polygons of a geometry (make_valid can add lines and points)."""
    if geom.geom_type in {"Polygon", "MultiPolygon"}:
        return geom
    if geom.geom_type == "GeometryCollection":
        polys: list[shapely.Polygon] = []
        for part in geom.geoms:
            if part.geom_type == "Polygon":
                polys.append(part)
            elif part.geom_type == "MultiPolygon":
                polys.extend(part.geoms)
        if len(polys) == 1:
            return polys[0]
        return shapely.MultiPolygon(polys)
    return shapely.Polygon()


def repair_geometry(geom: BaseGeometry) -> tuple[BaseGeometry, str | None]:
    """Make a geometry valid, keeping its holes; returns ``(geometry, note or None)``.

    Polygonal input stays polygonal (lines and points that ``make_valid`` may produce are
    dropped). The note says what was wrong and how the area changed, in px².
    """
    if geom.is_empty or geom.is_valid:
        return geom, None
    why = explain_validity(geom)
    area_before_px2 = geom.area
    fixed = shapely.make_valid(geom)
    if geom.geom_type in {"Polygon", "MultiPolygon"}:
        fixed = _polygonal_part(fixed)
    note = (
        f"invalid {geom.geom_type} ({why}) repaired with make_valid into a {fixed.geom_type} "
        f"(area {area_before_px2:.0f} -> {fixed.area:.0f} px²)"
    )
    return fixed, note


# --- reading ------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    """A finite JSON number (not a bool, NaN, Infinity or a float overflowing to it)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _color_from(value: Any, where: str = "<geojson>") -> tuple[int, int, int] | None:
    """An RGB colour from ``[r, g, b]`` or a packed int; ``None`` when absent.

    Raises:
        AnnotationError: a colour that is not finite numbers from 0 to 255.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) >= 3:
        if all(_is_number(c) and 0 <= c <= 255 for c in value[:3]):
            return (int(value[0]), int(value[1]), int(value[2]))
    elif _is_number(value):
        packed = int(value) & 0xFFFFFF
        return ((packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF)
    shown = json.dumps(value)[:60] if _is_json_scalar_list(value) else type(value).__name__
    raise AnnotationError(
        f"{where}: classification colour {shown} is not three numbers from 0 to 255",
        hint='set "color": [r, g, b] (0-255) in the classification, or export again from QuPath',
    )


def _is_json_scalar_list(value: Any) -> bool:
    items = value if isinstance(value, (list, tuple)) else [value]
    return all(isinstance(v, (str, int, float, bool)) or v is None for v in items)


def _classification(
    raw: Any, where: str
) -> tuple[str | None, tuple[str, ...], tuple[int, int, int] | None]:
    """Decode every classification form QuPath wrote; returns ``(name, parts, colour)``."""
    if raw is None:
        return None, (), None
    if isinstance(raw, str):
        parts = tuple(p.strip() for p in raw.split(":") if p.strip())
        return (": ".join(parts) or None), parts, None
    if not isinstance(raw, Mapping):
        raise AnnotationError(
            f"{where}: 'classification' is a {type(raw).__name__}, not an object or a string",
            hint="export the annotations again from QuPath",
        )
    if "names" in raw and isinstance(raw["names"], list):
        parts = tuple(str(n) for n in raw["names"])
    elif "name" in raw and raw["name"] is not None:
        name = str(raw["name"])
        parent = raw.get("parentClass")
        parts = tuple(p.strip() for p in name.split(":") if p.strip())
        if isinstance(parent, Mapping):  # legacy derived class: parent chain
            parent_name, parent_parts, _ = _classification(parent, where)
            if parent_name and not name.startswith(parent_name):
                parts = (*parent_parts, *parts)
    else:
        raise AnnotationError(
            f"{where}: classification {json.dumps(raw)} has no 'name'",
            hint="give the classification a name or remove it",
        )
    color = _color_from(raw.get("color"), where) or _color_from(raw.get("colorRGB"), where)
    if color is None:
        raise AnnotationError(
            f"{where}: classification {': '.join(parts)!r} has no colour "
            "(QuPath's GeoJSON import rejects it)",
            hint='add "color": [r, g, b] to the classification, or export again from QuPath',
        )
    return (": ".join(parts) or None), parts, color


def _measurements(raw: Any, where: str) -> dict[str, float]:
    if raw is None:
        return {}
    out: dict[str, float] = {}
    items: Iterable[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        items = raw.items()
    elif isinstance(raw, list):
        pairs = []
        for m in raw:
            if not isinstance(m, Mapping) or "name" not in m:
                raise AnnotationError(
                    f"{where}: a measurement list item is not a {{name, value}} object",
                    hint="export the annotations again from QuPath",
                )
            pairs.append((m["name"], m.get("value")))
        items = pairs
    else:
        raise AnnotationError(
            f"{where}: 'measurements' is neither a map nor a list",
            hint="export the annotations again from QuPath",
        )
    for key, value in items:
        if value is None:
            out[str(key)] = math.nan
            continue
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise AnnotationError(
                f"{where}: measurement {key!r} is not a number ({value!r})",
                hint="measurements must be numbers",
            ) from None
    return out


def _object_type(feature: Mapping[str, Any], props: Mapping[str, Any]) -> str:
    raw = props.get("objectType") or props.get("object_type") or props.get("type")
    if raw is None:
        fid = feature.get("id")
        raw = fid if isinstance(fid, str) and fid in _LEGACY_TYPES else "annotation"
    raw = str(raw)
    return _LEGACY_TYPES.get(raw, raw if raw in OBJECT_TYPES else "annotation")


def _features_of(data: Any, source: str) -> list[Mapping[str, Any]]:
    """The list of feature mappings in any top-level form QuPath wrote."""
    feats: list[Any]
    if isinstance(data, list):
        feats = data
    elif isinstance(data, Mapping):
        kind = data.get("type")
        if kind == "FeatureCollection":
            listed = data.get("features")
            if not isinstance(listed, list):
                raise AnnotationError(
                    f"{source}: FeatureCollection without a 'features' list",
                    hint="export the annotations again from QuPath",
                )
            feats = listed
        elif kind == "Feature":
            feats = [data]
        elif kind in {
            "Polygon",
            "MultiPolygon",
            "Point",
            "MultiPoint",
            "LineString",
            "MultiLineString",
            "GeometryCollection",
        }:
            feats = [{"type": "Feature", "geometry": data, "properties": {}}]
        else:
            raise AnnotationError(
                f"{source}: not GeoJSON (top-level 'type' is {kind!r})",
                hint="export the annotations with groovy/export_annotations.groovy",
            )
    else:
        raise AnnotationError(
            f"{source}: not GeoJSON (top level is a {type(data).__name__})",
            hint="export the annotations with groovy/export_annotations.groovy",
        )
    return feats


def parse_features(
    data: Any,
    *,
    source: str = "<geojson>",
    shift_px: tuple[float, float] = (0.0, 0.0),
) -> list[QupathObject]:
    """Decode already-parsed QuPath GeoJSON (``json.load`` output) into objects.

    Args:
        data: FeatureCollection, Feature, list of features or a bare geometry.
        source: name used in error messages (usually the file path).
        shift_px: ``(dx, dy)`` added to every coordinate (level-0 px), e.g. an entry's
            :attr:`~qupath_rkd.qupath.project.ImageEntry.frame_offset_px`.

    Raises:
        AnnotationError: not GeoJSON, a bad geometry, or a classification without colour.
    """
    objects: list[QupathObject] = []
    for i, feat in enumerate(_features_of(data, source)):
        where = f"{source} feature {i}"
        if not isinstance(feat, Mapping) or feat.get("type", "Feature") != "Feature":
            raise AnnotationError(
                f"{where}: not a GeoJSON Feature", hint="export the annotations again from QuPath"
            )
        props = feat.get("properties") or {}
        if not isinstance(props, Mapping):
            raise AnnotationError(f"{where}: 'properties' is not an object")
        geom_raw = feat.get("geometry")
        if not isinstance(geom_raw, Mapping):
            raise AnnotationError(
                f"{where}: no geometry", hint="every feature needs a GeoJSON 'geometry'"
            )
        try:
            geom = shape(geom_raw)
        except Exception as exc:
            raise AnnotationError(
                f"{where}: unreadable geometry ({exc})",
                hint="fix or delete this object in QuPath and export again",
            ) from None
        if not np.isfinite(shapely.get_coordinates(geom)).all():
            raise AnnotationError(
                f"{where}: coordinates that are not finite numbers (NaN or Infinity)",
                hint="fix or delete this object in QuPath and export again",
            )
        geom, note = repair_geometry(geom)
        if note:
            logger.warning("%s: %s", where, note)
        if shift_px != (0.0, 0.0) and shift_px != (0, 0):
            geom = shapely.affinity.translate(geom, xoff=shift_px[0], yoff=shift_px[1])
        class_name, class_names, color = _classification(props.get("classification"), where)
        fid = feat.get("id")
        object_id = (
            str(fid) if isinstance(fid, (str, int)) and str(fid) not in _LEGACY_TYPES else None
        )
        name = props.get("name")
        objects.append(
            QupathObject(
                geometry=geom,
                object_type=_object_type(feat, props),
                class_name=class_name,
                class_names=class_names,
                color=color,
                measurements=_measurements(props.get("measurements"), where),
                name=str(name) if name is not None else None,
                object_id=object_id,
                is_locked=bool(props.get("isLocked", False)),
                index=i,
                repair=note,
                properties=dict(props),
            )
        )
    return objects


def read_geojson(
    path: str | os.PathLike[str], *, shift_px: tuple[float, float] = (0.0, 0.0)
) -> list[QupathObject]:
    """Read a QuPath GeoJSON file (any form QuPath 0.2–0.6 writes).

    Geometries are in level-0 ``(x, y)`` px of the image in QuPath's frame, plus ``shift_px``.
    Repaired geometries carry a note in :attr:`QupathObject.repair` (also logged).

    Raises:
        AnnotationError: the file is missing, not UTF-8 JSON, not GeoJSON, or has a
            classification without colour; the message names the file and the feature.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(
            f"{p}: annotation file not found",
            hint="export the annotations with groovy/export_annotations.groovy",
        ) from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{p}: not a text file ({exc.reason} at byte {exc.start})",
            hint="export the annotations again with groovy/export_annotations.groovy",
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{p}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            hint="export the annotations again with groovy/export_annotations.groovy",
        ) from None
    except RecursionError:
        raise AnnotationError(
            f"{p}: JSON nested too deeply to be QuPath's GeoJSON",
            hint="export the annotations again with groovy/export_annotations.groovy",
        ) from None
    return parse_features(data, source=str(p), shift_px=shift_px)


# --- writing ------------------------------------------------------------------------------
def _round_coords(obj: Any, ndigits: int) -> Any:
    if isinstance(obj, float):
        r = round(obj, ndigits)
        return int(r) if r.is_integer() else r
    if isinstance(obj, (list, tuple)):
        return [_round_coords(o, ndigits) for o in obj]
    if isinstance(obj, dict):
        return {k: _round_coords(v, ndigits) for k, v in obj.items()}
    return obj


def _geometry_json(geom: BaseGeometry, ndigits: int = 2) -> dict[str, Any]:
    return _round_coords(dict(mapping(geom)), ndigits)


def square_geometries_json(
    x_px: Sequence[float], y_px: Sequence[float], side_px: float, ndigits: int = 2
) -> list[dict[str, Any]]:
    """The geometries :func:`make_feature` writes for squares ``box(x, y, x + side, y + side)``
    (level-0 px; the same rounding and ring order as shapely's counter-clockwise box), built
    without shapely: a slide's tile grid has 10,000s of them. ``side_px`` must be > 0."""
    rounded: dict[float, Any] = {}  # a grid repeats its coordinates: round each value once

    def r(v: float) -> Any:
        if v not in rounded:
            rounded[v] = _round_coords(v, ndigits)
        return rounded[v]

    out = []
    for x0, y0 in zip(x_px, y_px, strict=True):
        x0, y0 = float(x0), float(y0)
        a, b, c, d = r(x0 + side_px), r(x0), r(y0), r(y0 + side_px)
        out.append({"type": "Polygon", "coordinates": [[[a, c], [a, d], [b, d], [b, c], [a, c]]]})
    return out


def make_feature(
    geometry: BaseGeometry,
    *,
    object_type: str = "detection",
    class_name: str | None = None,
    color: tuple[int, int, int] | None = None,
    measurements: Mapping[str, float] | None = None,
    name: str | None = None,
    feature_id: str | None = None,
) -> dict[str, Any]:
    """A QuPath 0.4+ GeoJSON feature (a dict ready for :func:`write_geojson`).

    Args:
        geometry: shapely geometry, level-0 ``(x, y)`` px in QuPath's frame. Invalid
            polygons are repaired (logged). A MultiPolygon stays one feature, holes kept
            (QuPath imports it as one object).
        object_type: ``detection`` (default), ``tile`` or ``annotation``.
        class_name: classification name (``"Tumor"``; ``"A: B"`` for a derived class).
        color: RGB of the classification; default :func:`color_for_class`.
        measurements: name → number; stored as Python floats (QuPath needs numbers).
        name: the object's name. Objects qupath-rkd writes into QuPath should be named
            ``"qupath-rkd …"`` (:data:`TOOL_NAME_PREFIX`) so that only they are replaced.
        feature_id: a UUID string; default a fresh random UUID (see :func:`stable_feature_id`).

    Raises:
        AnnotationError: empty geometry, unknown object type or a non-finite measurement.
    """
    if object_type not in OBJECT_TYPES - {"root"}:
        raise AnnotationError(
            f"object type {object_type!r} is not one QuPath imports",
            hint=f"use one of {sorted(OBJECT_TYPES - {'root'})}",
        )
    if geometry is None or geometry.is_empty:
        raise AnnotationError("cannot write an empty geometry", hint="drop empty objects first")
    geometry, note = repair_geometry(geometry)
    if note:
        logger.warning("feature %r: %s", name or class_name, note)
    props: dict[str, Any] = {"objectType": object_type}
    if name is not None:
        if ":" in name:
            logger.debug("object name %r contains ':'; paquo refuses such names", name)
        props["name"] = str(name)
    if class_name is not None:
        rgb = color if color is not None else color_for_class(class_name)
        parts = [p.strip() for p in class_name.split(":") if p.strip()]
        cls: dict[str, Any] = {"name": parts[0]} if len(parts) <= 1 else {"names": parts}
        cls["color"] = [int(rgb[0]), int(rgb[1]), int(rgb[2])]
        props["classification"] = cls
    if measurements:
        ms: dict[str, float] = {}
        for key, value in measurements.items():
            v = float(value)
            if not math.isfinite(v):
                raise AnnotationError(
                    f"measurement {key!r} of {name or class_name!r} is {v}",
                    hint="measurements must be finite numbers",
                )
            ms[str(key)] = v
        props["measurements"] = ms
    return {
        "type": "Feature",
        "id": feature_id if feature_id is not None else str(uuid.uuid4()),
        "geometry": _geometry_json(geometry),
        "properties": props,
    }


def _shift_features(
    features: Sequence[Mapping[str, Any]], shift_px: tuple[float, float]
) -> list[dict[str, Any]]:
    out = []
    for feat in features:
        geom = shape(feat["geometry"])
        moved = shapely.affinity.translate(geom, xoff=shift_px[0], yoff=shift_px[1])
        new = dict(feat)
        new["geometry"] = _geometry_json(moved)
        out.append(new)
    return out


def features_to_json(
    features: Sequence[Mapping[str, Any]], *, shift_px: tuple[float, float] = (0.0, 0.0)
) -> str:
    """The exact text :func:`write_geojson` writes (deterministic for identical input)."""
    feats: Sequence[Mapping[str, Any]] = list(features)
    if shift_px != (0.0, 0.0) and shift_px != (0, 0):
        feats = _shift_features(feats, shift_px)
    # json needs dicts; a dict is not copied (10,000s of tiles)
    collection = {
        "type": "FeatureCollection",
        "features": [f if type(f) is dict else dict(f) for f in feats],
    }
    return json.dumps(collection, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


def write_geojson(
    path: str | os.PathLike[str],
    features: Sequence[Mapping[str, Any]],
    *,
    shift_px: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """Write features as one FeatureCollection, atomically (temp file + rename).

    Each feature stays one feature (a MultiPolygon is one QuPath object). ``shift_px`` is added
    to every coordinate before writing (level-0 px). The folder must exist. Returns the path.
    """
    return atomic_write_text(path, features_to_json(features, shift_px=shift_px))


def qupath_import_problems(data: Any) -> list[str]:
    """What QuPath 0.4+'s GeoJSON import would reject or mangle in ``data`` (parsed JSON).

    Checks the rules of QuPath's reader (``PathObjectTypeAdapters``) and the facts in
    ``../shared/DESIGN.md``: a FeatureCollection of Features, each with a geometry, a UUID
    ``id`` used once, an ``objectType``, a classification with a name and an RGB colour,
    numeric finite measurements in a map, and no two detections with one name (one lesion
    written as several objects would repeat its name and measurements). A MultiPolygon is
    fine: QuPath imports it as one object.
    Returns one line per problem; ``[]`` when QuPath imports it as intended.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping) or data.get("type") != "FeatureCollection":
        return ["not a FeatureCollection"]
    features = data.get("features")
    if not isinstance(features, list):
        return ["FeatureCollection without a 'features' list"]
    seen: set[str] = set()
    detection_names: set[str] = set()
    for i, feat in enumerate(features):
        where = f"feature {i}"
        if not isinstance(feat, Mapping) or feat.get("type") != "Feature":
            problems.append(f"{where}: not a Feature")
            continue
        fid = feat.get("id")
        try:
            if str(uuid.UUID(str(fid))) != str(fid):
                raise ValueError
        except ValueError:
            problems.append(f"{where}: id {fid!r} is not a UUID")
        else:
            if fid in seen:
                problems.append(f"{where}: id {fid} is used twice (QuPath would duplicate it)")
            seen.add(str(fid))
        geom = feat.get("geometry")
        if not isinstance(geom, Mapping) or "type" not in geom:
            problems.append(f"{where}: no geometry")
        props = feat.get("properties")
        if not isinstance(props, Mapping):
            problems.append(f"{where}: no properties")
            continue
        name = props.get("name")
        if props.get("objectType") == "detection" and isinstance(name, str):
            if name in detection_names:
                problems.append(f"{where}: a second detection named {name!r}")
            detection_names.add(name)
        if props.get("objectType") not in OBJECT_TYPES - {"root"}:
            problems.append(
                f"{where}: objectType {props.get('objectType')!r} (missing imports "
                "as an annotation)"
            )
        cls = props.get("classification")
        if cls is not None:
            named = isinstance(cls, Mapping) and (
                isinstance(cls.get("name"), str) or isinstance(cls.get("names"), list)
            )
            color = cls.get("color") if isinstance(cls, Mapping) else None
            if not named:
                problems.append(f"{where}: classification without a name")
            if not (
                isinstance(color, list)
                and len(color) == 3
                and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
            ):
                problems.append(f"{where}: classification without an RGB colour")
        ms = props.get("measurements")
        if ms is not None:
            if not isinstance(ms, Mapping):
                problems.append(f"{where}: measurements are not a map")
            else:
                for key, value in ms.items():
                    if (
                        not isinstance(value, (int, float))
                        or isinstance(value, bool)
                        or not math.isfinite(value)
                    ):
                        problems.append(
                            f"{where}: measurement {key!r} = {value!r} is not a finite number"
                        )
    return problems

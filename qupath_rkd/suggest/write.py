"""Suggestions as QuPath objects, and how to tell them from everything else.

Each suggestion is a **detection** (never an annotation) of class
:data:`SUGGESTION_CLASS`, named ``"qupath-rkd suggestion <rank> (<reason>)"`` (the tool's name
prefix, so ``groovy/import_predictions.groovy`` replaces them like every prediction), with the
measurements :data:`MEASURE_RANK` and :data:`MEASURE_SCORE`. The label reader never takes them
as labels: detections are not read as labels at all, and the class has no role even on an
annotation (:meth:`qupath_rkd.labels.ClassMapping.role` gives tool classes none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qupath_rkd.constants import TOOL_TAG
from qupath_rkd.suggest.rank import Suggestion

#: The class of suggestion objects in QuPath.
SUGGESTION_CLASS = f"{TOOL_TAG}: annotate next"
#: Orange: unlike the default classes' colours.
SUGGESTION_RGB = (255, 140, 0)
MEASURE_RANK = "Suggestion rank"
MEASURE_SCORE = "Suggestion score"


def suggestion_name(suggestion: Suggestion) -> str:
    """``"qupath-rkd suggestion 3 (uncertain)"`` (no colon: paquo refuses names with one)."""
    return f"{TOOL_TAG} suggestion {suggestion.rank} ({suggestion.reason})"


def suggestion_features(
    suggestions: Sequence[Suggestion], key: str, *, shift_px: tuple[float, float] = (0.0, 0.0)
) -> dict[str, list[dict[str, Any]]]:
    """GeoJSON features of ``suggestions`` by entry ID (rank order within each).

    Args:
        suggestions: from :func:`qupath_rkd.suggest.suggest_regions`.
        key: what the suggestions were computed from (feature UUIDs derive from it, the
            entry and the rank, so the same suggestions are the same bytes).
        shift_px: added to every coordinate (0: keep the heatmap's frame).
    """
    from shapely import affinity

    from qupath_rkd.qupath.geojson import make_feature, stable_feature_id

    out: dict[str, list[dict[str, Any]]] = {}
    for s in suggestions:
        geom = s.geometry
        if shift_px != (0.0, 0.0):
            geom = affinity.translate(geom, xoff=shift_px[0], yoff=shift_px[1])
        out.setdefault(s.entry_id, []).append(
            make_feature(
                geom,
                object_type="detection",
                class_name=SUGGESTION_CLASS,
                color=SUGGESTION_RGB,
                name=suggestion_name(s),
                feature_id=stable_feature_id(key, s.entry_id, "suggestion", s.rank),
                measurements={MEASURE_RANK: float(s.rank), MEASURE_SCORE: float(s.score)},
            )
        )
    return out


def is_suggestion_feature(feature: Mapping[str, Any]) -> bool:
    """Whether a GeoJSON feature (dict) is a suggestion object."""
    props = feature.get("properties") or {}
    cls = props.get("classification") or {}
    if isinstance(cls, Mapping) and isinstance(cls.get("names"), list):  # a derived class
        name: Any = ": ".join(str(n) for n in cls["names"])
    else:
        name = cls.get("name") if isinstance(cls, Mapping) else cls
    return name == SUGGESTION_CLASS


def suggestion_row(s: Suggestion, mpp: float, offset_px: tuple[float, float]) -> dict[str, Any]:
    """The report's record of one suggestion; location in µm in QuPath's frame (the heatmap's
    frame minus ``offset_px``, the slide's bounds offset)."""
    x0, y0, x1, y1 = s.geometry.bounds
    return {
        "rank": s.rank,
        "entry_id": s.entry_id,
        "image": s.image_name,
        "x_um": round((s.centre_xy_px[0] - offset_px[0]) * mpp, 1),
        "y_um": round((s.centre_xy_px[1] - offset_px[1]) * mpp, 1),
        "width_um": round((x1 - x0) * mpp, 1),
        "height_um": round((y1 - y0) * mpp, 1),
        "area_mm2": round(s.area_um2 / 1e6, 6),
        "reason": s.reason,
        "signal": s.signal,
        "score": s.score,
        "mean_probability": s.mean_probability,
    }

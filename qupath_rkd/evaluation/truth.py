"""Ground truth for the Camelyon16 evaluation: tumour polygons per slide.

Two formats are read:

- **Camelyon16 JSON** (the official annotations as converted by NCRF):
  ``{"positive": [{"name", "vertices": [[x, y], ...]}], "negative": [...]}`` in level-0 px of
  0.243 µm/px slides; ``negative`` are non-tumour islands cut out of the tumour (the exclusion
  group ``_2`` of the original XML).
- **QuPath GeoJSON** (``.geojson``, or a ``.json`` FeatureCollection): objects classified
  ``Tumor``/``Tumour``/``Metastasis`` are tumour; ``Exclusion``/``Ignore*`` cut holes; other classes
  are ignored. Objects qupath-rkd wrote (its own predictions) are never taken as truth.

A file with no tumour polygon is a normal slide. The slide is named by the file stem (made
safe as ``predict`` names its outputs); ``evaluate`` matches it against every name a predicted
slide carries (``predict``'s slide id; for ``sync`` the image name, its stem or the entry ID).

Two files for one slide (a QuPath GeoJSON and a Camelyon16 JSON, as an exported project often
holds) are both read and accepted when they agree: the same tumour region within
:data:`AGREEMENT_TOLERANCE` of its area (see :func:`merge_truths`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from qupath_rkd.errors import AnnotationError, EvaluationError
from qupath_rkd.evaluation.camelyon16 import CAMELYON16_MPP

logger = logging.getLogger(__name__)

TUMOR_CLASSES = frozenset({"tumor", "tumour", "metastasis", "metastases"})
EXCLUDE_CLASSES = frozenset({"exclusion", "exclude", "ignore", "ignore*"})
TRUTH_SUFFIXES = (".geojson", ".json")
#: Two truth files of one slide agree when the symmetric difference of their tumour regions is
#: under this share of the regions' union (outlines redrawn or rounded, not other lesions).
AGREEMENT_TOLERANCE = 0.01


@dataclass(frozen=True)
class SlideTruth:
    """Ground truth of one slide.

    Attributes:
        slide_id: the slide's name (file stem).
        tumor: tumour polygons, level-0 ``(x, y)`` px (rings as drawn; may self-intersect).
        exclude: non-tumour regions to cut out of ``tumor``.
        source: the file read.
        format: ``"camelyon16-json"`` or ``"qupath-geojson"``.
        mpp: level-0 µm/px when the format implies it (0.243 for Camelyon16), else ``None``.
    """

    slide_id: str
    tumor: list[Polygon] = field(default_factory=list)
    exclude: list[Polygon] = field(default_factory=list)
    source: Path | None = None
    format: str = "qupath-geojson"
    mpp: float | None = None

    @property
    def is_tumor(self) -> bool:
        """Whether the slide has any tumour polygon."""
        return bool(self.tumor)


def _truth_slide_id(path: Path) -> str:
    from qupath_rkd.outputs import slide_id_for

    return slide_id_for(path)


def _camelyon_polygons(items: object, where: str) -> list[Polygon]:
    if not isinstance(items, list):
        raise EvaluationError(f"{where}: expected a list of regions")
    out = []
    for k, item in enumerate(items):
        try:
            vertices = item["vertices"]
        except (TypeError, KeyError):
            raise EvaluationError(f"{where}[{k}]: a region needs 'vertices'") from None
        if len(vertices) < 3:
            logger.warning("%s[%d]: fewer than 3 vertices, skipped", where, k)
            continue
        out.append(Polygon([(float(x), float(y)) for x, y in vertices]))
    return out


def _parts(geom: BaseGeometry) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [geom] if not geom.is_empty else []
    if isinstance(geom, MultiPolygon) or hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _parts(g)]
    return []


def load_truth(path: str | Path) -> SlideTruth:
    """Read one slide's ground truth (format detected from the content)."""
    p = Path(path)
    slide_id = _truth_slide_id(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise EvaluationError(f"{p}: ground-truth file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{p}: not a JSON ground-truth file ({exc})") from None
    if isinstance(data, dict) and ("positive" in data or "negative" in data):
        return SlideTruth(
            slide_id=slide_id,
            tumor=_camelyon_polygons(data.get("positive", []), f"{p}: positive"),
            exclude=_camelyon_polygons(data.get("negative", []), f"{p}: negative"),
            source=p,
            format="camelyon16-json",
            mpp=CAMELYON16_MPP,
        )
    from qupath_rkd.qupath.geojson import parse_features

    try:
        objects = parse_features(data, source=str(p))
    except AnnotationError as exc:
        raise EvaluationError(f"{p}: unusable ground truth: {exc.one_line()}") from None
    tumor: list[Polygon] = []
    exclude: list[Polygon] = []
    for obj in objects:
        if obj.is_tool_object or (not obj.class_names and obj.class_name is None):
            continue
        first = (obj.class_names[0] if obj.class_names else obj.class_name or "").strip().lower()
        if first in TUMOR_CLASSES:
            tumor.extend(_parts(obj.geometry))
        elif first in EXCLUDE_CLASSES:
            exclude.extend(_parts(obj.geometry))
    return SlideTruth(slide_id, tumor, exclude, p, "qupath-geojson", None)


def tumour_region(truth: SlideTruth) -> BaseGeometry:
    """The slide's tumour as one valid geometry (level-0 px): the tumour polygons' union
    (each ring made valid) minus the exclusions."""
    from shapely import make_valid
    from shapely.ops import unary_union

    tumour = unary_union([make_valid(p) for p in truth.tumor])
    if truth.exclude:
        tumour = tumour.difference(unary_union([make_valid(p) for p in truth.exclude]))
    return tumour


def merge_truths(slide: str, truths: list[SlideTruth]) -> SlideTruth:
    """One slide's truth from several files that must agree.

    Returns the first file's truth, with the µm/px any of them implies (a Camelyon16 JSON's).

    Raises:
        EvaluationError: two of them disagree (one line naming the slide and both files): one
            normal and one with tumour, or tumour regions whose symmetric difference is
            :data:`AGREEMENT_TOLERANCE` of their union or more.
    """
    first = truths[0]
    region = tumour_region(first)
    for other in truths[1:]:
        other_region = tumour_region(other)
        union = region.union(other_region).area
        differ = region.symmetric_difference(other_region).area
        if union > 0 and differ >= AGREEMENT_TOLERANCE * union:
            raise EvaluationError(
                f"the ground-truth files for slide {slide!r} disagree: {first.source} and "
                f"{other.source} (their tumour regions differ by {100 * differ / union:.1f} % "
                f"of their area, more than {100 * AGREEMENT_TOLERANCE:g} %)",
                hint="keep the right one in the truth folder and move the other away",
            )
    mpp = next((t.mpp for t in truths if t.mpp is not None), None)
    return SlideTruth(first.slide_id, first.tumor, first.exclude, first.source, first.format, mpp)


def load_truth_dir(path: str | Path) -> dict[str, SlideTruth]:
    """Every ground-truth file in a folder (or one file), by slide id.

    Files naming the same slide (``X.geojson`` and ``X.json``) are merged by
    :func:`merge_truths`.

    Raises:
        EvaluationError: the folder has no ``.json``/``.geojson`` file, or two files of one
            slide disagree.
    """
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in TRUTH_SUFFIXES)
    else:
        raise EvaluationError(f"{p}: ground truth not found")
    if not files:
        raise EvaluationError(
            f"{p}: no ground-truth files (.json / .geojson)",
            hint="give a folder with one file per slide named like the slide",
        )
    by_slide: dict[str, list[SlideTruth]] = {}
    for f in files:
        t = load_truth(f)
        by_slide.setdefault(t.slide_id, []).append(t)
    return {slide: merge_truths(slide, ts) for slide, ts in by_slide.items()}

"""Writing a slide's prediction: QuPath GeoJSON, heatmap files, PNG overlay, CSVs, done marker.

Every file is written atomically (:mod:`qupath_rkd.io_utils`); ``done.json`` is written last,
so its presence with a matching key means the slide's outputs are complete.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import logging
import math
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qupath_rkd import __version__
from qupath_rkd.constants import (
    DEFAULT_CANDIDATE_FLOOR,
    DEFAULT_CANDIDATE_NMS_UM,
    DEFAULT_CANDIDATES_BELOW_SEED,
    DEFAULT_CANDIDATES_INSIDE_LESIONS,
    DEFAULT_MAX_CANDIDATES,
    TOOL_TAG,
)
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from qupath_rkd.lesions.candidates import Candidates, candidate_detections
from qupath_rkd.outputs import (  # the measurement names are defined there, once
    LESION_MEASUREMENTS,
    MEASURE_PROBABILITY,
    MEASURE_SCORE,
    RUN_JSON,
    SLIDE_SCORES_CSV,
    SLIDE_SCORES_HEADER,
    SlideOutputs,
)

if TYPE_CHECKING:
    from qupath_rkd.inference.predict import InferenceConfig, SlidePrediction, SlideRun
    from qupath_rkd.lesions.operating_point import OperatingPoint
    from qupath_rkd.model.scorer import TrainedModel

logger = logging.getLogger(__name__)

LESION_CLASS = "Tumor"

# viridis anchors (perceptually uniform, colour-blind safe)
_CMAP_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


#: Outline colours of :func:`overlay_png`: true lesions, predicted lesions.
TRUTH_OUTLINE_RGB = (255, 0, 0)
LESION_OUTLINE_RGB = (0, 230, 255)


def _rings(shapes: Sequence[Any]) -> list[list[tuple[float, float]]]:
    """Exterior and interior rings (closed coordinate lists) of (Multi)Polygons."""
    rings: list[list[tuple[float, float]]] = []
    for shape in shapes:
        parts = getattr(shape, "geoms", None)
        for poly in parts if parts is not None else (shape,):
            if getattr(poly, "exterior", None) is None or poly.is_empty:
                continue
            for ring in (poly.exterior, *poly.interiors):
                rings.append([(float(x), float(y)) for x, y in ring.coords])
    return rings


def colormap(values: np.ndarray) -> np.ndarray:
    """``(...)`` values in [0, 1] -> ``(..., 3)`` uint8 RGB (viridis-like); NaN -> 0."""
    v = np.clip(np.nan_to_num(np.asarray(values, np.float64), nan=0.0), 0.0, 1.0)
    pos = v * (len(_CMAP_ANCHORS) - 1)
    lo = np.minimum(np.floor(pos).astype(int), len(_CMAP_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _CMAP_ANCHORS[lo] * (1 - frac) + _CMAP_ANCHORS[lo + 1] * frac
    return np.round(rgb).astype(np.uint8)


def overlay_png(
    thumbnail: np.ndarray,
    downsample: float,
    heatmap: Heatmap,
    *,
    threshold: float,
    title: str,
    alpha: float = 0.55,
    truth: Sequence[Any] | None = None,
    lesions: Sequence[Any] | None = None,
) -> bytes:
    """PNG bytes: the heatmap blended over the slide thumbnail, with a colour bar.

    Args:
        thumbnail: ``(h, w, 3)`` uint8, the slide at ``downsample`` level-0 px per pixel.
        heatmap: probabilities; cells without a value (NaN) leave the thumbnail as it is.
        threshold: marked on the colour bar (the lesion threshold).
        truth: optional true lesions (shapely polygons, level-0 px), outlined in
            :data:`TRUTH_OUTLINE_RGB`.
        lesions: optional predicted lesions (shapely polygons, level-0 px), outlined in
            :data:`LESION_OUTLINE_RGB`.
    """
    from PIL import Image, ImageDraw, ImageFont

    h, w = thumbnail.shape[:2]
    # grid cell under the centre of each thumbnail row / column (the grid is axis-aligned)
    rows, _ = heatmap.cell_at(np.zeros(h), (np.arange(h) + 0.5) * downsample)
    _, cols = heatmap.cell_at((np.arange(w) + 0.5) * downsample, np.zeros(w))
    hr, hc = heatmap.shape
    ok_r = (rows >= 0) & (rows < hr)
    ok_c = (cols >= 0) & (cols < hc)
    values = np.full((h, w), np.nan, dtype=np.float32)
    cells = np.ix_(rows[ok_r], cols[ok_c])
    values[np.ix_(ok_r, ok_c)] = heatmap.probability[cells]
    shown = np.isfinite(values)
    # colours per grid cell, then per pixel (the same values: colormap is per element)
    colours = np.zeros((h, w, 3), np.uint8)
    colours[np.ix_(ok_r, ok_c)] = colormap(heatmap.probability)[cells]
    blended = thumbnail.astype(np.float32)
    blended[shown] = (1 - alpha) * blended[shown] + alpha * colours[shown]
    bar_w, margin_top = 110, 28
    canvas = Image.new("RGB", (w + bar_w, max(h, 220) + margin_top), "white")
    canvas.paste(Image.fromarray(blended.astype(np.uint8)), (0, margin_top))
    d = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    d.text((4, 6), title, fill="black", font=font)
    for shapes, rgb in ((lesions, LESION_OUTLINE_RGB), (truth, TRUTH_OUTLINE_RGB)):
        for ring in _rings(shapes or ()):
            pts = [(x / downsample, y / downsample + margin_top) for x, y in ring]
            if len(pts) >= 2:
                d.line(pts, fill=rgb, width=2)
    bar_h = max(min(h, 400) - 20, 100)
    x0, y0 = w + 20, margin_top + 10
    gradient = colormap(np.linspace(1, 0, bar_h))[:, None, :].repeat(20, axis=1)
    canvas.paste(Image.fromarray(gradient), (x0, y0))
    d.rectangle([(x0, y0), (x0 + 19, y0 + bar_h - 1)], outline="black")
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y0 + round((1 - v) * (bar_h - 1))
        d.line([(x0 + 20, y), (x0 + 24, y)], fill="black")
        d.text((x0 + 27, y - 6), f"{v:.2f}", fill="black", font=font)
    ty = y0 + round((1 - min(max(threshold, 0.0), 1.0)) * (bar_h - 1))
    d.line([(x0 - 4, ty), (x0 + 23, ty)], fill=(220, 0, 0), width=2)
    d.text((x0 - 16, y0 + bar_h + 6), "p(tumour)", fill="black", font=font)
    d.text((x0 - 16, y0 + bar_h + 20), f"threshold {threshold:.2f}", fill=(220, 0, 0), font=font)
    legend_y = y0 + bar_h + 38
    for shapes, rgb, label in (
        (truth, TRUTH_OUTLINE_RGB, "truth"),
        (lesions, LESION_OUTLINE_RGB, "predicted"),
    ):
        if shapes is not None:
            d.line([(x0 - 16, legend_y + 6), (x0 - 2, legend_y + 6)], fill=rgb, width=2)
            d.text((x0 + 2, legend_y), label, fill="black", font=font)
            legend_y += 14
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def lesion_features(pred: SlidePrediction, key: str, slide_id: str) -> list[dict[str, Any]]:
    """The lesions as QuPath detections of class Tumor: one feature per lesion.

    A lesion in several parts is one ``MultiPolygon`` feature (QuPath imports it as one
    object), so its name ``"qupath-rkd lesion N"`` (N = rank by maximum probability, from 1) is
    unique on the slide and its measurements (:data:`LESION_MEASUREMENTS`: probabilities, area
    in µm² of the whole geometry, major axis in µm, level-0 peak px inside the geometry) are
    stated once. Geometry in level-0 ``(x, y)`` px, QuPath frame.
    """
    from qupath_rkd.qupath.geojson import TOOL_NAME_PREFIX, make_feature, stable_feature_id

    feats = []
    for k, les in enumerate(pred.lesions, start=1):
        values = (
            les.max_probability,
            les.mean_probability,
            les.area_um2,
            les.major_axis_um,
            les.peak_xy_px[0],
            les.peak_xy_px[1],
        )
        feats.append(
            make_feature(
                les.polygon,
                object_type="detection",
                class_name=LESION_CLASS,
                name=f"{TOOL_NAME_PREFIX} lesion {k}",
                feature_id=stable_feature_id(key, slide_id, "lesion", k),
                measurements=dict(zip(LESION_MEASUREMENTS, values, strict=True)),
            )
        )
    return feats


def tile_features(pred: SlidePrediction, key: str, slide_id: str) -> list[dict[str, Any]]:
    """Every scored tile as a QuPath tile object with its probability and raw score.

    The geometry is the tile's heatmap cell (the stride square around the tile centre), so
    dense grids give a gap-free, non-overlapping measurement map; without overlap it is the
    tile itself. The features are those :func:`~qupath_rkd.qupath.geojson.make_feature` makes
    for a shapely ``box`` per tile, built directly (a Camelyon16 slide has 10,000s of tiles).

    Raises:
        AnnotationError: a tile whose probability or score is not finite (as ``make_feature``).
    """
    from qupath_rkd.qupath.geojson import square_geometries_json

    ids, x0, y0, side, prob, score = _tile_parts(pred, key, slide_id)
    return [
        {
            "type": "Feature",
            "id": fid,
            "geometry": geometry,
            "properties": {
                "objectType": "tile",
                "name": _TILE_NAME,
                "measurements": {MEASURE_PROBABILITY: p, MEASURE_SCORE: sc},
            },
        }
        for fid, geometry, p, sc in zip(
            ids, square_geometries_json(x0, y0, side), prob, score, strict=True
        )
    ]


def tiles_geojson_text(pred: SlidePrediction, key: str, slide_id: str) -> str:
    """The tiles' GeoJSON file: the text ``features_to_json(tile_features(...))`` gives,
    written directly (5 MB for 10,000 tiles; a tenth of the time).

    Raises:
        AnnotationError: as :func:`tile_features`.
    """
    ids, x0, y0, side, prob, score = _tile_parts(pred, key, slide_id)
    coord: dict[float, str] = {}  # a grid repeats its coordinates: each written once

    def c(v: float) -> str:
        text = coord.get(v)
        if text is None:
            text = coord[v] = json.dumps(_round_coordinate(v))
        return text

    head = '{"type":"Feature","id":"'
    props = json.dumps(
        {"objectType": "tile", "name": _TILE_NAME}, ensure_ascii=False, separators=(",", ":")
    )[:-1]
    m_prob = json.dumps(MEASURE_PROBABILITY, ensure_ascii=False)
    m_score = json.dumps(MEASURE_SCORE, ensure_ascii=False)
    feats = []
    for fid, x, y, p, sc in zip(ids, x0, y0, prob, score, strict=True):
        a, b, top, bottom = c(x + side), c(x), c(y), c(y + side)
        feats.append(
            f'{head}{fid}","geometry":{{"type":"Polygon","coordinates":[[[{a},{top}],'
            f"[{a},{bottom}],[{b},{bottom}],[{b},{top}],[{a},{top}]]]}},"
            f'"properties":{props},"measurements":{{{m_prob}:{p!r},{m_score}:{sc!r}}}}}}}'
        )
    return '{"type":"FeatureCollection","features":[' + ",".join(feats) + "]}\n"


#: The tiles' name: ``TOOL_NAME_PREFIX`` of :mod:`qupath_rkd.qupath.geojson` is ``TOOL_TAG``.
_TILE_NAME = f"{TOOL_TAG} tile"


def _round_coordinate(v: float) -> float | int:
    """A coordinate as the GeoJSON writer rounds it (2 decimals, integral values as ints)."""
    r = round(v, 2)
    return int(r) if r.is_integer() else r


def _tile_parts(
    pred: SlidePrediction, key: str, slide_id: str
) -> tuple[list[str], list[float], list[float], float, list[float], list[float]]:
    """Per tile: feature id, top-left ``x``, ``y`` of its cell (level-0 px), the cell side,
    probability, score (Python floats); raises on a non-finite measurement."""
    from qupath_rkd.qupath.geojson import stable_feature_ids

    t = pred.tiles
    hm = pred.heatmap
    x0, y0 = hm.to_level0_xy(t.rc[:, 0] - 0.5, t.rc[:, 1] - 0.5)
    side = float(hm.stride_level0_px)
    prob = np.asarray(t.probability, np.float64)
    score = np.asarray(t.score, np.float64)
    bad = np.flatnonzero(~(np.isfinite(prob) & np.isfinite(score)))
    if bad.size:
        _tile_feature_error(float(x0[bad[0]]), float(y0[bad[0]]), side, prob, score, bad[0])
    ids = stable_feature_ids(key, slide_id, "tile", count=len(t))
    return (
        ids,
        np.ravel(x0).tolist(),
        np.ravel(y0).tolist(),
        side,
        prob.tolist(),
        score.tolist(),
    )


def _tile_feature_error(
    x: float, y: float, side: float, prob: np.ndarray, score: np.ndarray, i: int
) -> None:
    """Raise the error ``make_feature`` gives for tile ``i`` (a non-finite measurement)."""
    from shapely.geometry import box

    from qupath_rkd.qupath.geojson import TOOL_NAME_PREFIX, make_feature

    make_feature(
        box(x, y, x + side, y + side),
        object_type="tile",
        name=f"{TOOL_NAME_PREFIX} tile",
        measurements={MEASURE_PROBABILITY: float(prob[i]), MEASURE_SCORE: float(score[i])},
    )
    raise AssertionError(f"tile {i} has a non-finite measurement, yet make_feature took it")


def slide_candidates(pred: SlidePrediction) -> Candidates:
    """The slide's Camelyon16 candidate list: its lesion peaks and the other local maxima of
    the heatmap the lesions were found on (``pred.smoothed``), inside the lesions too, each at
    its own probability, with the package's floor, NMS radius and cap
    (:func:`qupath_rkd.lesions.candidates.candidate_detections`)."""
    heatmap = pred.smoothed if pred.smoothed is not None else pred.heatmap
    return candidate_detections(
        heatmap,
        pred.lesions,
        floor=DEFAULT_CANDIDATE_FLOOR,
        nms_radius_um=DEFAULT_CANDIDATE_NMS_UM,
        max_candidates=DEFAULT_MAX_CANDIDATES,
        seed_threshold=pred.config.threshold,
        inside_lesions=DEFAULT_CANDIDATES_INSIDE_LESIONS,
        below_seed=DEFAULT_CANDIDATES_BELOW_SEED,
    )


#: ``done.json``'s record of what ``camelyon16/<slide>.csv`` holds; a slide whose record differs
#: (written when the file held one line per lesion, or with other candidate defaults) is
#: predicted again rather than skipped as done.
SUBMISSION_RECORD: dict[str, Any] = {
    "content": "candidates: lesion peaks + the other local maxima",
    "floor": DEFAULT_CANDIDATE_FLOOR,
    "nms_radius_um": DEFAULT_CANDIDATE_NMS_UM,
    "max_candidates": DEFAULT_MAX_CANDIDATES,
    "inside_lesions": DEFAULT_CANDIDATES_INSIDE_LESIONS,
    "below_seed": DEFAULT_CANDIDATES_BELOW_SEED,
}


def candidates_csv(candidates: Candidates) -> str:
    """``prob,X,Y`` per candidate in the given order (level-0 px rounded to integers), no
    header, as the organisers' script reads it."""
    return "".join(
        f"{p:.6f},{round(x)},{round(y)}\n"
        for p, x, y in zip(
            candidates.probs.tolist(),
            candidates.x_px.tolist(),
            candidates.y_px.tolist(),
            strict=True,
        )
    )


def submission_csv(pred: SlidePrediction) -> str:
    """Camelyon16 submission: the slide's candidate detections (:func:`slide_candidates`:
    every lesion's peak and the heatmap's other local maxima down to
    :data:`~qupath_rkd.constants.DEFAULT_CANDIDATE_FLOOR`, inside the lesions too, each at
    its own probability), one ``prob,X,Y`` line each (level-0 px, integers), highest
    probability first, no header. The list hardly depends on the seed threshold, so its FROC
    measures the heatmap; the lesions themselves (GeoJSON, ``slide_scores.csv``) are the ones
    found at the seed."""
    return candidates_csv(slide_candidates(pred))


def tiles_csv(pred: SlidePrediction) -> str:
    """The scored tiles as data: level-0 rectangle, grid position, raw score, probability."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["x_px", "y_px", "width_px", "height_px", "row", "col", "score", "probability"])
    t = pred.tiles
    side = f"{t.tile_level0_px:.6g}"
    for i in range(len(t)):
        w.writerow(
            [
                int(t.xy_px[i, 0]),
                int(t.xy_px[i, 1]),
                side,
                side,
                int(t.rc[i, 0]),
                int(t.rc[i, 1]),
                f"{float(t.score[i]):.6g}",
                f"{float(t.probability[i]):.6g}",
            ]
        )
    return buf.getvalue()


def slide_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"slide_bytes": st.st_size, "slide_mtime_ns": st.st_mtime_ns}


@dataclass(frozen=True)
class FilesRequest:
    """What rendering a slide's files needs besides its prediction, as the writer will name
    them: the config key and slide id (the features' ids depend on both) and the slide's file
    name for the overlay's title (a Dask worker sees the resolved path, maybe another name)."""

    key: str
    slide_id: str
    slide_name: str


@dataclass(frozen=True)
class RenderedSlide:
    """The bytes of one slide's files but ``done.json``, made by :func:`render_slide_outputs`
    (here, or on a Dask worker that sends them back) and written by
    :func:`write_slide_outputs`. ``key`` and ``slide_id`` are what they were made for (the
    feature ids depend on both)."""

    key: str
    slide_id: str
    heatmap_npy: bytes
    heatmap_json: bytes
    lesions_geojson: bytes
    tiles_geojson: bytes
    tiles_csv: bytes
    submission_csv: bytes
    heatmap_png: bytes

    @property
    def n_bytes(self) -> int:
        """All the files' bytes together."""
        return sum(len(v) for v in vars(self).values() if isinstance(v, bytes))


def render_slide_outputs(
    pred: SlidePrediction, key: str, slide_id: str, *, slide_name: str | None = None
) -> RenderedSlide:
    """The bytes of every file of one slide but ``done.json`` (see :mod:`qupath_rkd.outputs`).

    Opens the slide (``pred.slide_path``) for the overlay's thumbnail. ``slide_name`` is the
    file name in the overlay's title (default ``pred.slide_path.name``; a Dask worker, which
    sees the resolved path, passes the name the client was given).

    Raises:
        AnnotationError: a tile or lesion that cannot be written (a non-finite measurement).
    """
    from qupath_rkd.qupath.geojson import features_to_json
    from qupath_rkd.slides import open_slide

    npy_name = SlideOutputs(Path(), slide_id).heatmap_npy.name  # the .json names it
    npy_bytes, heatmap_json = pred.heatmap.file_bytes(npy_name)
    lesions = features_to_json(lesion_features(pred, key, slide_id)).encode("utf-8")
    tiles = tiles_geojson_text(pred, key, slide_id).encode("utf-8")
    with open_slide(pred.slide_path, mpp=pred.config.slide_mpp) as slide:
        thumb, ds = slide.thumbnail(max_px=1024)
    score = "no slide score" if pred.slide_score is None else f"slide score {pred.slide_score:.3f}"
    name = pred.slide_path.name if slide_name is None else slide_name
    title = f"{name}: {score}, {len(pred.lesions)} lesion(s)"
    if pred.note:
        title += f" ({pred.note})"
    assert pred.config.threshold is not None
    return RenderedSlide(
        key=key,
        slide_id=slide_id,
        heatmap_npy=npy_bytes,
        heatmap_json=heatmap_json,
        lesions_geojson=lesions,
        tiles_geojson=tiles,
        tiles_csv=tiles_csv(pred).encode("utf-8"),
        submission_csv=submission_csv(pred).encode("utf-8"),
        heatmap_png=overlay_png(
            thumb, ds, pred.heatmap, threshold=pred.config.threshold, title=title
        ),
    )


def write_slide_outputs(
    outputs: SlideOutputs,
    pred: SlidePrediction,
    key: str,
    rendered: RenderedSlide | None = None,
) -> None:
    """Write every output of one slide, each atomically; ``done.json`` last.

    ``rendered``: the files' bytes made elsewhere (a Dask worker) by
    :func:`render_slide_outputs` for this ``key`` and slide; without it (or when it was made
    for another key or slide) they are made here. Either way the bytes are the same.
    """
    if rendered is None or (rendered.key, rendered.slide_id) != (key, outputs.slide_id):
        rendered = render_slide_outputs(pred, key, outputs.slide_id)
    outputs.folder.mkdir(parents=True, exist_ok=True)
    outputs.submission_csv.parent.mkdir(parents=True, exist_ok=True)
    # the order of a one-process run before the files were rendered apart: heatmap .npy
    # before its .json, done.json last
    for path, data in (
        (outputs.heatmap_npy, rendered.heatmap_npy),
        (outputs.heatmap_json, rendered.heatmap_json),
        (outputs.lesions_geojson, rendered.lesions_geojson),
        (outputs.tiles_geojson, rendered.tiles_geojson),
        (outputs.tiles_csv, rendered.tiles_csv),
        (outputs.submission_csv, rendered.submission_csv),
        (outputs.heatmap_png, rendered.heatmap_png),
    ):
        atomic_write_bytes(path, data)
    atomic_write_json(
        outputs.done_json,
        {
            "key": key,
            "model_id": pred.model_id,
            "slide": str(pred.slide_path),
            **slide_identity(pred.slide_path),
            "slide_mpp": pred.slide_mpp,
            "slide_size_px": list(pred.slide_size_px),
            "slide_score": pred.slide_score,
            "probability_max": _max_or_none(pred.tiles.probability),
            "n_tiles": len(pred.tiles),
            "n_lesions": len(pred.lesions),
            "camelyon16_submission": SUBMISSION_RECORD,
            "positive": bool(pred.positive),
            **(pred.burden.as_dict() if pred.burden is not None else {}),
            **(pred.ood.as_dict() if pred.ood is not None else {}),
            "note": pred.note,
            "seconds": round(pred.seconds, 3),
            "config": _config_dict(pred.config),
            "finished_utc": _now(),
        },
    )


def _max_or_none(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else None


def _config_dict(cfg: InferenceConfig) -> dict[str, Any]:
    return cfg.as_record()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_done(outputs: SlideOutputs) -> dict[str, Any]:
    """The slide's ``done.json`` ({} when missing or unreadable)."""
    try:
        data = json.loads(outputs.done_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def slide_is_done(outputs: SlideOutputs, key: str, slide_path: Path) -> bool:
    """Whether the outputs exist for this model + config and this very slide file."""
    done = read_done(outputs)
    if done.get("key") != key or done.get("camelyon16_submission") != SUBMISSION_RECORD:
        return False
    try:
        if {k: done.get(k) for k in ("slide_bytes", "slide_mtime_ns")} != slide_identity(
            slide_path
        ):
            return False
    except OSError:
        return False
    needed = (
        outputs.lesions_geojson,
        outputs.tiles_geojson,
        outputs.tiles_csv,
        outputs.heatmap_json,
        outputs.heatmap_png,
        outputs.submission_csv,
    )
    return all(p.is_file() for p in needed)


def write_slide_scores(
    out_dir: Path, runs: Sequence[SlideRun], *, done_cache: dict[str, dict[str, Any]] | None = None
) -> Path:
    """Update ``slide_scores.csv``: this run's slides replace their rows, other rows stay.

    ``done_cache``: slide id -> its ``done.json``, filled here and reused by the next call of
    the same run (a batch rewrites the file after every slide; without it each call reads the
    ``done.json`` of every slide so far). Only for slides whose ``done.json`` no longer changes.
    """
    path = out_dir / SLIDE_SCORES_CSV
    rows: dict[str, dict[str, str]] = {}
    if path.is_file():
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("slide"):
                    rows[row["slide"]] = {k: row.get(k) or "" for k in SLIDE_SCORES_HEADER}
    for run in runs:
        score = run.slide_score
        done = {}
        if run.status != "failed":
            if done_cache is None or run.slide_id not in done_cache:
                done = _done_for(out_dir, run.slide_id)
                if done_cache is not None:
                    done_cache[run.slide_id] = done
            else:
                done = done_cache[run.slide_id]
        prob_max = "" if done.get("probability_max") is None else f"{done['probability_max']:.6g}"
        rows[run.slide_id] = {
            "slide": run.slide_id,
            "score": "" if score is None or not math.isfinite(score) else f"{score:.6g}",
            "probability_max": prob_max,
            "n_tiles": str(run.n_tiles) if run.status != "failed" else "",
            "n_lesions": str(run.n_lesions) if run.status != "failed" else "",
            "positive": _csv_value(done.get("positive")),
            "tumor_area_mm2": _csv_value(done.get("tumor_area_mm2")),
            "largest_lesion_major_axis_um": _csv_value(done.get("largest_lesion_major_axis_um")),
            "burden_category": _csv_value(done.get("burden_category")),
            "ood_far_fraction": _csv_value(done.get("ood_far_fraction")),
            "out_of_domain": _csv_value(done.get("out_of_domain"))
            if done.get("ood_available")
            else "",
            "note": (f"failed: {run.error}" if run.status == "failed" else run.note or ""),
        }
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SLIDE_SCORES_HEADER), lineterminator="\n")
    writer.writeheader()
    for slide_id in sorted(rows):
        writer.writerow(rows[slide_id])
    return atomic_write_text(path, buf.getvalue())


def _csv_value(value: Any) -> str:
    """A done.json value as a CSV cell ("" when missing; booleans as true/false)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _done_for(out_dir: Path, slide_id: str) -> dict[str, Any]:
    return read_done(SlideOutputs(out_dir, slide_id))


def write_run_json(
    out_dir: Path,
    model: TrainedModel,
    cfg: InferenceConfig,
    slide_paths: Sequence[Path],
    operating_point: OperatingPoint | None = None,
) -> Path:
    """``run.json``: what was run, with which model, config and versions, and the operating
    point (the seed threshold and how it was found: tumour-free slides or the fallback)."""
    import openslide
    import torch

    return atomic_write_json(
        out_dir / RUN_JSON,
        {
            "tool": "qupath-rkd predict",
            "qupath_rkd_version": __version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "torch": str(torch.__version__),
            "openslide": str(openslide.__library_version__),
            "model_id": model.model_id,
            "model_teacher": model.teacher,
            "model_mpp": model.mpp,
            "device": str(model.device),
            "config": _config_dict(cfg),
            "config_key": cfg.key(model.model_id),
            "operating_point": operating_point.as_dict() if operating_point else None,
            "slides": [str(p) for p in slide_paths],
            "started_utc": _now(),
            "argv": sys.argv,
        },
    )

"""The predictions ``evaluate`` scores, read from either command's output.

Three layouts are recognised (:func:`read_predictions` tells them apart):

- **predict** (see :mod:`qupath_rkd.outputs`): ``OUT/camelyon16/<slide>.csv`` submissions,
  ``OUT/slide_scores.csv`` and, per slide, ``OUT/<slide>/heatmap.json`` (the slide's µm/px).
- **Camelyon16 submissions**: a folder of bare ``<slide>.csv`` files (the organisers' layout);
  the slide score is then the highest detection probability (0 without detections).
- **sync**: ``<project>/qupath-rkd/predictions/camelyon16/<entryID>.csv``, the candidate list
  ``predict`` also writes (lesion peaks and the heatmap's maxima below the threshold), or where
  sync wrote none (before 2026-12-07) ``<project>/qupath-rkd/predictions/<entryID>.geojson``
  (one detection per lesion, its maximum probability and level-0 peak point as measurements); and
  ``<project>/qupath-rkd/report.json`` (entry ID ↔ image name, the slide's ``tumor_score``).
  The project folder, its ``qupath-rkd`` folder or the ``predictions`` folder may be given.
  The slides' µm/px come from the project (``project.qpproj`` / ``server.json``) when readable.

Each slide carries the names ground truth may use for it (:attr:`PredictedSlide.names`):
``predict``'s slide id; for ``sync`` the image name's stem (as ``predict`` would name it), the
whole image name and the entry ID.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qupath_rkd.constants import PROJECT_SUBDIR
from qupath_rkd.errors import EvaluationError
from qupath_rkd.outputs import (
    MEASURE_MAX_PROBABILITY,
    MEASURE_PEAK_X_PX,
    MEASURE_PEAK_Y_PX,
    SLIDE_SCORES_CSV,
    SUBMISSION_DIR,
    SlideOutputs,
    safe_name,
    slide_id_for,
)

#: ``sync``'s files, relative to the project's ``qupath-rkd`` folder.
SYNC_REPORT = "report.json"
SYNC_PREDICTIONS_DIR = "predictions"

LAYOUT_PREDICT = "predict"
LAYOUT_SUBMISSIONS = "camelyon16 submissions"
LAYOUT_SYNC = "sync"


@dataclass(frozen=True)
class Submission:
    """One slide's detections: ``(D,)`` probabilities and level-0 ``(x, y)`` px (QuPath frame)."""

    slide_id: str
    probs: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    source: Path


@dataclass(frozen=True)
class PredictedSlide:
    """One predicted slide as ``evaluate`` scores it.

    Attributes:
        slide_id: the name shown in the report (``predict``'s slide id; for ``sync``, the image
            name's stem made safe, as ``predict`` names the same slide).
        names: every name a truth file may carry for this slide (``slide_id`` first).
        detections: the detections scored: the candidate list ``predict`` and ``sync`` write
            (lesion peaks and the heatmap's other maxima, :mod:`qupath_rkd.lesions.candidates`),
            a bare submission's lines, or for a ``sync`` without that list one per lesion (its
            peak).
        score: the slide score (``slide_scores.csv`` or ``report.json``), ``None`` when absent.
        mpp: the slide's level-0 µm/px as the predictions record it, ``None`` when unknown.
        stale: ``sync`` failed on the slide and kept its previous predictions (another model
            or settings), which are scored, and said to be stale.
        n_lesions: lesions reported at the operating point (``slide_scores.csv``'s
            ``n_lesions``; for ``sync``, ``report.json``'s ``lesions``); ``None`` when the
            predictions do not say (bare submissions). On a tumour-free slide every one is a
            false lesion.
    """

    slide_id: str
    names: tuple[str, ...]
    detections: Submission
    score: float | None
    mpp: float | None
    stale: bool = False
    n_lesions: int | None = None


@dataclass(frozen=True)
class Predictions:
    """Every predicted slide of a folder and the layout it was read as (``LAYOUT_*``).

    ``folder`` is the output folder of ``predict`` or the project's ``qupath-rkd`` folder.
    """

    layout: str
    folder: Path
    slides: list[PredictedSlide]

    @property
    def evaluation_dir(self) -> Path:
        """Where ``evaluate`` writes its files by default: ``<folder>/evaluation``."""
        return self.folder / "evaluation"


def read_submission_csv(path: str | Path) -> Submission:
    """Read a Camelyon16 submission CSV: one ``prob, X, Y`` line per detection.

    A header line (non-numeric first field) and blank lines are skipped. Coordinates are level-0
    pixels. Raises :class:`EvaluationError` naming the file and line of a malformed row.
    """
    p = Path(path)
    probs: list[float] = []
    xs: list[float] = []
    ys: list[float] = []
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise EvaluationError(f"{p}: cannot read submission ({exc})") from None
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not cells or all(c == "" for c in cells):
            continue
        try:
            p_val, x_val, y_val = (float(c) for c in cells[:3])
            if len(cells) < 3:
                raise ValueError("fewer than 3 fields")
        except ValueError:
            if lineno == 1:  # header
                continue
            raise EvaluationError(
                f"{p}:{lineno}: expected 'prob, X, Y', got {','.join(cells)!r}"
            ) from None
        if not all(math.isfinite(v) for v in (p_val, x_val, y_val)):
            raise EvaluationError(f"{p}:{lineno}: non-finite value in {','.join(cells)!r}")
        probs.append(p_val)
        xs.append(x_val)
        ys.append(y_val)
    return Submission(p.stem, np.asarray(probs), np.asarray(xs), np.asarray(ys), p)


def read_lesion_detections(path: str | Path, slide_id: str | None = None) -> Submission:
    """The lesion candidates of a QuPath GeoJSON that ``sync`` or ``predict`` wrote: one per
    detection carrying the lesion measurements (maximum probability, level-0 peak point; a
    lesion in several parts is one MultiPolygon object). Tiles and other objects are skipped;
    a missing file means no detection.
    """
    from qupath_rkd.errors import AnnotationError
    from qupath_rkd.qupath.geojson import read_geojson

    p = Path(path)
    try:
        objects = read_geojson(p) if p.is_file() else []
    except AnnotationError as exc:
        raise EvaluationError(f"{p}: cannot read predicted lesions ({exc.one_line()})") from None
    lesions = [
        o
        for o in objects
        if o.object_type == "detection"
        and MEASURE_PEAK_X_PX in o.measurements
        and MEASURE_PEAK_Y_PX in o.measurements
        and MEASURE_MAX_PROBABILITY in o.measurements
    ]
    return Submission(
        slide_id if slide_id is not None else p.stem,
        np.asarray([float(o.measurements[MEASURE_MAX_PROBABILITY]) for o in lesions]),
        np.asarray([float(o.measurements[MEASURE_PEAK_X_PX]) for o in lesions]),
        np.asarray([float(o.measurements[MEASURE_PEAK_Y_PX]) for o in lesions]),
        p,
    )


def read_sync_detections(predictions_dir: str | Path, entry_id: str, slide_id: str) -> Submission:
    """What ``evaluate`` scores of one image ``sync`` predicted: its Camelyon16 candidate list
    ``<predictions_dir>/camelyon16/<entry_id>.csv``, or where sync wrote none (before
    2026-12-07) the lesion objects of ``<predictions_dir>/<entry_id>.geojson``."""
    folder = Path(predictions_dir)
    candidates = folder / SUBMISSION_DIR / f"{entry_id}.csv"
    if candidates.is_file():
        return dataclasses.replace(read_submission_csv(candidates), slide_id=slide_id)
    return read_lesion_detections(folder / f"{entry_id}.geojson", slide_id)


def read_slide_table(path: str | Path) -> tuple[dict[str, float], dict[str, int]]:
    """``slide_scores.csv`` (header with ``slide`` and ``score``; ``n_lesions`` optional) →
    slide id → score, and slide id → lesions at the operating point (empty without the
    column). A failed slide's empty cells are left out."""
    p = Path(path)
    scores: dict[str, float] = {}
    counts: dict[str, int] = {}
    columns: tuple[tuple[str, type, dict[str, Any], str], ...] = (
        ("score", float, scores, "a number"),
        ("n_lesions", int, counts, "a whole number"),
    )
    with p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"slide", "score"} <= set(reader.fieldnames):
            raise EvaluationError(f"{p}: needs a header with 'slide' and 'score' columns")
        for row in reader:
            for name, parse, out, what in columns:
                value = (row.get(name) or "").strip()
                if value == "":
                    continue  # a failed slide has no score; an older table no counts
                try:
                    out[row["slide"]] = parse(value)
                except ValueError:
                    raise EvaluationError(
                        f"{p}: {name} {value!r} of {row['slide']} is not {what}"
                    ) from None
    return scores, counts


def read_slide_scores(path: str | Path) -> dict[str, float]:
    """``slide_scores.csv`` (header with ``slide`` and ``score``) → slide id → score."""
    return read_slide_table(path)[0]


def find_sync_report(pred: Path) -> Path | None:
    """``report.json`` of a ``sync`` project given as the project, its ``qupath-rkd`` folder
    or its ``predictions`` folder; ``None`` when ``pred`` is none of these."""
    for candidate in (
        pred / PROJECT_SUBDIR / SYNC_REPORT,
        pred / SYNC_REPORT,
        pred.parent / SYNC_REPORT,
    ):
        if candidate.is_file() and (candidate.parent / SYNC_PREDICTIONS_DIR).is_dir():
            return candidate
    return None


def _heatmap_mpp(pred: Path, slide_id: str) -> float | None:
    heatmap_json = SlideOutputs(pred, slide_id).heatmap_json
    if not heatmap_json.is_file():
        return None
    try:
        return float(json.loads(heatmap_json.read_text(encoding="utf-8"))["mpp"])
    except (OSError, ValueError, KeyError, TypeError):
        raise EvaluationError(f"{heatmap_json}: unreadable heatmap metadata (no 'mpp')") from None


def _read_predict(pred: Path) -> Predictions:
    folder = pred / SUBMISSION_DIR if (pred / SUBMISSION_DIR).is_dir() else pred
    files = sorted(
        f
        for f in folder.glob("*.csv")
        if f.name != SLIDE_SCORES_CSV and not f.name.endswith(".tiles.csv")
    )
    if not files:
        raise EvaluationError(
            f"{pred}: no predictions found: neither `predict` output ({SUBMISSION_DIR}/<slide>.csv"
            f" or <slide>.csv) nor a `sync` project ({PROJECT_SUBDIR}/{SYNC_REPORT})",
            hint="give the --out folder of `qupath-rkd predict` or the project `sync` wrote",
        )
    scores_file = pred / SLIDE_SCORES_CSV
    scores, counts = read_slide_table(scores_file) if scores_file.is_file() else ({}, {})
    slides = []
    for f in files:
        sub = read_submission_csv(f)
        slides.append(
            PredictedSlide(
                sub.slide_id,
                (sub.slide_id,),
                sub,
                scores.get(sub.slide_id),
                _heatmap_mpp(pred, sub.slide_id),
                n_lesions=counts.get(sub.slide_id),
            )
        )
    layout = LAYOUT_PREDICT if folder is not pred else LAYOUT_SUBMISSIONS
    return Predictions(layout, pred, slides)


def _whole(value: Any) -> int | None:
    """A count from a report (``None`` when absent or not a whole number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _project_mpps(project_dir: Path) -> dict[str, float]:
    """Entry ID → level-0 µm/px from the QuPath project, where it records one."""
    from qupath_rkd.errors import QupathRkdError
    from qupath_rkd.qupath.project import open_project

    try:
        project = open_project(project_dir)
    except (QupathRkdError, OSError, ValueError):
        return {}
    return {str(e.entry_id): float(e.mpp) for e in project.entries if e.mpp}


def _read_sync(report_file: Path) -> Predictions:
    try:
        report: Any = json.loads(report_file.read_text(encoding="utf-8"))
        rows = report["slides"]
        if not isinstance(rows, list):
            raise TypeError("slides is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EvaluationError(f"{report_file}: not a `sync` report ({exc})") from None
    folder = report_file.parent / SYNC_PREDICTIONS_DIR
    mpps = _project_mpps(report_file.parent.parent)
    slides: list[PredictedSlide] = []
    for row in rows:
        try:
            entry_id, image_name = str(row["entry_id"]), str(row["image_name"])
        except (KeyError, TypeError):
            raise EvaluationError(f"{report_file}: a slide without entry_id/image_name") from None
        geojson = folder / f"{entry_id}.geojson"
        if row.get("status") == "failed" and not geojson.is_file():
            continue  # never predicted: like a slide `predict` failed on
        slide_id = slide_id_for(image_name)
        if any(s.slide_id == slide_id for s in slides):  # two images of one name
            slide_id = f"{slide_id}_entry{entry_id}"
        names = tuple(
            dict.fromkeys((slide_id, slide_id_for(image_name), safe_name(image_name), entry_id))
        )
        score = row.get("tumor_score")
        detections = read_sync_detections(folder, entry_id, slide_id)
        slides.append(
            PredictedSlide(
                slide_id,
                names,
                detections,
                None if score is None else float(score),
                mpps.get(entry_id),
                stale=bool(row.get("stale")),
                n_lesions=_whole(row.get("lesions")),
            )
        )
    if not slides:
        raise EvaluationError(
            f"{report_file}: the `sync` report lists no predicted slide",
            hint="run `qupath-rkd sync PROJECT` first",
        )
    return Predictions(LAYOUT_SYNC, report_file.parent, slides)


def read_predictions(pred: str | Path) -> Predictions:
    """The predicted slides of a ``predict`` output folder, a folder of Camelyon16 submission
    CSVs, or a ``sync`` project (its folder, ``qupath-rkd`` folder or ``predictions`` folder).

    Raises:
        EvaluationError: none of these layouts, or an unreadable file (named).
    """
    p = Path(pred)
    report = find_sync_report(p)
    # a `predict` output folder (its slide_scores.csv) is read as such even inside a project;
    # sync's predictions folder holds a camelyon16/ folder of its own
    if report is not None and not (p / SLIDE_SCORES_CSV).is_file():
        return _read_sync(report)
    return _read_predict(p)

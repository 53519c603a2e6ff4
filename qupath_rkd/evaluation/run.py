"""``evaluate``: ground truth + predictions → Camelyon16 lesion FROC, slide AUC, files.

Predictions are read from a ``predict`` output folder (see :mod:`qupath_rkd.outputs`):
``camelyon16/<slide>.csv`` submission files and ``slide_scores.csv``. A folder of bare
``<slide>.csv`` submission files (the organisers' layout) works too; the slide score is then the
highest detection probability (0 for a slide without detections).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qupath_rkd.errors import EvaluationError
from qupath_rkd.evaluation.camelyon16 import (
    FROCResult,
    SlideDetections,
    evaluation_mask,
    froc,
    score_detections,
)
from qupath_rkd.evaluation.metrics import roc_auc
from qupath_rkd.evaluation.truth import SlideTruth, load_truth_dir
from qupath_rkd.io_utils import atomic_write_json, atomic_write_text
from qupath_rkd.outputs import SLIDE_SCORES_CSV, SUBMISSION_DIR, SlideOutputs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """One slide's detections: ``(D,)`` probabilities and level-0 ``(x, y)``."""

    slide_id: str
    probs: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    source: Path


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


def _submission_files(pred: Path) -> list[Path]:
    folder = pred / SUBMISSION_DIR if (pred / SUBMISSION_DIR).is_dir() else pred
    files = sorted(
        f
        for f in folder.glob("*.csv")
        if f.name != SLIDE_SCORES_CSV and not f.name.endswith(".tiles.csv")
    )
    if not files:
        raise EvaluationError(
            f"{pred}: no Camelyon16 submission files ({SUBMISSION_DIR}/<slide>.csv or <slide>.csv)",
            hint="give the --out folder of `qupath-rkd predict`",
        )
    return files


def read_slide_scores(path: str | Path) -> dict[str, float]:
    """``slide_scores.csv`` (header with ``slide`` and ``score``) → slide id → score."""
    p = Path(path)
    with p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"slide", "score"} <= set(reader.fieldnames):
            raise EvaluationError(f"{p}: needs a header with 'slide' and 'score' columns")
        scores: dict[str, float] = {}
        for row in reader:
            value = (row.get("score") or "").strip()
            if value == "":
                continue  # a failed slide has no score
            try:
                scores[row["slide"]] = float(value)
            except ValueError:
                raise EvaluationError(
                    f"{p}: score {value!r} of {row['slide']} is not a number"
                ) from None
    return scores


def _slide_mpp(pred: Path, slide_id: str, truth: SlideTruth, mpp: float | None) -> float:
    if mpp is not None:
        return mpp
    heatmap_json = SlideOutputs(pred, slide_id).heatmap_json
    if heatmap_json.is_file():
        return float(json.loads(heatmap_json.read_text(encoding="utf-8"))["mpp"])
    if truth.mpp is not None:
        return truth.mpp
    raise EvaluationError(
        f"µm/px of slide {slide_id!r} is unknown (no {heatmap_json.name} and the truth "
        f"{truth.source} does not imply it)",
        hint="pass --mpp",
    )


@dataclass
class EvaluationReport:
    """Everything ``evaluate`` computes."""

    froc: FROCResult
    slide_auc: float | None
    slide_auc_note: str | None
    slides: list[dict[str, Any]] = field(default_factory=list)
    slide_score_source: str = ""

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (the content of ``evaluation.json``)."""
        return {
            "froc_score": self.froc.score,
            "sensitivity_at_fps_per_slide": {
                f"{k:g}": v for k, v in self.froc.sensitivity_at.items()
            },
            "n_slides": self.froc.n_slides,
            "n_lesions": self.froc.n_lesions,
            "slide_auc": self.slide_auc,
            "slide_auc_note": self.slide_auc_note,
            "slide_score_source": self.slide_score_source,
            "protocol": "Camelyon16 (Ehteshami Bejnordi et al. 2017): evaluation mask at level 5, "
            "grown by 37.5 um, holes filled, 8-connected; ITC < 275 um ignored",
            "slides": self.slides,
        }


def evaluate(
    truth: str | Path,
    pred: str | Path,
    *,
    mpp: float | None = None,
    normal_if_no_truth: bool = False,
) -> EvaluationReport:
    """Score ``predict`` outputs against ground truth.

    Args:
        truth: a folder of per-slide truth files (or one file); see :mod:`.truth`.
        pred: a ``predict`` output folder, or a folder of ``<slide>.csv`` submissions.
        mpp: level-0 µm/px of every slide (default: from the heatmap metadata, else 0.243 for
            Camelyon16 JSON truth).
        normal_if_no_truth: a predicted slide without a truth file is normal (Camelyon16 gives
            annotation files only for tumour slides). Otherwise it is an error.

    Raises:
        EvaluationError: slides on one side only, unreadable files, no lesion to detect.
    """
    pred = Path(pred)
    truths = load_truth_dir(truth)
    submissions = {s.slide_id: s for s in (read_submission_csv(f) for f in _submission_files(pred))}
    missing_pred = sorted(set(truths) - set(submissions))
    if missing_pred:
        raise EvaluationError(
            f"{len(missing_pred)} slide(s) with ground truth have no prediction: "
            + ", ".join(missing_pred[:10]),
            hint="predict every slide (an empty CSV means no detection) or remove their truth",
        )
    missing_truth = sorted(set(submissions) - set(truths))
    if missing_truth and not normal_if_no_truth:
        raise EvaluationError(
            f"{len(missing_truth)} predicted slide(s) have no ground truth: "
            + ", ".join(missing_truth[:10]),
            hint="add their truth files, or pass --normal-if-no-truth if they are normal slides",
        )
    scores_file = pred / SLIDE_SCORES_CSV
    slide_scores = read_slide_scores(scores_file) if scores_file.is_file() else {}
    per_slide: list[SlideDetections] = []
    rows: list[dict[str, Any]] = []
    labels: list[int] = []
    scores: list[float] = []
    used_max = 0
    for slide_id in sorted(submissions):
        sub = submissions[slide_id]
        t = truths.get(slide_id) or SlideTruth(slide_id)
        mask = None
        if t.is_tumor:
            slide_mpp = _slide_mpp(pred, slide_id, t, mpp)
            mask = evaluation_mask(t.tumor, t.exclude, mpp=slide_mpp)
        det = score_detections(slide_id, sub.probs, sub.x_px, sub.y_px, mask)
        per_slide.append(det)
        if slide_id in slide_scores:
            score = slide_scores[slide_id]
        else:
            used_max += 1
            score = float(sub.probs.max()) if sub.probs.size else 0.0
        labels.append(int(t.is_tumor))
        scores.append(score)
        rows.append(
            {
                "slide": slide_id,
                "tumor": t.is_tumor,
                "lesions": det.n_lesions,
                "itc": (mask.n_instances - det.n_lesions) if mask is not None else 0,
                "detections": int(sub.probs.size),
                "false_positives": int(det.fp_probs.size),
                "lesions_hit": int(np.count_nonzero(det.tp_probs > 0)),
                "itc_hits": det.n_itc_hits,
                "slide_score": score,
            }
        )
    result = froc(per_slide)
    auc: float | None
    note: str | None = None
    try:
        auc = roc_auc(np.asarray(labels), np.asarray(scores))
    except EvaluationError as exc:
        auc, note = None, exc.one_line()
    source = (
        SLIDE_SCORES_CSV
        if used_max == 0
        else "max detection probability"
        if used_max == len(rows)
        else f"{SLIDE_SCORES_CSV}, max detection probability for {used_max} slide(s)"
    )
    return EvaluationReport(result, auc, note, rows, source)


def write_report(report: EvaluationReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``evaluation.json``, ``froc.csv``, ``slides.csv`` and ``froc.png`` into ``out_dir``."""
    from qupath_rkd.evaluation.plot import write_froc_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "evaluation.json",
        "froc_csv": out / "froc.csv",
        "slides_csv": out / "slides.csv",
        "png": out / "froc.png",
    }
    atomic_write_json(paths["json"], report.summary())
    lines = ["fps_per_slide,sensitivity"] + [
        f"{f:.6g},{s:.6g}"
        for f, s in zip(report.froc.fps_per_slide, report.froc.sensitivity, strict=True)
    ]
    atomic_write_text(paths["froc_csv"], "\n".join(lines) + "\n")
    buf = io.StringIO()
    if report.slides:
        writer = csv.DictWriter(buf, fieldnames=list(report.slides[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(report.slides)
    atomic_write_text(paths["slides_csv"], buf.getvalue())
    write_froc_png(paths["png"], report.froc)
    return paths

"""``evaluate``: ground truth + predictions → Camelyon16 lesion FROC, slide AUC, files.

Predictions are read from a ``predict`` output folder, a folder of bare ``<slide>.csv``
Camelyon16 submissions, or a project ``sync`` wrote (see :mod:`.predictions`, which tells them
apart). Truth files are matched to a predicted slide by any of its names (slide id, image
name or stem, entry ID); several files matching one slide must agree (:func:`.truth.merge_truths`).
"""

from __future__ import annotations

import csv
import io
import logging
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
from qupath_rkd.evaluation.predictions import (
    LAYOUT_SYNC,
    PredictedSlide,
    Submission,
    read_predictions,
    read_slide_scores,
    read_submission_csv,
)
from qupath_rkd.evaluation.truth import SlideTruth, load_truth_dir, merge_truths
from qupath_rkd.io_utils import atomic_write_json, atomic_write_text
from qupath_rkd.outputs import SLIDE_SCORES_CSV

logger = logging.getLogger(__name__)

__all__ = [
    "EvaluationReport",
    "Submission",
    "evaluate",
    "read_slide_scores",
    "read_submission_csv",
    "write_report",
]


def _slide_mpp(slide: PredictedSlide, truth: SlideTruth, mpp: float | None) -> float:
    """Level-0 µm/px: the flag, else what the predictions record, else what the truth implies."""
    if mpp is not None:
        return mpp
    if slide.mpp is not None:
        return slide.mpp
    if truth.mpp is not None:
        return truth.mpp
    raise EvaluationError(
        f"µm/px of slide {slide.slide_id!r} is unknown (the predictions do not record it and "
        f"the truth {truth.source} does not imply it)",
        hint="pass --slide-mpp",
    )


def match_truths(
    slides: list[PredictedSlide], truths: dict[str, SlideTruth]
) -> tuple[dict[str, SlideTruth], list[str]]:
    """Each predicted slide's truth (by ``slide_id``; absent: no truth file names it) and the
    truth names no predicted slide took.

    Raises:
        EvaluationError: one truth file names two predicted slides, or two truth files of one
            slide disagree.
    """
    owner: dict[str, str] = {}
    matched: dict[str, SlideTruth] = {}
    for slide in slides:
        keys = [k for k in slide.names if k in truths]
        for k in keys:
            if k in owner and owner[k] != slide.slide_id:
                raise EvaluationError(
                    f"the ground truth {truths[k].source} names two predicted slides: "
                    f"{owner[k]!r} and {slide.slide_id!r}",
                    hint="name each truth file after one slide (its name or entry ID)",
                )
            owner[k] = slide.slide_id
        if keys:
            matched[slide.slide_id] = merge_truths(slide.slide_id, [truths[k] for k in keys])
    return matched, sorted(set(truths) - set(owner))


@dataclass
class EvaluationReport:
    """Everything ``evaluate`` computes."""

    froc: FROCResult
    slide_auc: float | None
    slide_auc_note: str | None
    slides: list[dict[str, Any]] = field(default_factory=list)
    slide_score_source: str = ""
    layout: str = ""
    default_out_dir: Path | None = None

    @property
    def false_lesions_per_tumor_free_slide(self) -> float | None:
        """Mean lesions reported at the operating point on the slides without tumour (each
        one false); ``None`` without such slides or lesion counts."""
        counts = [
            int(row["reported_lesions"])
            for row in self.slides
            if not row["tumor"] and row.get("reported_lesions") is not None
        ]
        return float(np.mean(counts)) if counts else None

    @property
    def stale_slides(self) -> list[str]:
        """Slides scored on the previous predictions ``sync`` kept when it failed on them."""
        return [str(row["slide"]) for row in self.slides if row.get("stale")]

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
            "false_lesions_per_tumor_free_slide": self.false_lesions_per_tumor_free_slide,
            "slide_score_source": self.slide_score_source,
            "predictions_layout": self.layout,
            "stale_slides": self.stale_slides,
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
    """Score ``predict`` or ``sync`` outputs against ground truth.

    Args:
        truth: a folder of per-slide truth files (or one file); see :mod:`.truth`.
        pred: a ``predict`` output folder, a folder of ``<slide>.csv`` submissions, or a
            project ``sync`` wrote (see :func:`.predictions.read_predictions`).
        mpp: level-0 µm/px of every slide (``--slide-mpp``; default: from the heatmap metadata
            or the QuPath project, else 0.243 for Camelyon16 JSON truth).
        normal_if_no_truth: a predicted slide without a truth file is normal (Camelyon16 gives
            annotation files only for tumour slides). Otherwise it is an error.

    Raises:
        EvaluationError: slides on one side only, unreadable files, no lesion to detect.
    """
    predictions = read_predictions(pred)
    truths = load_truth_dir(truth)
    matched, unmatched = match_truths(predictions.slides, truths)
    if unmatched:
        raise EvaluationError(
            f"{len(unmatched)} slide(s) with ground truth have no prediction: "
            + ", ".join(unmatched[:10])
            + f" (predicted: {', '.join(s.slide_id for s in predictions.slides[:10])})",
            hint="predict every slide (an empty CSV means no detection) or remove their truth; "
            "truth files are matched by slide name, image name or entry ID",
        )
    missing_truth = sorted(s.slide_id for s in predictions.slides if s.slide_id not in matched)
    if missing_truth and not normal_if_no_truth:
        raise EvaluationError(
            f"{len(missing_truth)} predicted slide(s) have no ground truth: "
            + ", ".join(missing_truth[:10]),
            hint="add their truth files, or pass --normal-if-no-truth if they are normal slides",
        )
    per_slide: list[SlideDetections] = []
    rows: list[dict[str, Any]] = []
    labels: list[int] = []
    scores: list[float] = []
    used_max = 0
    for slide in sorted(predictions.slides, key=lambda s: s.slide_id):
        sub = slide.detections
        t = matched.get(slide.slide_id) or SlideTruth(slide.slide_id)
        mask = None
        if t.is_tumor:
            mask = evaluation_mask(t.tumor, t.exclude, mpp=_slide_mpp(slide, t, mpp))
        det = score_detections(slide.slide_id, sub.probs, sub.x_px, sub.y_px, mask)
        per_slide.append(det)
        if slide.score is not None:
            score = slide.score
        else:
            used_max += 1
            score = float(sub.probs.max()) if sub.probs.size else 0.0
        labels.append(int(t.is_tumor))
        scores.append(score)
        rows.append(
            {
                "slide": slide.slide_id,
                "tumor": t.is_tumor,
                "lesions": det.n_lesions,
                "itc": (mask.n_instances - det.n_lesions) if mask is not None else 0,
                "detections": int(sub.probs.size),
                "false_positives": int(det.fp_probs.size),
                "lesions_hit": int(np.count_nonzero(det.tp_probs > 0)),
                "itc_hits": det.n_itc_hits,
                "slide_score": score,
                "reported_lesions": slide.n_lesions,
                "stale": slide.stale,
            }
        )
    result = froc(per_slide)
    auc: float | None
    note: str | None = None
    try:
        auc = roc_auc(np.asarray(labels), np.asarray(scores))
    except EvaluationError as exc:
        auc, note = None, exc.one_line()
    given = "report.json tumor_score" if predictions.layout == LAYOUT_SYNC else SLIDE_SCORES_CSV
    source = (
        given
        if used_max == 0
        else "max detection probability"
        if used_max == len(rows)
        else f"{given}, max detection probability for {used_max} slide(s)"
    )
    return EvaluationReport(
        result, auc, note, rows, source, predictions.layout, predictions.evaluation_dir
    )


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

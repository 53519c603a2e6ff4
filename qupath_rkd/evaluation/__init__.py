"""Evaluation: the Camelyon16 lesion FROC (organisers' protocol) and the slide AUC."""

from __future__ import annotations

from qupath_rkd.evaluation.camelyon16 import (
    FROC_FPS_PER_SLIDE,
    EvaluationMask,
    FROCResult,
    SlideDetections,
    evaluation_mask,
    froc,
    score_detections,
)
from qupath_rkd.evaluation.metrics import roc_auc, roc_curve

__all__ = [
    "FROC_FPS_PER_SLIDE",
    "EvaluationMask",
    "FROCResult",
    "SlideDetections",
    "evaluation_mask",
    "froc",
    "roc_auc",
    "roc_curve",
    "score_detections",
]

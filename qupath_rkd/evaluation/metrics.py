"""Slide-level ROC AUC (Camelyon16's slide task) and the ROC curve, with ties handled exactly."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from qupath_rkd.errors import EvaluationError


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count ½.

    Args:
        labels: ``(N,)`` 1 for tumour, 0 for normal.
        scores: ``(N,)`` finite scores (higher = more likely tumour).

    Raises:
        EvaluationError: when a class is missing or a score is not finite.
    """
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise EvaluationError(f"{y.size} labels but {s.size} scores")
    if not np.all(np.isfinite(s)):
        raise EvaluationError("slide scores must be finite")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise EvaluationError(
            f"the slide AUC needs tumour and normal slides (got {n_pos} tumour, {n_neg} normal)"
        )
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` over every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, fps / max(int((~y).sum()), 1)]
    return fpr, tpr

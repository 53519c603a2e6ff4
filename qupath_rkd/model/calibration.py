"""Raw anomaly score -> probability of tumour, fitted on validation data.

Choice (documented in docs/architecture.md):

- **With tumour and normal validation patches: logistic (Platt) calibration**,
  ``p = sigmoid(a * score + b)``, fitted by maximum likelihood with Platt's target smoothing
  (targets ``(N+ + 1)/(N+ + 2)`` and ``1/(N- + 2)``). Two parameters and monotone: it cannot
  overfit a handful of tumour patches, keeps the ranking (AUROC) of the raw score, and gives a
  smooth heatmap. Its slope must come out positive: where the calibration scores rank the
  classes backwards, the normal-tail mapping below is used instead (a negative slope turns
  every probability of the model around). Isotonic regression was not chosen: with tens of
  tumour patches it yields a step function with large ties, which flattens heatmaps and lesion
  peaks.
- **With normal validation patches only: a normal-tail mapping**, ``p = sigmoid((score - q99) /
  s)`` with ``q99`` the 99th percentile of normal scores and ``s = (q99 - q50) / ln 99``, so the
  median normal patch maps to 0.01 and the 99th-percentile normal patch to 0.5. This is not a
  probability of tumour (no tumour was seen); it says "as unusual as the top 1 % of normal
  tissue", which with the default threshold 0.5 keeps about 1 % false-positive tiles.
- **A supervised head whose held-out scores rank the classes backwards: its own probability**
  (``a = 1, b = 0`` on its logit; :func:`head_probability`). The head is fitted with a
  class-balanced loss, so its sigmoid is a tumour probability at equal priors: a better fallback
  for it than the normal tail, which assumes no tumour was ever seen and flattens the heatmap
  below every candidate floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import DataError

METHODS = ("logistic", "normal-tail")


@dataclass(frozen=True)
class Calibration:
    """``p = sigmoid(a * score + b)``; ``method`` says how ``a`` and ``b`` were fitted."""

    method: str
    a: float
    b: float
    n_normal: int
    n_tumor: int

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Raw scores ``(N,)`` -> probabilities ``(N,)`` float32 in [0, 1]; NaN stays NaN."""
        z = self.a * np.asarray(scores, dtype=np.float64) + self.b
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-z))
        return p.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "a": float(self.a),
            "b": float(self.b),
            "n_normal": int(self.n_normal),
            "n_tumor": int(self.n_tumor),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(
            str(d["method"]), float(d["a"]), float(d["b"]), int(d["n_normal"]), int(d["n_tumor"])
        )


def fit_logistic(scores: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> Calibration:
    """Platt scaling by Newton's method on ``(N,)`` scores and 0/1 labels."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    n_pos = int((y == LABEL_TUMOR).sum())
    n_neg = int((y == LABEL_NORMAL).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError("logistic calibration needs tumour and normal patches")
    keep = np.isfinite(s) & ((y == LABEL_TUMOR) | (y == LABEL_NORMAL))
    s, y = s[keep], y[keep]
    t = np.where(y == LABEL_TUMOR, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    mu, sd = float(s.mean()), float(s.std()) or 1.0
    x = (s - mu) / sd
    w = np.array([0.0, math.log((n_pos + 1.0) / (n_neg + 1.0))])  # slope, intercept

    def nll(w_: np.ndarray) -> float:
        z = w_[0] * x + w_[1]
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    for _ in range(max_iter):
        z = w[0] * x + w[1]
        p = 1.0 / (1.0 + np.exp(-z))
        g = np.array([np.sum((p - t) * x), np.sum(p - t)])
        r = p * (1.0 - p) + 1e-12
        h = np.array([[np.sum(r * x * x), np.sum(r * x)], [np.sum(r * x), np.sum(r)]])
        h += 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        f0, lam = nll(w), 1.0
        while lam > 1e-8 and nll(w - lam * step) > f0:
            lam *= 0.5
        w = w - lam * step
        if np.max(np.abs(lam * step)) < 1e-10:
            break
    a = w[0] / sd
    b = w[1] - w[0] * mu / sd
    return Calibration("logistic", float(a), float(b), n_neg, n_pos)


def fit_normal_tail(normal_scores: np.ndarray, quantile: float = 0.99) -> Calibration:
    """Map the ``quantile`` of normal scores to 0.5 and their median to ``1 - quantile``."""
    s = np.asarray(normal_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise DataError("normal-tail calibration needs normal patches")
    q_hi, q_mid = float(np.quantile(s, quantile)), float(np.median(s))
    spread = q_hi - q_mid
    if spread <= 0:
        spread = float(s.std()) or max(abs(q_hi), 1.0) * 1e-3
    scale = spread / math.log(quantile / (1.0 - quantile))
    return Calibration("normal-tail", 1.0 / scale, -q_hi / scale, int(s.size), 0)


def head_probability(n_normal: int, n_tumor: int) -> Calibration:
    """The identity on a class-balanced head's logit: ``p = sigmoid(logit)``.

    For a head whose held-out logits rank tumour below normal (:func:`ranks_backwards`), where
    a Platt fit would invert every probability and the normal tail would flatten the heatmap.
    """
    return Calibration("head", 1.0, 0.0, int(n_normal), int(n_tumor))


def fit_calibration(scores: np.ndarray, labels: np.ndarray, method: str = "auto") -> Calibration:
    """``auto``: logistic with both classes present, else normal-tail on the normal scores.

    A logistic fit whose slope is not positive (the scores rank the two classes backwards or
    not at all, e.g. out-of-fold scores of a few annotated regions) would invert or flatten
    every probability of the model; the normal-tail mapping, increasing by construction,
    replaces it then (:func:`ranks_backwards` tells the caller).
    """
    y = np.asarray(labels)
    has_both = bool((y == LABEL_TUMOR).any() and (y == LABEL_NORMAL).any())
    if method == "logistic" or (method == "auto" and has_both):
        fitted = fit_logistic(scores, y)
        if fitted.a > 0:
            return fitted
        return fit_normal_tail(np.asarray(scores)[y == LABEL_NORMAL])
    if method in ("normal-tail", "auto"):
        return fit_normal_tail(np.asarray(scores)[y == LABEL_NORMAL])
    raise DataError(f"unknown calibration {method!r}", hint=f"use one of {METHODS} or auto")


def ranks_backwards(calibration: Calibration, labels: np.ndarray, method: str = "auto") -> bool:
    """Whether :func:`fit_calibration` (asked for ``method``) fell back from a logistic fit
    with both classes in ``labels`` to the normal tail because the scores ranked them
    backwards."""
    y = np.asarray(labels)
    has_both = bool((y == LABEL_TUMOR).any() and (y == LABEL_NORMAL).any())
    return method != "normal-tail" and has_both and calibration.method == "normal-tail"


def backwards_warning(auc: float, source: str) -> str:
    """The one-line warning of a trainer whose calibration fell back to the normal tail."""
    return (
        f"the validation scores rank tumour below normal (AUROC {auc:.2f} on {source}): "
        "calibrated on the normal scores' tail instead, so a probability of 0.5 means as unusual "
        "as the top 1 % of normal tissue — check that the tumour and normal folders are not "
        "swapped"
    )


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (tumour = positive), ties counted half; NaN without both classes."""
    from scipy.stats import rankdata

    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    pos = y == LABEL_TUMOR
    neg = y == LABEL_NORMAL
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    keep = pos | neg
    ranks = rankdata(s[keep])
    r_pos = ranks[pos[keep]].sum()
    return float((r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))

"""Slide scores: one number per slide from its heatmap and lesions, and the slide-level call.

Rules (``rule`` names):

- ``max_smoothed``: the highest value of the smoothed heatmap (the default; with no smoothing
  it is ``max``). In [0, 1].
- ``max``: the highest raw tile probability. In [0, 1].
- ``mean_above``: FW-RD's rule, the mean of the raw tile probabilities ``>= threshold`` (0 when
  none). In [0, 1].
- ``largest_area``: area of the largest lesion in mm² (0 when none). Not a probability.
- ``largest_mass``: probability mass of the heaviest lesion in mm², its mean probability times
  its area (0 when none). Not a probability.

The slide-level call at the operating point is positive when the slide has at least one lesion
(:func:`slide_call`): the same seed threshold and minimum size that make its lesions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qupath_rkd.constants import DEFAULT_SLIDE_SCORE, SLIDE_SCORE_RULES
from qupath_rkd.lesions.extract import Lesion

__all__ = ["DEFAULT_SLIDE_SCORE", "SLIDE_SCORE_RULES", "slide_call", "slide_score"]


def slide_score(
    rule: str,
    *,
    raw: np.ndarray,
    smoothed: np.ndarray | None,
    lesions: Sequence[Lesion],
    threshold: float,
) -> float | None:
    """The slide score by ``rule`` (see the module docstring); ``None`` when ``raw`` holds no
    scored tile (no tissue: nothing to call benign or tumour, and 0 would read as benign).

    Args:
        rule: one of :data:`SLIDE_SCORE_RULES`.
        raw: tile probabilities, any shape (e.g. the ``(rows, cols)`` heatmap), NaN ignored.
        smoothed: the smoothed heatmap (any shape, NaN ignored); ``None`` = ``raw``.
        lesions: the slide's lesions (areas in µm²).
        threshold: the seed threshold (for ``mean_above``).
    """
    if rule not in SLIDE_SCORE_RULES:
        raise ValueError(f"slide score must be one of {SLIDE_SCORE_RULES}, not {rule!r}")
    if not np.isfinite(np.asarray(raw, dtype=np.float64)).any():
        return None
    if rule in ("max", "max_smoothed", "mean_above"):
        values = raw if (rule != "max_smoothed" or smoothed is None) else smoothed
        p = np.asarray(values, dtype=np.float64).reshape(-1)
        p = p[np.isfinite(p)]
        if p.size == 0:
            return 0.0
        if rule == "mean_above":
            above = p[p >= threshold]
            return float(above.mean()) if above.size else 0.0
        return float(p.max())
    if not lesions:
        return 0.0
    if rule == "largest_area":
        return max(float(les.area_um2) for les in lesions) / 1e6
    return max(float(les.mean_probability) * float(les.area_um2) for les in lesions) / 1e6


def slide_call(lesions: Sequence[Lesion]) -> bool:
    """Slide-level call at the operating point: positive when any lesion was found."""
    return len(lesions) > 0

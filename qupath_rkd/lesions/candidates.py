"""Candidate detections for the Camelyon16 FROC: lesion peaks plus the heatmap's other maxima.

The Camelyon16 protocol (:mod:`qupath_rkd.evaluation.camelyon16`) scores a ranked list of
points ``(p, X, Y)`` at every confidence: a second hit in a lesion is ignored, not a false
positive, and a hit in an isolated-tumour-cell instance is ignored too. A list of the lesions
found at the seed threshold alone ends the FROC curve at that threshold, so a lesion whose
cells never reach the seed is never submitted. :func:`candidate_detections` gives

1. the peak of every lesion (its ``peak_xy_px`` and ``max_probability``; each lesion once), and
2. every local maximum of the heatmap (a cell ``>=`` its 8 neighbours; off-tissue NaN cells are
   neither candidates nor neighbours) at or above ``floor`` that is not a lesion's peak: with
   ``inside_lesions`` (the default) also those inside a lesion, else only those whose centre
   lies outside every lesion,

ranked by probability, with non-maximum suppression: a local maximum is dropped when a kept
candidate of higher rank lies within ``nms_radius_um`` (lesion peaks are never dropped), and at
most ``max_candidates`` are returned, the highest first.

By default (``below_seed="own"``) every candidate is submitted at its own probability, and the
list holds every local maximum, inside the lesions too: it then hardly depends on the seed
threshold (only through which cell stands for a lesion and is never suppressed), so the FROC
measures the heatmap, not where the operating point landed. Two other rules, with
``seed_threshold``, put every candidate that is not a lesion peak below the seed, so the FROC at
and above the seed is exactly that of the lesions: ``"clamp"`` (the rule until 2026-12-08)
submits ``min(p, seed − BELOW_SEED)``, which ties every maximum above the seed into one step of
the FROC curve; ``"scale"`` submits ``p × (seed − BELOW_SEED)``, their order kept.

Why the maxima inside lesions: the lower the seed, the larger the lesions, and one lesion can
cover two true ones with one peak; the second was then never submitted. A second point in a true
lesion costs nothing (the protocol ignores it); one in a false lesion is one more false
positive. Why the own probability: a lesion's peak ranked first is only as good as the seed. At
sync's low operating points (0.12-0.65) false lesions outranked true maxima just under the seed,
and at 0.5 on one set the small false components the minimum size drops outranked lesions.
Measured in docs/benchmarks.md, "Candidates inside lesions, at their own probability": over
three slide sets and several seeds the own probability is the best or within one lesion of it
in 13 of 15 rows; the two others are one small set at seeds 0.5 and 0.58.

Frames: the heatmap is ``(row, col)``; candidates are level-0 ``(x, y)`` pixels in QuPath's frame
at tile centres, the same frame and convention as :attr:`~qupath_rkd.lesions.extract.Lesion.
peak_xy_px` (:meth:`qupath_rkd.heatmap.Heatmap.to_level0_xy`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from scipy import ndimage
from scipy.spatial import cKDTree

from qupath_rkd.constants import (
    DEFAULT_CANDIDATE_FLOOR,
    DEFAULT_CANDIDATE_NMS_UM,
    DEFAULT_CANDIDATES_BELOW_SEED,
    DEFAULT_CANDIDATES_INSIDE_LESIONS,
    DEFAULT_MAX_CANDIDATES,
)
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions.extract import Lesion

__all__ = ["BELOW_SEED", "BELOW_SEED_RULES", "Candidates", "candidate_detections", "local_maxima"]

#: How far below the seed threshold a candidate that is not a lesion peak is reported at most:
#: one unit of the Camelyon16 CSV's 6 decimals.
BELOW_SEED = 1e-6

#: How the candidates that are not lesion peaks are submitted: at their own probability, or
#: below the seed (see :func:`candidate_detections`).
BELOW_SEED_RULES = ("own", "clamp", "scale")


@dataclass(frozen=True)
class Candidates:
    """Candidate detections of one slide, highest probability first.

    Attributes:
        probs: ``(K,)`` float64 probabilities as submitted (a lesion's ``max_probability``,
            else the cell's; below the seed with the ``clamp`` and ``scale`` rules).
        x_px, y_px: ``(K,)`` float64 level-0 coordinates (QuPath frame) of the tile centres.
        is_lesion_peak: ``(K,)`` bool, True where the candidate is a lesion's peak.
    """

    probs: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    is_lesion_peak: np.ndarray

    def __len__(self) -> int:
        return int(self.probs.size)


def local_maxima(probability: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid ``(rows, cols)`` (int64, row-major order) of the finite cells ``>= floor`` that are
    ``>=`` each of their finite 8 neighbours (every cell of a plateau counts).

    Args:
        probability: ``(rows, cols)`` float, NaN off tissue.
        floor: the lowest probability kept.
    """
    p = np.asarray(probability, dtype=np.float64)
    finite = np.isfinite(p)
    filled = np.where(finite, p, -np.inf)
    neighbourhood_max = ndimage.maximum_filter(filled, size=3, mode="constant", cval=-np.inf)
    peak = finite & (filled >= neighbourhood_max) & (filled >= floor)
    rows, cols = np.nonzero(peak)
    return rows.astype(np.int64), cols.astype(np.int64)


def candidate_detections(
    heatmap: Heatmap,
    lesions: Sequence[Lesion],
    *,
    floor: float = DEFAULT_CANDIDATE_FLOOR,
    nms_radius_um: float = DEFAULT_CANDIDATE_NMS_UM,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    seed_threshold: float | None = None,
    inside_lesions: bool = DEFAULT_CANDIDATES_INSIDE_LESIONS,
    below_seed: str = DEFAULT_CANDIDATES_BELOW_SEED,
) -> Candidates:
    """The lesion peaks and the heatmap's other local maxima (see the module docstring).

    Args:
        heatmap: the heatmap the lesions were found on (the smoothed one when smoothing is on),
            ``(rows, cols)``, NaN off tissue.
        lesions: the lesions found on ``heatmap`` (:func:`~qupath_rkd.lesions.pipeline.
            find_lesions`); each gives one candidate, its peak.
        floor: local maxima below this probability are left out (lesion peaks never are).
        nms_radius_um: a local maximum within this distance (µm, between tile centres) of a
            kept candidate of higher rank is dropped; 0 = no suppression.
        max_candidates: at most this many candidates, the highest (``>= 1``).
        seed_threshold: the seed the lesions were found at; with the ``below_seed`` rules
            ``clamp`` and ``scale`` a candidate that is not a lesion peak is reported below it.
            ``None``: every candidate at its own probability, whatever the rule.
        inside_lesions: also the local maxima inside the lesions (not only outside them).
        below_seed: how a candidate that is not a lesion peak is submitted: ``"own"``: at its
            probability (the seed plays no part); ``"clamp"``: ``min(p, seed - BELOW_SEED)``
            (those at or above the seed tie); ``"scale"``: ``p × (seed - BELOW_SEED)`` (their
            order kept, all below the seed).

    Returns:
        :class:`Candidates`, highest submitted probability first (ties: the higher cell
        probability, then lesion peaks, then by ``y``, ``x``); suppression and the cap follow
        this order.
    """
    if not (math.isfinite(floor) and 0.0 <= floor <= 1.0):
        raise ValueError(f"candidate floor must be a probability in [0, 1], got {floor}")
    if not (math.isfinite(nms_radius_um) and nms_radius_um >= 0):
        raise ValueError(f"candidate NMS radius must be a length >= 0 in µm, got {nms_radius_um}")
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
    if below_seed not in BELOW_SEED_RULES:
        raise ValueError(f"below_seed must be one of {BELOW_SEED_RULES}, got {below_seed!r}")
    rows, cols = local_maxima(heatmap.probability, floor)
    mx, my = heatmap.to_level0_xy(rows, cols)
    mp = heatmap.probability[rows, cols].astype(np.float64)
    lx = np.array([les.peak_xy_px[0] for les in lesions], dtype=np.float64)
    ly = np.array([les.peak_xy_px[1] for les in lesions], dtype=np.float64)
    if lesions and rows.size:
        if inside_lesions:  # every maximum but the lesions' own peak cells
            near = cKDTree(np.column_stack([lx, ly])).query(
                np.column_stack([mx, my]), distance_upper_bound=heatmap.stride_level0_px / 2
            )[0]
            drop = np.isfinite(near)
        else:
            drop = shapely.contains_xy(shapely.union_all([les.polygon for les in lesions]), mx, my)
        mx, my, mp = mx[~drop], my[~drop], mp[~drop]
    lp = np.array([les.max_probability for les in lesions], dtype=np.float64)
    x = np.concatenate([lx, mx])
    y = np.concatenate([ly, my])
    p = np.concatenate([lp, mp])
    is_peak = np.concatenate([np.ones(lx.size, bool), np.zeros(mx.size, bool)])
    submitted = p.copy()
    if seed_threshold is not None and below_seed != "own":
        below = max(float(seed_threshold) - BELOW_SEED, 0.0)
        if below_seed == "clamp":
            submitted[~is_peak] = np.minimum(submitted[~is_peak], below)
        else:
            submitted[~is_peak] = submitted[~is_peak] * below
    # highest submitted first; ties: the cell's own probability, lesion peaks, y, x
    # (np.lexsort: the last key is the primary one)
    order = np.lexsort((x, y, ~is_peak, -p, -submitted))
    radius_px = nms_radius_um / heatmap.mpp
    tree = cKDTree(np.column_stack([x, y])) if radius_px > 0 and x.size else None
    suppressed = np.zeros(x.size, dtype=bool)
    kept: list[int] = []
    for i in order.tolist():
        if suppressed[i] and not is_peak[i]:
            continue
        kept.append(i)
        if len(kept) >= max_candidates:
            break
        if tree is not None:
            suppressed[tree.query_ball_point((x[i], y[i]), radius_px)] = True
    keep = np.asarray(kept, dtype=np.int64)
    return Candidates(
        probs=submitted[keep], x_px=x[keep], y_px=y[keep], is_lesion_peak=is_peak[keep]
    )

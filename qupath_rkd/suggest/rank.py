"""Ranking candidate regions across a project: :func:`suggest_regions`.

A pure function of its inputs (per-slide heatmaps, what is annotated, optional per-view
probabilities and features, the labelled tiles' features): the same inputs give the same
suggestions in the same order, with the same scores.

Signals (``SuggestConfig.signal``), each a score per candidate region, higher first:

- ``uncertainty``: the mean over the region's cells of ``1 - |p - t| / max(t, 1 - t)``,
  ``p`` the cell's probability and ``t`` the decision threshold (sync passes the model's
  calibrated threshold, where a tile's label is a coin flip, not the operating point): 1 at
  the threshold, 0 at the far end.
- ``tta_disagreement``: the mean over cells of the standard deviation of the per-view
  probabilities: from a slide's dense ``view_probability``, or else from ``view_fn`` for the
  ``FEATURE_CELLS`` spread cells of each slide's ``FEATURE_POOL * per_slide`` most uncertain
  candidates (the others are not ranked: what ``sync`` does, so that only those tiles are read
  again). Slides with neither are left out, with a note.
- ``diversity``: the distance (L2-normalised mean features, Euclidean, in [0, 2]) from the
  region to the nearest labelled tile and to the regions already picked.
- ``uncertainty_diversity``: uncertainty times the diversity relative to the
  most distant candidate (in [0, 1]), picked greedily, so the picks are uncertain and
  unlike what is labelled and unlike each other. Without features it is ``uncertainty``.
- ``random`` (seeded) and ``top_probability`` (mean probability): baselines.
- ``mixed`` (default): ``uncertainty_diversity`` and ``top_probability`` picks in turn (odd
  ranks the former, even ranks the latter; without features the former is ``uncertainty``):
  regions the model is unsure of and unlike what is labelled, and the regions it calls tumour
  most surely, which she confirms or corrects (a corrected one is a hard negative).
- ``mixed_random``: ``uncertainty_diversity``, ``top_probability`` and ``random`` picks in
  turn (ranks 1, 2, 3, then again): ``mixed`` with a share of ordinary tissue. Measured against
  ``mixed`` on 10 seeds (docs/benchmarks.md): a tie, behind it at the first round.
- ``tumour_first``: ``top_probability`` while the labelled tumour forms few regions, then
  ``uncertainty_diversity``; the caller resolves it
  (:func:`~qupath_rkd.suggest.config.tumour_first_signal`).

Every signal picks greedily under the same rules: at most ``per_slide`` per slide and
``per_project`` in all, and no pick overlapping or touching (sharing a cell edge or corner
with) an earlier pick, so that picks are never neighbours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qupath_rkd.suggest.config import (
    REASON_PROBABLE,
    REASON_RANDOM,
    REASON_UNCERTAIN,
    REASON_UNLIKE,
    REASON_VIEWS,
    SIGNAL_COMBINED,
    SIGNAL_DIVERSITY,
    SIGNAL_MIXED,
    SIGNAL_MIXED_RANDOM,
    SIGNAL_RANDOM,
    SIGNAL_TOP_PROBABILITY,
    SIGNAL_TTA,
    SIGNAL_TUMOUR_FIRST,
    SIGNAL_UNCERTAINTY,
    SuggestConfig,
)
from qupath_rkd.suggest.regions import Candidate, SuggestSlide, candidate_regions, region_geometry

#: ``feature_fn(slide_index, cells (n, 2) (row, col)) -> (n, D)`` features of those cells'
#: tiles (any float dtype); must be deterministic.
FeatureFn = Callable[[int, np.ndarray], np.ndarray]
#: ``view_fn(slide_index, cells (n, 2) (row, col)) -> (V, n)`` tumour probabilities of those
#: cells' tiles in each of ``V >= 2`` test-time views; must be deterministic.
ViewFn = Callable[[int, np.ndarray], np.ndarray]

#: The signals that take turns, in their order, for the signals made of turns.
_TURNS: dict[str, tuple[str, ...]] = {
    SIGNAL_MIXED: (SIGNAL_COMBINED, SIGNAL_TOP_PROBABILITY),
    SIGNAL_MIXED_RANDOM: (SIGNAL_COMBINED, SIGNAL_TOP_PROBABILITY, SIGNAL_RANDOM),
}

#: Cells whose features stand for a region (evenly spread over its cells, row-major).
FEATURE_CELLS = 9
#: Candidates per slide whose features are computed: the most uncertain ones (``diversity``
#: alone: evenly spread over the slide), this many times ``per_slide``.
FEATURE_POOL = 4


@dataclass(frozen=True)
class Suggestion:
    """One suggested region.

    Attributes:
        rank: 1 = the most useful to annotate, across the project.
        entry_id, image_name: its slide.
        slide_index: index of its slide in the input list.
        cells: ``(n, 2)`` ``(row, col)`` heatmap cells.
        geometry: the outline of their footprints (shapely Polygon, level-0 px, the heatmap's
            frame).
        score: the signal's value when it was picked.
        signal: the signal used.
        reason: why, in words (``uncertain``, ``unlike anything labelled``, ...).
        mean_probability: mean tumour probability of its cells.
        uncertainty: its uncertainty (see the module docstring).
        diversity: distance to the labelled tiles (``None`` without features).
        centre_xy_px: level-0 ``(x, y)`` of the mean of its cells' centres.
        area_um2: area of its geometry in µm².
    """

    rank: int
    entry_id: str
    image_name: str
    slide_index: int
    cells: np.ndarray
    geometry: Any
    score: float
    signal: str
    reason: str
    mean_probability: float
    uncertainty: float
    diversity: float | None
    centre_xy_px: tuple[float, float]
    area_um2: float


@dataclass
class SuggestResult:
    """Suggestions in rank order, and one-line notes (why there are none or fewer)."""

    suggestions: list[Suggestion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def uncertainty(probability: np.ndarray, threshold: float) -> np.ndarray:
    """``1 - |p - t| / max(t, 1 - t)`` (same shape as ``probability``; NaN stays NaN)."""
    t = float(threshold)
    span = max(t, 1.0 - t, 1e-12)
    return 1.0 - np.abs(np.asarray(probability, np.float64) - t) / span


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _spread(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices evenly spread over ``range(n)``."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def _touch_mask(shape: tuple[int, int], cells: np.ndarray) -> np.ndarray:
    """``cells`` dilated by one cell (8-neighbourhood), as a ``shape`` bool mask."""
    mask = np.zeros((shape[0] + 2, shape[1] + 2), dtype=bool)
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            mask[cells[:, 0] + dr, cells[:, 1] + dc] = True
    return mask[1:-1, 1:-1]


def suggest_regions(
    slides: Sequence[SuggestSlide],
    *,
    threshold: float,
    config: SuggestConfig,
    feature_fn: FeatureFn | None = None,
    labelled_features: np.ndarray | None = None,
    view_fn: ViewFn | None = None,
) -> SuggestResult:
    """Rank candidate regions across ``slides`` and pick at most ``config.per_project``.

    Args:
        slides: the project's slides (order matters only to break exact ties: earlier first).
        threshold: the decision threshold in [0, 1] (the operating point's).
        config: sizes, caps and the signal.
        feature_fn: features of cells' tiles, for ``diversity`` and ``uncertainty_diversity``
            (``None``: those use no features; ``diversity`` then has nothing to rank by).
        labelled_features: ``(M, D)`` features of labelled tiles (``None`` or empty: the
            distance is to the earlier picks only).
        view_fn: per-view probabilities of cells' tiles, for ``tta_disagreement`` on slides
            without a dense ``view_probability`` (only the pooled candidates are ranked).

    Returns:
        The suggestions (rank 1 first) and notes.
    """
    if config.signal == SIGNAL_TUMOUR_FIRST:
        raise ValueError(
            f"{SIGNAL_TUMOUR_FIRST} depends on the labelled set: resolve it with "
            "tumour_first_signal() first (sync does)"
        )
    result = SuggestResult()
    sig = config.signal
    candidates: list[Candidate] = []
    for index, slide in enumerate(slides):
        candidates.extend(candidate_regions(slide, index, config))
    if not candidates:
        result.notes.append(
            "no unannotated tissue to suggest: every slide is annotated, marked "
            "tumour-free or fully annotated, or has no tissue"
        )
        return result
    if config.per_project == 0 or config.per_slide == 0:
        return result

    mean_p = np.array(
        [
            np.nanmean(slides[c.slide_index].heatmap.probability[c.cells[:, 0], c.cells[:, 1]])
            for c in candidates
        ]
    )
    unc = np.array(
        [
            float(
                np.mean(
                    uncertainty(
                        slides[c.slide_index].heatmap.probability[c.cells[:, 0], c.cells[:, 1]],
                        threshold,
                    )
                )
            )
            for c in candidates
        ]
    )
    usable = np.ones(len(candidates), dtype=bool)
    base = unc.copy()
    drawn = np.random.default_rng(config.seed).random(len(candidates))
    if sig == SIGNAL_TOP_PROBABILITY:
        base = mean_p.copy()
    elif sig == SIGNAL_RANDOM:
        base = drawn
    elif sig == SIGNAL_TTA:
        base = np.zeros(len(candidates))
        missing: set[str] = set()
        pool = _pool_mask(candidates, unc, sig, config) if view_fn is not None else None
        for i, c in enumerate(candidates):
            views = slides[c.slide_index].view_probability
            if views is not None:
                per = np.asarray(views, np.float64)[:, c.cells[:, 0], c.cells[:, 1]]
            elif pool is not None and view_fn is not None:
                if not pool[i]:
                    usable[i] = False
                    continue
                cells = c.cells[_spread(len(c.cells), FEATURE_CELLS)]
                per = np.asarray(view_fn(c.slide_index, cells), np.float64).reshape(-1, len(cells))
            else:
                usable[i] = False
                missing.add(slides[c.slide_index].image_name)
                continue
            base[i] = float(np.mean(np.std(per, axis=0)))
        if missing:
            result.notes.append(
                f"{SIGNAL_TTA}: no per-view probabilities for {len(missing)} slide(s) "
                f"({', '.join(sorted(missing))}): not suggested on"
            )

    # features of a pool of candidates per slide (the diversity signals)
    feats: np.ndarray | None = None
    in_pool = np.zeros(len(candidates), dtype=bool)  # candidates with features
    d_lab = np.full(len(candidates), np.nan)
    if sig in (SIGNAL_DIVERSITY, SIGNAL_COMBINED, *_TURNS):
        if feature_fn is None:
            if sig == SIGNAL_DIVERSITY:
                result.notes.append(f"{SIGNAL_DIVERSITY}: no features available: no suggestions")
                return result
        else:
            feats, pool = _pool_features(candidates, unc, sig, config, feature_fn)
            in_pool = pool
            if sig not in _TURNS:  # the other turns of those may pick outside the pool
                usable &= pool
            if labelled_features is not None and len(labelled_features):
                lab = _unit(np.asarray(labelled_features).reshape(len(labelled_features), -1))
                for i in np.flatnonzero(pool).tolist():
                    d_lab[i] = float(np.min(np.linalg.norm(lab - feats[i], axis=1)))
            else:
                d_lab[pool] = 2.0
            d_lab = np.minimum(d_lab, 2.0)
    d_ref = float(np.nanmax(d_lab)) if np.isfinite(d_lab).any() else 0.0

    picked: list[int] = []
    per_slide: dict[int, int] = {}
    blocked: dict[int, np.ndarray] = {}
    d_now = d_lab.copy()
    while len(picked) < config.per_project:
        avail = usable.copy()
        for i, c in enumerate(candidates):
            if not avail[i]:
                continue
            if per_slide.get(c.slide_index, 0) >= config.per_slide or (
                c.slide_index in blocked
                and blocked[c.slide_index][c.cells[:, 0], c.cells[:, 1]].any()
            ):
                avail[i] = False
        if not avail.any():
            break
        score = base
        turn = sig
        if sig in _TURNS:  # e.g. mixed: odd ranks uncertain and unlike, even probable tumour
            turn = _TURNS[sig][len(picked) % len(_TURNS[sig])]
            if turn == SIGNAL_TOP_PROBABILITY:
                score = mean_p
            elif turn == SIGNAL_RANDOM:
                score = drawn
        if feats is not None and turn == SIGNAL_DIVERSITY:
            score = d_now
        elif feats is not None and turn == SIGNAL_COMBINED:
            score = unc * (np.minimum(1.0, d_now / d_ref) if d_ref > 0 else 1.0)
            if sig in _TURNS:
                score = np.where(in_pool, score, np.nan)  # features only in the pool
                if not (avail & in_pool).any():  # the pool is used up: the other turn's pick
                    turn, score = SIGNAL_TOP_PROBABILITY, mean_p
        score = np.where(avail, np.round(np.nan_to_num(score, nan=-np.inf), 9), -np.inf)
        best = int(np.argmax(score))  # the first candidate (slide, window order) on a tie
        if not np.isfinite(score[best]):
            break  # nothing left with a score: never a suggestion scored -inf
        picked.append(best)
        c = candidates[best]
        per_slide[c.slide_index] = per_slide.get(c.slide_index, 0) + 1
        shape = slides[c.slide_index].heatmap.shape
        mask = _touch_mask(shape, c.cells)
        blocked[c.slide_index] = mask | blocked.get(c.slide_index, np.zeros(shape, bool))
        if feats is not None:
            # a probable-tumour pick of ``mixed`` outside the pool has no features yet
            pick = feats[best] if in_pool[best] else _feature_of(c, feature_fn)
            d_pick = np.linalg.norm(feats - pick, axis=1)
            d_now = np.fmin(d_now, np.where(in_pool, d_pick, np.nan))
        result.suggestions.append(
            _suggestion(
                len(picked),
                c,
                slides[c.slide_index],
                float(score[best]),
                sig,
                _reason(turn, d_lab[best], d_ref),
                float(mean_p[best]),
                float(unc[best]),
                None if not np.isfinite(d_lab[best]) else float(d_lab[best]),
            )
        )
    return result


def _pool_features(
    candidates: Sequence[Candidate],
    unc: np.ndarray,
    sig: str,
    config: SuggestConfig,
    feature_fn: FeatureFn,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit mean features ``(n, D)`` of the pooled candidates (zeros elsewhere) and the pool
    mask: per slide the ``FEATURE_POOL * per_slide`` most uncertain candidates (``diversity``:
    evenly spread in window order)."""
    n = len(candidates)
    pool = _pool_mask(candidates, unc, sig, config)
    feats: np.ndarray | None = None
    for i in np.flatnonzero(pool).tolist():
        mean = _feature_of(candidates[i], feature_fn)
        if feats is None:
            feats = np.zeros((n, mean.shape[0]))
        feats[i] = mean
    assert feats is not None
    return feats, pool


def _feature_of(c: Candidate, feature_fn: FeatureFn | None) -> np.ndarray:
    """``(D,)`` unit mean feature of ``FEATURE_CELLS`` cells spread over the candidate."""
    assert feature_fn is not None  # only called where features were computed
    cells = c.cells[_spread(len(c.cells), FEATURE_CELLS)]
    values = np.asarray(feature_fn(c.slide_index, cells), np.float64).reshape(len(cells), -1)
    return _unit(values.mean(axis=0))


def _pool_mask(
    candidates: Sequence[Candidate], unc: np.ndarray, sig: str, config: SuggestConfig
) -> np.ndarray:
    """``(n,)`` bool: per slide the ``FEATURE_POOL * per_slide`` most uncertain candidates
    (``diversity``: evenly spread in window order), those whose tiles are read again."""
    pool = np.zeros(len(candidates), dtype=bool)
    by_slide: dict[int, list[int]] = {}
    for i, c in enumerate(candidates):
        by_slide.setdefault(c.slide_index, []).append(i)
    k = FEATURE_POOL * max(1, config.per_slide)
    for members in by_slide.values():
        idx = np.asarray(members)
        if sig == SIGNAL_DIVERSITY:
            chosen = idx[_spread(len(idx), k)]
        else:  # most uncertain first; stable sort keeps window order on ties
            chosen = idx[np.argsort(-np.round(unc[idx], 9), kind="stable")[:k]]
        pool[chosen] = True
    return pool


def _reason(sig: str, d_lab: float, d_ref: float) -> str:
    if sig == SIGNAL_UNCERTAINTY:
        return REASON_UNCERTAIN
    if sig == SIGNAL_DIVERSITY:
        return REASON_UNLIKE
    if sig == SIGNAL_TTA:
        return REASON_VIEWS
    if sig == SIGNAL_RANDOM:
        return REASON_RANDOM
    if sig == SIGNAL_TOP_PROBABILITY:
        return REASON_PROBABLE
    # combined: uncertain, and unlike anything labelled when it is at least half as far from
    # the labelled tiles as the most distant candidate
    if np.isfinite(d_lab) and d_ref > 0 and d_lab >= 0.5 * d_ref:
        return f"{REASON_UNCERTAIN}, {REASON_UNLIKE}"
    return REASON_UNCERTAIN


def _suggestion(
    rank: int,
    c: Candidate,
    slide: SuggestSlide,
    score: float,
    sig: str,
    reason: str,
    mean_p: float,
    unc: float,
    div: float | None,
) -> Suggestion:
    hm = slide.heatmap
    xs, ys = hm.to_level0_xy(c.cells[:, 0], c.cells[:, 1])
    geom = region_geometry(hm, c.cells)
    return Suggestion(
        rank=rank,
        entry_id=slide.entry_id,
        image_name=slide.image_name,
        slide_index=c.slide_index,
        cells=c.cells,
        geometry=geom,
        score=round(score, 6),
        signal=sig,
        reason=reason,
        mean_probability=round(mean_p, 6),
        uncertainty=round(unc, 6),
        diversity=None if div is None else round(div, 6),
        centre_xy_px=(round(float(xs.mean()), 3), round(float(ys.mean()), 3)),
        area_um2=round(float(geom.area) * hm.mpp * hm.mpp, 3),
    )

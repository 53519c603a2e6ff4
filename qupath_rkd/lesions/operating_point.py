"""The operating point (seed threshold) from what the user knows is tumour-free.

Tumour-free slides and normal annotations say where a lesion must not be: every lesion found
there is a false lesion. :func:`choose_operating_point` takes their heatmaps and picks the lowest
seed threshold at which they hold at most ``target_fp_per_slide`` false lesions per slide, never
below ``floor``. ``predict`` passes the candidate floor 0.05, because a head calibrated on its
own patches carries their prior (1 tumour per 100 normal) and may put every tumour below 0.5;
sync passes it too when the user marked at least one slide's worth of tissue tumour-free
(:data:`MIN_SLIDES_BELOW_CALIBRATED`; a head calibrated out-of-fold on a few hard annotated
regions is flat and may put every tumour below 0.5 as well), else the calibrated 0.5. Without
any tumour-free slide or normal region it returns the fallback and says so.

Slides, not regions, are the unit of the rate: a tumour-free slide counts 1; a normal region on
another slide counts the share of that slide's tissue it covers (``region cells / tissue cells``),
so a small normal outline does not weigh as much as a whole tumour-free slide.

The false lesions are counted with the same post-processing as the lesions themselves
(:func:`qupath_rkd.lesions.pipeline.count_lesions`: smoothing, hysteresis with the extent
``extent_ratio × seed``, minimum size); inside a normal region the heatmap is cut to the region
(cells whose centre lies in it) after smoothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from qupath_rkd.constants import DEFAULT_TARGET_FP_PER_SLIDE
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions.pipeline import count_lesions
from qupath_rkd.lesions.postprocess import PostProcessing, smooth_heatmap

#: The calibrated threshold used when nothing tumour-free is known.
FALLBACK_THRESHOLD = 0.5

METHOD_FALLBACK = "fallback"
METHOD_TUMOR_FREE = "tumor-free"
METHOD_GIVEN = "given"
METHOD_NORMAL_PATCHES = "normal-patches"
#: Sync goes below the model's calibrated threshold (down to the candidate floor, as predict
#: does) only when the user marked at least this many slides' worth of tissue tumour-free: on a
#: small normal outline alone, "no false lesion" says little about a whole slide.
MIN_SLIDES_BELOW_CALIBRATED = 1.0
#: Added to the false-lesion count on the normal mosaics (the Jeffreys estimate of a Poisson
#: rate): :func:`choose_on_mosaics`.
MOSAIC_PRIOR_LESIONS = 0.5


@dataclass(frozen=True)
class OperatingPoint:
    """The seed threshold in use and how it was found.

    Attributes:
        threshold: the seed threshold (a calibrated probability).
        method: ``"fallback"`` (nothing tumour-free known: the calibrated threshold),
            ``"tumor-free"`` (chosen on tumour-free slides / normal regions), ``"given"``
            (set by the user) or ``"normal-patches"`` (chosen on the mosaics of held-out normal
            training patches a ``train-patches`` model carries,
            :mod:`qupath_rkd.training.normal_mosaics`).
        n_slides: tumour-free slides used.
        n_regions: slides whose normal regions were used.
        slide_equivalents: the rate's denominator (slides + tissue share of the regions).
        false_lesions_per_slide: false lesions per slide at ``threshold`` (``None`` for the
            fallback without data).
        target_fp_per_slide: the target asked for.
        note: one line for the user.
        held_out: how the heatmaps it was chosen on relate to the model's training (sync,
            :mod:`qupath_rkd.sync.heldout`): ``"leave-one-image-out"`` (each training image
            scored by a head fitted without it), ``"held-out-folds"`` (as that, but an image
            holding most of a class's tiles scored band by band, each band by a head fitted
            without that band's tiles), ``"not-in-training"``, ``"in-sample"``,
            ``"partly-in-sample"``; ``None`` where not recorded (fallback, given, ``predict``;
            then left out of :meth:`as_dict`).
    """

    threshold: float
    method: str
    n_slides: int = 0
    n_regions: int = 0
    slide_equivalents: float = 0.0
    false_lesions_per_slide: float | None = None
    target_fp_per_slide: float = DEFAULT_TARGET_FP_PER_SLIDE
    note: str = ""
    held_out: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values for ``report.json`` / ``run.json`` (the threshold unrounded: it is
        just above a heatmap value, and rounding could bring that value back in)."""
        d = asdict(self)
        d["threshold"] = float(self.threshold)
        for key in ("slide_equivalents", "false_lesions_per_slide"):
            if d[key] is not None:
                d[key] = round(float(d[key]), 6)
        if d["held_out"] is None:  # not recorded: the records stay as they were
            del d["held_out"]
        return d


@dataclass(frozen=True)
class NegativeHeatmap:
    """A heatmap where every lesion is false.

    Attributes:
        heatmap: the slide's calibrated heatmap ``(rows, cols)``, NaN off tissue.
        mask: ``(rows, cols)`` bool, the cells known to be normal (a normal region); ``None`` =
            the whole slide is tumour-free.
        name: for messages.
        weight: the slides it counts as in the rate; ``None`` = 1 for a tumour-free slide, the
            region's share of the slide's tissue for a normal region. Set for the mosaics of
            normal patches a patch-trained model carries
            (:mod:`qupath_rkd.model.normal_mosaics`: a smaller mosaic counts as its share of a
            full one).
    """

    heatmap: Heatmap
    mask: np.ndarray | None = None
    name: str = ""
    weight: float | None = None


def fallback(
    target_fp_per_slide: float = DEFAULT_TARGET_FP_PER_SLIDE,
    threshold: float = FALLBACK_THRESHOLD,
) -> OperatingPoint:
    """The calibrated threshold, used when no tumour-free slide or normal region is given."""
    return OperatingPoint(
        threshold=float(threshold),
        method=METHOD_FALLBACK,
        target_fp_per_slide=target_fp_per_slide,
        note=f"no tumour-free slide or normal region: the calibrated threshold {threshold:g}",
    )


def given(threshold: float) -> OperatingPoint:
    """A threshold the user set (``--threshold`` / ``inference.threshold``): used as it is."""
    return OperatingPoint(
        threshold=float(threshold), method=METHOD_GIVEN, note="threshold given by the user"
    )


def candidate_thresholds(values: np.ndarray, floor: float) -> np.ndarray:
    """Seed thresholds worth testing, ascending: ``floor`` and just above every distinct value
    ``>= floor`` (the false-lesion count can only change there), at most 1.0 (a threshold is a
    probability, so a false lesion of probability 1 cannot be thresholded away)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = np.unique(v[np.isfinite(v) & (v >= floor)])
    above = np.nextafter(v, np.inf)
    return np.unique(np.clip(np.concatenate(([floor], above)), floor, 1.0))


def _known_normal(neg: NegativeHeatmap) -> tuple[np.ndarray, float]:
    """``(cells known normal (rows, cols) bool, the slides they count as)`` of one negative."""
    tissue = np.isfinite(neg.heatmap.probability)
    if neg.mask is None:
        keep, weight = tissue, 1.0
    else:
        if neg.mask.shape != tissue.shape:
            raise ValueError(f"normal mask {neg.mask.shape} does not match heatmap {tissue.shape}")
        keep = tissue & neg.mask
        weight = float(keep.sum()) / max(int(tissue.sum()), 1)
    if neg.weight is not None:
        weight = float(neg.weight)
    return keep, (weight if keep.any() else 0.0)


def _evenly(values: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` of the ascending ``values``, evenly spaced by rank, the first and last
    included."""
    if values.size <= k:
        return values
    return values[np.unique(np.linspace(0, values.size - 1, k).round().astype(int))]


def slide_equivalents(negatives: Sequence[NegativeHeatmap]) -> float:
    """How many slides' worth of known tumour-free tissue ``negatives`` hold: the rate's
    denominator in :func:`choose_operating_point` (a tumour-free slide 1, a normal region its
    share of its slide's tissue)."""
    return float(sum(_known_normal(neg)[1] for neg in negatives))


def choose_operating_point(
    negatives: Sequence[NegativeHeatmap],
    post: PostProcessing,
    *,
    target_fp_per_slide: float = DEFAULT_TARGET_FP_PER_SLIDE,
    floor: float = FALLBACK_THRESHOLD,
    max_candidates: int = 400,
    prior_lesions: float = 0.0,
) -> OperatingPoint:
    """The lowest seed threshold ``>= floor`` with at most ``target_fp_per_slide`` false
    lesions per slide on ``negatives``.

    Args:
        negatives: tumour-free slides (``mask=None``) and normal regions (``mask`` given).
        post: the post-processing the lesions are made with (the same is applied here).
        target_fp_per_slide: the target rate.
        floor: never below this (predict, and sync with a tumour-free slide's worth of
            tissue: 0.05; else the calibrated 0.5).
        prior_lesions: added to the false-lesion count before it is compared with the target
            (``(count + prior_lesions) / slides <= target``); 0 = the plain rate, ½ = the
            Jeffreys estimate of a Poisson rate, which does not take no false lesion on a few
            slides for a rate of 0 (:func:`choose_on_mosaics`). ``false_lesions_per_slide``
            reports the plain rate either way.
        max_candidates: thresholds tested at most in a first, coarse scan (evenly chosen
            among the candidates, the lowest always included). They are scanned from the top
            down, and the answer is the lowest above which all meet the target: at low
            thresholds a slide's tissue can merge into one lesion, so the count is not monotone
            there. Where the scan stops, the candidates between its last two tested thresholds
            are scanned the same way, until none is left between them, so the answer does not
            depend on the sampling.

    Returns:
        An :class:`OperatingPoint`. When no threshold up to 1.0 meets the target, the threshold
        is the one with the fewest false lesions (ties: the lowest) and ``note`` says so.
    """
    if prior_lesions < 0:
        raise ValueError(f"prior_lesions must be >= 0, got {prior_lesions}")
    if target_fp_per_slide < 0:
        raise ValueError(f"target_fp_per_slide must be >= 0, got {target_fp_per_slide}")
    grids: list[np.ndarray] = []
    cell_um: list[float] = []
    weights: list[float] = []
    n_slides = n_regions = 0
    for neg in negatives:
        keep, weight = _known_normal(neg)
        if not keep.any():
            continue
        smoothed = smooth_heatmap(neg.heatmap, post.smooth_sigma_um).probability
        grids.append(np.where(keep, smoothed, np.nan))
        cell_um.append(neg.heatmap.cell_um)
        weights.append(weight)
        n_slides += neg.mask is None
        n_regions += neg.mask is not None
    equivalents = float(sum(weights))
    if not grids or equivalents <= 0:
        return fallback(target_fp_per_slide, floor)

    def rate(t: float) -> float:
        n = sum(
            count_lesions(
                g, t, post.extent_for(t), cell_um=um, min_major_axis_um=post.min_major_axis_um
            )
            for g, um in zip(grids, cell_um, strict=True)
        )
        return n / equivalents

    every = candidate_thresholds(np.concatenate([g.reshape(-1) for g in grids]), floor)
    rates: dict[float, float] = {}

    def scan_down(ts: np.ndarray, answer: float | None) -> tuple[float | None, bool]:
        # at most max_candidates of ts, evenly, the lowest included; from the top down: the
        # answer is the lowest threshold above which every tested one meets the target. Counts
        # are not monotone at low thresholds, where a slide's whole tissue can merge into one
        # "lesion" (1 false lesion): a bottom-up scan could stop there.
        for t in reversed(_evenly(ts, max_candidates).tolist()):
            rates[t] = rate(t)
            if rates[t] + prior_lesions / equivalents > target_fp_per_slide:
                return answer, True
            answer = t
        return answer, False

    answer, stopped = scan_down(every, None)
    while stopped and answer is not None:
        # stopped between two tested thresholds: scan the candidates between them, so that the
        # answer does not depend on which ones were sampled (on the floor, for one)
        below = max(t for t in rates if t < answer)
        between = every[(every > below) & (every < answer)]
        if between.size == 0:
            break
        answer, stopped = scan_down(between, answer)
    if answer is not None:
        return OperatingPoint(
            threshold=float(answer),
            method=METHOD_TUMOR_FREE,
            n_slides=n_slides,
            n_regions=n_regions,
            slide_equivalents=equivalents,
            false_lesions_per_slide=rates[answer],
            target_fp_per_slide=target_fp_per_slide,
            note=f"lowest threshold >= {floor:g} with <= {target_fp_per_slide:g} false "
            f"lesions per slide on {n_slides} tumour-free slide(s) and {n_regions} "
            "slide(s) with normal regions",
        )
    best: tuple[float, float] | None = None
    for t in _evenly(every, max_candidates).tolist():
        r = rates[t] if t in rates else rate(t)
        if best is None or r < best[1]:
            best = (t, r)
    assert best is not None
    return OperatingPoint(
        threshold=float(best[0]),
        method=METHOD_TUMOR_FREE,
        n_slides=n_slides,
        n_regions=n_regions,
        slide_equivalents=equivalents,
        false_lesions_per_slide=best[1],
        target_fp_per_slide=target_fp_per_slide,
        note=f"no threshold reaches {target_fp_per_slide:g} false lesions per slide: the "
        "one with the fewest",
    )


def choose_on_mosaics(
    grids: Sequence[tuple[np.ndarray, int, float]],
    *,
    tile_px: int,
    um_per_px: float,
    post: PostProcessing,
    target_fp_per_slide: float = DEFAULT_TARGET_FP_PER_SLIDE,
    floor: float = FALLBACK_THRESHOLD,
) -> OperatingPoint:
    """The operating point on the mosaics of held-out normal patches a patch-trained model
    carries (:mod:`qupath_rkd.training.normal_mosaics`): :func:`choose_operating_point` with each
    mosaic as a tumour-free slide of its weight, and the rate estimated as
    ``(false lesions + ½) / slide equivalents`` (:data:`MOSAIC_PRIOR_LESIONS`): on 4 mosaics the
    target of 0.25 then asks for none.

    Why not the plain rate: the mosaics are a proxy (patches side by side, without the tissue's
    architecture) measured on a few slides' worth of tissue, so one false lesion decides the
    threshold. On the benchmark set (docs/benchmarks.md, "The operating point from the
    training's normal patches") the plain rate chose 0.718 and the tumour-free slides held 1.4
    false lesions each; the estimate with ½ chose 0.76, where they held 0.4.

    Args:
        grids: ``(calibrated grid (rows, cols), stride in mosaic px, slide equivalents)`` per
            mosaic (:meth:`qupath_rkd.model.normal_mosaics.NormalMosaics.grids`).
        tile_px: the tile side in mosaic pixels.
        um_per_px: µm per mosaic pixel (the slide's tile µm/px x tile side / input side).
        post, target_fp_per_slide, floor: as :func:`choose_operating_point`.
    """
    negatives = [
        NegativeHeatmap(
            Heatmap(
                probability=np.asarray(grid, dtype=np.float32),
                origin_xy_px=(0.0, 0.0),
                stride_level0_px=float(stride_px),
                tile_level0_px=float(tile_px),
                mpp=float(um_per_px),
            ),
            None,
            f"normal mosaic {i + 1}",
            weight=float(weight),
        )
        for i, (grid, stride_px, weight) in enumerate(grids)
    ]
    op = choose_operating_point(
        negatives,
        post,
        target_fp_per_slide=target_fp_per_slide,
        floor=floor,
        prior_lesions=MOSAIC_PRIOR_LESIONS,
    )
    if op.method == METHOD_FALLBACK:
        return op
    n = len(negatives)
    rate = op.false_lesions_per_slide or 0.0
    met = rate + MOSAIC_PRIOR_LESIONS / op.slide_equivalents <= target_fp_per_slide
    how = (
        f"lowest threshold >= {floor:g} with (false lesions + 1/2) / mosaics <= "
        f"{target_fp_per_slide:g}"
        if met
        else f"no threshold reaches {target_fp_per_slide:g} false lesions per mosaic: the one "
        "with the fewest"
    )
    return replace(
        op,
        method=METHOD_NORMAL_PATCHES,
        n_slides=0,
        note=f"{how} on {n} mosaic(s) of held-out normal training patches "
        f"({op.slide_equivalents:.2f} slide equivalents: a full mosaic counts as one slide)",
        held_out="out-of-fold",
    )

"""What a suggestion run is asked for: :class:`SuggestConfig` and the signal names."""

from __future__ import annotations

from dataclasses import dataclass

#: Probability near the decision threshold (the operating point).
SIGNAL_UNCERTAINTY = "uncertainty"
#: Spread of the per-view probabilities of test-time augmentation (needs them).
SIGNAL_TTA = "tta_disagreement"
#: Distance of the region's mean features from every labelled tile's (needs features).
SIGNAL_DIVERSITY = "diversity"
#: Uncertainty weighted by diversity, picked greedily.
SIGNAL_COMBINED = "uncertainty_diversity"
#: Baselines for the benchmark: seeded random regions; the highest mean probability.
SIGNAL_RANDOM = "random"
SIGNAL_TOP_PROBABILITY = "top_probability"

#: ``top_probability`` while the labelled tumour forms fewer than
#: :data:`TUMOUR_FIRST_MIN_REGIONS` regions, then ``uncertainty_diversity`` (resolved by
#: :func:`tumour_first_signal`; ``sync`` counts the regions).
SIGNAL_TUMOUR_FIRST = "tumour_first"

#: ``uncertainty_diversity`` and ``top_probability`` picks in turn (rank 1 the former's): the
#: default, measured best in ``benchmarks/active_learning.py`` (docs/benchmarks.md).
SIGNAL_MIXED = "mixed"
#: ``uncertainty_diversity``, ``top_probability`` and ``random`` picks in turn (rank 1 the
#: first's): ``mixed`` with a share of regions drawn at random from unannotated tissue, so
#: that the labelled set keeps a sample of ordinary tissue beside the hard cases.
SIGNAL_MIXED_RANDOM = "mixed_random"

SIGNALS: tuple[str, ...] = (
    SIGNAL_COMBINED,
    SIGNAL_MIXED,
    SIGNAL_MIXED_RANDOM,
    SIGNAL_TUMOUR_FIRST,
    SIGNAL_UNCERTAINTY,
    SIGNAL_TTA,
    SIGNAL_DIVERSITY,
    SIGNAL_RANDOM,
    SIGNAL_TOP_PROBABILITY,
)
DEFAULT_SIGNAL = SIGNAL_MIXED

#: Labelled tumour regions (connected tumour tiles) from which ``tumour_first`` turns to
#: ``uncertainty_diversity``: the head's cross-validation folds over annotated regions
#: (``TrainConfig.cv_folds``). With fewer, the model's probabilities near the threshold are
#: checked on fewer held-out tumour regions than folds, and tumour, the scarce class, is what
#: a new annotation adds most.
TUMOUR_FIRST_MIN_REGIONS = 5


def tumour_first_signal(n_tumour_regions: int) -> str:
    """The signal ``tumour_first`` stands for with ``n_tumour_regions`` labelled tumour
    regions: ``top_probability`` below :data:`TUMOUR_FIRST_MIN_REGIONS`, else
    ``uncertainty_diversity``."""
    if n_tumour_regions < TUMOUR_FIRST_MIN_REGIONS:
        return SIGNAL_TOP_PROBABILITY
    return SIGNAL_COMBINED


#: Why a region is suggested, as its QuPath name says it.
REASON_UNCERTAIN = "uncertain"
REASON_UNLIKE = "unlike anything labelled"
REASON_VIEWS = "views disagree"
REASON_RANDOM = "random pick"
REASON_PROBABLE = "probable tumour"


@dataclass(frozen=True)
class SuggestConfig:
    """How regions are cut and ranked.

    Attributes:
        per_slide: at most this many suggestions on one slide (K).
        per_project: at most this many in the whole project (N).
        region_um: side of the square window of heatmap cells a region is cut from (µm);
            a region is at most ``floor(region_um / cell_um)`` cells on a side (at least 1).
        signal: one of :data:`SIGNALS`.
        min_fill: a region holds at least this fraction of its window's cells (eligible,
            4-connected tissue cells), so that slivers of tissue are not suggested.
        seed: seed of the ``random`` baseline.
    """

    per_slide: int = 3
    per_project: int = 20
    region_um: float = 1000.0
    signal: str = DEFAULT_SIGNAL
    min_fill: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"unknown suggestion signal {self.signal!r}: one of {SIGNALS}")
        if self.per_slide < 0 or self.per_project < 0:
            raise ValueError("per_slide and per_project must be >= 0")
        if not self.region_um > 0:
            raise ValueError("region_um must be positive")
        if not 0.0 < self.min_fill <= 1.0:
            raise ValueError("min_fill must be in (0, 1]")

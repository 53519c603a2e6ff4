"""Where to annotate next: rank unannotated regions by how much labelling them should help.

Pure numpy/shapely (no torch, no files): :func:`suggest_regions` takes per-slide heatmaps (and
optionally per-view probabilities and features) plus what is annotated, and returns ranked
regions; :mod:`qupath_rkd.suggest.write` turns them into QuPath objects. ``sync`` runs it after
predicting (:mod:`qupath_rkd.sync.suggestions`); a benchmark can call it directly.
"""

from qupath_rkd.suggest.config import DEFAULT_SIGNAL, SIGNALS, SuggestConfig
from qupath_rkd.suggest.rank import Suggestion, SuggestResult, suggest_regions, uncertainty
from qupath_rkd.suggest.regions import (
    Candidate,
    SuggestSlide,
    candidate_regions,
    eligible_cells,
    region_geometry,
)

__all__ = [
    "DEFAULT_SIGNAL",
    "SIGNALS",
    "Candidate",
    "SuggestConfig",
    "SuggestResult",
    "SuggestSlide",
    "Suggestion",
    "candidate_regions",
    "eligible_cells",
    "region_geometry",
    "suggest_regions",
    "uncertainty",
]

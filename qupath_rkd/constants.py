"""Constants shared by every stage. Labels are explicit numbers, never folder-name order."""

from __future__ import annotations

from typing import Final

#: Label of a normal (non-tumour) patch or tile.
LABEL_NORMAL: Final[int] = 0
#: Label of a tumour patch or tile.
LABEL_TUMOR: Final[int] = 1
#: Label of a tile that must not be used (ignore class, ambiguous overlap).
LABEL_IGNORE: Final[int] = -1

#: PatchCamelyon patches: 96 px at about 0.972 µm/px (10x, Camelyon16 level 2 of 0.243 µm/px).
PCAM_MPP: Final[float] = 0.972
PCAM_PATCH_PX: Final[int] = 96

#: ImageNet normalisation used by every pretrained teacher.
IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)

#: Name of the folder inside a QuPath project that qupath-rkd owns.
PROJECT_SUBDIR: Final[str] = "qupath-rkd"
#: Marker put on every object qupath-rkd writes into QuPath, so only those are ever replaced.
TOOL_TAG: Final[str] = "qupath-rkd"

#: Lesion post-processing defaults (qupath_rkd.lesions; here so the CLI need not import numpy).
#: Gaussian sigma of the heatmap smoothing in µm: off by default, since on the perfect heatmap
#: (± noise) every sigma tried lost small lesions (docs/benchmarks.md, benchmarks/slide_quality.py).
DEFAULT_SMOOTH_SIGMA_UM: Final[float] = 0.0
#: Extent threshold of the hysteresis as a fraction of the seed threshold: 1 (one threshold), since
#: with the head model of 100 tumour patches 0.5 lowered the lesion FROC in every setting tried and
#: tripled the overestimated tumour area (docs/benchmarks.md, "Patch model on the benchmark set").
DEFAULT_EXTENT_RATIO: Final[float] = 1.0
#: False lesions per tumour-free slide allowed at the operating point.
DEFAULT_TARGET_FP_PER_SLIDE: Final[float] = 0.25
#: Slide-score rules (qupath_rkd.lesions.slide_score), the default first.
SLIDE_SCORE_RULES: Final[tuple[str, ...]] = (
    "max_smoothed",
    "max",
    "mean_above",
    "largest_area",
    "largest_mass",
)
DEFAULT_SLIDE_SCORE: Final[str] = "max_smoothed"

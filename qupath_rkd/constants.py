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
#: Gaussian sigma of the heatmap smoothing in µm, chosen with the half-tile grid below on the
#: benchmark slide sets (docs/benchmarks.md, "Half-tile grid with 40 µm smoothing: the
#: default"): of 0, 16, 24, 32, 40 and 48 µm on 2 models x 2 sets, 40 has the best sensitivity
#: at the tumour-free operating point and tumour area at 0.5 (mean abs. error 12-23 %), a
#: candidate FROC above the old default's in all 3 pairs, and 6 false lesions per 3.9 mm
#: tumour-free slide at the calibrated 0.5 against 25 at the old default (stride = tile, no
#: smoothing). It costs the smallest lesions' peaks on a clean heatmap (they stay in the
#: candidate list).
DEFAULT_SMOOTH_SIGMA_UM: Final[float] = 40.0
#: Whole-slide grid step as a fraction of the tile side (``stride_px`` "auto"): half a tile, so
#: every point of tissue lies under 4 tiles and a lesion no longer falls between tile centres.
#: Costs 4x the tiles of a grid without overlap (3.8-3.9x the time per slide, measured); pass
#: ``--stride-px`` = the tile side (``inference.stride_px`` in sync) for the faster grid.
DEFAULT_SLIDE_STRIDE_FRACTION: Final[float] = 0.5
#: Extent threshold of the hysteresis as a fraction of the seed threshold: 1 (one threshold), since
#: with the head model of 100 tumour patches 0.5 lowered the lesion FROC in every setting tried and
#: tripled the overestimated tumour area (docs/benchmarks.md, "Patch model on the benchmark set").
DEFAULT_EXTENT_RATIO: Final[float] = 1.0
#: False lesions per tumour-free slide allowed at the operating point.
DEFAULT_TARGET_FP_PER_SLIDE: Final[float] = 0.25
#: Mosaics of held-out normal patches ``train-patches`` scores for the operating point of
#: ``predict`` (qupath_rkd.training.normal_mosaics): 4 of 32 x 32 patches, about 16,000 tiles
#: on the half-tile grid (a quarter of them the patches themselves, from the feature cache).
DEFAULT_NORMAL_MOSAICS: Final[int] = 4
#: Camelyon16 candidate list (qupath_rkd.lesions.candidates; ``predict``'s
#: ``camelyon16/<slide>.csv``): besides every lesion's peak, the other local maxima of the
#: heatmap down to this probability, so the FROC curve goes on below the seed
#: threshold (docs/benchmarks.md, "Candidate list for the FROC").
DEFAULT_CANDIDATE_FLOOR: Final[float] = 0.05
#: Non-maximum suppression radius of the candidates in µm: a local maximum is dropped when a
#: higher candidate lies within it. Two PCam tiles (2 x 96 px x 0.972 µm/px): of 0, 1, 2 and 3
#: tiles, the best candidate FROC of the patch model on the benchmark set (3 tiles lost lesions,
#: also on the perfect heatmap; 0 and 1 tile tied with it but submit more points).
DEFAULT_CANDIDATE_NMS_UM: Final[float] = 187.0
#: At most this many candidates per slide (the highest), so a bad model cannot write huge files.
DEFAULT_MAX_CANDIDATES: Final[int] = 1000
#: The candidate list also holds the local maxima inside the lesions, so that a lesion covering
#: two true ones submits both and the list's points do not depend on the seed threshold
#: (docs/benchmarks.md, "Candidates inside lesions, at their own probability").
DEFAULT_CANDIDATES_INSIDE_LESIONS: Final[bool] = True
#: How the candidates that are not lesion peaks are submitted: "own" (their own probability: the
#: list then hardly depends on the seed threshold), "clamp" (those at or above the seed tie just
#: below it) or "scale" (p x seed: below it in their own order). Measured on three slide sets at
#: several seeds (docs/benchmarks.md, "Candidates inside lesions, at their own probability").
DEFAULT_CANDIDATES_BELOW_SEED: Final[str] = "own"
#: Slide-score rules (qupath_rkd.lesions.slide_score), the default first.
SLIDE_SCORE_RULES: Final[tuple[str, ...]] = (
    "max_smoothed",
    "max",
    "mean_above",
    "largest_area",
    "largest_mass",
)
DEFAULT_SLIDE_SCORE: Final[str] = "max_smoothed"

# --- Defaults read by every config class, the sync config, the click options and the demo
# (issue 12: each defined here once; tests/sync/test_stage_contracts.py compares them). ---

#: Teachers (frozen ImageNet trunks): every name a command accepts, the default first.
#: ``efficientnet_lite1``/``lite2`` have head support only (no RD spec).
TEACHER_NAMES: Final[tuple[str, ...]] = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet18",
    "wide_resnet50_2",
)
DEFAULT_TEACHER: Final[str] = TEACHER_NAMES[0]
#: Scorers: the supervised head on frozen features (measured best, docs/benchmarks.md), the
#: paper's reverse distillation, and ``knn``, the one-class local texture kNN
#: (qupath_rkd.model.local_knn) that a training set without tumour patches gets.
SCORERS: Final[tuple[str, ...]] = ("head", "rd", "knn")
DEFAULT_SCORER: Final[str] = "head"
#: The one-class ``knn`` scorer: memory-bank vectors (local features of normal patches), the
#: normal patches they are drawn from, and the normal patches held out to calibrate it when
#: there is no validation set. Measured on a PCam train split (docs/benchmarks.md, "Normal
#: patches only"): AUROC 0.805 / 0.813 / 0.818 with 2,000 / 5,000 / 30,000 bank vectors from
#: 1,000 patches (5,000 patches: no better); 10,000 costs a third of 30,000's time per tile.
#: The default on PCam valid: 0.823 +- 0.003 (3 seeds).
KNN_BANK_SIZE: Final[int] = 10_000
#: ... which trunk tap it compares (0: stride 4, 1: stride 8) and over how many cells each local
#: feature is averaged first (1: none). Chosen on a PCam train split (benchmarks/
#: one_class_select.py): stride 8 unpooled 0.8205, stride 4 over 3 x 3 cells 0.8182 (a tie
#: within noise; stride 8 costs 2.4x less per bank row), stride 16 at most 0.59.
KNN_TAP: Final[int] = 1
KNN_POOL_CELLS: Final[int] = 1
KNN_BANK_PATCHES: Final[int] = 2_000
KNN_CALIBRATION_PATCHES: Final[int] = 1_000
#: Dihedral views a head averages per patch when training and scoring patches.
DEFAULT_PATCH_TTA_VIEWS: Final[int] = 8
#: How the head's frozen trunk pools each tap (qupath_rkd.features.trunk.POOLINGS): the mean,
#: the centre-third mean and the std over the map. Chosen on a split of PCam train among 8
#: poolings (docs/benchmarks.md, "Which pooled statistics"): +0.002 / +0.005 AUROC on PCam
#: valid at 100 / 1,000 tumour patches over mean + centre mean.
DEFAULT_POOLING: Final[str] = "mean_centre_std"
#: The pooling of head checkpoints and feature caches written before the pooling was recorded.
LEGACY_POOLING: Final[str] = "mean_centre"
#: Which head sits on the pooled features: ``linear`` (the L2-regularised logistic head),
#: ``ensemble`` (its logit averaged with a one-hidden-layer perceptron's,
#: qupath_rkd.model.mlp_head) or ``auto`` (the default): the ensemble from
#: ENSEMBLE_MIN_TUMOUR_PATCHES tumour patches on, unless the user's validation patches or
#: cross-validation score it below the linear head. Measured (docs/benchmarks.md, "A non-linear
#: second member"): on PCam valid ``auto`` +0.004 AUROC at 100 and +0.006 at 1,000 tumour
#: patches (the ensemble -0.026 at 10, hence the floor); on the whole-slide benchmark, paired on
#: the same linear member, a tie within noise (lesions at the operating point -3 of 144 over
#: 4 draws, candidate FROC -0.010 on average).
#: That is ``train-patches``' default (judged on patches). ``sync``'s output is whole-slide
#: lesions, where the ensemble measured no better: a tie on the benchmark slides' lesions,
#: 0.0-0.3 more false lesions per tumour-free slide at 0.5 in all 4 pairs, and on the demo's
#: re-sync 4 small false lesions on the tumour-free LN-05 against 1 (benchmarks/demo_resync.py);
#: so sync keeps the linear head (``training.head`` sets it).
HEADS: Final[tuple[str, ...]] = ("auto", "linear", "ensemble")
DEFAULT_HEAD: Final[str] = "auto"
DEFAULT_SYNC_HEAD: Final[str] = "linear"
ENSEMBLE_MIN_TUMOUR_PATCHES: Final[int] = 50
#: Hidden units of the ensemble's perceptron.
MLP_HIDDEN: Final[int] = 256
#: ... and per tile on whole slides (8 views cost 8x the time; neighbouring tiles overlap at
#: strides below the tile already).
DEFAULT_SLIDE_TTA_VIEWS: Final[int] = 1
#: ... and per tile when ``sync`` ranks suggestions by ``tta_disagreement`` (the 4 rotations;
#: only the tiles of each slide's most uncertain candidate regions are scored again).
SUGGEST_TTA_VIEWS: Final[int] = 4
#: RD optimisation. Two learning rates on purpose: ``train-patches`` runs epochs (10 by default)
#: at 1e-3; sync runs a short fixed schedule (``training.steps``), where 3e-3 reached the same
#: peak sooner (docs/benchmarks.md, "RD training: learning rate", D).
DEFAULT_RD_LR: Final[float] = 1e-3
DEFAULT_SYNC_RD_LR: Final[float] = 3e-3
DEFAULT_SYNC_RD_STEPS: Final[int] = 300
DEFAULT_EPOCHS: Final[int] = 10
DEFAULT_TRAIN_BATCH: Final[int] = 32
#: Focal loss (FW-RD): weight of the normal class and focusing parameter.
DEFAULT_ALPHA: Final[float] = 0.1
DEFAULT_GAMMA: Final[float] = 2.0
#: Tiles per forward pass at inference (streaming only: results do not depend on it).
DEFAULT_INFERENCE_BATCH: Final[int] = 64
#: Smallest tile side a labelled set may use (pixels).
MIN_TILE_PX: Final[int] = 16
#: Tiles with a smaller share of tissue (tissue mask) are neither labelled nor scored.
DEFAULT_MIN_TISSUE_FRACTION: Final[float] = 0.5
#: Lesions whose major axis is shorter are dropped (µm; the Camelyon16 ITC bound).
DEFAULT_MIN_LESION_UM: Final[float] = 200.0
#: How long a rank of a data-parallel run (torchrun) waits for the others at a collective before
#: giving up (seconds): rank 0 validates and fits alone while the others wait.
DISTRIBUTED_TIMEOUT_S: Final[int] = 3600

# --- The out-of-domain check (qupath_rkd.model.ood; measured in docs/benchmarks.md,
# benchmarks/ood_check.py). ---
#: PCA components of the training tiles' standardised features kept in the checkpoint.
DEFAULT_OOD_COMPONENTS: Final[int] = 32
#: Share of the training tiles held out of the PCA to set the tile distance threshold.
DEFAULT_OOD_HELD_SHARE: Final[float] = 0.2
#: A tile is "far" beyond this quantile of the held-out training tiles' distances.
DEFAULT_OOD_QUANTILE: Final[float] = 0.95
#: A slide with a larger share of far tissue tiles is flagged out-of-domain.
DEFAULT_OOD_FAR_FRACTION: Final[float] = 0.25

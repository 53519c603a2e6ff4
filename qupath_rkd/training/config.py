"""Training configuration (a plain dataclass, stored in full in every checkpoint)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from qupath_rkd.constants import (
    DEFAULT_ALPHA,
    DEFAULT_EPOCHS,
    DEFAULT_GAMMA,
    DEFAULT_HEAD,
    DEFAULT_PATCH_TTA_VIEWS,
    DEFAULT_POOLING,
    DEFAULT_RD_LR,
    DEFAULT_SCORER,
    DEFAULT_TEACHER,
    DEFAULT_TRAIN_BATCH,
    HEADS,
    KNN_POOL_CELLS,
    KNN_TAP,
    SCORERS,
)
from qupath_rkd.errors import ConfigError
from qupath_rkd.features.trunk import POOLINGS, TRUNKS
from qupath_rkd.model.anomaly_map import REDUCTIONS
from qupath_rkd.model.bottleneck import SHORTCUTS
from qupath_rkd.model.teachers import teacher_spec

SELECT_BY = ("auto", "auroc", "loss")
CALIBRATIONS = ("auto", "logistic", "normal-tail")


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Defaults follow FW-RD (He & Li, MIDL 2023) where the paper is specific (Adam with betas
    (0.5, 0.999), batch 32, alpha 0.1, gamma 2, no augmentation, mean tile score), except the
    learning rate (the paper's 1e-6 did not train a freshly initialised bottleneck and decoder
    in the measurements of ../shared/DESIGN.md; 1e-3 to 5e-3 did) and balanced batches (on:
    measured in docs/benchmarks.md).

    The scorer (``scorer``) is by default the supervised head on the frozen teacher's pooled
    multi-scale features with 8-view test-time augmentation (measured best at every tumour
    budget, docs/benchmarks.md); ``rd`` is the paper's reverse distillation, unchanged, and is
    what a training set without tumour patches gets (one class). The optimisation fields
    (epochs, lr, ...) are the RD trainer's; the head is a convex fit with none of them.

    Attributes:
        scorer: ``head`` (default), ``rd`` or ``knn`` (one-class local texture kNN,
            :mod:`qupath_rkd.model.local_knn`; what a training set without tumour patches gets
            with the default scorer; trained on the normal patches only).
        knn_bank_size: the ``knn`` scorer's memory-bank rows; 0 = the default
            (:data:`~qupath_rkd.constants.KNN_BANK_SIZE`). The trainer stores the size it
            drew, so a checkpoint rebuilds its network.
        knn_tap, knn_pool_cells: the ``knn`` scorer's trunk tap and neighbourhood
            (:data:`~qupath_rkd.constants.KNN_TAP`, :data:`~qupath_rkd.constants.KNN_POOL_CELLS`;
            stored in the checkpoint).
        tta_views: dihedral views averaged when scoring with the head (1, 2, 4 or 8).
        rare_views: dihedral views of each tumour training patch the head is fitted on.
        cv_folds: folds of the cross-validation that chooses the head's L2 strength when there
            is no validation set.
        normal_mosaics: head only: mosaics of held-out normal training patches scored and
            stored in the checkpoint, from which ``predict`` sets the operating point
            (:mod:`qupath_rkd.training.normal_mosaics`); 0 = none. ``train-patches`` makes
            :data:`~qupath_rkd.constants.DEFAULT_NORMAL_MOSAICS`; sync none (it has the
            user's own tumour-free slides and normal regions).
        teacher: RD: ``wide_resnet50_2`` | ``resnet18`` | ``efficientnet_lite0``; the head also
            takes ``efficientnet_lite1`` | ``efficientnet_lite2``.
        teacher_weights: a state-dict file with the teacher's ImageNet weights.
        pooling: the head's trunk pooling (``qupath_rkd.features.trunk.POOLINGS``).
        head: ``auto`` (default) | ``linear`` | ``ensemble``
            (:data:`qupath_rkd.constants.HEADS`): the linear head, or its logit averaged with a
            perceptron's; ``auto`` takes the ensemble from
            :data:`~qupath_rkd.constants.ENSEMBLE_MIN_TUMOUR_PATCHES` tumour patches on unless
            the validation (or cross-validation) AUROC is lower than the linear head's.
        mlp_hidden: the fitted network's perceptron width (0: linear head alone). Set by the
            trainer from what ``head`` chose and stored, so a checkpoint rebuilds its network;
            not a user setting.
        teacher_random_weights_for_tests: random teacher (tests only; never for real use).
        shortcut: first OCBE block's shortcut, ``conv3x3`` (FW-RD) or ``conv1x1`` (RD4AD).
        input_px: network input side (multiple of 32); None = the teacher's default.
        mpp: µm/px of the training patches (recorded so slides are read at the same scale).
        tile_px: side in pixels (at ``mpp``) of the training patches, each resized to
            ``input_px``; recorded so slides are read with the same field of view
            (``tile_px * mpp`` µm). None = ``input_px`` (patches at the network's input size).
        epochs, batch_size, lr, betas, weight_decay: optimisation (Adam).
        alpha, gamma: focal-loss weight of normal samples and focal exponent.
        balance_batches: half tumour, half normal in every batch when the training set has
            tumour patches (they repeat within an epoch); no effect on a normal-only set. On by
            default: with 100 tumour among 10,000 normal PCam patches it lifted validation
            AUROC from ~0.5 to ~0.8 within 50 steps (docs/benchmarks.md); the paper (1:5 ratio)
            does not balance.
        augment: random flips and 90° rotations (off in the paper).
        max_steps_per_epoch: cap on optimiser steps per epoch (None = full epochs).
        validate_every_steps: also validate every N steps (None = once per epoch).
        max_valid: use at most this many validation patches (seeded subset; None = all).
        select_by: keep the best model by validation ``auroc`` or ``loss``; ``auto`` uses AUROC
            when the validation set has tumour and normal patches, else the loss.
        score_reduction: patch score = ``mean`` (FW-RD) or ``max`` (RD4AD) of the anomaly map.
        sigma_px: Gaussian sigma of the anomaly map, input pixels.
        calibration: ``logistic`` (needs tumour validation patches), ``normal-tail`` or
            ``auto`` (logistic when possible).
        threshold: default probability threshold for lesions, stored in the checkpoint.
        seed: seeds torch, numpy and the data order; CPU runs are reproducible.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling).
        channels_last: channels-last memory format on CUDA.
        num_workers: DataLoader worker processes.
    """

    scorer: str = DEFAULT_SCORER
    tta_views: int = DEFAULT_PATCH_TTA_VIEWS
    rare_views: int = DEFAULT_PATCH_TTA_VIEWS
    cv_folds: int = 5
    normal_mosaics: int = 0
    teacher: str = DEFAULT_TEACHER
    pooling: str = DEFAULT_POOLING
    head: str = DEFAULT_HEAD
    mlp_hidden: int = 0
    knn_bank_size: int = 0
    knn_tap: int = KNN_TAP
    knn_pool_cells: int = KNN_POOL_CELLS
    teacher_weights: str | None = None
    teacher_random_weights_for_tests: bool = False
    shortcut: str = "conv3x3"
    input_px: int | None = None
    mpp: float | None = None
    tile_px: int | None = None
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_TRAIN_BATCH
    lr: float = DEFAULT_RD_LR
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    alpha: float = DEFAULT_ALPHA
    gamma: float = DEFAULT_GAMMA
    balance_batches: bool = True
    augment: bool = False
    max_steps_per_epoch: int | None = None
    validate_every_steps: int | None = None
    max_valid: int | None = None
    select_by: str = "auto"
    score_reduction: str = "mean"
    sigma_px: float = 4.0
    calibration: str = "auto"
    threshold: float = 0.5
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    num_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        """A validated copy with ``input_px`` filled in; raises :class:`ConfigError`."""
        if self.scorer not in SCORERS:
            raise ConfigError(f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        if self.scorer in ("head", "knn"):
            if self.teacher not in TRUNKS:
                raise ConfigError(
                    f"unknown teacher {self.teacher!r} for the {self.scorer} scorer",
                    hint=f"choose one of {', '.join(sorted(TRUNKS))}",
                )
            default_px = TRUNKS[self.teacher]
        else:
            default_px = teacher_spec(self.teacher).default_input_px
        cfg = dataclasses.replace(self, betas=tuple(self.betas))  # type: ignore[arg-type]
        if cfg.input_px is None:
            cfg.input_px = default_px
        checks = [
            (cfg.tta_views in (1, 2, 4, 8), f"tta_views must be 1, 2, 4 or 8, got {cfg.tta_views}"),
            (
                cfg.rare_views in (1, 2, 4, 8),
                f"rare_views must be 1, 2, 4 or 8, got {cfg.rare_views}",
            ),
            (cfg.cv_folds >= 2, f"cv_folds must be >= 2, got {cfg.cv_folds}"),
            (cfg.normal_mosaics >= 0, f"normal_mosaics must be >= 0, got {cfg.normal_mosaics}"),
            (
                cfg.input_px >= 32 and cfg.input_px % 32 == 0,
                f"input_px must be a multiple of 32 (>= 32), got {cfg.input_px}",
            ),
            (cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}"),
            (cfg.batch_size >= 2, f"batch_size must be >= 2 (BatchNorm), got {cfg.batch_size}"),
            (cfg.lr > 0, f"lr must be > 0, got {cfg.lr}"),
            (0.0 <= cfg.alpha <= 1.0, f"alpha must be in [0, 1], got {cfg.alpha}"),
            (cfg.gamma >= 0, f"gamma must be >= 0, got {cfg.gamma}"),
            (cfg.mpp is None or cfg.mpp > 0, f"mpp must be > 0, got {cfg.mpp}"),
            (cfg.shortcut in SHORTCUTS, f"shortcut must be one of {SHORTCUTS}"),
            (cfg.pooling in POOLINGS, f"pooling must be one of {tuple(POOLINGS)}"),
            (cfg.head in HEADS, f"head must be one of {HEADS}, got {cfg.head!r}"),
            (cfg.mlp_hidden >= 0, f"mlp_hidden must be >= 0, got {cfg.mlp_hidden}"),
            (cfg.knn_bank_size >= 0, f"knn_bank_size must be >= 0, got {cfg.knn_bank_size}"),
            (0 <= cfg.knn_tap <= 3, f"knn_tap must be 0-3, got {cfg.knn_tap}"),
            (
                cfg.knn_pool_cells >= 1 and cfg.knn_pool_cells % 2 == 1,
                f"knn_pool_cells must be odd and >= 1, got {cfg.knn_pool_cells}",
            ),
            (cfg.select_by in SELECT_BY, f"select_by must be one of {SELECT_BY}"),
            (cfg.score_reduction in REDUCTIONS, f"score_reduction must be one of {REDUCTIONS}"),
            (cfg.calibration in CALIBRATIONS, f"calibration must be one of {CALIBRATIONS}"),
            (0.0 < cfg.threshold < 1.0, f"threshold must be in (0, 1), got {cfg.threshold}"),
            (cfg.num_workers >= 0, "num_workers must be >= 0"),
            (
                cfg.max_steps_per_epoch is None or cfg.max_steps_per_epoch >= 1,
                "max_steps_per_epoch must be >= 1",
            ),
            (
                cfg.validate_every_steps is None or cfg.validate_every_steps >= 1,
                "validate_every_steps must be >= 1",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (newer checkpoints)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return cls(**kwargs)

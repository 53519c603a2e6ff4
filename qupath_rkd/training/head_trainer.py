"""Training of the supervised head (the default scorer): features once, a convex fit, done.

1. Pooled trunk features of every training patch (view 0) and of every tumour patch in all
   ``rare_views`` dihedral views (the rare class augmented: a rotated or mirrored tumour is still
   tumour, and there are few of them, so this is cheap), through the feature cache.
2. The L2 strength: with a validation set holding both classes, the best validation AUROC of the
   test-time-augmented logits; without one (what a pathologist has), stratified, seeded k-fold
   cross-validation on the training patches (``groups``: whole annotated regions held out
   together), scored on view 0; with ``slides`` and tumour on two or more of them, whole slides
   are held out and the pooled out-of-fold AUROC decides (:func:`~qupath_rkd.model.head.
   slide_folds`; what ``sync`` does).
3. The head refitted on every training patch at that strength. With ``head = "auto"`` (the
   default of ``TrainConfig`` and ``train-patches``; sync's is ``linear``) and at least
   :data:`~qupath_rkd.constants.ENSEMBLE_MIN_TUMOUR_PATCHES` tumour patches, the ensemble
   (the linear head's logit averaged with a perceptron's,
   :mod:`qupath_rkd.model.mlp_head`) replaces it unless it scores a lower AUROC on the same
   validation logits (or out-of-fold logits) that chose the L2.
4. Calibrated (Platt) on the validation logits, or on the out-of-fold logits, of the model kept;
   written as one checkpoint, with the out-of-domain reference of the training patches'
   features (:mod:`qupath_rkd.model.ood`).
5. With ``normal_mosaics`` (``train-patches``' default), mosaics of held-out normal patches
   scored by the head refitted without their fold, stored in the checkpoint for ``predict``'s
   operating point (:mod:`qupath_rkd.training.normal_mosaics`).

Every step is deterministic for a given seed and set of patches (the linear fit is convex and
run to convergence; the folds and the perceptron's initialisation and batches are seeded).

Data-parallel (``torchrun``, :mod:`qupath_rkd.training.distributed`): the features are the
expensive part, so each rank extracts those of every ``world_size``-th patch (through its feature
cache) and the features are gathered on every rank; rank 0 alone then chooses L2, fits,
calibrates and writes the checkpoint (the same computation on the same features as one process:
the same model), and the other ranks receive its result.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from qupath_rkd.constants import (
    ENSEMBLE_MIN_TUMOUR_PATCHES,
    LABEL_NORMAL,
    LABEL_TUMOR,
    MLP_HIDDEN,
)
from qupath_rkd.errors import DataError
from qupath_rkd.features.cache import FeatureCache, open_default_cache
from qupath_rkd.features.extract import Features, extract_features
from qupath_rkd.features.trunk import FeatureTrunk
from qupath_rkd.features.views import view_list
from qupath_rkd.model.calibration import (
    Calibration,
    auroc,
    fit_calibration,
    head_probability,
    ranks_backwards,
)
from qupath_rkd.model.checkpoint import save_checkpoint
from qupath_rkd.model.device import resolve_device
from qupath_rkd.model.head import (
    EnsembleFit,
    HeadFit,
    HeadNetwork,
    auroc_of,
    choose_l2_on_valid,
    cross_validate_l2,
    fit_ensemble,
    fit_head,
    fold_score,
    keep_ensemble,
    perceptron_oof,
    slide_folds,
    stratified_folds,
)
from qupath_rkd.model.normal_mosaics import NormalMosaics
from qupath_rkd.model.ood import fit_reference
from qupath_rkd.model.scorer import build_network
from qupath_rkd.progress import ProgressCallback, ProgressTask
from qupath_rkd.training import distributed
from qupath_rkd.training.config import TrainConfig
from qupath_rkd.training.normal_mosaics import build_normal_mosaics, mosaic_members

logger = logging.getLogger(__name__)

#: L2 strength when there are too few tumour patches to cross-validate (fewer than 2)
FALLBACK_L2 = 1.0


def _labels(dataset: Dataset) -> np.ndarray:
    return np.asarray(dataset.labels, dtype=np.int64).reshape(-1)  # type: ignore[attr-defined]


def _features(
    net: HeadNetwork,
    dataset: Dataset,
    views: list[int],
    cfg: TrainConfig,
    device: torch.device,
    cache: FeatureCache | None,
    progress: ProgressCallback | None,
    task: str,
) -> Features:
    """Features of ``dataset``; data-parallel, each rank extracts every ``world_size``-th item
    and every rank gets all of them (``computed``/``cached`` summed over the ranks)."""
    ctx = distributed.current()
    n = len(dataset)  # type: ignore[arg-type]
    share = distributed.shard_indices(n, ctx)
    feats = extract_features(
        net.trunk,  # type: ignore[arg-type]
        Subset(dataset, share.tolist()) if ctx.enabled else dataset,
        input_px=int(cfg.input_px),  # type: ignore[arg-type]
        views=views,
        device=device,
        cache=cache,
        batch_size=max(cfg.batch_size, 64),
        num_workers=cfg.num_workers,
        progress=progress,
        task=task,
    )
    if not ctx.enabled:
        return feats
    computed, cached = distributed.all_sum([feats.computed, feats.cached])
    return Features(
        values=distributed.gather_rows(feats.values, n, ctx),
        ok=distributed.gather_rows(feats.ok, n, ctx),
        views=feats.views,
        computed=int(computed),
        cached=int(cached),
        seconds=feats.seconds,
    )


def train_head(
    train_set: Dataset,
    valid_set: Dataset | None,
    cfg: TrainConfig,
    out: Path,
    dataset_hash: str,
    *,
    progress: ProgressCallback | None = None,
    groups: np.ndarray | None = None,
    cache: FeatureCache | str | None = "default",
    slides: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit the head and write the checkpoint to ``out``; returns the fields of a
    :class:`~qupath_rkd.training.trainer.TrainResult` (the trainer wraps them).

    Args:
        train_set, valid_set: patch datasets (items ``(image (H, W, 3) uint8, label)`` with a
            ``labels`` array); the training set needs tumour and normal patches.
        cfg: a resolved :class:`TrainConfig` with ``scorer == "head"``.
        groups: ``(N,)`` group of each training patch (e.g. its annotated region) for the
            cross-validation; None = every patch its own group.
        slides: ``(N,)`` slide of each training patch (any hashable labels): with tumour
            patches on two or more slides and no validation set, the cross-validation holds
            out whole slides (:func:`~qupath_rkd.model.head.slide_folds`); None = by ``groups``.
        cache: a :class:`FeatureCache`, None (no cache) or ``"default"`` (the machine's).
        progress: gets the events of each step (:mod:`qupath_rkd.progress`): ``features``,
            ``tumour views`` and ``validation`` (patches), the L2 choice (fits, with the
            validation AUROC or the fold) and ``fitting the head`` (one fit).
    """
    t0 = time.monotonic()
    device = distributed.rank_device(resolve_device(cfg.device))
    if not distributed.current().is_main:
        progress = None
    if cache == "default":
        cache = open_default_cache()
    assert not isinstance(cache, str)
    torch.manual_seed(cfg.seed)
    net = build_network(cfg)
    assert isinstance(net, HeadNetwork)
    y = _labels(train_set)
    tumor_idx = np.flatnonzero(y == LABEL_TUMOR)
    if len(tumor_idx) == 0 or not (y == LABEL_NORMAL).any():
        raise DataError("the supervised head needs tumour and normal training patches")
    tta = view_list(cfg.tta_views)
    rows = training_features(net, train_set, cfg, device, cache, progress)
    base, extra, ok = rows.base, rows.extra, rows.ok
    skipped = int((~ok).sum())

    def train_rows(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, labels, _index = rows.rows(mask)
        return x, labels

    warnings: list[str] = []
    valid_y: np.ndarray | None = None
    if valid_set is not None and len(valid_set) > 0:  # type: ignore[arg-type]
        valid_y = _labels(valid_set)
        if cfg.max_valid is not None and cfg.max_valid < len(valid_y):
            rng = np.random.default_rng(cfg.seed)
            idx = np.sort(rng.choice(len(valid_y), size=cfg.max_valid, replace=False))
            valid_set, valid_y = Subset(valid_set, idx.tolist()), valid_y[idx]
        if not ((valid_y == LABEL_TUMOR).any() and (valid_y == LABEL_NORMAL).any()):
            warnings.append(
                "the validation set lacks tumour or normal patches: chose the head's L2 "
                "strength by cross-validation on the training patches instead"
            )
            valid_y = None
    vf = None
    if valid_y is not None:
        vf = _features(net, valid_set, tta, cfg, device, cache, progress, "validation")  # type: ignore[arg-type]
    # every feature is here (on every rank); what follows runs on rank 0 alone when
    # data-parallel: cheap, but for the normal mosaics (minutes on a CPU when asked for)
    feats = _Extracted(
        y,
        groups,
        train_rows,
        base,
        extra,
        ok,
        skipped,
        vf,
        valid_y,
        warnings,
        slides=slides,
        dataset=train_set,
        device=device,
        cache=cache,
    )
    return distributed.run_on_main(
        lambda: _fit_and_save(net, cfg, out, dataset_hash, feats, progress, t0)
    )


@dataclass
class TrainingFeatures:
    """The head's training features of a patch set: ``base`` (view 0 of every patch),
    ``extra`` (the ``rare`` dihedral views of the tumour patches ``tumor_idx``, or ``None``),
    labels ``y (N,)`` and ``ok (N,)`` (readable in every view it needs)."""

    y: np.ndarray
    base: Features
    extra: Features | None
    tumor_idx: np.ndarray
    rare: list[int]
    ok: np.ndarray

    def rows(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The training rows of the patches in ``mask`` ``(N,)`` bool: features ``(M, D)``
        float32, labels ``(M,)`` and the patch index of each row ``(M,)`` — view 0 of every
        readable patch, then the extra views of its tumour patches (patch-major)."""
        keep = mask & self.ok
        xs = [self.base.values[keep, 0]]
        ys = [self.y[keep]]
        index = [np.flatnonzero(keep)]
        if self.extra is not None:
            t_keep = keep[self.tumor_idx]
            xs.append(self.extra.values[t_keep].reshape(-1, self.base.values.shape[-1]))
            ys.append(np.full(int(t_keep.sum()) * len(self.rare), LABEL_TUMOR))
            index.append(np.repeat(self.tumor_idx[t_keep], len(self.rare)))
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys), np.concatenate(index)


def training_features(
    net: HeadNetwork,
    train_set: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    cache: FeatureCache | None,
    progress: ProgressCallback | None = None,
) -> TrainingFeatures:
    """Step 1 of the module doc: the features the head is fitted on, through ``cache`` (a
    second call on the same patches with the same trunk is all cache hits). ``cfg``: resolved
    (``input_px``, ``rare_views``, ``batch_size``, ``num_workers``).

    ``progress``: tasks ``features`` and ``tumour views`` (patches)."""
    y = _labels(train_set)
    tumor_idx = np.flatnonzero(y == LABEL_TUMOR)
    rare = [v for v in view_list(cfg.rare_views) if v != 0]
    base = _features(net, train_set, [0], cfg, device, cache, progress, "features")
    extra = (
        _features(
            net,
            Subset(train_set, tumor_idx.tolist()),
            rare,
            cfg,
            device,
            cache,
            progress,
            "tumour views",
        )
        if rare and len(tumor_idx)
        else None
    )
    ok = base.ok
    if extra is not None:
        ok = ok.copy()
        ok[tumor_idx] &= extra.ok
    return TrainingFeatures(y, base, extra, tumor_idx, rare, ok)


@dataclass
class _Extracted:
    """What step 1 gives the fit: labels ``y (N,)``, ``groups``, ``train_rows`` (features and
    labels of the training rows of a mask), the features (``base``: view 0; ``extra``: the
    tumour views; ``vf``: validation in the TTA views), ``ok (N,)``, the unreadable count,
    the validation labels and the warnings so far."""

    y: np.ndarray
    groups: np.ndarray | None
    train_rows: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    base: Features
    extra: Features | None
    ok: np.ndarray
    skipped: int
    vf: Features | None
    valid_y: np.ndarray | None
    warnings: list[str]
    slides: np.ndarray | None = None
    dataset: Dataset | None = None
    device: torch.device | None = None
    cache: FeatureCache | None = None


def _fit_and_save(
    net: HeadNetwork,
    cfg: TrainConfig,
    out: Path,
    dataset_hash: str,
    feats: _Extracted,
    progress: ProgressCallback | None,
    t0: float,
) -> dict[str, Any]:
    """Steps 2 and 3 of the module doc on the extracted features; the fields of
    :func:`train_head`'s result."""
    y, groups, train_rows, base, extra = (
        feats.y,
        feats.groups,
        feats.train_rows,
        feats.base,
        feats.extra,
    )
    ok, skipped, vf, valid_y, warnings = (
        feats.ok,
        feats.skipped,
        feats.vf,
        feats.valid_y,
        feats.warnings,
    )
    history: list[dict[str, Any]] = []
    n_valid = {"normal": 0, "tumor": 0}
    all_rows = np.ones(len(y), dtype=bool)
    tx, ty = train_rows(all_rows)
    n_tumor = int((ok & (y == LABEL_TUMOR)).sum())
    want_ensemble = cfg.head == "ensemble" or (
        cfg.head == "auto" and n_tumor >= ENSEMBLE_MIN_TUMOUR_PATCHES
    )
    head_scores: dict[str, float] = {}
    model: HeadFit | EnsembleFit
    folds: np.ndarray | None = None
    if valid_y is not None and vf is not None:
        vx, vy = vf.values[vf.ok].astype(np.float32), valid_y[vf.ok]
        skipped += int((~vf.ok).sum())
        choice, fit = choose_l2_on_valid(
            tx, ty, lambda f: f.logits(vx).mean(axis=1), vy, progress=progress
        )
        model = fit
        cal_scores, cal_labels = fit.logits(vx).mean(axis=1), vy
        if want_ensemble:
            with ProgressTask(progress, "fitting the ensemble", 1, "fit") as task:
                ens = fit_ensemble(tx, ty, fit, seed=cfg.seed)
                task.advance(1)
            ens_scores = ens.logits(vx).mean(axis=1)
            head_scores = {"linear": choice.scores[fit.l2], "ensemble": auroc_of(vy, ens_scores)}
            if keep_ensemble(cfg.head, head_scores):
                model, cal_scores = ens, ens_scores
        selected_by, source = "valid_auroc", "valid"
        n_valid = {
            "normal": int((vy == LABEL_NORMAL).sum()),
            "tumor": int((vy == LABEL_TUMOR).sum()),
        }
    else:
        labels = np.where(ok, y, -1)  # unreadable patches: -1, which the AUROCs ignore
        by_slide = (
            None
            if feats.slides is None
            else slide_folds(labels, np.asarray(feats.slides), cfg.cv_folds, cfg.seed)
        )
        k = min(cfg.cv_folds, n_tumor)
        if by_slide is not None:
            k = int(by_slide.max()) + 1
        elif groups is not None and k >= 2:
            n_groups = min(
                len(np.unique(groups[ok & (y == cls)])) for cls in (LABEL_TUMOR, LABEL_NORMAL)
            )
            if n_groups >= 2:
                k = min(k, n_groups)
            else:
                warnings.append(
                    "the tumour (or normal) tiles form a single annotated region: the model was "
                    "checked on held-out tiles of that region, which is optimistic — annotate "
                    "a second region"
                )
                groups = None
        if k >= 2:
            pooled = by_slide is not None
            folds = by_slide if by_slide is not None else stratified_folds(y, k, cfg.seed, groups)

            def rows_of(mask: np.ndarray, train: bool) -> tuple[np.ndarray, np.ndarray | None]:
                if train:
                    return train_rows(mask)
                return base.values[mask, :1].astype(np.float32), None

            # slides given but not held out (tumour on one slide, or a fold would train on
            # too few of a class): the regions' folds share their slides' look and favour weak
            # L2, so the one-standard-error rule picks the strongest L2 they cannot tell apart
            one_se = feats.slides is not None and by_slide is None
            choice, oof = cross_validate_l2(
                rows_of, labels, folds, progress=progress, pooled=pooled, one_se=one_se
            )
            with ProgressTask(progress, "fitting the head", 1, "fit") as task:
                fit = fit_head(tx, ty, choice.l2)
                task.advance(1)
            model, cal_scores, cal_labels = fit, oof[ok], y[ok]
            if want_ensemble:
                ens_oof = 0.5 * (oof + perceptron_oof(rows_of, folds, cfg.seed, progress))
                head_scores = {
                    "linear": choice.scores[choice.l2],
                    "ensemble": fold_score(labels, ens_oof, folds, pooled=pooled),
                }
                if keep_ensemble(cfg.head, head_scores):
                    with ProgressTask(progress, "fitting the ensemble", 1, "fit") as task:
                        model = fit_ensemble(tx, ty, fit, seed=cfg.seed)
                        task.advance(1)
                    cal_scores = ens_oof[ok]
            selected_by = "cv_auroc"
            source = (
                f"{k}-fold cross-validation by slide (pooled)"
                if pooled
                else f"{k}-fold cross-validation (one-standard-error rule)"
                if one_se
                else f"{k}-fold cross-validation"
            )
        else:
            fit = fit_head(tx, ty, FALLBACK_L2)
            model = fit
            choice = None
            cal_scores, cal_labels = fit.logits(base.values[ok, :1]).mean(axis=1), y[ok]
            selected_by, source = "fixed", "training patches"
            warnings.append(
                f"only {n_tumor} tumour patch(es): too few to choose or check the model on "
                "held-out patches; calibrated on the training patches (optimistic)"
            )
    if skipped:
        warnings.insert(0, f"{skipped} unreadable or malformed images were skipped")
    if choice is not None:
        for l2, value in sorted(choice.scores.items()):
            history.append({"l2": l2, choice.metric: value})
    calibration = fit_calibration(cal_scores, cal_labels, cfg.calibration)
    auc = auroc(cal_labels, cal_scores)
    if ranks_backwards(calibration, cal_labels, cfg.calibration):
        # the head's loss is class-balanced: its own sigmoid is a probability at equal priors,
        # where the normal tail would put almost every tile below the candidate floor
        calibration = head_probability(
            int((cal_labels == LABEL_NORMAL).sum()), int((cal_labels == LABEL_TUMOR).sum())
        )
        warnings.append(
            f"the held-out scores rank tumour below normal (AUROC {auc:.2f} on {source}): "
            "not calibrated on them; the probabilities are the head's own (class-balanced) — "
            "annotate more regions of both classes"
        )
    head = "ensemble" if isinstance(model, EnsembleFit) else "linear"
    mosaics = None
    if cfg.normal_mosaics > 0:
        mosaics = _normal_mosaics(
            cfg,
            feats,
            model,
            calibration,
            folds,
            groups,
            progress,
            net.trunk,  # type: ignore[arg-type]
        )
        if mosaics is None:
            warnings.append(
                "too few normal patches (or tumour patches for folds) for the normal mosaics: "
                "predict will use the calibrated threshold unless given tumour-free slides"
            )
    # the network (and the stored config, which rebuilds it) follow the head kept, whatever
    # mlp_hidden the config came with
    mlp_hidden = MLP_HIDDEN if head == "ensemble" else 0
    if mlp_hidden != cfg.mlp_hidden:
        cfg = dataclasses.replace(cfg, mlp_hidden=mlp_hidden)
        net = HeadNetwork(net.trunk, int(net.head.weight.shape[0]), mlp_hidden=mlp_hidden)
    net.set_fit(model)
    metrics = {
        "val_auroc": auc,
        "val_source": source,
        "selected_by": selected_by,
        "l2": model.l2,
        "head": head,
        "n_valid": len(cal_labels),
    }
    if head_scores:
        metrics["head_auroc"] = head_scores
    # what the cache held is not part of the model (an identical refit must give an
    # identical checkpoint), so these go to the result only
    # the out-of-domain reference: view 0 of every readable training patch, any label
    reference = fit_reference(base.values[ok, 0], seed=cfg.seed)
    metrics["ood_tile_threshold"] = reference.tile_threshold
    if mosaics is not None:
        metrics["normal_mosaics"] = {
            "mosaics": len(mosaics.probability),
            "patches": int(sum(s * s for s in mosaics.side_patches)),
            "tiles": int(sum(p.size for p in mosaics.probability)),
        }
    model_id = save_checkpoint(
        out,
        net,
        cfg,
        calibration,
        dataset_hash,
        metrics,
        ood_reference=reference.to_payload(),
        normal_mosaics=mosaics.to_payload() if mosaics is not None else None,
    )
    metrics["features_computed"] = base.computed + (extra.computed if extra else 0)
    metrics["features_cached"] = base.cached + (extra.cached if extra else 0)
    logger.info(
        "%s head fitted (l2 %g, %s AUROC %.4f) in %.1f s",
        head,
        model.l2,
        source,
        auc,
        time.monotonic() - t0,
    )
    return {
        "checkpoint": out,
        "model_id": model_id,
        "best_epoch": 0,
        "best_step": 0,
        "selected_by": selected_by,
        "best_metrics": metrics,
        "history": history,
        "n_valid": n_valid,
        "skipped_unreadable": skipped,
        "warnings": warnings,
        "calibration": calibration.to_dict(),
        "fit": model,
        "normal_mosaics": mosaics,
    }


def _normal_mosaics(
    cfg: TrainConfig,
    feats: _Extracted,
    model: HeadFit | EnsembleFit,
    calibration: Calibration,
    folds: np.ndarray | None,
    groups: np.ndarray | None,
    progress: ProgressCallback | None,
    trunk: FeatureTrunk,
) -> NormalMosaics | None:
    """The mosaics of held-out normal patches (:mod:`qupath_rkd.training.normal_mosaics`), each
    scored by the head kept refitted (same L2, same kind) without its fold; ``None`` when there
    are too few patches. The folds are the cross-validation's, or, after a choice on a
    validation set, the same stratified, seeded split."""
    if feats.dataset is None:
        return None
    y, ok = feats.y, feats.ok
    if folds is None:
        n_tumor = int((ok & (y == LABEL_TUMOR)).sum())
        k = min(cfg.cv_folds, n_tumor)
        if k < 2:
            return None
        folds = stratified_folds(np.where(ok, y, -1), k, cfg.seed, groups)
    members = mosaic_members(y, ok, folds, cfg.normal_mosaics, cfg.seed)
    fitted: dict[int, HeadFit | EnsembleFit] = {}
    with ProgressTask(progress, "heads for the normal mosaics", len(members), "fit") as task:
        for f, _idx in members:
            tx, ty = feats.train_rows(folds != f)
            lin = fit_head(tx, ty, model.l2)
            ens = isinstance(model, EnsembleFit)
            fitted[f] = fit_ensemble(tx, ty, lin, seed=cfg.seed) if ens else lin
            task.advance(1, fold=f"{f + 1}/{int(folds.max()) + 1}")
    assert cfg.input_px is not None
    return build_normal_mosaics(
        trunk,
        feats.dataset,
        members,
        lambda f, x: fitted[f].logits(x).mean(axis=1),
        calibration,
        input_px=int(cfg.input_px),
        device=feats.device or torch.device("cpu"),
        cache=feats.cache,
        batch_size=max(cfg.batch_size, 64),
        progress=progress,
    )


__all__ = ["FALLBACK_L2", "TrainingFeatures", "train_head", "training_features"]

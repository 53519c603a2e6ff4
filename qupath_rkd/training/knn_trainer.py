"""Training of the one-class ``knn`` scorer (:mod:`qupath_rkd.model.local_knn`): no
optimisation, a memory bank and a calibration.

1. The normal training patches are shuffled with the seed. Without a validation set holding
   normal patches, a share of them (a fifth, at most
   :data:`~qupath_rkd.constants.KNN_CALIBRATION_PATCHES`; whole annotated regions when the
   caller gives them, as ``sync`` does) is held out for the calibration — what a pathologist
   has; the validation folders are not needed.
2. The local features of up to :data:`~qupath_rkd.constants.KNN_BANK_PATCHES` of the other
   normal patches are pooled and a seeded subset of ``knn_bank_size`` rows
   (:data:`~qupath_rkd.constants.KNN_BANK_SIZE` by default) becomes the memory bank.
3. Calibration: Platt scaling on a validation set with both classes (its AUROC reported as
   ``val_auroc``); else the normal-tail mapping (:mod:`qupath_rkd.model.calibration`: the 99th
   percentile of held-out normal scores maps to 0.5) on the validation normals or on the
   held-out training normals. Tumour training patches are not used (one class).

Deterministic for a given seed and set of patches. Data-parallel runs do all of it on rank 0
(it costs seconds to a minute: no epochs, one pass over a few thousand patches).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from qupath_rkd.constants import (
    KNN_BANK_PATCHES,
    KNN_BANK_SIZE,
    KNN_CALIBRATION_PATCHES,
    LABEL_NORMAL,
    LABEL_TUMOR,
)
from qupath_rkd.errors import DataError
from qupath_rkd.features.views import view_list
from qupath_rkd.model.calibration import (
    auroc,
    backwards_warning,
    fit_calibration,
    ranks_backwards,
)
from qupath_rkd.model.checkpoint import save_checkpoint
from qupath_rkd.model.device import resolve_device
from qupath_rkd.model.local_knn import LocalKnnNetwork, sample_bank
from qupath_rkd.model.scorer import build_network, preprocess_batch
from qupath_rkd.progress import ProgressCallback, ProgressTask
from qupath_rkd.training import distributed
from qupath_rkd.training.config import TrainConfig
from qupath_rkd.training.datasets import Collate, IndexedDataset

logger = logging.getLogger(__name__)

#: fewer normal patches than this: no hold-out (bank and calibration from the same patches)
MIN_NORMALS_FOR_HOLDOUT = 10
_BATCH = 128


def _batches(
    dataset: Dataset, index: np.ndarray, cfg: TrainConfig, device: torch.device
) -> Iterator[tuple[np.ndarray, torch.Tensor, int]]:
    """``(positions in index, preprocessed (b, 3, S, S), items seen)`` per batch, through the
    trainers' collation (:class:`~qupath_rkd.training.datasets.Collate`: resized to
    ``input_px``; unreadable or malformed items left out but counted as seen)."""
    px = cfg.input_px
    if px is None:
        raise ValueError("the knn trainer needs a resolved config (TrainConfig.resolved())")
    loader = DataLoader(
        IndexedDataset(Subset(dataset, index.tolist())),
        batch_size=_BATCH,
        num_workers=cfg.num_workers,
        collate_fn=Collate(px),
    )
    for batch in loader:
        seen = len(batch) + len(batch.skipped)
        if len(batch):
            yield batch.indices.numpy(), preprocess_batch(batch.images, px, device), seen
        else:
            yield batch.indices.numpy(), batch.images, seen


def _scores(
    net: LocalKnnNetwork,
    dataset: Dataset,
    index: np.ndarray,
    cfg: TrainConfig,
    device: torch.device,
    progress: ProgressCallback | None,
    task: str,
) -> np.ndarray:
    """Raw scores ``(len(index),)`` float64 (NaN for unreadable patches) in ``cfg.tta_views``."""
    out = np.full(len(index), np.nan)
    views = view_list(cfg.tta_views)
    with ProgressTask(progress, task, len(index), "patch") as t:
        for pos, x, seen in _batches(dataset, index, cfg, device):
            if len(pos):
                out[pos] = net(x, views).double().cpu().numpy()
            t.advance(seen)
    return out


def split_holdout(
    normals: np.ndarray, groups: np.ndarray | None, seed: int, *, enabled: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(held, rest)``: the normal patches (indices ``normals``) held out to calibrate, and the
    others in a seeded order (the bank draws from their start).

    A fifth of them, at most :data:`~qupath_rkd.constants.KNN_CALIBRATION_PATCHES`; none when
    not ``enabled`` or with fewer than :data:`MIN_NORMALS_FOR_HOLDOUT`. With ``groups`` (the
    annotated region of every training patch, indexed like the dataset) whole regions are held
    out, in a seeded order, until that share is reached — never neighbouring tiles of a region
    the bank is drawn from; with a single region, tiles as without groups.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(normals)
    if not enabled or len(order) < MIN_NORMALS_FOR_HOLDOUT:
        return order[:0], order
    target = min(KNN_CALIBRATION_PATCHES, len(order) // 5)
    if groups is not None:
        g = np.asarray(groups)[order]
        names = rng.permutation(np.unique(g))
        if len(names) >= 2:
            n_chosen, count = 0, 0
            for name in names[:-1]:  # at least one region stays for the bank
                if count >= target:
                    break
                n_chosen += 1
                count += int((g == name).sum())
            mask = np.isin(g, names[:n_chosen])
            return order[mask], order[~mask]
    return order[:target], order[target:]


def train_local_knn(
    train_set: Dataset,
    valid_set: Dataset | None,
    cfg: TrainConfig,
    out: Path,
    dataset_hash: str,
    *,
    progress: ProgressCallback | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Draw the bank, calibrate, write the checkpoint to ``out``; returns the fields of a
    :class:`~qupath_rkd.training.trainer.TrainResult` (the trainer wraps them).

    Args:
        train_set, valid_set: patch datasets (items ``(image (H, W, 3) uint8, label)`` with a
            ``labels`` array); only the training set's normal patches are used.
        cfg: a resolved :class:`TrainConfig` with ``scorer == "knn"``.
        progress: tasks ``memory bank``, ``calibration`` and ``validation`` (patches).
        groups: ``(N,)`` annotated region of each training patch (:func:`split_holdout`).
    """
    if not distributed.current().is_main:
        progress = None
    return distributed.run_on_main(
        lambda: _train(train_set, valid_set, cfg, out, dataset_hash, progress, groups)
    )


def _train(
    train_set: Dataset,
    valid_set: Dataset | None,
    cfg: TrainConfig,
    out: Path,
    dataset_hash: str,
    progress: ProgressCallback | None,
    groups: np.ndarray | None,
) -> dict[str, Any]:
    t0 = time.monotonic()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    y = np.asarray(train_set.labels, dtype=np.int64).reshape(-1)  # type: ignore[attr-defined]
    normals = np.flatnonzero(y == LABEL_NORMAL)
    if len(normals) == 0:
        raise DataError("the training set has no normal patches", hint="give normal patches")
    warnings: list[str] = []
    if (y == LABEL_TUMOR).any():
        warnings.append(
            f"the one-class knn scorer learns normal tissue only: {int((y == LABEL_TUMOR).sum())} "
            "tumour training patches were not used (the default scorer, head, uses them)"
        )
    valid_y = None
    if valid_set is not None and len(valid_set) > 0:  # type: ignore[arg-type]
        valid_y = np.asarray(valid_set.labels, dtype=np.int64).reshape(-1)  # type: ignore[attr-defined]
        if not (valid_y == LABEL_NORMAL).any():
            valid_y = None
    held, rest = split_holdout(normals, groups, cfg.seed, enabled=valid_y is None)
    n_hold = len(held)
    bank_idx = np.sort(rest[:KNN_BANK_PATCHES])

    net = build_network(dataclasses.replace(cfg, knn_bank_size=1)).to(device)
    assert isinstance(net, LocalKnnNetwork)
    local: list[torch.Tensor] = []
    readable = 0
    with ProgressTask(progress, "memory bank", len(bank_idx), "patch") as task:
        for pos, x, seen in _batches(train_set, bank_idx, cfg, device):
            if len(pos):
                f = net.local_features(x)
                local.append(f.reshape(-1, f.shape[-1]).cpu())
                readable += len(pos)
            task.advance(seen)
    skipped = len(bank_idx) - readable
    if not local:
        raise DataError("none of the normal training patches could be read")
    bank = sample_bank(torch.cat(local), cfg.knn_bank_size or KNN_BANK_SIZE, cfg.seed)
    net.set_bank(bank)
    cfg = dataclasses.replace(cfg, knn_bank_size=len(bank))

    n_valid = {"normal": 0, "tumor": 0}
    if valid_y is not None:
        every = np.arange(len(valid_y))
        cal_scores = _scores(net, valid_set, every, cfg, device, progress, "validation")  # type: ignore[arg-type]
        cal_labels = valid_y
        source = "valid"
        n_valid = {
            "normal": int((valid_y == LABEL_NORMAL).sum()),
            "tumor": int((valid_y == LABEL_TUMOR).sum()),
        }
    elif n_hold:
        cal_scores = _scores(net, train_set, held, cfg, device, progress, "calibration")
        cal_labels = np.full(len(held), LABEL_NORMAL)
        source = f"{n_hold} held-out normal training patches" + (
            " (whole regions)" if groups is not None else ""
        )
    else:
        cal_scores = _scores(net, train_set, bank_idx, cfg, device, progress, "calibration")
        cal_labels = np.full(len(bank_idx), LABEL_NORMAL)
        source = "training patches"
        warnings.append(
            f"only {len(normals)} normal patches: calibrated on the patches the bank was drawn "
            "from (optimistic: held-out tissue will score higher)"
        )
    ok = np.isfinite(cal_scores)
    skipped += int((~ok).sum())
    cal_scores, cal_labels = cal_scores[ok], cal_labels[ok]
    calibration = fit_calibration(cal_scores, cal_labels, cfg.calibration)
    auc = auroc(cal_labels, cal_scores)
    if ranks_backwards(calibration, cal_labels, cfg.calibration):
        warnings.append(backwards_warning(auc, source))
    if skipped:
        warnings.insert(0, f"{skipped} unreadable or malformed images were skipped")
    metrics = {
        "val_auroc": None if math.isnan(auc) else auc,
        "val_source": source,
        "selected_by": "none",
        "bank_rows": len(bank),
        "bank_patches": len(bank_idx),
        "n_valid": len(cal_labels),
    }
    model_id = save_checkpoint(out, net, cfg, calibration, dataset_hash, metrics)
    logger.info(
        "one-class knn scorer: %d bank rows from %d normal patches, calibrated on %s (%s) "
        "in %.1f s",
        len(bank),
        len(bank_idx),
        source,
        calibration.method,
        time.monotonic() - t0,
    )
    return {
        "checkpoint": out,
        "model_id": model_id,
        "best_epoch": 0,
        "best_step": 0,
        "selected_by": "none",
        "best_metrics": metrics,
        "history": [],
        "n_valid": n_valid,
        "skipped_unreadable": skipped,
        "warnings": warnings,
        "calibration": calibration.to_dict(),
    }


__all__ = ["MIN_NORMALS_FOR_HOLDOUT", "split_holdout", "train_local_knn"]

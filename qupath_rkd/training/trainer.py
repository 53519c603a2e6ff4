"""Training loop for reverse distillation with the focal similarity loss.

The optimiser (Adam) sees only the OCBE bottleneck and the student decoder; the teacher stays
frozen and in eval mode. Each epoch (and optionally every N steps) the model is validated; the
best one by validation AUROC (tumour and normal validation patches present) or by validation
loss is calibrated on the validation scores and written to ``out``. A resume file
``<out>.resume`` (weights, optimiser, epoch, history) is written after every epoch and on
Ctrl-C, and removed when the run finishes; ``resume=True`` continues from it.

Reproducibility: torch, numpy and Python are seeded from ``config.seed`` and the data order of
epoch ``e`` comes from a generator seeded with ``(seed, e)``, so a CPU run (and a resumed run)
gives the same weights as an uninterrupted one.

Data-parallel (``torchrun``, :mod:`qupath_rkd.training.distributed`): when a process group is
initialised, each step's batch is the one a single process would draw, split between the ranks
(tumour and normal shares apart, so each rank's share stays balanced); ``DistributedDataParallel``
averages the gradients, each rank's loss is weighted by its share of the readable patches, and
BatchNorm uses the whole batch's statistics, so a step equals one process's step on the union
batch. Rank 0 alone validates and writes; the others receive the outcome.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, Subset

from qupath_rkd import __version__
from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import CheckpointError, ConfigError, DataError
from qupath_rkd.model.anomaly_map import anomaly_map, patch_scores
from qupath_rkd.model.calibration import (
    Calibration,
    auroc,
    backwards_warning,
    fit_calibration,
    ranks_backwards,
)
from qupath_rkd.model.checkpoint import save_checkpoint
from qupath_rkd.model.device import amp_dtype, resolve_device
from qupath_rkd.model.loss import focal_similarity_loss
from qupath_rkd.model.rd import ReverseDistillation
from qupath_rkd.model.scorer import build_network, preprocess_batch
from qupath_rkd.progress import ProgressCallback, ProgressTask
from qupath_rkd.training import distributed
from qupath_rkd.training.config import TrainConfig
from qupath_rkd.training.datasets import Collate, IndexedDataset, PatchBatch

logger = logging.getLogger(__name__)

RESUME_FORMAT = "qupath-rkd-resume"
#: config fields that may differ between an interrupted run and its resumption
_RESUMABLE_CHANGES = {"epochs", "device", "num_workers", "amp", "channels_last", "extra"}
#: calibration on training patches (no validation set) uses at most this many
_CALIBRATION_SUBSET = 2000


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        checkpoint: path of the best model. model_id: its sha256.
        best_epoch, best_step: when the kept model was validated (epochs count from 1).
        selected_by: ``auroc``, ``loss`` or ``last`` (no validation set).
        best_metrics: validation metrics of the kept model.
        history: one dict per validation (epoch, step, train_loss, val_loss, val_auroc).
        n_train, n_valid: ``{"normal": n, "tumor": n}``.
        skipped_unreadable: unusable images seen (train + validation, each counted once).
        interrupted: stopped by Ctrl-C (the checkpoint is still usable).
        warnings: one-line warnings for the user (also logged).
        calibration: the stored calibration as a dict. seconds: wall time.
    """

    checkpoint: Path
    model_id: str
    best_epoch: int
    best_step: int
    selected_by: str
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    n_train: dict[str, int]
    n_valid: dict[str, int]
    skipped_unreadable: int
    interrupted: bool
    warnings: list[str] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def swapped_labels_warning(val_auroc: float | None, n_train_tumor: int = 1) -> str | None:
    """The warning for a validation AUROC below 0.5 (tumour scoring as more normal than normal).

    With tumour training patches the likely cause is swapped folders; one-class RD (no tumour
    training patches) can genuinely score below 0.5 (measured on PCam, docs/benchmarks.md).
    """
    if val_auroc is None or math.isnan(val_auroc) or val_auroc >= 0.5:
        return None
    if n_train_tumor == 0:
        return (
            f"validation AUROC is {val_auroc:.3f} (< 0.5): trained on normal patches only, the "
            "model finds these tumour patches more normal than the normal ones — add tumour "
            "patches (--tumor), or check that the validation folders are not swapped"
        )
    return (
        f"validation AUROC is {val_auroc:.3f} (< 0.5): tumour patches score as more normal than "
        "normal ones — were the tumour and normal folders swapped?"
    )


def _worker_init(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: workers ignore it, the main process stops cleanly
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed() % (2**32)
    np.random.seed(seed)
    random.seed(seed)


def _labels_of(dataset: Dataset, name: str) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise DataError(f"the {name} set has no `labels` array")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(dataset):  # type: ignore[arg-type]
        raise DataError(f"the {name} set has {len(labels)} labels for {len(dataset)} items")  # type: ignore[arg-type]
    bad = ~np.isin(labels, (LABEL_NORMAL, LABEL_TUMOR))
    if bad.any():
        raise DataError(
            f"the {name} set has labels other than {LABEL_NORMAL} (normal) and {LABEL_TUMOR} "
            f"(tumour), e.g. {labels[bad][0]}",
            hint="drop ignored tiles before training",
        )
    return labels


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {
        "normal": int((labels == LABEL_NORMAL).sum()),
        "tumor": int((labels == LABEL_TUMOR).sum()),
    }


class EpochSampler(Sampler[int]):
    """A seeded permutation of ``range(n)`` that can start ``skip`` samples in (resume)."""

    def __init__(self, n: int, seed: int, skip: int = 0) -> None:
        self.n, self.seed, self.skip = n, seed, skip

    def __len__(self) -> int:
        return max(0, self.n - self.skip)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed)
        yield from torch.randperm(self.n, generator=g)[self.skip :].tolist()


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches of half tumour, half normal indices (both cycled through seeded permutations).

    ``len(labels) // batch_size`` batches per epoch (at least one); the first ``skip_batches``
    are drawn but not yielded (resume).
    """

    def __init__(
        self, labels: np.ndarray, batch_size: int, seed: int, skip_batches: int = 0
    ) -> None:
        self.tumor = np.flatnonzero(labels == LABEL_TUMOR)
        self.normal = np.flatnonzero(labels == LABEL_NORMAL)
        if len(self.tumor) == 0 or len(self.normal) == 0:
            raise DataError("balanced batches need tumour and normal training patches")
        self.batch_size = batch_size
        self.n_batches = max(1, len(labels) // batch_size)
        self.seed = seed
        self.skip_batches = skip_batches

    def __len__(self) -> int:
        return max(0, self.n_batches - self.skip_batches)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed)
        n_t = self.batch_size // 2
        n_n = self.batch_size - n_t
        t_stream = self._stream(self.tumor, rng)
        n_stream = self._stream(self.normal, rng)
        for b in range(self.n_batches):
            batch = [next(t_stream) for _ in range(n_t)] + [next(n_stream) for _ in range(n_n)]
            batch = [int(i) for i in rng.permutation(batch)]
            if b >= self.skip_batches:
                yield batch

    @staticmethod
    def _stream(indices: np.ndarray, rng: np.random.Generator) -> Iterator[int]:
        while True:
            yield from rng.permutation(indices).tolist()


def augment_draws(generator: torch.Generator, batch_size: int) -> tuple[list[int], list[int]]:
    """Rotations (0-3 quarter turns) and flips (0/1) for one batch; always ``batch_size`` of
    each, so the stream does not depend on how many images of a batch were readable."""
    ks = torch.randint(0, 4, (batch_size,), generator=generator).tolist()
    flips = torch.randint(0, 2, (batch_size,), generator=generator).tolist()
    return ks, flips


def augment_batch(
    batch: torch.Tensor,
    generator: torch.Generator,
    batch_size: int,
    positions: list[int] | None = None,
) -> torch.Tensor:
    """Random 90° rotation and horizontal flip per sample of a ``(B, H, W, 3)`` batch (H == W).

    ``positions``: each sample's place in the step's whole batch (a data-parallel rank holds a
    share of it), so it gets the draw one process would give it; None = ``0 .. B-1``.
    """
    n = batch.shape[0]
    pos = list(range(n)) if positions is None else positions
    ks, flips = augment_draws(generator, max(batch_size, n, max(pos, default=-1) + 1))
    ks, flips = [ks[p] for p in pos], [flips[p] for p in pos]
    out = []
    for img, k, flip in zip(batch, ks, flips, strict=True):
        img = torch.rot90(img, k, dims=(0, 1))
        out.append(img.flip(1) if flip else img)
    return torch.stack(out)


class _Run:
    """State of one training run (kept in one place so Ctrl-C and resume see all of it)."""

    def __init__(
        self,
        train_set: Dataset,
        valid_set: Dataset | None,
        cfg: TrainConfig,
        out: Path,
        dataset_hash: str,
        progress: ProgressCallback | None,
    ) -> None:
        self.cfg = cfg
        if cfg.input_px is None:
            raise ConfigError("the trainer needs a resolved config (TrainConfig.resolved())")
        self.input_px: int = int(cfg.input_px)
        self.out = out
        self.resume_path = out.with_name(out.name + ".resume")
        self.dataset_hash = dataset_hash
        self.dist = distributed.current()
        self.progress = progress if self.dist.is_main else None
        self.device = distributed.rank_device(resolve_device(cfg.device), self.dist)
        if self.dist.enabled and cfg.batch_size < self.dist.world_size:
            raise ConfigError(
                f"batch size {cfg.batch_size} is smaller than the {self.dist.world_size} ranks",
                hint="each rank needs a patch per step: raise --batch-size or use fewer ranks",
            )
        self.amp = amp_dtype(self.device) if cfg.amp else None
        self.train_set = train_set
        self.train_labels = _labels_of(train_set, "training")
        if len(self.train_labels) < 2:
            raise DataError(
                f"the training set has {len(self.train_labels)} patches; at least 2 are needed"
            )
        if _counts(self.train_labels)["normal"] == 0:
            raise DataError(
                "the training set has no normal patches",
                hint="reverse distillation learns normal tissue: give normal patches",
            )
        self.balance = cfg.balance_batches and _counts(self.train_labels)["tumor"] > 0

        # validation set (or, without one, a subset of the training set for calibration only)
        self.valid_source = "valid"
        if valid_set is None or len(valid_set) == 0:  # type: ignore[arg-type]
            self.valid_source = "train"
            n = len(self.train_labels)
            rng = np.random.default_rng(cfg.seed)
            idx = np.sort(rng.choice(n, size=min(n, _CALIBRATION_SUBSET), replace=False))
            valid_set = Subset(train_set, idx.tolist())
            self.valid_labels = self.train_labels[idx]
            self._valid_index: np.ndarray | None = idx
        else:
            self.valid_labels = _labels_of(valid_set, "validation")
            if cfg.max_valid is not None and cfg.max_valid < len(self.valid_labels):
                rng = np.random.default_rng(cfg.seed)
                idx = np.sort(rng.choice(len(self.valid_labels), size=cfg.max_valid, replace=False))
                valid_set = Subset(valid_set, idx.tolist())
                self.valid_labels = self.valid_labels[idx]
                self._valid_index = idx
            else:
                self._valid_index = None
        self.valid_set = valid_set
        both = all(v > 0 for v in _counts(self.valid_labels).values())
        if self.valid_source == "train":
            self.select_by = "last"
        elif cfg.select_by == "auto":
            self.select_by = "auroc" if both else "loss"
        else:
            self.select_by = cfg.select_by
        if self.select_by == "auroc" and not both:
            raise ConfigError("selection by AUROC needs tumour and normal validation patches")
        if cfg.calibration == "logistic" and not both:
            raise ConfigError("logistic calibration needs tumour and normal validation patches")

        seed_everything(cfg.seed)
        net = build_network(cfg)
        if not isinstance(net, ReverseDistillation):
            raise ConfigError(f"the RD trainer cannot train scorer {cfg.scorer!r}")
        self.net: ReverseDistillation = net.to(self.device)
        if self.device.type == "cuda" and cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.model: torch.nn.Module = self.net  # what a training step runs (DDP when parallel)
        if self.dist.enabled:
            # BatchNorm over the union batch (SyncBatchNorm on GPUs, GlobalBatchNorm2d on CPU);
            # the teacher is frozen and in eval mode: its BatchNorm uses stored statistics
            distributed.convert_batchnorm(self.net.bottleneck, self.device)
            distributed.convert_batchnorm(self.net.student, self.device)
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.opt = torch.optim.Adam(
            list(self.net.trainable_parameters()),
            lr=cfg.lr,
            betas=(float(cfg.betas[0]), float(cfg.betas[1])),
            weight_decay=cfg.weight_decay,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp is torch.float16)
        self.collate = Collate(self.input_px)
        self.epoch_done = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best: dict[str, Any] = {}
        self.model_id = ""
        self.calibration: Calibration | None = None
        #: the warning when the kept epoch's calibration fell back to the normal tail, else ""
        self.calibration_backwards = ""
        self.skipped_train: set[int] = set()
        self.skipped_valid: set[int] = set()
        self.nonfinite_steps = 0
        self._loss_sum = 0.0
        self._loss_n = 0
        self.epoch_in_progress = 0  # epoch interrupted part-way (0: none)
        self.batches_done = 0  # batches of that epoch already consumed
        self.stop_requested = False  # set by the SIGINT handler; checked between steps

    # ---- data ----------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, *, epoch: int | None, skip_batches: int = 0) -> DataLoader:
        cfg = self.cfg
        common: dict[str, Any] = {
            "num_workers": cfg.num_workers,
            "collate_fn": self.collate,
            "pin_memory": self.device.type == "cuda",
            "worker_init_fn": _worker_init if cfg.num_workers else None,
        }
        indexed = IndexedDataset(dataset)
        if epoch is None:
            return DataLoader(indexed, batch_size=cfg.batch_size, shuffle=False, **common)
        sampler: Sampler[list[int]] = self.union_batches(epoch, skip_batches)
        if self.dist.enabled:
            sampler = distributed.ShardedBatchSampler(sampler, self.train_labels, self.dist)
        return DataLoader(indexed, batch_sampler=sampler, **common)

    def union_batches(self, epoch: int, skip_batches: int = 0) -> Sampler[list[int]]:
        """The training batches of ``epoch`` as one process draws them (all ranks together)."""
        cfg = self.cfg
        seed = cfg.seed * 100_003 + epoch
        if self.balance:
            return BalancedBatchSampler(self.train_labels, cfg.batch_size, seed, skip_batches)
        n = len(self.train_labels)
        return BatchSampler(
            EpochSampler(n, seed, skip_batches * cfg.batch_size),
            cfg.batch_size,
            drop_last=n > cfg.batch_size,
        )

    def batches_per_epoch(self) -> int:
        """Optimiser steps in a full epoch (before ``max_steps_per_epoch``)."""
        if self.balance:
            return max(1, len(self.train_labels) // self.cfg.batch_size)
        n, b = len(self.train_labels), self.cfg.batch_size
        return n // b if n > b else 1

    # ---- one step ------------------------------------------------------------------------
    def _autocast(self) -> Any:
        return torch.autocast(
            self.device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None
        )

    def _step(
        self,
        batch: PatchBatch,
        aug_gen: torch.Generator | None,
        shard: list[tuple[int, int]] | None = None,
    ) -> None:
        """One optimiser step on ``batch``: the step's batch, or this rank's share of it when
        data-parallel (``shard``: ``(dataset index, place in the whole batch)`` of each of its
        patches, so the augmentation gives each the draw one process would)."""
        self.skipped_train.update(batch.skipped)
        n_local = len(batch)
        counts = distributed.all_values(float(n_local)) if self.dist.enabled else [n_local]
        n_total = int(sum(counts))
        # BatchNorm needs two samples (and every rank one); a batch emptied by bad files is skipped
        if n_total < 2 or min(counts) < 1:
            if aug_gen is not None:
                augment_draws(aug_gen, self.cfg.batch_size)
            return
        if aug_gen is not None:
            positions = None
            if shard is not None:
                skipped = set(batch.skipped)
                positions = [p for i, p in shard if i not in skipped]
            images = augment_batch(batch.images, aug_gen, self.cfg.batch_size, positions)
        else:
            images = batch.images
        x = preprocess_batch(images, self.input_px, self.device, self.cfg.channels_last)
        labels = batch.labels.to(self.device, non_blocking=True)
        with self._autocast():
            t, s = self.model(x)
        loss = focal_similarity_loss(t, s, labels, self.cfg.alpha, self.cfg.gamma)
        loss_sum, nonfinite = float(loss.detach()) * n_local, not bool(torch.isfinite(loss))
        if self.dist.enabled:
            # the union batch's mean loss is the patch-weighted mean of the ranks' means, and
            # DistributedDataParallel averages the gradients over the ranks: weight by share
            loss = loss * (n_local * self.dist.world_size / n_total)
            loss_sum, n_bad = distributed.all_sum([loss_sum if not nonfinite else 0.0, nonfinite])
            nonfinite = n_bad > 0
        if nonfinite:
            self.nonfinite_steps += 1
            logger.warning("non-finite loss at step %d; step skipped", self.global_step)
            return
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.global_step += 1
        self._loss_sum += loss_sum
        self._loss_n += n_total

    # ---- validation ----------------------------------------------------------------------
    def _score_valid(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Scores, labels and mean focal loss on the validation set (unusable items dropped)."""
        self.net.eval()
        scores, labels, loss_sum, n = [], [], 0.0, 0
        total = len(self.valid_labels) if limit is None else min(limit, len(self.valid_labels))
        task = ProgressTask(self.progress, "validation", total, "patch")
        with torch.inference_mode(), task:
            for batch in self._loader(self.valid_set, epoch=None):
                self.skipped_valid.update(self._base_index(batch.skipped))
                if len(batch) == 0:
                    continue
                x = preprocess_batch(
                    batch.images, self.input_px, self.device, self.cfg.channels_last
                )
                y = batch.labels.to(self.device)
                with self._autocast():
                    t, s = self.net(x)
                loss_sum += float(
                    focal_similarity_loss(t, s, y, self.cfg.alpha, self.cfg.gamma)
                ) * len(batch)
                n += len(batch)
                maps = anomaly_map(t, s, self.input_px, self.cfg.sigma_px)
                scores.append(patch_scores(maps, self.cfg.score_reduction).float().cpu().numpy())
                labels.append(batch.labels.numpy())
                task.advance(len(batch) + len(batch.skipped))
                if limit is not None and n >= limit:
                    break
        self.net.train()
        if n == 0:
            raise DataError(f"no readable {self.valid_source} patches to validate on")
        return np.concatenate(scores), np.concatenate(labels), loss_sum / n

    def _base_index(self, indices: list[int]) -> list[int]:
        """Indices into the (possibly subsetted) validation set -> its base dataset's."""
        if self._valid_index is None:
            return list(indices)
        return [int(self._valid_index[i]) for i in indices]

    def n_skipped(self) -> int:
        """Unusable images seen, each counted once (the calibration subset of the training set
        is the same images as the training set)."""
        if self.valid_source == "train":
            return len(self.skipped_train | self.skipped_valid)
        return len(self.skipped_train) + len(self.skipped_valid)

    def validate(self, epoch: int, limit: int | None = None) -> dict[str, Any]:
        """Validate, keep the model if it is the best so far (checkpoint written); returns the
        record of this validation. Data-parallel: rank 0 alone validates and writes, every
        rank gets the same record and state (so all take the same decisions afterwards)."""
        if not self.dist.enabled:
            return self._validate(epoch, limit)

        def on_main() -> tuple[dict[str, Any], dict[str, Any]]:
            return self._validate(epoch, limit), self._validation_state()

        record, state = distributed.run_on_main(on_main)
        if not self.dist.is_main:
            self.history = list(state["history"])
            self.best_value, self.best = state["best_value"], dict(state["best"])
            self.model_id = state["model_id"]
            cal = state["calibration"]
            self.calibration = Calibration.from_dict(cal) if cal is not None else None
            self.skipped_valid = set(state["skipped_valid"])
            self._loss_sum, self._loss_n = 0.0, 0
        return record

    def _validation_state(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best_value": self.best_value,
            "best": self.best,
            "model_id": self.model_id,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "skipped_valid": sorted(self.skipped_valid),
        }

    def _validate(self, epoch: int, limit: int | None) -> dict[str, Any]:
        scores, labels, val_loss = self._score_valid(limit)
        train_loss = self._loss_sum / self._loss_n if self._loss_n else math.nan
        self._loss_sum, self._loss_n = 0.0, 0
        auc = auroc(labels, scores)
        record = {
            "epoch": epoch,
            "step": self.global_step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_auroc": auc,
            "val_source": self.valid_source,
        }
        self.history.append(record)
        logger.info(
            "epoch %d step %d: train loss %.4f, %s loss %.4f, AUROC %.4f",
            epoch,
            self.global_step,
            train_loss,
            self.valid_source,
            val_loss,
            auc,
        )
        if self.select_by == "auroc":
            value, better = auc, self.best_value is None or auc > self.best_value
        elif self.select_by == "loss":
            value, better = val_loss, self.best_value is None or val_loss < self.best_value
        else:
            value, better = float(epoch), True
        if better:
            self.best_value = value
            self.calibration = fit_calibration(scores, labels, self.cfg.calibration)
            self.calibration_backwards = (
                backwards_warning(auc, self.valid_source)
                if ranks_backwards(self.calibration, labels, self.cfg.calibration)
                else ""
            )
            metrics = dict(record, selected_by=self.select_by, n_valid=len(labels))
            self.model_id = save_checkpoint(
                self.out, self.net, self.cfg, self.calibration, self.dataset_hash, metrics
            )
            self.best = record
        return record

    # ---- resume --------------------------------------------------------------------------
    def _resume_payload(self) -> dict[str, Any]:
        from qupath_rkd.model.checkpoint import _plain

        return {
            "format": RESUME_FORMAT,
            "package_version": __version__,
            "config": _plain(self.cfg.to_dict()),
            "dataset_hash": self.dataset_hash,
            "epoch_done": self.epoch_done,
            "epoch_in_progress": self.epoch_in_progress,
            "batches_done": self.batches_done,
            "loss_sum": self._loss_sum,
            "loss_n": self._loss_n,
            "global_step": self.global_step,
            "best_value": self.best_value,
            "best": _plain(self.best),
            "model_id": self.model_id,
            "history": _plain(self.history),
            "skipped_train": sorted(self.skipped_train),
            "skipped_valid": sorted(self.skipped_valid),
            "trainable": {
                k: v.detach().cpu()
                for k, v in self.net.state_dict().items()
                if not k.startswith("teacher.")
            },
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def save_resume(self) -> None:
        """Write ``<out>.resume`` (rank 0 alone when data-parallel, with every rank's unreadable
        training images)."""
        self.skipped_train = distributed.union_of(self.skipped_train)
        if not self.dist.is_main:
            return
        import io

        from qupath_rkd.io_utils import atomic_write_bytes

        buf = io.BytesIO()
        torch.save(self._resume_payload(), buf)
        atomic_write_bytes(self.resume_path, buf.getvalue())

    def load_resume(self) -> None:
        if not self.resume_path.is_file():
            raise CheckpointError(
                f"nothing to resume: {self.resume_path} not found",
                hint="start without --resume (a finished run removes its resume file)",
            )
        try:
            obj = torch.load(self.resume_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{self.resume_path} is unreadable ({type(exc).__name__})"
            ) from exc
        if not isinstance(obj, dict) or obj.get("format") != RESUME_FORMAT:
            raise CheckpointError(f"{self.resume_path} is not a qupath-rkd resume file")
        old = dict(obj["config"])
        new = self.cfg.to_dict()
        changed = sorted(k for k in new if k not in _RESUMABLE_CHANGES and old.get(k) != new[k])
        if changed:
            raise CheckpointError(
                f"cannot resume {self.resume_path}: the settings differ ({', '.join(changed)})",
                hint="resume with the same options as the interrupted run",
            )
        if obj.get("dataset_hash") != self.dataset_hash:
            raise CheckpointError(
                f"cannot resume {self.resume_path}: the training patches changed since then"
            )
        missing = self.net.load_state_dict(obj["trainable"], strict=False).missing_keys
        if any(not k.startswith("teacher.") for k in missing):
            raise CheckpointError(f"{self.resume_path} does not fit this network")
        self.opt.load_state_dict(obj["optimizer"])
        self.scaler.load_state_dict(obj["scaler"])
        self.epoch_done = int(obj["epoch_done"])
        self.epoch_in_progress = int(obj.get("epoch_in_progress", 0))
        self.batches_done = int(obj.get("batches_done", 0))
        self._loss_sum = float(obj.get("loss_sum", 0.0))
        self._loss_n = int(obj.get("loss_n", 0))
        self.global_step = int(obj["global_step"])
        self.best_value = obj.get("best_value")
        self.best = dict(obj.get("best") or {})
        self.model_id = str(obj.get("model_id") or "")
        self.history = list(obj.get("history") or [])
        self.skipped_train = set(obj.get("skipped_train") or [])
        self.skipped_valid = set(obj.get("skipped_valid") or [])
        if self.best_value is not None and self.out.is_file():
            from qupath_rkd.model.checkpoint import read_checkpoint

            payload, _ = read_checkpoint(self.out)
            self.calibration = Calibration.from_dict(dict(payload["calibration"]))
        logger.info("resuming after epoch %d (step %d)", self.epoch_done, self.global_step)

    # ---- the loop ------------------------------------------------------------------------
    def run_epochs(self) -> None:
        """Epochs ``epoch_done + 1 .. epochs``; a resumed epoch skips its first
        ``batches_done`` batches (same seeded order), so resuming is exact.

        ``progress`` gets task ``training RD``: optimiser steps of all epochs (those of a
        resumed run counted as done), with the ``epoch``, the running training ``loss`` and the
        last ``val AUROC``; each validation is a task of its own (``validation``).
        """
        cfg = self.cfg
        self.net.train()
        n_steps = self.batches_per_epoch()
        if cfg.max_steps_per_epoch is not None:
            n_steps = min(n_steps, cfg.max_steps_per_epoch)
        first = self.epoch_done + 1
        initial = self.epoch_done * n_steps
        if self.epoch_in_progress == first:
            initial += min(self.batches_done, n_steps)
        task = ProgressTask(
            self.progress, "training RD", cfg.epochs * n_steps, "step", initial=initial
        )
        with task:
            for epoch in range(first, cfg.epochs + 1):
                self._run_epoch(epoch, n_steps, task)

    def _shards(self, epoch: int, skip: int) -> Iterator[list[tuple[int, int]]] | None:
        """Data-parallel: per step, ``(dataset index, place in the step's batch)`` of this
        rank's patches (the batches its loader yields, in order); None for one process."""
        if not self.dist.enabled:
            return None

        def gen() -> Iterator[list[tuple[int, int]]]:
            for union in self.union_batches(epoch, skip):
                pos = distributed.shard_positions(self.train_labels[union], self.dist)
                yield [(int(union[p]), p) for p in pos]

        return gen()

    def _progress_info(self, epoch: int) -> dict[str, float | str]:
        info: dict[str, float | str] = {"epoch": f"{epoch}/{self.cfg.epochs}"}
        if self._loss_n:
            info["loss"] = self._loss_sum / self._loss_n
        if self.history:
            info["val AUROC"] = float(self.history[-1]["val_auroc"])
        return info

    def _run_epoch(self, epoch: int, n_steps: int, task: ProgressTask) -> None:
        cfg = self.cfg
        skip = self.batches_done if epoch == self.epoch_in_progress else 0
        self.epoch_in_progress, self.batches_done = epoch, skip
        loader = self._loader(self.train_set, epoch=epoch, skip_batches=skip)
        aug_gen = None
        if cfg.augment:
            aug_gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
            for _ in range(skip):
                augment_draws(aug_gen, cfg.batch_size)
        task.update(task.done, **self._progress_info(epoch))
        validated_at = self.history[-1]["step"] if self.history else -1
        every = cfg.validate_every_steps
        pending = every and self.global_step % every == 0 and validated_at != self.global_step
        if skip and pending:
            # a Ctrl-C right after a step stops before its validation: do it now, as the
            # uninterrupted run did, so that resuming keeps the same best model
            self.validate(epoch)
            validated_at = self.global_step
        shards = self._shards(epoch, skip)
        for batch in _stoppable(loader, self):
            if self.batches_done >= n_steps:
                break
            self._step(batch, aug_gen, next(shards) if shards is not None else None)
            self.batches_done += 1
            # every rank stops at the same step (a Ctrl-C may reach only one of them)
            if distributed.any_flag(self.stop_requested):
                raise KeyboardInterrupt
            task.advance(1, **self._progress_info(epoch))
            due = every and self.global_step % every == 0 and self.global_step != validated_at
            if due and self.batches_done < n_steps:
                self.validate(epoch)
                validated_at = self.global_step
                task.update(task.done, **self._progress_info(epoch))
        if validated_at != self.global_step or not self.history:
            self.validate(epoch)
            task.update(task.done, **self._progress_info(epoch))
        self.epoch_done, self.epoch_in_progress, self.batches_done = epoch, 0, 0
        self.save_resume()


def _train_knn(
    train_set: Dataset,
    valid_set: Dataset | None,
    cfg: TrainConfig,
    out: Path,
    dataset_hash: str,
    progress: ProgressCallback | None,
    groups: np.ndarray | None,
    t0: float,
) -> TrainResult:
    """The one-class ``knn`` scorer's training as a :class:`TrainResult`, scored in one view
    (8 views were not measured to help and cost 8x); ``groups`` as for the head."""
    from qupath_rkd.training.knn_trainer import train_local_knn

    labels = _labels_of(train_set, "training")
    cfg = dataclasses.replace(cfg, tta_views=1)
    fields = train_local_knn(
        train_set, valid_set, cfg, out, dataset_hash, progress=progress, groups=groups
    )
    swapped = swapped_labels_warning(fields["best_metrics"].get("val_auroc"), 0)
    if swapped:
        fields["warnings"].append(swapped)
    for w in fields["warnings"]:
        logger.info("%s", w)
    return TrainResult(
        n_train=_counts(labels), interrupted=False, seconds=time.monotonic() - t0, **fields
    )


def _train_head(
    train_set: Dataset,
    valid_set: Dataset | None,
    cfg: TrainConfig,
    out: Path,
    dataset_hash: str,
    progress: ProgressCallback | None,
    groups: np.ndarray | None,
    t0: float,
    slides: np.ndarray | None = None,
) -> TrainResult:
    """The head's training as a :class:`TrainResult`; Ctrl-C gives ``interrupted`` and writes no
    checkpoint (the features computed so far stay in the cache, so a rerun is quick)."""
    from qupath_rkd.training.head_trainer import train_head

    labels = _labels_of(train_set, "training")
    try:
        fields = train_head(
            train_set,
            valid_set,
            cfg,
            out,
            dataset_hash,
            progress=progress,
            groups=groups,
            slides=slides,
        )
    except KeyboardInterrupt:
        logger.warning("interrupted: no model written (features so far are cached)")
        return TrainResult(
            checkpoint=out,
            model_id="",
            best_epoch=0,
            best_step=0,
            selected_by="none",
            best_metrics={},
            history=[],
            n_train=_counts(labels),
            n_valid={"normal": 0, "tumor": 0},
            skipped_unreadable=0,
            interrupted=True,
            seconds=time.monotonic() - t0,
        )
    fields.pop("fit", None)
    fields.pop("normal_mosaics", None)
    for w in fields["warnings"]:
        logger.info("%s", w)
    return TrainResult(
        n_train=_counts(labels), interrupted=False, seconds=time.monotonic() - t0, **fields
    )


def _stoppable(loader: DataLoader, run: _Run) -> Iterator[PatchBatch]:
    """Iterate ``loader``; if its workers died from the Ctrl-C the user sent (workers get
    SIGINT too), stop as for Ctrl-C instead of failing."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except RuntimeError:
            if run.stop_requested:
                raise KeyboardInterrupt from None
            raise
        yield batch


@contextlib.contextmanager
def _deferred_sigint(run: _Run) -> Iterator[None]:
    """First Ctrl-C: finish the current step, then stop cleanly; a second one stops at once.

    Only in the main thread (signal handlers cannot be set elsewhere).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if run.stop_requested:
            raise KeyboardInterrupt
        run.stop_requested = True
        logger.warning("Ctrl-C: stopping after this step (press again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    train_set: Dataset,
    valid_set: Dataset | None,
    config: TrainConfig,
    out: str | Path,
    dataset_hash: str,
    progress: ProgressCallback | None = None,
    resume: bool = False,
    groups: np.ndarray | None = None,
    slides: np.ndarray | None = None,
) -> TrainResult:
    """Train the model ``config.scorer`` names and write the best checkpoint to ``out``.

    The head (default) is fitted by :func:`qupath_rkd.training.head_trainer.train_head` (no
    epochs; ``resume`` has nothing to continue and is ignored); a training set without tumour
    patches trains the one-class ``knn`` scorer instead
    (:func:`qupath_rkd.training.knn_trainer.train_local_knn`), with a warning. RD is trained
    here.

    Args:
        train_set: items ``(image (H, W, 3) uint8, label)`` with a ``labels`` array; needs
            normal patches, tumour patches are optional (none = the one-class ``knn`` scorer).
        valid_set: the same kind of dataset, or None/empty (then the last epoch is kept and the
            calibration is fitted on up to 2,000 training patches, with a warning).
        config: the :class:`TrainConfig`.
        out: checkpoint path (its folder must exist).
        dataset_hash: hash of the training set, stored in the checkpoint.
        progress: gets the training's events (:mod:`qupath_rkd.progress`): RD's steps with
            epoch, loss and last validation AUROC, or the head's steps (see
            :func:`~qupath_rkd.training.head_trainer.train_head`); None: no events.
        resume: continue from ``<out>.resume`` (written after each epoch and on Ctrl-C).
        groups: ``(N,)`` group of each training patch (its annotated region): the head's
            cross-validation holds whole groups out.
        slides: ``(N,)`` slide of each training patch: with tumour on two or more slides, the
            head's cross-validation holds whole slides out instead (see
            :func:`~qupath_rkd.training.head_trainer.train_head`).

    Returns:
        :class:`TrainResult`; on Ctrl-C ``interrupted`` is True and ``out`` is still a usable
        model (the best so far, or the current weights validated on up to 256 patches).

    Raises:
        DataError, ConfigError, DeviceError, TeacherWeightsError, CheckpointError.
    """
    t0 = time.monotonic()
    cfg = config.resolved()
    out = Path(out)
    if not distributed.current().is_main:
        progress = None  # data-parallel: rank 0 alone reports
    if not out.parent.is_dir():
        raise DataError(f"the folder of {out} does not exist")
    if cfg.scorer == "head":
        labels = _labels_of(train_set, "training")
        if _counts(labels)["tumor"] > 0 and _counts(labels)["normal"] > 0:
            return _train_head(
                train_set, valid_set, cfg, out, dataset_hash, progress, groups, t0, slides
            )
        if _counts(labels)["normal"] == 0:
            raise DataError(
                "the training set has no normal patches", hint="give normal patches as well"
            )
        # one class only: the head has nothing to separate; the one-class local texture kNN
        # is the measured best without tumour patches (PCam valid AUROC 0.82 against 0.445
        # for the paper's one-class RD, docs/benchmarks.md)
        cfg = dataclasses.replace(cfg, scorer="knn").resolved()
        result = _train_knn(train_set, valid_set, cfg, out, dataset_hash, progress, groups, t0)
        result.warnings.insert(
            0,
            "no tumour patches: trained the one-class texture model (knn) instead of the "
            "supervised head (PCam AUROC about 0.82 against 0.92 with 100 tumour patches, "
            "docs/benchmarks.md) — add tumour patches",
        )
        return result
    if cfg.scorer == "knn":
        return _train_knn(train_set, valid_set, cfg, out, dataset_hash, progress, groups, t0)
    run = _Run(train_set, valid_set, cfg, out, dataset_hash, progress)
    if resume:
        run.load_resume()
    logger.info(
        "training %s RD at %d px on %s: %s train, %s %s, select by %s",
        cfg.teacher,
        cfg.input_px,
        run.device,
        _counts(run.train_labels),
        run.valid_source,
        _counts(run.valid_labels),
        run.select_by,
    )
    interrupted = False
    try:
        with _deferred_sigint(run):
            run.run_epochs()
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("interrupted: saving a resume file and a usable checkpoint")
        run.save_resume()
        if not run.model_id:
            run.validate(run.epoch_done + 1, limit=256)

    warnings: list[str] = []
    n_skipped = run.n_skipped()
    if n_skipped:
        warnings.append(f"{n_skipped} unreadable or malformed images were skipped")
    if run.nonfinite_steps:
        warnings.append(f"{run.nonfinite_steps} steps had a non-finite loss and were skipped")
    if run.valid_source == "train":
        warnings.append("no validation set: kept the last epoch and calibrated on training patches")
    swapped = None
    if run.valid_source == "valid":
        swapped = swapped_labels_warning(
            run.best.get("val_auroc"), _counts(run.train_labels)["tumor"]
        )
        if swapped:
            warnings.append(swapped)
    if run.calibration_backwards and not swapped:  # one warning for one cause
        warnings.append(run.calibration_backwards)
    for w in warnings:  # the caller shows TrainResult.warnings; logged for the record
        logger.info("%s", w)
    if not interrupted and run.dist.is_main and run.resume_path.exists():
        run.resume_path.unlink()
    return TrainResult(
        checkpoint=out,
        model_id=run.model_id,
        best_epoch=int(run.best.get("epoch", 0)),
        best_step=int(run.best.get("step", 0)),
        selected_by=run.select_by,
        best_metrics=dict(run.best),
        history=list(run.history),
        n_train=_counts(run.train_labels),
        n_valid=_counts(run.valid_labels)
        if run.valid_source == "valid"
        else {"normal": 0, "tumor": 0},
        skipped_unreadable=n_skipped,
        interrupted=interrupted,
        warnings=warnings,
        calibration=run.calibration.to_dict() if run.calibration else {},
        seconds=time.monotonic() - t0,
    )

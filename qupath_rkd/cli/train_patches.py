"""`qupath-rkd train-patches`: train a patch model on folders of normal (and tumour) patches."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from qupath_rkd.cli.flags import MPP_TYPE, deprecated_alias
from qupath_rkd.constants import (
    DEFAULT_EPOCHS,
    DEFAULT_HEAD,
    DEFAULT_NORMAL_MOSAICS,
    DEFAULT_PATCH_TTA_VIEWS,
    DEFAULT_RD_LR,
    DEFAULT_SCORER,
    DEFAULT_TEACHER,
    DEFAULT_TRAIN_BATCH,
    HEADS,
    SCORERS,
    TEACHER_NAMES,
)
from qupath_rkd.errors import DataError


def _quiet(*args: object, **kwargs: object) -> None:
    """What a data-parallel rank other than 0 prints: nothing."""


def _default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


@click.command("train-patches")
@click.option(
    "--normal",
    "normal_dirs",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of normal patches (repeatable).",
)
@click.option(
    "--tumor",
    "tumor_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Folder of tumour patches (repeatable; none = the one-class knn scorer).",
)
@click.option(
    "--valid-normal",
    "valid_normal_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Validation folder of normal patches.",
)
@click.option(
    "--valid-tumor",
    "valid_tumor_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Validation folder of tumour patches (selects the best epoch by AUROC).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint to write (MODEL.pt).",
)
@click.option(
    "--teacher",
    type=click.Choice(TEACHER_NAMES),
    default=DEFAULT_TEACHER,
    show_default=True,
    help="Frozen pretrained teacher.",
)
@click.option(
    "--teacher-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="State-dict file with the teacher's ImageNet weights (offline use).",
)
@click.option(
    "--input-px",
    type=click.IntRange(32),
    help="Network input side (multiple of 32; "
    "default 96 for efficientnet_lite0, 128 for resnet18, 256 for wide_resnet50_2).",
)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=DEFAULT_EPOCHS,
    show_default=True,
    help="Passes over the training patches.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(2),
    default=DEFAULT_TRAIN_BATCH,
    show_default=True,
    help="Patches per training step (at least 2, for BatchNorm); lower it if memory runs out.",
)
@click.option("--max-tumor", type=click.IntRange(0), help="Use at most N tumour patches.")
@click.option("--max-normal", type=click.IntRange(0), help="Use at most N normal patches.")
@click.option(
    "--patch-mpp",
    "mpp",
    type=MPP_TYPE,
    metavar="UM_PER_PX",
    help="µm/px of the patches (PatchCamelyon: 0.972); the checkpoint records it and predict "
    "reads slides at it.",
)
@deprecated_alias("--mpp", "--patch-mpp", "mpp")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds the patch subsets (--max-*), the data order and the weights: the same seed "
    "gives the same model on the CPU.",
)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_RD_LR,
    show_default=True,
    help="Adam learning rate.",
)
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=None,
    help="DataLoader worker processes [default: CPUs - 1, at most 4].",
)
@click.option(
    "--balance/--no-balance",
    default=True,
    show_default=True,
    help="Half tumour, half normal in every batch (when there are tumour patches).",
)
@click.option(
    "--augment/--no-augment",
    default=False,
    show_default=True,
    help="Random flips and 90° rotations.",
)
@click.option(
    "--shortcut",
    type=click.Choice(("conv3x3", "conv1x1")),
    default="conv3x3",
    show_default=True,
    help="OCBE shortcut: conv3x3 (FW-RD) or conv1x1 (RD4AD).",
)
@click.option(
    "--score-reduction",
    type=click.Choice(("mean", "max")),
    default="mean",
    show_default=True,
    help="Patch score: mean (FW-RD) or max of the anomaly map.",
)
@click.option(
    "--max-steps-per-epoch", type=click.IntRange(1), help="Cap optimiser steps per epoch."
)
@click.option(
    "--validate-every-steps",
    type=click.IntRange(1),
    help="Also validate every N steps (with few tumour patches the model overfits within tens "
    "of steps: 25-50 is a good choice).",
)
@click.option(
    "--scorer",
    type=click.Choice(SCORERS),
    default=DEFAULT_SCORER,
    show_default=True,
    help="head: a supervised head (linear, or with --head its ensemble with a perceptron) on "
    "the frozen teacher's multi-scale features (best "
    "measured, docs/benchmarks.md); rd: the paper's reverse distillation; knn: a one-class "
    "texture model of the normal patches alone (what a run without tumour patches trains). "
    "--epochs, --lr, --batch-size and the RD options apply to rd only.",
)
@click.option(
    "--tta-views",
    type=click.Choice(("1", "2", "4", "8")),
    default=str(DEFAULT_PATCH_TTA_VIEWS),
    show_default=True,
    help="Dihedral views (rotations, mirror) averaged when the head scores a patch.",
)
@click.option(
    "--head",
    type=click.Choice(HEADS),
    default=DEFAULT_HEAD,
    show_default=True,
    help="The head on the frozen features: linear, or ensemble (its logit averaged with a small "
    "perceptron's); auto takes the ensemble from 50 tumour patches on unless the validation "
    "(or cross-validation) AUROC is lower (measured: better patch AUROC from 100 tumour patches "
    "on, a tie on whole slides; docs/benchmarks.md).",
)
@click.option(
    "--normal-mosaics",
    type=click.IntRange(0),
    default=DEFAULT_NORMAL_MOSAICS,
    show_default=True,
    help="Head: lay out held-out normal patches as this many 32 x 32 mosaics of tissue, score "
    "them with heads fitted without them, and store the heatmaps; predict sets its threshold "
    "on them (at most --target-fp-per-slide false lesions per mosaic) unless given "
    "--threshold or --tumor-free slides. 0: predict uses the calibrated 0.5.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run (OUT.resume).")
def train_patches(
    normal_dirs: tuple[Path, ...],
    tumor_dirs: tuple[Path, ...],
    valid_normal_dirs: tuple[Path, ...],
    valid_tumor_dirs: tuple[Path, ...],
    out: Path,
    teacher: str,
    teacher_weights: Path | None,
    input_px: int | None,
    epochs: int,
    batch_size: int,
    max_tumor: int | None,
    max_normal: int | None,
    mpp: float | None,
    seed: int,
    device: str,
    lr: float,
    workers: int | None,
    balance: bool,
    augment: bool,
    shortcut: str,
    score_reduction: str,
    max_steps_per_epoch: int | None,
    validate_every_steps: int | None,
    scorer: str,
    tta_views: str,
    head: str,
    normal_mosaics: int,
    resume: bool,
) -> None:
    """Train a patch model on folders of patches (PNG/JPEG/TIFF, any size).

    By default a supervised head on the frozen teacher's pooled multi-scale features, its
    L2 strength chosen on the validation folders or, without them, by 5-fold cross-validation
    on the given patches; with no tumour patches, a one-class texture model (``knn``: local
    features of normal patches in a memory bank, a tile scored by its distance from them).

    Example: qupath-rkd train-patches --normal pcam/train/0 --tumor pcam/train/1 --max-tumor 100
    --valid-normal pcam/valid/0 --valid-tumor pcam/valid/1 --patch-mpp 0.972 --out model.pt

    Data-parallel over N processes (GPUs, or CPU processes): torchrun --nproc-per-node N -m
    qupath_rkd train-patches ... (rank 0 alone prints and writes --out).
    """
    from qupath_rkd.model.device import resolve_device
    from qupath_rkd.training import distributed
    from qupath_rkd.training.config import TrainConfig
    from qupath_rkd.training.datasets import PatchFolderDataset
    from qupath_rkd.training.trainer import train

    dev = resolve_device(device)  # fail fast on --device cuda without CUDA
    # under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) join the process group; else nothing
    dist_ctx = distributed.init_from_env(dev)
    if dist_ctx.enabled:
        # after the other ranks on success; at once when an error is on its way out
        click.get_current_context().call_on_close(
            lambda: distributed.shutdown(wait=sys.exc_info()[0] is None)
        )
    echo = click.echo if dist_ctx.is_main else _quiet  # rank 0 alone reports
    if not dist_ctx.is_main:
        logging.getLogger().setLevel(logging.ERROR)
    if not out.parent.is_dir():
        raise click.UsageError(f"the folder of --out {out} does not exist")
    train_set = PatchFolderDataset(normal_dirs, tumor_dirs, max_normal, max_tumor, seed=seed)
    n_normal = int((train_set.labels == 0).sum())
    n_tumor = int((train_set.labels == 1).sum())
    if n_normal == 0:
        raise DataError(
            f"no PNG/JPEG/TIFF patches found under --normal {', '.join(map(str, normal_dirs))}"
        )
    if tumor_dirs and n_tumor == 0 and max_tumor != 0:
        raise DataError(
            f"no PNG/JPEG/TIFF patches found under --tumor {', '.join(map(str, tumor_dirs))}"
        )
    valid_set = None
    if valid_normal_dirs or valid_tumor_dirs:
        valid_set = PatchFolderDataset(valid_normal_dirs, valid_tumor_dirs)
        if len(valid_set) == 0:
            raise DataError("no PNG/JPEG/TIFF patches found in the validation folders")
    config = TrainConfig(
        scorer=scorer,
        tta_views=int(tta_views),
        head=head,
        teacher=teacher,
        teacher_weights=str(teacher_weights) if teacher_weights else None,
        input_px=input_px,
        tile_px=train_set.tile_px(),
        epochs=epochs,
        batch_size=batch_size,
        mpp=mpp,
        seed=seed,
        device=device,
        lr=lr,
        num_workers=_default_workers() if workers is None else workers,
        balance_batches=balance,
        augment=augment,
        shortcut=shortcut,
        score_reduction=score_reduction,
        max_steps_per_epoch=max_steps_per_epoch,
        validate_every_steps=validate_every_steps,
        normal_mosaics=normal_mosaics if scorer == "head" else 0,
    )
    echo(
        f"Training on {n_normal} normal + {n_tumor} tumour patches"
        + (f", validating on {len(valid_set)}" if valid_set is not None else ", no validation set")
        + f" ({teacher} teacher).",
        err=True,
    )
    from qupath_rkd.cli.progress import ProgressRenderer

    renderer = ProgressRenderer() if dist_ctx.is_main else contextlib.nullcontext()
    with renderer as progress:
        result = train(
            train_set,
            valid_set,
            config,
            out,
            train_set.fingerprint(),
            progress=progress,
            resume=resume,
        )
    for warning in result.warnings:
        echo(f"Warning: {warning}", err=True)
    if mpp is None:
        echo(
            "Note: no --patch-mpp given: the checkpoint records an unknown µm/px and predict "
            "will ask for --tile-mpp.",
            err=True,
        )
    m = result.best_metrics
    auc = m.get("val_auroc")
    auc_text = "n/a" if auc is None or auc != auc else f"{auc:.4f}"
    if result.interrupted and not result.model_id:
        echo("Interrupted before a model was written; run the same command again.", err=True)
        sys.exit(130)
    if "l2" in m:
        echo(
            f"Wrote {out} (supervised head on {teacher} features, L2 {m['l2']:g} chosen by "
            f"{result.selected_by}; validation AUROC {auc_text} on {m.get('val_source')}; "
            f"calibration "
            f"{result.calibration.get('method', 'none')}; {result.seconds:.0f} s)."
        )
        _echo_mosaic_threshold(out, mpp, m, echo)
        return
    if "bank_rows" in m:
        echo(
            f"Wrote {out} (one-class texture model on {teacher} features: {m['bank_rows']} "
            f"bank rows from {m['bank_patches']} normal patches; validation AUROC {auc_text} "
            f"on {m.get('val_source')}; calibration "
            f"{result.calibration.get('method', 'none')}; {result.seconds:.0f} s)."
        )
        _echo_mosaic_threshold(out, mpp, m, echo)
        return
    loss = m.get("val_loss", float("nan"))
    echo(
        f"Wrote {out} (epoch {result.best_epoch}, step {result.best_step}, selected by "
        f"{result.selected_by}; validation AUROC {auc_text}, loss {loss:.4f}; "
        f"calibration {result.calibration.get('method', 'none')})."
    )
    if result.interrupted:
        echo(
            f"Interrupted: {out} is usable; continue with the same command plus --resume.", err=True
        )
        sys.exit(130)


def _echo_mosaic_threshold(
    out: Path, mpp: float | None, metrics: dict[str, Any], echo: Any = click.echo
) -> None:
    """Print the threshold ``predict`` will use with its default grid and post-processing, as
    chosen on the checkpoint's normal mosaics (nothing when it has none)."""
    info = metrics.get("normal_mosaics")
    if not info:
        return
    if mpp is None:
        echo(f"{info['mosaics']} normal mosaic(s) stored: predict sets its threshold on them.")
        return
    from qupath_rkd.inference.batch import MOSAIC_FLOOR
    from qupath_rkd.inference.predict import InferenceConfig
    from qupath_rkd.lesions.operating_point import choose_on_mosaics
    from qupath_rkd.model.checkpoint import read_checkpoint
    from qupath_rkd.model.normal_mosaics import PAYLOAD_KEY, NormalMosaics

    payload, _sha = read_checkpoint(out)
    calibrated = float(payload.get("threshold", 0.5))
    mosaics = NormalMosaics.from_payload(payload[PAYLOAD_KEY])
    grids, _why = mosaics.grids(mosaics.stride_fraction)
    assert grids is not None
    op = choose_on_mosaics(
        grids,
        tile_px=mosaics.input_px,
        um_per_px=float(mpp)
        * float(payload["config"].get("tile_px") or mosaics.input_px)
        / mosaics.input_px,
        # the extent capped at the calibrated threshold, as predict resolves it
        post=InferenceConfig(extent_cap=calibrated).post_processing(),
        floor=MOSAIC_FLOOR,
    )
    echo(
        f"Threshold predict will use with its defaults: {op.threshold:.3f}, "
        f"{op.false_lesions_per_slide:.2f} false lesion(s) per mosaic there ({op.note})."
    )

"""The operating point of a patch-trained model, from its own normal patches laid out as tissue.

``train-patches`` learns from loose patches, so it knows no tumour-free slide to set the seed
threshold on (:mod:`qupath_rkd.lesions.operating_point`), and at the calibrated 0.5 a model of
100 tumour patches finds about 6 false lesions on every 9 mm² of tumour-free tissue
(docs/benchmarks.md). But the user did give tissue known to be normal: the normal patches. Here
they are laid out edge to edge as square *mosaics* (``side × side`` patches, 32 by default:
8.9 mm² at PatchCamelyon's 0.972 µm/px, about the tissue of one slide of the benchmark set) and
scored on the grid ``predict`` uses (tiles of the training side at half its step, so most tiles
straddle 2 or 4 patches, as on a slide), each mosaic by a head fitted without its patches:

1. the training patches are split into the same stratified, seeded folds as the
   cross-validation (:func:`qupath_rkd.model.head.stratified_folds`);
2. mosaic ``f`` holds up to ``side²`` normal patches of fold ``f`` (seeded order), and is scored
   by the head kept (linear or ensemble, same L2) refitted on the other folds;
3. the logits go through the model's calibration, giving a calibrated heatmap per mosaic
   ``(rows, cols)`` with ``rows = (side × input_px - input_px) / stride + 1``.

The heatmaps are stored in the checkpoint
(:meth:`qupath_rkd.model.normal_mosaics.NormalMosaics.to_payload`) rather than a threshold:
``predict`` chooses the operating point on them with its own post-processing (smoothing,
minimum size, hysteresis) as on tumour-free slides, with the rate estimated as
``(false lesions + 1/2) / mosaics`` (a mosaic counts as one slide, a smaller one as its share of
``side²``) and down to 0.05 (:func:`qupath_rkd.lesions.operating_point.choose_on_mosaics`,
:func:`qupath_rkd.inference.batch.model_operating_point`). An explicit ``--threshold`` or
``--tumor-free`` slides take precedence.

Limits, stated: the mosaics are random arrangements of patches (no tissue architecture, no
slide edges, fat or background); the rate is per 8.9 mm², so a slide with ten times that tissue
may hold about ten times the false lesions; the tiles are scored in one view (the slide
default).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from qupath_rkd.constants import DEFAULT_SLIDE_STRIDE_FRACTION, LABEL_NORMAL
from qupath_rkd.features.cache import FeatureCache
from qupath_rkd.features.extract import extract_features
from qupath_rkd.features.trunk import FeatureTrunk
from qupath_rkd.model.calibration import Calibration
from qupath_rkd.model.normal_mosaics import MIN_SIDE_PATCHES, MOSAIC_SIDE_PATCHES, NormalMosaics
from qupath_rkd.model.scorer import resize_uint8
from qupath_rkd.progress import ProgressCallback

logger = logging.getLogger(__name__)


class _MosaicTiles(Dataset):
    """The tiles of one mosaic ``(H, W, 3)`` uint8 on a ``stride``-px grid, row-major:
    items ``(tile (input_px, input_px, 3), LABEL_NORMAL)``."""

    def __init__(self, mosaic: np.ndarray, tile_px: int, stride_px: int) -> None:
        self.mosaic = mosaic
        self.tile_px = tile_px
        self.stride_px = stride_px
        self.rows = (mosaic.shape[0] - tile_px) // stride_px + 1
        self.cols = (mosaic.shape[1] - tile_px) // stride_px + 1
        self.labels = np.full(self.rows * self.cols, LABEL_NORMAL, dtype=np.int64)

    def __len__(self) -> int:
        return self.rows * self.cols

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        r, c = divmod(int(index), self.cols)
        y, x = r * self.stride_px, c * self.stride_px
        return self.mosaic[y : y + self.tile_px, x : x + self.tile_px], LABEL_NORMAL


def mosaic_members(
    labels: np.ndarray,
    ok: np.ndarray,
    folds: np.ndarray,
    n_mosaics: int,
    seed: int,
    side: int = MOSAIC_SIDE_PATCHES,
) -> list[tuple[int, np.ndarray]]:
    """``(fold, patch indices (s*s,))`` of each mosaic: fold ``f``'s readable normal patches in
    a seeded order, the largest square of them up to ``side``; folds with fewer than
    ``MIN_SIDE_PATCHES²`` give none. At most ``n_mosaics``, the lowest folds first."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, np.ndarray]] = []
    for f in range(int(folds.max()) + 1 if len(folds) else 0):
        members = np.flatnonzero((folds == f) & ok & (labels == LABEL_NORMAL))
        members = rng.permutation(members)
        s = min(side, math.isqrt(len(members)))
        if s < MIN_SIDE_PATCHES:
            continue
        out.append((f, members[: s * s]))
        if len(out) >= n_mosaics:
            break
    return out


def _mosaic(dataset: Dataset, members: np.ndarray, side: int, input_px: int) -> np.ndarray:
    """``(side * input_px, side * input_px, 3)`` uint8: the patches row-major, each resized to
    ``input_px`` as the trunk sees it."""
    out = np.zeros((side * input_px, side * input_px, 3), dtype=np.uint8)
    for k, i in enumerate(members.tolist()):
        image, _label = dataset[i]
        tile = resize_uint8(torch.from_numpy(np.ascontiguousarray(image)), input_px).numpy()
        r, c = divmod(k, side)
        out[r * input_px : (r + 1) * input_px, c * input_px : (c + 1) * input_px] = tile
    return out


def build_normal_mosaics(
    trunk: FeatureTrunk,
    dataset: Dataset,
    members: Sequence[tuple[int, np.ndarray]],
    fold_logits: Callable[[int, np.ndarray], np.ndarray],
    calibration: Calibration,
    *,
    input_px: int,
    device: torch.device,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
    progress: ProgressCallback | None = None,
) -> NormalMosaics | None:
    """Score the mosaics of :func:`mosaic_members` (module doc, steps 2-3).

    Args:
        trunk: the frozen trunk (features of view 0, as slides are scored).
        dataset: the training patches (items ``(image (H, W, 3) uint8, label)``).
        members: ``(fold, patch indices)`` per mosaic.
        fold_logits: ``(fold, features (M, 1, D))`` -> ``(M,)`` logits of the head fitted
            without that fold.
        calibration: the model's calibration (raw logit -> probability).
        input_px: the network input side (tile side; the step is half of it).

    Returns ``None`` when ``members`` is empty.
    """
    if not members:
        return None
    t0 = time.monotonic()
    stride = max(1, round(input_px * DEFAULT_SLIDE_STRIDE_FRACTION))
    grids: list[np.ndarray] = []
    sides: list[int] = []
    for n, (fold, idx) in enumerate(members):
        side = math.isqrt(len(idx))
        tiles = _MosaicTiles(_mosaic(dataset, idx, side, input_px), input_px, stride)
        feats = extract_features(
            trunk,
            tiles,
            input_px=input_px,
            views=[0],
            device=device,
            cache=cache,
            batch_size=batch_size,
            progress=progress,
            task=f"normal mosaic {n + 1}/{len(members)}",
        )
        logits = fold_logits(fold, feats.values[:, :1])
        grids.append(calibration.apply(logits).reshape(tiles.rows, tiles.cols))
        sides.append(side)
    logger.info(
        "%d normal mosaic(s) of %s patches scored in %.1f s",
        len(grids),
        "/".join(f"{s}x{s}" for s in sides),
        time.monotonic() - t0,
    )
    return NormalMosaics(grids, sides, int(input_px), int(stride))


__all__ = ["build_normal_mosaics", "mosaic_members"]

"""Pooled trunk features of a patch dataset, per dihedral view, through the feature cache.

Each item is read once, resized to the network input (``input_px``), hashed
(:func:`~qupath_rkd.features.cache.tile_key`), looked up in the cache for every requested view,
and only the missing views run through the trunk. Features are always rounded to float16, so a
cold and a warm cache give the same array.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from qupath_rkd.features.cache import FeatureCache, feature_space, state_dict_sha256, tile_key
from qupath_rkd.features.trunk import LAYOUT_VERSION, FeatureTrunk
from qupath_rkd.features.views import view_tiles
from qupath_rkd.model.scorer import preprocess_batch
from qupath_rkd.progress import ProgressCallback, ProgressTask

logger = logging.getLogger(__name__)


@dataclass
class Features:
    """Features of a dataset.

    Attributes:
        values: ``(N, V, D)`` float16, item ``i`` in view ``views[v]`` (zeros where not ``ok``).
        ok: ``(N,)`` bool, False for unreadable or malformed items.
        views: the dihedral views, in the order of axis 1.
        computed, cached: tile-views run through the trunk / found in the cache.
        seconds: wall time.
    """

    values: np.ndarray
    ok: np.ndarray
    views: list[int]
    computed: int
    cached: int
    seconds: float


def trunk_space(trunk: FeatureTrunk, input_px: int) -> str:
    """The cache space of ``trunk`` at ``input_px`` (hashes the weights: about 20 ms)."""
    return feature_space(
        trunk.name, state_dict_sha256(trunk), LAYOUT_VERSION, input_px, trunk.pooling
    )


@torch.inference_mode()
def trunk_features(
    trunk: FeatureTrunk, tiles: torch.Tensor, view: int, device: torch.device
) -> np.ndarray:
    """``(B, S, S, 3)`` uint8 tiles (already at the input side) -> ``(B, D)`` float16."""
    x = preprocess_batch(view_tiles(tiles, view), int(tiles.shape[1]), device)
    return trunk(x).float().cpu().numpy().astype(np.float16)


def extract_features(
    trunk: FeatureTrunk,
    dataset: Dataset,
    *,
    input_px: int,
    views: Sequence[int] = (0,),
    device: torch.device | None = None,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: ProgressCallback | None = None,
    task: str = "features",
) -> Features:
    """Features of every item of ``dataset`` (items ``(image (H, W, 3) uint8, label)``) in each of
    ``views``; images are resized to ``input_px`` as for training and scoring.

    ``progress`` gets the events of task ``task``: ``done`` items (readable or not) of
    ``total = len(dataset)``, unit ``patch``, after each batch.
    """
    from qupath_rkd.training.datasets import Collate, IndexedDataset

    t0 = time.monotonic()
    device = device or torch.device("cpu")
    trunk = trunk.to(device)
    space = trunk_space(trunk, input_px) if cache is not None and cache.enabled else ""
    n = len(dataset)  # type: ignore[arg-type]
    values = np.zeros((n, len(views), trunk.dim), dtype=np.float16)
    ok = np.zeros(n, dtype=bool)
    computed = cached = 0
    loader = DataLoader(
        IndexedDataset(dataset),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=Collate(input_px),
    )
    with ProgressTask(progress, task, total=n, unit="patch") as bar:
        for batch in loader:
            idx = batch.indices.numpy()
            if len(batch):
                ok[idx] = True
                keys = [tile_key(t) for t in batch.images.numpy()] if space else []
                for v_pos, view in enumerate(views):
                    hits = cache.get(space, keys, view, trunk.dim) if space and cache else {}
                    for j, vec in hits.items():
                        values[idx[j], v_pos] = vec
                    todo = [j for j in range(len(batch)) if j not in hits]
                    cached += len(hits)
                    if todo:
                        feats = trunk_features(trunk, batch.images[todo], view, device)
                        values[idx[todo], v_pos] = feats
                        computed += len(todo)
                        if space and cache is not None:
                            cache.put(
                                space, [(keys[j], feats[k]) for k, j in enumerate(todo)], view
                            )
            bar.advance(len(batch) + len(batch.skipped))
    seconds = time.monotonic() - t0
    logger.info(
        "features of %d items x %d views: %d computed, %d from the cache, %.1f s",
        n,
        len(views),
        computed,
        cached,
        seconds,
    )
    return Features(values, ok, list(views), computed, cached, seconds)

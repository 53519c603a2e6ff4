"""Stain jitter: same tissue, other staining strengths; seeded per item; bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2hed

from qupath_rkd.errors import DataError
from qupath_rkd.features.stain import StainJitterDataset, hed_jitter
from qupath_rkd.training.datasets import ArrayDataset


def _tissue(seed: int = 0) -> np.ndarray:
    """A purple-pink (H&E-like) 32 x 32 tile with texture."""
    rng = np.random.default_rng(seed)
    base = np.array([180, 110, 170], dtype=np.float64)
    return np.clip(base + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)


def test_strength_zero_is_the_tile_and_jitter_changes_the_stain_not_the_layout() -> None:
    tile = _tissue()
    rng = np.random.default_rng(1)
    assert np.array_equal(hed_jitter(tile, rng, 0.0), tile)
    out = hed_jitter(tile, rng, 0.2)
    assert out.shape == tile.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - tile).mean() > 1.0  # the colours moved
    # the haematoxylin pattern (which pixel is darker) survives the jitter
    h_in, h_out = rgb2hed(tile)[..., 0].ravel(), rgb2hed(out)[..., 0].ravel()
    assert np.corrcoef(h_in, h_out)[0, 1] > 0.9


def test_bad_input_is_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="uint8"):
        hed_jitter(np.zeros((8, 8, 3), np.float32), rng, 0.1)
    with pytest.raises(DataError, match=">= 0"):
        hed_jitter(_tissue(), rng, -0.1)
    with pytest.raises(DataError, match="copies"):
        StainJitterDataset(ArrayDataset(np.stack([_tissue()]), np.array([1])), 0, 0.1)


def test_copies_are_seeded_per_item_and_copy() -> None:
    base = ArrayDataset(np.stack([_tissue(0), _tissue(1)]), np.array([1, 1]))
    ds = StainJitterDataset(base, copies=2, strength=0.1, seed=3)
    assert len(ds) == 4
    again = StainJitterDataset(base, copies=2, strength=0.1, seed=3)
    for i in range(4):
        assert np.array_equal(ds[i][0], again[i][0])  # the same colours every time
        assert ds[i][1] == 1
    assert not np.array_equal(ds[0][0], ds[2][0])  # copy 0 and copy 1 of item 0 differ

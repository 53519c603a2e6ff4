"""The 8 dihedral views of a square tile (4 rotations x optional mirror), for test-time
augmentation and for augmenting the rare class.

View ``v`` in ``0..7``: rotate by ``v % 4`` quarter turns (counter-clockwise, ``torch.rot90`` on
the image's row/column axes), then mirror left-right when ``v >= 4``. View 0 is the tile itself.
Histology has no preferred orientation, so every view is an equally valid image of the tissue.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qupath_rkd.errors import DataError

N_VIEWS = 8


def view_tiles(tiles: Tensor, view: int) -> Tensor:
    """``(B, H, W, C)`` (any dtype, ``H == W``) -> the same tiles seen in ``view`` (a copy)."""
    if not 0 <= view < N_VIEWS:
        raise DataError(f"a dihedral view is 0..{N_VIEWS - 1}, got {view}")
    if tiles.ndim != 4 or tiles.shape[1] != tiles.shape[2]:
        raise DataError(f"views need square (B, H, W, C) tiles, got {tuple(tiles.shape)}")
    out = torch.rot90(tiles, view % 4, dims=(1, 2))
    if view >= 4:
        out = out.flip(2)
    return out.contiguous()


def view_list(n_views: int) -> list[int]:
    """The first ``n_views`` views (1 = the tile only, 8 = all); raises for other counts."""
    if n_views not in (1, 2, 4, 8):
        raise DataError(f"test-time views must be 1, 2, 4 or 8, got {n_views}")
    # 1: identity; 2: + mirror; 4: the 4 rotations; 8: all
    return {1: [0], 2: [0, 4], 4: [0, 1, 2, 3], 8: list(range(N_VIEWS))}[n_views]


def view_images(x: Tensor, view: int) -> Tensor:
    """``(B, C, H, W)`` network inputs -> the same images in ``view`` (as :func:`view_tiles`
    does for ``(B, H, W, C)`` tiles: the same rotation of rows and columns, the same mirror)."""
    if not 0 <= view < N_VIEWS:
        raise DataError(f"a dihedral view is 0..{N_VIEWS - 1}, got {view}")
    out = torch.rot90(x, view % 4, dims=(2, 3))
    return out.flip(3) if view >= 4 else out

"""Which labelled tiles belong together: connected regions, for validation that never scores a
tile with a model trained on its neighbours.

Tiles of one slide and one label that touch on the tile grid (8-connectivity) form one region;
a region is what a pathologist outlined (or the tumour-free tissue of a slide), so holding out
whole regions measures what a new annotation would see, not a neighbouring tile of the same
outline (which shares most of its context and gives an optimistic score).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from qupath_rkd.labels.labelled_set import TileItem


def tile_groups(items: Sequence[TileItem]) -> np.ndarray:
    """``(N,)`` int64 region id of each tile: the connected component (8-neighbourhood on the
    slide's tile grid, level-0 px as in :class:`TileItem`) of tiles with the same slide and
    label. The grid step of a slide is the smallest positive distance between tile corners
    along x or y."""
    from scipy import ndimage

    groups = np.full(len(items), -1, dtype=np.int64)
    by_key: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_key[(item.slide_path, int(item.label))].append(i)
    step_of: dict[str, int] = {}
    for path in {item.slide_path for item in items}:
        coords = np.array([(t.x_px, t.y_px) for t in items if t.slide_path == path])
        diffs = [np.diff(np.unique(coords[:, a])) for a in (0, 1)]
        positive = np.concatenate([d[d > 0] for d in diffs])
        step_of[path] = int(positive.min()) if len(positive) else 1
    next_id = 0
    for (path, _label), idx in sorted(by_key.items()):
        step = step_of[path]
        xy = np.array([(items[i].x_px, items[i].y_px) for i in idx], dtype=np.int64)
        cell = (xy - xy.min(axis=0)) // step
        grid = np.zeros(tuple(cell.max(axis=0)[::-1] + 1), dtype=bool)
        grid[cell[:, 1], cell[:, 0]] = True
        comp, n = ndimage.label(grid, structure=np.ones((3, 3), dtype=bool))
        groups[idx] = comp[cell[:, 1], cell[:, 0]] - 1 + next_id
        next_id += n
    return groups

"""Connected regions of labelled tiles (the units the head's cross-validation holds out)."""

from __future__ import annotations

import numpy as np

from qupath_rkd.labels.labelled_set import TileItem
from qupath_rkd.labels.regions import tile_groups


def test_touching_tiles_of_one_label_and_slide_are_one_region() -> None:
    t = 100
    items = [
        TileItem("a.svs", 0, 0, 1),
        TileItem("a.svs", t, t, 1),  # diagonal neighbour: same region
        TileItem("a.svs", 5 * t, 0, 1),  # far away: another region
        TileItem("a.svs", 2 * t, 0, 0),  # normal next to tumour: its own region
        TileItem("b.svs", 0, 0, 1),  # same place, another slide
        TileItem("a.svs", 3 * t, 0, 0),
    ]
    g = tile_groups(items)
    assert g[0] == g[1]
    assert len({g[0], g[2], g[3], g[4]}) == 4
    assert g[3] == g[5]
    assert (g >= 0).all() and len(np.unique(g)) == 4

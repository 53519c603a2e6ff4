"""Normal outlines set sync's operating point only where no tumour-free or fully annotated slide
is known (issue 10, point 2; issue 13's FROC at the operating point).

Normal outlines are drawn where the model needed teaching, so they are not a sample of normal
tissue: counted as their share of a slide, the active-learning benchmark's hard regions pushed
the threshold above the held-out tumours (``benchmarks/operating_point_rules.py``). Here a
normal outline over the hottest tissue of the small demo's unlabelled slide C is added to what
sync knows: with the tumour-free B and the fully annotated A known, the threshold is the one
chosen without it and the note names C; alone, it sets the threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from shapely.geometry import box
from sync_helpers import FAST

from qupath_rkd.inference import predict_slide
from qupath_rkd.lesions.operating_point import NegativeHeatmap
from qupath_rkd.model.scorer import load_model
from qupath_rkd.qupath.backends import get_backend
from qupath_rkd.qupath.project import open_project
from qupath_rkd.sync.config import load_config
from qupath_rkd.sync.operating import NegativeSource, representative
from qupath_rkd.sync.report import SyncOutcome
from qupath_rkd.sync.runner import (
    MODEL_RELPATH,
    _negative_sources,
    _operating_point,
    inference_config,
)

C = "C.tif"


def test_representative_keeps_whole_slides_when_there_are_any() -> None:
    hm = np.zeros((2, 2), np.float32)
    region = NegativeSource("1", False, normal=box(0, 0, 1, 1))
    free = NegativeSource("2", True)
    full = NegativeSource("3", False, tumor=box(0, 0, 1, 1))
    negs = {k: NegativeHeatmap(hm, None, k) for k in "123"}  # type: ignore[arg-type]
    got, left = representative([(region, negs["1"]), (free, negs["2"]), (full, negs["3"])])
    assert [n.name for n in got] == ["2", "3"] and left == ["1"]
    got, left = representative([(region, negs["1"])])
    assert [n.name for n in got] == ["1"] and left == []
    assert representative([]) == ([], [])


def test_a_hard_normal_outline_does_not_raise_the_threshold(synced_copy: Path) -> None:
    project = synced_copy
    config = load_config(project, dict(FAST))
    backend, _ = get_backend(open_project(project), "geojson")
    entries = list(backend.images())
    c = {e.name: e for e in entries}[C]
    sets = {e.entry_id: backend.read_annotations(e) for e in entries}
    sources = _negative_sources(entries, sets, config)
    model = load_model(project / MODEL_RELPATH, device="cpu")
    assert sources and all(s.tumor_free or s.fully_annotated for s in sources.values())

    # a normal outline around C's hottest tile: where a pathologist would correct the model
    pred = predict_slide(c.path, model, config=inference_config(config, c.mpp))
    hottest = int(np.nanargmax(pred.tiles.probability))
    x, y = pred.tiles.xy_px[hottest]
    side = pred.tiles.tile_level0_px
    outline = box(x - side, y - side, x + 2 * side, y + 2 * side)
    hard = {**sources, c.entry_id: NegativeSource(c.entry_id, False, normal=outline)}

    def choose(srcs: dict[str, NegativeSource]) -> dict:
        op, _ = _operating_point(entries, sets, srcs, model, config, SyncOutcome(project), None)
        return op

    base, with_hard = choose(sources), choose(hard)
    assert with_hard["threshold"] == base["threshold"]
    assert with_hard["n_regions"] == base["n_regions"]  # A (fully annotated) only
    assert f"the normal outlines on {C} train the model but are not counted" in with_hard["note"]
    # alone, the outline is what is known: it sets the threshold, above C's hottest tissue
    alone = choose({c.entry_id: hard[c.entry_id]})
    assert alone["method"] == "tumor-free" and alone["n_regions"] == 1
    assert "not counted" not in alone["note"]
    assert alone["threshold"] > base["threshold"]

"""Regression: a lesion too thin for any tile to reach the seed was never submitted, so even a
perfect heatmap lost it in ``evaluate``'s FROC; the candidate list ``predict`` now writes
submits its heatmap maximum too, and the FROC rises."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from shapely.geometry import box

from qupath_rkd.evaluation.camelyon16 import evaluation_mask
from qupath_rkd.evaluation.perfect_heatmap import perfect_heatmap
from qupath_rkd.evaluation.run import evaluate
from qupath_rkd.inference.write import candidates_csv
from qupath_rkd.lesions.candidates import Candidates, candidate_detections
from qupath_rkd.lesions.pipeline import find_lesions
from qupath_rkd.lesions.postprocess import PostProcessing
from qupath_rkd.qupath.geojson import make_feature, write_geojson

MPP = 0.972
SIZE_PX = 2000
TILE_PX = 96
SEED = 0.5
#: a 486 µm square: found at the seed
BIG = box(300, 300, 800, 800)
#: 288 × 31 µm through the centres of tile row 10: at most a third of any tile is tumour, but
#: grown by 37.5 µm it is a Camelyon16 lesion (major axis >= 275 µm), not an ITC
THIN = box(1104, 1000, 1400, 1032)


def _submit(folder, slide_id: str, cands: Candidates) -> None:
    (folder / "camelyon16").mkdir(parents=True, exist_ok=True)
    (folder / "camelyon16" / f"{slide_id}.csv").write_text(candidates_csv(cands))


def test_evaluate_froc_on_the_perfect_heatmap_rises_with_sub_seed_candidates(tmp_path) -> None:
    mask = evaluation_mask([BIG, THIN], mpp=MPP, slide_size_px=(SIZE_PX, SIZE_PX))
    assert mask.n_lesions == 2  # neither is an ITC
    truth = tmp_path / "truth"
    truth.mkdir()
    write_geojson(
        truth / "t.geojson",
        [make_feature(p, object_type="annotation", class_name="Tumor") for p in (BIG, THIN)],
    )
    write_geojson(truth / "n.geojson", [])  # a tumour-free slide
    post = PostProcessing()  # the defaults predict uses
    heatmaps = {
        slide_id: perfect_heatmap(
            polys,
            slide_size_px=(SIZE_PX, SIZE_PX),
            mpp=MPP,
            tile_level0_px=TILE_PX,
            stride_level0_px=TILE_PX,
        )
        for slide_id, polys in (("t", [BIG, THIN]), ("n", []))
    }
    assert 0.3 < float(np.nanmax(heatmaps["t"].probability[10])) < SEED  # THIN's best tile
    # The organisers' FROC never uses the lowest submitted probability as a threshold: one
    # weak false positive on the tumour-free slide stands in for the tail of a real list.
    stray = heatmaps["n"].probability.copy()
    stray[5, 5] = 0.1
    heatmaps["n"] = dataclasses.replace(heatmaps["n"], probability=stray)
    lesions_only, with_candidates = tmp_path / "lesions", tmp_path / "candidates"
    for slide_id, hm in heatmaps.items():
        found = find_lesions(hm, SEED, post)
        peaks = Candidates(
            np.array([les.max_probability for les in found.lesions]),
            np.array([les.peak_xy_px[0] for les in found.lesions]),
            np.array([les.peak_xy_px[1] for les in found.lesions]),
            np.ones(len(found.lesions), bool),
        )
        _submit(lesions_only, slide_id, peaks)  # what predict wrote before
        cands = candidate_detections(found.smoothed, found.lesions, seed_threshold=SEED)
        _submit(with_candidates, slide_id, cands)
    before = evaluate(truth, lesions_only, mpp=MPP)
    after = evaluate(truth, with_candidates, mpp=MPP)
    assert before.froc.n_lesions == after.froc.n_lesions == 2
    assert before.froc.score == pytest.approx(0.5)  # THIN was never submitted
    assert after.froc.score == pytest.approx(1.0)  # no false positive on a perfect heatmap
    rows = {r["slide"]: r for r in after.slides}
    assert rows["t"]["lesions_hit"] == 2 and rows["t"]["false_positives"] == 0
    assert rows["n"]["detections"] == rows["n"]["false_positives"] == 1
    assert {r["slide"]: r["detections"] for r in before.slides} == {"t": 1, "n": 0}

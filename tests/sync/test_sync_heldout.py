"""Sync's operating point is chosen on out-of-sample heatmaps (issue 10, point 2).

The small demo trains on A (tumour outlined, fully annotated: normal away from its tumour) and
B (tumour-free); both are also where the operating point is measured. B is scored by a head
fitted without B's tiles; A holds every tumour tile (without it no tumour tile remains), so A is
scored band by band, each band by a head fitted without that band's tiles; B with fewer normal
tiles elsewhere (more than ``DOMINANT_SHARE`` of them) would be too. Recomputed here by direct
refits (features straight from the trunk, no cache, the final model's L2) and the same
threshold search.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from sync_helpers import FAST
from torch.utils.data import Subset

from qupath_rkd.constants import DEFAULT_CANDIDATE_FLOOR, LABEL_TUMOR
from qupath_rkd.features.extract import extract_features
from qupath_rkd.features.views import view_list
from qupath_rkd.inference import predict_slide
from qupath_rkd.labels import LabelledSet
from qupath_rkd.lesions.operating_point import choose_operating_point, slide_equivalents
from qupath_rkd.model.head import HeadFit, HeadNetwork, fit_head
from qupath_rkd.model.scorer import TrainedModel, load_model
from qupath_rkd.qupath.backends import get_backend
from qupath_rkd.qupath.project import open_project
from qupath_rkd.slides.tiles_dataset import SlideTileDataset
from qupath_rkd.sync.config import load_config
from qupath_rkd.sync.heldout import (
    DOMINANT_SHARE,
    HELD_OUT_BANDS,
    HELD_OUT_FOLDS,
    BandFolds,
    held_out_heads,
    held_out_heatmap,
)
from qupath_rkd.sync.operating import negative_heatmap
from qupath_rkd.sync.runner import (
    MODEL_RELPATH,
    _negative_sources,
    _train_config,
    build_labelled_set,
    inference_config,
)
from qupath_rkd.training.config import TrainConfig

A, B = "A tumour annotated.tif", "B tumour-free.tif"


def test_operating_point_is_chosen_on_held_out_heatmaps(synced: Path) -> None:
    report = json.loads((synced / "qupath-rkd" / "report.json").read_text(encoding="utf-8"))
    op = report["operating_point"]
    # B is left out whole; A holds every tumour tile (without all of it no tumour would remain),
    # so A is held out band by band
    assert op["method"] == "tumor-free" and op["held_out"] == HELD_OUT_FOLDS, op
    assert f"{B} scored by heads fitted without their labelled tiles" in op["note"]
    assert f"{A} scored band by band" in op["note"]

    config = load_config(synced, dict(FAST))
    backend, _ = get_backend(open_project(synced), "geojson")
    entries = {e.name: e for e in backend.images()}
    sets = {e.entry_id: backend.read_annotations(e) for e in entries.values()}
    labelled = build_labelled_set(list(entries.values()), sets, config)
    model = load_model(synced / MODEL_RELPATH, device="cpu")
    assert isinstance(model.net, HeadNetwork)
    l2 = float(model.info["metrics"]["l2"])
    a_path, b_path = str(entries[A].path), str(entries[B].path)
    on_a = [it for it in labelled.items if it.slide_path == a_path]
    n_normal = sum(it.label != LABEL_TUMOR for it in labelled.items)
    b_normal = sum(it.label != LABEL_TUMOR for it in labelled.items if it.slide_path == b_path)
    assert b_normal <= DOMINANT_SHARE * n_normal  # B: left out whole
    assert all(it.slide_path == a_path for it in labelled.items if it.label == LABEL_TUMOR)

    # the direct refits: every labelled tile but B's; every one but A's left of the first
    # quartile of A's tile x
    direct_b = _direct_refit(
        [it for it in labelled.items if it.slide_path != b_path], labelled, model, l2
    )
    edges = np.unique(np.quantile([it.x_px for it in on_a], [0.25, 0.5, 0.75]))
    direct_a = _direct_refit(
        [it for it in labelled.items if not (it.slide_path == a_path and it.x_px < edges[0])],
        labelled,
        model,
        l2,
    )

    # sync's fold head of B and first band head of A are those refits
    train_config = _train_config(config, len(labelled.items))
    heads = held_out_heads(labelled, [a_path, b_path], model, train_config, cache=None)
    assert set(heads.fits) == {a_path, b_path} and heads.l2 == l2
    fold_b, folds_a = heads.fits[b_path], heads.fits[a_path]
    assert isinstance(fold_b, HeadFit)  # the final model is linear: so is its fold head
    assert np.allclose(fold_b.weight, direct_b.weight, atol=1e-4 * np.abs(direct_b.weight).max())
    assert fold_b.bias == pytest.approx(direct_b.bias, abs=1e-4)
    assert isinstance(folds_a, BandFolds) and len(folds_a.fits) == HELD_OUT_BANDS
    np.testing.assert_array_equal(folds_a.edges_x_px, edges)
    first_a = folds_a.fits[0]
    assert isinstance(first_a, HeadFit)
    assert np.allclose(first_a.weight, direct_a.weight, atol=1e-4 * np.abs(direct_a.weight).max())

    # B and A scored by their heads (from the features their predictions return)
    sources = _negative_sources(list(entries.values()), sets, config)
    cfg_b = dataclasses.replace(inference_config(config, entries[B].mpp), return_features=True)
    pred_b = predict_slide(entries[B].path, model, config=cfg_b)
    assert pred_b.tile_features is not None
    assert pred_b.tile_features.shape[0] == len(pred_b.tiles)
    assert pred_b.tile_features.dtype == np.float16  # one view: exactly what the head sees
    cfg_a = dataclasses.replace(inference_config(config, entries[A].mpp), return_features=True)
    pred_a = predict_slide(entries[A].path, model, config=cfg_a)
    assert pred_a.tile_features is not None
    held_b = held_out_heatmap(pred_b, fold_b, model)
    held_a = held_out_heatmap(pred_a, folds_a, model)
    # a tile of A's first band carries the band refit's probability
    first = np.flatnonzero(pred_a.tiles.xy_px[:, 0] < edges[0])[0]
    r, c = pred_a.tiles.rc[first]
    row = pred_a.tile_features[first : first + 1].astype(np.float32)
    assert held_a.probability[r, c] == pytest.approx(
        float(model.calibrate(direct_a.logits(row))[0]), abs=1e-4
    )
    negatives = [
        negative_heatmap(sources[entries[A].entry_id], held_a, A),
        negative_heatmap(sources[entries[B].entry_id], held_b, B),
    ]
    # the extent capped at the calibrated threshold, as predict_slide's resolved config has it
    post = dataclasses.replace(
        inference_config(config, None).post_processing(), extent_cap=model.threshold
    )
    target = float(config.get("inference.target_fp_per_slide"))
    # B is a whole tumour-free slide: down to the candidate floor
    assert slide_equivalents(negatives) >= 1.0
    expect = choose_operating_point(
        negatives, post, target_fp_per_slide=target, floor=DEFAULT_CANDIDATE_FLOOR
    )
    assert op["threshold"] == pytest.approx(expect.threshold, abs=1e-4)
    assert op["false_lesions_per_slide"] == pytest.approx(expect.false_lesions_per_slide)

    # the point of it: the final model learnt B's tiles as normal, so its own heatmap of B is
    # optimistic; a head that never saw them gives them more tumour probability
    tissue = np.isfinite(pred_b.heatmap.probability)
    assert np.isfinite(held_b.probability).sum() == tissue.sum()
    assert np.nanmean(held_b.probability) > np.nanmean(pred_b.heatmap.probability)

    # with fewer normal tiles elsewhere B holds more than DOMINANT_SHARE of them: band by band
    a_normal = [it for it in on_a if it.label != LABEL_TUMOR]
    kept = a_normal[:: max(1, len(a_normal) // 4) * 2]
    fewer = dataclasses.replace(
        labelled, items=[it for it in labelled.items if it not in set(a_normal)] + kept
    )
    assert b_normal > DOMINANT_SHARE * (b_normal + len(kept))
    assert isinstance(
        held_out_heads(fewer, [b_path], model, train_config, cache=None).fits[b_path], BandFolds
    )

    # an ensemble model (training.head = "ensemble" / "auto") gets ensemble fold heads: the
    # same linear refit plus a perceptron fitted on the same rows, scored as their mean
    from qupath_rkd.model.head import EnsembleFit
    from qupath_rkd.model.mlp_head import MlpHead

    model.net.mlp = MlpHead(pred_b.tile_features.shape[-1])
    heads = held_out_heads(labelled, [a_path, b_path], model, train_config, cache=None)
    ens = heads.fits[b_path]
    assert isinstance(ens, EnsembleFit)
    assert np.allclose(
        ens.linear.weight, direct_b.weight, atol=1e-4 * np.abs(direct_b.weight).max()
    )
    bands_a = heads.fits[a_path]
    assert isinstance(bands_a, BandFolds) and all(isinstance(f, EnsembleFit) for f in bands_a.fits)
    feats_b = pred_b.tile_features.astype(np.float32)
    np.testing.assert_allclose(
        ens.logits(feats_b), 0.5 * (ens.linear.logits(feats_b) + ens.mlp.logits(feats_b))
    )
    assert not np.allclose(ens.logits(feats_b), ens.linear.logits(feats_b))


def _direct_refit(items: list, labelled: LabelledSet, model: TrainedModel, l2: float) -> HeadFit:
    """The head fitted on ``items`` as sync's trainer fits it, with features straight from the
    trunk (no cache): view 0 of every tile and the rare views of the tumour tiles."""
    tiles = SlideTileDataset(
        items, tile_px=labelled.tile_px, tile_mpp=labelled.tile_mpp, slide_mpp=labelled.slide_mpp
    )
    trunk = model.net.trunk
    base = extract_features(trunk, tiles, input_px=model.input_px, views=[0], cache=None)  # type: ignore[arg-type]
    tumour = [i for i, it in enumerate(items) if it.label == LABEL_TUMOR]
    rare = [v for v in view_list(TrainConfig().rare_views) if v != 0]
    extra = extract_features(
        trunk,  # type: ignore[arg-type]
        Subset(tiles, tumour),  # type: ignore[arg-type]
        input_px=model.input_px,
        views=rare,
        cache=None,
    )
    assert base.ok.all() and extra.ok.all()
    x = np.concatenate([base.values[:, 0], extra.values.reshape(-1, base.values.shape[-1])])
    y = np.concatenate([[it.label for it in items], np.full(len(tumour) * len(rare), LABEL_TUMOR)])
    return fit_head(x.astype(np.float32), y, l2)

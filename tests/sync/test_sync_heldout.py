"""Sync's operating point is chosen on out-of-sample heatmaps (issue 10, point 2).

The small demo trains on A (tumour outlined, fully annotated: normal away from its tumour) and
B (tumour-free); both are also where the operating point is measured. B is scored by a head
fitted without B's tiles; without A's tiles no tumour tile remains, so A stays in-sample and
the report says so. Recomputed here by a direct refit (features straight from the trunk, no
cache, the final model's L2) and the same threshold search.
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
from qupath_rkd.lesions.operating_point import choose_operating_point, slide_equivalents
from qupath_rkd.model.head import HeadFit, HeadNetwork, fit_head
from qupath_rkd.model.scorer import load_model
from qupath_rkd.qupath.backends import get_backend
from qupath_rkd.qupath.project import open_project
from qupath_rkd.slides.tiles_dataset import SlideTileDataset
from qupath_rkd.sync.config import load_config
from qupath_rkd.sync.heldout import HELD_OUT_PARTLY, held_out_heads, held_out_heatmap
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
    assert op["method"] == "tumor-free" and op["held_out"] == HELD_OUT_PARTLY, op
    assert f"{B} scored by heads fitted without their labelled tiles" in op["note"]
    assert f"{A} (without its tiles no tumour tile remains)" in op["note"]

    config = load_config(synced, dict(FAST))
    backend, _ = get_backend(open_project(synced), "geojson")
    entries = {e.name: e for e in backend.images()}
    sets = {e.entry_id: backend.read_annotations(e) for e in entries.values()}
    labelled = build_labelled_set(list(entries.values()), sets, config)
    model = load_model(synced / MODEL_RELPATH, device="cpu")
    assert isinstance(model.net, HeadNetwork)
    l2 = float(model.info["metrics"]["l2"])
    b_path = str(entries[B].path)

    # the direct refit: every labelled tile but B's, view 0 and the tumour tiles' extra views
    items = [it for it in labelled.items if it.slide_path != b_path]
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
    direct = fit_head(x.astype(np.float32), y, l2)

    # sync's fold head is that refit
    heads = held_out_heads(
        labelled, [b_path], model, _train_config(config, len(labelled.items)), cache=None
    )
    assert set(heads.fits) == {b_path} and heads.l2 == l2
    fold = heads.fits[b_path]
    assert isinstance(fold, HeadFit)  # the final model is linear: so is its fold head
    assert np.allclose(fold.weight, direct.weight, atol=1e-4 * np.abs(direct.weight).max())
    assert fold.bias == pytest.approx(direct.bias, abs=1e-4)

    # B scored by the refit (from the features its prediction returns), A by the final model
    sources = _negative_sources(list(entries.values()), sets, config)
    cfg_b = dataclasses.replace(inference_config(config, entries[B].mpp), return_features=True)
    pred_b = predict_slide(entries[B].path, model, config=cfg_b)
    assert pred_b.tile_features is not None
    assert pred_b.tile_features.shape == (len(pred_b.tiles), base.values.shape[-1])
    assert pred_b.tile_features.dtype == np.float16  # one view: exactly what the head sees
    pred_a = predict_slide(entries[A].path, model, config=inference_config(config, entries[A].mpp))
    held_b = held_out_heatmap(pred_b, direct, model)
    negatives = [
        negative_heatmap(sources[entries[A].entry_id], pred_a.heatmap, A),
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

    # an ensemble model (training.head = "ensemble" / "auto") gets ensemble fold heads: the
    # same linear refit plus a perceptron fitted on the same rows, scored as their mean
    from qupath_rkd.model.head import EnsembleFit
    from qupath_rkd.model.mlp_head import MlpHead

    model.net.mlp = MlpHead(base.values.shape[-1])
    heads = held_out_heads(
        labelled, [b_path], model, _train_config(config, len(labelled.items)), cache=None
    )
    ens = heads.fits[b_path]
    assert isinstance(ens, EnsembleFit)
    assert np.allclose(ens.linear.weight, direct.weight, atol=1e-4 * np.abs(direct.weight).max())
    feats_b = pred_b.tile_features.astype(np.float32)
    np.testing.assert_allclose(
        ens.logits(feats_b), 0.5 * (ens.linear.logits(feats_b) + ens.mlp.logits(feats_b))
    )
    assert not np.allclose(ens.logits(feats_b), ens.linear.logits(feats_b))
